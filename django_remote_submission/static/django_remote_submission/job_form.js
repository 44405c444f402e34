// The submit form: interpreters follow the chosen server; login fields only where needed.
const form = document.getElementById("drs-job-form");
const server = form.elements.server;
const interpreter = form.elements.interpreter;
const field = (name) => form.querySelector(`[data-field="${name}"]`);

function update() {
  const option = server.selectedOptions[0];
  const id = option ? option.value : "";
  for (const choice of interpreter.options) {
    if (!choice.value) continue;
    const offered = !id || (choice.dataset.servers || "").split(" ").includes(id);
    choice.hidden = !offered;
    choice.disabled = !offered;
  }
  const chosen = interpreter.selectedOptions[0];
  if (!chosen || !chosen.value || chosen.disabled) {
    const first = [...interpreter.options].find((o) => o.value && !o.disabled);
    interpreter.value = first ? first.value : "";
  }
  const local = Boolean(option && option.dataset.local);
  // Resources mean something only to a batch scheduler.
  const batch = Boolean(option && option.dataset.scheduler && option.dataset.scheduler !== "direct");
  for (const name of ["partition", "walltime", "cpus", "memory", "gpus", "account", "extra"]) {
    field(name).hidden = !batch;
  }
  field("auth").hidden = local;
  const auth = form.querySelector("input[name=auth]:checked");
  field("password").hidden = local || (auth && auth.value !== "password");
}

server.addEventListener("change", update);
for (const radio of form.querySelectorAll("input[name=auth]")) radio.addEventListener("change", update);
update();
