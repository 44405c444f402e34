// A windowed view of a job's log: only the rows near the viewport are in the DOM; the others
// are fetched from api/logs/window/ a page at a time and kept in a bounded cache of pages.
//
//   const view = new LogWindow(pre, { url, job, prepare, element });
//   const lastId = await view.load();   // the last page: its last row's id, for ?after=
//   view.append(rows);                  // rows that follow, from the websocket
//
// Rows have positions 0 .. total - 1. The scroll bar gives each row the same share (the height
// of one line, less once the log is very long). The row at the scroll fraction f of the log is
// drawn f of the way down the viewport, the rows around it with their real heights: rows of
// one line scroll as in a plain list, a row of many lines scrolls through them within its
// share. A short log (two screens of one-line rows or less) is shown whole.

const PAGE = 200; // rows per request
const MAX_PAGES = 40; // pages kept: 8,000 rows
const MAX_LOADS = 2; // requests at once
const MAX_HEIGHT = 8_000_000; // px, under what browsers allow an element
const MARGIN = 10; // rows drawn beyond a screenful, above and below

export class LogWindow {
  constructor(scroller, { url, job, prepare, element }) {
    Object.assign(this, { scroller, url, job, prepare, element });
    this.space = document.createElement("div");
    this.space.className = "drs-log-space";
    this.rows = document.createElement("div");
    this.rows.className = "drs-log-rows";
    this.space.append(this.rows);
    scroller.replaceChildren(this.space);
    this.following = true;
    this.reset();
    this.rowHeight = this.measure();
    scroller.addEventListener("scroll", () => {
      this.following = this.atBottom();
      this.schedule();
    });
    new ResizeObserver(() => this.schedule()).observe(scroller);
  }

  // Forget every row (a new run of the job starts).
  reset() {
    this.total = 0;
    this.pages = new Map(); // page number -> rows, least recently used first
    this.loading = new Map(); // page number -> generation of the request
    this.generation = (this.generation || 0) + 1; // answers to older requests are dropped
    this.shown = new Map(); // row id -> its element
    this.schedule();
  }

  measure() {
    const probe = this.element({ id: 0, stream: "stdout", time: "", content: "x\n" });
    this.rows.append(probe);
    const height = probe.getBoundingClientRect().height || 16;
    probe.remove();
    return height;
  }

  async request(params) {
    const query = new URLSearchParams({ job: this.job, count: PAGE, ...params });
    const response = await fetch(`${this.url}?${query}`, { headers: { Accept: "application/json" } });
    if (!response.ok) throw new Error(`${response.status} ${response.statusText}`);
    const answer = await response.json();
    this.prepare(answer.results);
    return answer;
  }

  // The last page; returns the id of the log's last row (0 when it has none).
  async load() {
    const generation = this.generation;
    const answer = await this.request({});
    if (generation !== this.generation) return 0;
    this.total = answer.total;
    if (answer.results.length) this.store(answer.start / PAGE, answer.results);
    this.schedule();
    return answer.results.length ? answer.results[answer.results.length - 1].id : 0;
  }

  // Rows that follow the last one (prepared by the caller).
  append(rows) {
    for (const row of rows) {
      const position = this.total++;
      const number = Math.floor(position / PAGE);
      const page = this.pages.get(number);
      if (page) page.push(row);
      else if (position % PAGE === 0) this.store(number, [row]);
    }
    this.schedule();
  }

  follow() {
    this.following = true;
    this.schedule();
  }

  store(number, rows) {
    this.pages.delete(number);
    this.pages.set(number, rows);
    while (this.pages.size > MAX_PAGES) this.pages.delete(this.pages.keys().next().value);
  }

  // The row at a position, if its page is here.
  row(position) {
    const number = Math.floor(position / PAGE);
    const page = this.pages.get(number);
    if (!page) return undefined;
    this.pages.delete(number); // most recently used last
    this.pages.set(number, page);
    return page[position - number * PAGE];
  }

