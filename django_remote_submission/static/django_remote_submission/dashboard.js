// The dashboard's charts (Chart.js, vendor/chart.umd.min.js), drawn from the data the page
// embeds (dashboard.charts), and its tables: when a job changes state the page is fetched
// again and both are replaced by the new page's (the template stays their one source).
import { connect, formatTime } from "./live.js";

const Chart = window.Chart;
const section = document.getElementById("drs-charts");
const REFETCH_EVERY = 2000; // ms: at most one refetch in this time, however many jobs change
const COLOURS = { success: "#12b76a", failure: "#d92d20", cancelled: "#98a2b3" };
const OUTCOMES = ["success", "failure", "cancelled"];

function bytes(n) {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024;
    i += 1;
  }
  return `${i ? n.toFixed(1) : n} ${units[i]}`;
}

function hourLabel(iso, stepHours) {
  const text = formatTime(iso); // "YYYY-MM-DD hh:mm:ss", local time
  return stepHours % 24 === 0 ? text.slice(0, 10) : text.slice(5, 16);
}

// Each chart: its Chart.js config, and how to set its data from the chart data.
const CHARTS = {
  outcomes: {
    type: "bar",
    options: { scales: { x: { stacked: true }, y: { stacked: true, beginAtZero: true, ticks: { precision: 0 } } } },
    data: (d) => ({
      labels: d.outcomes.starts.map((iso) => hourLabel(iso, d.outcomes.step_hours)),
      datasets: OUTCOMES.map((outcome) => ({
        label: outcome,
        data: d.outcomes[outcome],
        backgroundColor: COLOURS[outcome],
      })),
    }),
  },
  durations: {
    type: "bar",
    options: { scales: { y: { beginAtZero: true, ticks: { precision: 0 } } } },
    data: (d) => ({
      labels: d.durations.labels,
      datasets: [
        { label: "wait", data: d.durations.wait, backgroundColor: "#7a5af8" },
        { label: "run", data: d.durations.run, backgroundColor: "#2456c8" },
      ],
    }),
  },
  volume: {
    type: "bar",
    options: {
      scales: { y: { beginAtZero: true, ticks: { callback: (value) => bytes(value) } } },
      plugins: { tooltip: { callbacks: { label: (c) => `${c.dataset.label}: ${bytes(c.parsed.y)}` } } },
    },
    data: (d) => ({
      labels: d.volume.servers,
      datasets: [
        { label: "logs", data: d.volume.log_bytes, backgroundColor: "#475467" },
        { label: "results", data: d.volume.result_bytes, backgroundColor: "#f79009" },
      ],
    }),
  },
};

const charts = {};

function draw(data) {
  for (const [name, spec] of Object.entries(CHARTS)) {
    const chartData = spec.data(data);
    if (charts[name]) {
      charts[name].data = chartData;
      charts[name].update();
    } else {
      const canvas = section.querySelector(`canvas[data-chart="${name}"]`);
      charts[name] = new Chart(canvas, {
        type: spec.type,
        data: chartData,
        options: { responsive: true, maintainAspectRatio: false, animation: false, ...spec.options },
      });
    }
  }
  section.dataset.updated = String(Number(section.dataset.updated || 0) + 1);
}

let timer = null;
let again = false;

const TABLES = ["counts", "servers", "failures"];

function refresh(html) {
  const fresh = new DOMParser().parseFromString(html, "text/html");
  for (const role of TABLES) {
    const table = fresh.querySelector(`table[data-role="${role}"]`);
    if (table) document.querySelector(`table[data-role="${role}"]`)?.replaceWith(document.adoptNode(table));
  }
  const data = fresh.getElementById("drs-chart-data");
  if (data) draw(JSON.parse(data.textContent));
}

async function refetch() {
  try {
    const response = await fetch(location.href, { headers: { Accept: "text/html" } });
    if (response.ok) refresh(await response.text());
  } finally {
    // Changes during the fetch or the wait after it: one more refetch, REFETCH_EVERY later.
    timer = setTimeout(() => {
      timer = null;
      if (again) schedule();
    }, REFETCH_EVERY);
  }
}

function schedule() {
  again = timer !== null;
  if (timer === null) {
    timer = 0; // a fetch in flight
    refetch();
  }
}

if (Chart && section) {
  draw(JSON.parse(document.getElementById("drs-chart-data").textContent));
  let first = true;
  connect(section.dataset.ws, {
    status: document.querySelector("[data-role=connection]"),
    onMessage(message) {
      // The list sent on each (re)connect: changes may have been missed meanwhile.
      if (message.type === "jobs" && first) first = false;
      else if (message.type === "jobs" || message.type === "status") schedule();
    },
  });
}
