// Forms with file fields (new job, a template's form): files can be dropped on a field, and
// a form that sends files shows the upload's progress. Without JavaScript, the plain
// <input type=file> and a normal submit do the same.
for (const form of document.querySelectorAll("form[enctype='multipart/form-data']")) {
  for (const input of form.querySelectorAll("input[type=file]")) {
    const zone = input.closest("[data-field]") || input.parentElement;
    zone.classList.add("drs-drop");
    zone.addEventListener("dragover", (event) => {
      event.preventDefault();
      zone.classList.add("drs-drop-over");
    });
    zone.addEventListener("dragleave", () => zone.classList.remove("drs-drop-over"));
    zone.addEventListener("drop", (event) => {
      event.preventDefault();
      zone.classList.remove("drs-drop-over");
      const dropped = new DataTransfer();
      const files = [...(input.multiple ? input.files : []), ...event.dataTransfer.files];
      for (const file of input.multiple ? files : files.slice(-1)) dropped.items.add(file);
      input.files = dropped.files;
      input.dispatchEvent(new Event("change", { bubbles: true }));
    });
  }

  form.addEventListener("submit", (event) => {
    const sending = [...form.querySelectorAll("input[type=file]")].some((i) => i.files.length);
    if (!sending || !window.XMLHttpRequest) return;
    event.preventDefault();
    const bar = document.createElement("progress");
    bar.max = 100;
    bar.value = 0;
    bar.dataset.role = "upload-progress";
    form.append(bar);
    for (const button of form.querySelectorAll("button")) button.disabled = true;
    const xhr = new XMLHttpRequest();
    xhr.open("POST", form.action || window.location.href);
    xhr.upload.addEventListener("progress", (e) => {
      if (e.lengthComputable) bar.value = Math.round((100 * e.loaded) / e.total);
    });
    xhr.addEventListener("load", () => {
      if (xhr.responseURL && xhr.responseURL !== window.location.href) {
        window.location.assign(xhr.responseURL); // created: the job's page
      } else {
        document.open(); // the form again, with its errors
        document.write(xhr.responseText);
        document.close();
      }
    });
    xhr.addEventListener("error", () => {
      bar.remove();
      for (const button of form.querySelectorAll("button")) button.disabled = false;
      alert("The upload failed: check the connection and send the form again.");
    });
    xhr.send(new FormData(form));
  });
}
