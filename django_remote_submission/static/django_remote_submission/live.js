// Shared by the live pages: a websocket that reconnects, and applying a job's status to the page.
// Messages are documented in django_remote_submission/consumers.py.

export const FINAL = new Set(["success", "failure", "cancelled"]);

const STATES = {
  connecting: "connecting…",
  live: "live",
  reconnecting: "connection lost, reconnecting…",
  login: "not logged in: reload the page to log in",
  forbidden: "not allowed",
};

// connect("/ws/job-log/3/", {onMessage, query: () => "?after=12", status: element})
// Acknowledges what onMessage has processed (the server stops sending to a socket that does
// not): after each history page, else at most every ACK_EVERY ms.
const ACK_EVERY = 100;

export function connect(path, { onMessage, query, status }) {
  let delay = 500;
  let socket = null;
  const show = (state) => {
    if (status) {
      status.dataset.state = state;
      status.textContent = STATES[state];
    }
  };
  const open = () => {
    const scheme = location.protocol === "https:" ? "wss://" : "ws://";
    const ws = (socket = new WebSocket(scheme + location.host + path + (query ? query() : "")));
    let seq = 0; // of the last message processed
    let timer = null;
    show("connecting");
    ws.onopen = () => {
      delay = 500;
      show("live");
    };
    const ack = () => {
      timer = null;
      if (ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify({ type: "ack", seq }));
    };
    ws.onmessage = (event) => {
      const message = JSON.parse(event.data);
      try {
        onMessage(message);
      } catch (error) {
        // The page's own failure must not stall the socket: it is still acknowledged.
        console.error("Could not show a message of", path, error);
      }
      seq = message.seq;
      if (message.history) {
        clearTimeout(timer);
        ack();
      } else if (timer === null) {
        timer = setTimeout(ack, ACK_EVERY);
      }
    };
    ws.onclose = (event) => {
      clearTimeout(timer);
      if (event.code === 4401) return show("login");
      if (event.code === 4403) return show("forbidden");
      // Anything else, 4408 (too slow to read) included: resume after the last row.
      show("reconnecting");
      setTimeout(open, delay);
      delay = Math.min(delay * 2, 10000);
    };
  };
  open();
  return () => socket && socket.close();
}

const pad = (n) => String(n).padStart(2, "0");

export function formatTime(iso) {
  if (!iso) return "–";
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return iso;
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ` +
    `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

export function formatTimes(root) {
  for (const el of root.querySelectorAll("time[datetime]")) {
    if (el.getAttribute("datetime")) el.textContent = formatTime(el.getAttribute("datetime"));
  }
}

function setTime(el, iso) {
  if (!el) return;
  el.setAttribute("datetime", iso || "");
  el.textContent = formatTime(iso);
}

// Show a job payload ({"status", "exit_code", "error", "started_at", "finished_at", ...}).
export function applyJob(root, job) {
  const badge = root.querySelector("[data-role=status]");
  if (badge) {
    badge.className = `drs-badge drs-status-${job.status}`;
    badge.dataset.status = job.status;
    badge.textContent = job.status;
  }
  const scheduler = root.querySelector("[data-role=scheduler_state]");
  if (scheduler && job.scheduler_state !== undefined) scheduler.textContent = job.scheduler_state || "–";
  const waiting = root.querySelector("[data-role=wait_reason]");
  if (waiting && job.wait_reason !== undefined) waiting.textContent = job.wait_reason || "–";
  const schedulerId = root.querySelector("[data-role=scheduler_id]");
  if (schedulerId && job.scheduler_id !== undefined) schedulerId.textContent = job.scheduler_id || "–";
  const code = root.querySelector("[data-role=exit_code]");
  if (code) code.textContent = job.exit_code === null || job.exit_code === undefined ? "–" : job.exit_code;
  setTime(root.querySelector("[data-role=started_at]"), job.started_at);
  setTime(root.querySelector("[data-role=finished_at]"), job.finished_at);
  const error = root.querySelector("[data-role=error]");
  if (error) {
    error.textContent = job.error || "";
    error.hidden = !job.error;
  }
  for (const el of root.querySelectorAll("[data-show-when]")) {
    el.hidden = !el.dataset.showWhen.split(" ").includes(job.status);
  }
}
