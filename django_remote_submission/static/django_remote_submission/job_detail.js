// A job's page: the log's last page from the API, then the rows that follow over
// ws/job-log/<pk>/?after=<its last row> (resuming after the last row on reconnect), in a
// windowed view (log_window.js: only the rows near the viewport are in the page, the others
// are fetched as the user scrolls), with ANSI colours (ansi_up), stdout / stderr / system
// told apart, and auto-scroll that pauses while the user reads further up.
import { AnsiUp } from "./vendor/ansi_up.js";
import { FINAL, applyJob, connect, formatTimes } from "./live.js";
import { LogWindow } from "./log_window.js";

const root = document.getElementById("drs-job");
const log = root.querySelector("[data-role=log]");
const follow = root.querySelector("[data-role=follow]");
const connection = root.querySelector("[data-role=connection]");
let status = root.dataset.status;
let lastId = 0;
let converters = newConverters(); // of the rows arriving live

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

// Rows as HTML: each page fetched with converters of its own, live rows with the live ones.
function prepare(rows, using = newConverters()) {
  for (const row of rows) {
    if (row.stream in using) row.html = using[row.stream].ansi_to_html(row.content);
  }
}

function element(row) {
  const span = document.createElement("span");
  span.className = `drs-row drs-${row.stream}`;
  span.dataset.id = row.id;
  span.title = `${row.stream} · ${row.time}`;
  if (row.html !== undefined) span.innerHTML = row.html;
  else span.textContent = row.content; // "system": the app's own notices, shown as text
  return span;
}

const view = new LogWindow(log, {
  url: root.dataset.logUrl,
  job: root.dataset.job,
  prepare: (rows) => prepare(rows),
  element,
});

log.addEventListener("scroll", () => {
  if (view.following) follow.hidden = true;
});
follow.addEventListener("click", () => {
  follow.hidden = true;
  view.follow();
});

function append(rows) {
  const fresh = rows.filter((row) => row.id > lastId);
  if (!fresh.length) return;
  lastId = fresh[fresh.length - 1].id;
  prepare(fresh, converters);
  view.append(fresh);
  if (!view.following) follow.hidden = false;
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
    view.reset();
    converters = newConverters();
    refreshResults();
  }
  if (FINAL.has(status) && !FINAL.has(previous)) refreshResults();
  showState();
}

// The last page first: the websocket streams only the rows after it. Without it (the API
// did not answer) the websocket sends the whole log, shown in the same window.
try {
  lastId = await view.load();
} catch (error) {
  console.warn("The log's last page could not be loaded:", error);
}
connect(root.dataset.ws, {
  status: connection,
  query: () => `?after=${lastId}`,
  onMessage(message) {
    if (message.type === "logs") append(message.logs);
    else if (message.type === "status") onStatus(message.job);
  },
});