  // Fetch a page: beside a page that is here (an index range read), else by position.
  fetchPage(number) {
    const generation = this.generation;
    this.loading.set(number, generation);
    const before = this.pages.get(number - 1);
    const after = this.pages.get(number + 1);
    let params = { start: number * PAGE };
    if (before && before.length === PAGE) params = { after: before[PAGE - 1].id };
    else if (after) params = { before: after[0].id };
    this.request(params)
      .then((answer) => {
        if (generation !== this.generation) return;
        const rows = answer.results.slice(0, Math.min(PAGE, this.total - number * PAGE));
        if (!this.pages.has(number)) this.store(number, rows);
      })
      .catch(() => new Promise((resolve) => setTimeout(resolve, 1000))) // try again later
      .finally(() => {
        if (this.loading.get(number) === generation) this.loading.delete(number);
        this.schedule();
      });
  }

  get height() {
    return Math.min(this.total * this.rowHeight, MAX_HEIGHT);
  }

  get plain() {
    return this.total * this.rowHeight <= 2 * this.scroller.clientHeight;
  }

  atBottom() {
    const s = this.scroller;
    return s.scrollHeight - s.scrollTop - s.clientHeight < (this.plain ? 24 : 2);
  }

  schedule() {
    if (this.frame) return;
    this.frame = requestAnimationFrame(() => {
      this.frame = null;
      this.draw();
    });
  }

  // Draw the rows around the anchor position; ask for the pages missing.
  draw() {
    const s = this.scroller;
    const plain = this.plain;
    this.space.classList.toggle("drs-log-windowed", !plain);
    this.space.style.height = plain ? "" : `${this.height}px`;
    if (this.following) s.scrollTop = s.scrollHeight;
    const screen = Math.ceil(s.clientHeight / this.rowHeight) + MARGIN;
    const fraction = plain ? 0 : Math.min(1, s.scrollTop / Math.max(1, s.scrollHeight - s.clientHeight));
    const at = plain ? 0 : ((s.scrollTop + fraction * s.clientHeight) / this.height) * this.total;
    const anchor = Math.min(this.total - 1, Math.floor(at));
    const from = plain ? 0 : Math.max(0, anchor - screen);
    const to = plain ? this.total : Math.min(this.total, anchor + screen + 1);
    const missing = new Set();
    const row = (position) => {
      const found = this.row(position);
      if (!found) missing.add(Math.floor(position / PAGE));
      return found;
    };
    // The rows here around the anchor, up to the first missing one on each side.
    const rows = anchor >= 0 && row(anchor) ? [this.row(anchor)] : [];
    let first = anchor;
    for (let p = anchor - 1; rows.length && p >= from; p--) {
      const found = row(p);
      if (!found) break;
      rows.unshift(found);
      first = p;
    }
    for (let p = anchor + 1; rows.length && p < to; p++) {
      const found = row(p);
      if (!found) break;
      rows.push(found);
    }
    for (const number of missing) {
      if (this.loading.size >= MAX_LOADS) break;
      if (!this.loading.has(number)) this.fetchPage(number);
    }
    if (!rows.length && this.total) return; // drawn once the anchor's page is here
    const shown = new Map();
    const elements = rows.map((row) => {
      const element = this.shown.get(row.id) || this.element(row);
      shown.set(row.id, element);
      return element;
    });
    const same = elements.length === this.rows.childElementCount &&
      elements.every((element, i) => this.rows.children[i] === element);
    if (!same) this.rows.replaceChildren(...elements);
    this.shown = shown;
    if (plain) {
      this.rows.style.transform = "";
      if (this.following) s.scrollTop = s.scrollHeight;
      return;
    }
    if (!elements.length) return;
    // The anchor row's point (its fraction passed) goes to the same fraction of the viewport.
    const element = elements[anchor - first];
    const within = Math.min(1, at - anchor) * element.offsetHeight;
    const top = s.scrollTop + fraction * s.clientHeight - element.offsetTop - within;
    this.rows.style.transform = `translateY(${top}px)`;
  }
}
