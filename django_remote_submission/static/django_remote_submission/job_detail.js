// A job's page: the log follows ws/job-log/<pk>/ (resuming after the last row on reconnect),
// with ANSI colours (ansi_up), stdout / stderr / system told apart, and auto-scroll that
// pauses while the user reads further up.
import { AnsiUp } from "./vendor/ansi_up.js";
import { FINAL, applyJob, connect, formatTimes } from "./live.js";

const MAX_ROWS = 20000; // older rows leave the page (the full log stays downloadable)

const root = document.getElementById("drs-job");
const log = root.querySelector("[data-role=log]");
const follow = root.querySelector("[data-role=follow]");
const connection = root.querySelector("[data-role=connection]");
let status = root.dataset.status;
let lastId = 0;
let following = true;
let converters = newConverters();

formatTimes(root);
showState();

// A finished job has nothing more to stream: no "live" mark. Once the job waits in a batch
// scheduler's queue, runs or has ended, the "queued" notice of the submission that led here
// (the app's own queue) is out of date.
function showState() {
  connection.hidden = FINAL.has(status);
  if (status !== "queued" && status !== "running" && !FINAL.has(status)) return;
  for (const notice of document.querySelectorAll('.drs-message[data-tags~="queued"]')) {
    const list = notice.parentElement;
    notice.remove();
    if (!list.children.length) list.remove();
  }
}

function newConverters() {
  // One converter per stream: a colour set on stdout must not leak into stderr.
  const converters = { stdout: new AnsiUp(), stderr: new AnsiUp() };
  for (const converter of Object.values(converters)) {
    converter.use_classes = true; // drs.css
    // A job's output is untrusted: an OSC 8 hyperlink shows its text, never a link.
    converter.process_hyperlink = (packet) => converter.escape_txt_for_html(packet.text);
  }
  return converters;
}

const atBottom = () => log.scrollHeight - log.scrollTop - log.clientHeight < 24;

log.addEventListener("scroll", () => {
  following = atBottom();
  if (following) follow.hidden = true;
});
follow.addEventListener("click", () => {
  following = true;
  follow.hidden = true;
  log.scrollTop = log.scrollHeight;
});

function append(rows) {
  const fragment = document.createDocumentFragment();
  for (const row of rows) {
    if (row.id <= lastId) continue;
    lastId = row.id;
    const span = document.createElement("span");
    span.className = `drs-row drs-${row.stream}`;
    span.dataset.id = row.id;
    span.title = `${row.stream} · ${row.time}`;
    if (row.stream in converters) span.innerHTML = converters[row.stream].ansi_to_html(row.content);
    else span.textContent = row.content; // "system": the app's own notices, shown as text
    fragment.appendChild(span);
  }
  if (!fragment.childNodes.length) return;
  log.appendChild(fragment);
  while (log.childElementCount > MAX_ROWS) log.firstElementChild.remove();
  if (following) log.scrollTop = log.scrollHeight;
  else follow.hidden = false;
}

async function refreshResults() {
  const response = await fetch(root.dataset.resultsUrl);
  if (!response.ok) return;
  const template = document.createElement("template");
  template.innerHTML = (await response.text()).trim();
  root.querySelector("[data-role=results]").replaceWith(template.content.firstElementChild);
}

function onStatus(job) {
  const previous = status;
  status = job.status;
  root.dataset.status = status;
  applyJob(root, job);
  const submit = root.querySelector("[data-role=submit] button");
  if (submit && status !== "initial") submit.textContent = "Resubmit";
  if (status === "submitted" && previous !== "submitted") {
    // A new run: its log and results replace those of the previous one.
    log.replaceChildren();
    converters = newConverters();
    refreshResults();
  }
  if (FINAL.has(status) && !FINAL.has(previous)) refreshResults();
  showState();
}

connect(root.dataset.ws, {
  status: connection,
  query: () => `?after=${lastId}`,
  onMessage(message) {
    if (message.type === "logs") append(message.logs);
    else if (message.type === "status") onStatus(message.job);
  },
});
