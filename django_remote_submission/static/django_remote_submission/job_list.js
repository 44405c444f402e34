// The job list: status badges and times follow ws/job-user/; new jobs appear at the top.
import { applyJob, connect, formatTimes } from "./live.js";

const table = document.getElementById("drs-jobs");
const body = table.tBodies[0];
const firstPage = table.dataset.firstPage === "1";
const loading = new Set();

formatTimes(table);

function rowOf(id) {
  return body.querySelector(`tr[data-job="${id}"]`);
}

async function addRow(job) {
  if (!firstPage || loading.has(job.id)) return;
  loading.add(job.id);
  try {
    const response = await fetch(table.dataset.rowUrl.replace("/0/", `/${job.id}/`));
    if (!response.ok || rowOf(job.id)) return;
    const template = document.createElement("template");
    template.innerHTML = (await response.text()).trim();
    const row = template.content.firstElementChild;
    formatTimes(row);
    const after = [...body.rows].find((r) => Number(r.dataset.job) < job.id);
    body.insertBefore(row, after || null);
    const empty = document.querySelector("[data-role=empty]");
    if (empty) empty.hidden = true;
  } finally {
    loading.delete(job.id);
  }
}

function update(job) {
  const row = rowOf(job.id);
  if (!row) return addRow(job);
  if (Date.parse(row.dataset.modified) > Date.parse(job.modified)) return; // an older message
  row.dataset.modified = job.modified;
  applyJob(row, job);
}

connect(table.dataset.ws, {
  status: document.querySelector("[data-role=connection]"),
  onMessage(message) {
    if (message.type === "jobs") message.jobs.forEach(update);
    else if (message.type === "status") update(message.job);
  },
});
