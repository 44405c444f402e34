// A windowed view of a job's log: only the rows near the viewport are in the DOM; the others
// are fetched from api/logs/window/ a page at a time and kept in a bounded cache of pages.
//
//   const view = new LogWindow(pre, { url, job, prepare, element });
//   const lastId = await view.load();   // the last page: its last row's id, for ?after=
//   view.append(rows);                  // rows that follow, from the websocket
//
// Rows have positions 0 .. total - 1. The position drawn, at (a row and the fraction of it
// passed), goes at / total of the way down the viewport, the rows around it with their real
// heights. The scroll bar gives each row the same share (the height of one line, less once
// the log is very long): dragging it sets the position. A wheel or a key (arrows, pages,
// Home, End) moves the content by pixels, through the rows' real heights, and the scroll bar
// follows; so a row of many lines (output stored in one batch) reads like any other. A short
// log (two screens of one-line rows or less) is shown whole.

const PAGE = 200; // rows per request
const MAX_PAGES = 40; // pages kept: 8,000 rows
const MAX_LOADS = 2; // requests at once
const MAX_HEIGHT = 8_000_000; // px, under what browsers allow an element
const MARGIN = 10; // lines drawn beyond a screenful, above and below

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
    this.wrote = NaN; // the scrollTop that draw set last (its scroll event is not the user's)
    scroller.addEventListener("scroll", () => this.onScroll());
    scroller.addEventListener("wheel", (event) => this.onWheel(event), { passive: false });
    scroller.addEventListener("keydown", (event) => this.onKey(event));
    new ResizeObserver(() => this.schedule()).observe(scroller);
  }

  // Forget every row (a new run of the job starts).
  reset() {
    this.total = 0;
    this.pages = new Map(); // page number -> rows, least recently used first
    this.loading = new Map(); // page number -> generation of the request
    this.generation = (this.generation || 0) + 1; // answers to older requests are dropped
    this.shown = new Map(); // row id -> its element
    this.at = null; // the position drawn, when a wheel or a key set it (null: the scroll bar's)
    this.drawn = null; // the rows drawn last: where a wheel or a key moves from
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
    this.at = null;
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

  onScroll() {
    const ours = Math.abs(this.scroller.scrollTop - this.wrote) <= 1;
    this.wrote = NaN;
    if (ours && !this.plain) return; // set by draw
    this.at = null; // the scroll bar moved: the position follows it
    this.following = this.atBottom();
    this.schedule();
  }

  // A wheel or a key moves the content by pixels, through the rows' real heights.
  move(pixels) {
    const drawn = this.drawn;
    if (!drawn) return;
    const point = drawn.point + pixels;
    let at = drawn.first;
    for (const element of drawn.elements) {
      const bottom = element.offsetTop + element.offsetHeight;
      if (point < bottom) {
        at += Math.max(0, point - element.offsetTop) / element.offsetHeight;
        break;
      }
      at += 1;
    }
    this.at = Math.max(0, Math.min(this.total, at));
    this.following = this.at >= this.total;
    this.schedule();
  }

  onWheel(event) {
    if (this.plain || event.ctrlKey || !event.deltaY) return;
    event.preventDefault();
    const unit = [1, this.rowHeight, this.scroller.clientHeight][event.deltaMode] || 1;
    this.move(event.deltaY * unit);
  }

  onKey(event) {
    if (this.plain || event.altKey || event.ctrlKey || event.metaKey) return;
    const page = this.scroller.clientHeight * 0.9;
    const by = { ArrowDown: 40, ArrowUp: -40, PageDown: page, PageUp: -page }[event.key];
    if (event.key === "Home") {
      this.at = 0;
      this.following = false;
    } else if (event.key === "End") {
      this.following = true;
    } else if (by !== undefined) {
      this.move(by);
    } else {
      return;
    }
    event.preventDefault();
    this.schedule();
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
    const max = s.scrollHeight - s.clientHeight;
    let at = 0;
    if (!plain) {
      if (this.following) at = this.total;
      else if (this.at !== null) at = Math.min(this.at, this.total);
      else at = max > 0 ? (s.scrollTop / max) * this.total : this.total;
    }
    const anchor = Math.min(this.total - 1, Math.floor(at));
    // Rows of about a screenful of lines (and MARGIN more) on each side of the anchor.
    const budget = plain ? Infinity : Math.ceil(s.clientHeight / this.rowHeight) + MARGIN;
    const missing = new Set();
    const row = (position) => {
      const found = this.row(position);
      if (!found) missing.add(Math.floor(position / PAGE));
      return found;
    };
    const rows = anchor >= 0 && row(anchor) ? [this.row(anchor)] : [];
    let first = anchor;
    for (let p = anchor - 1, lines = 0; rows.length && p >= 0 && lines < budget; p--) {
      const found = row(p);
      if (!found) break;
      rows.unshift(found);
      first = p;
      lines += lineCount(found);
    }
    let lines = rows.length ? lineCount(rows[rows.length - 1]) : 0;
    for (let p = anchor + 1; rows.length && p < this.total && lines < budget; p++) {
      const found = row(p);
      if (!found) break;
      rows.push(found);
      lines += lineCount(found);
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
    this.drawn = null;
    if (plain) {
      this.rows.style.transform = "";
      if (this.following) s.scrollTop = s.scrollHeight;
      return;
    }
    // The scroll bar shows the position: the fraction at / total of the way.
    const fraction = this.total ? at / this.total : 1;
    const top = this.following ? max : Math.round(fraction * max);
    if (Math.abs(s.scrollTop - top) > (this.following ? 0 : 1)) {
      this.wrote = top;
      s.scrollTop = top;
    }
    if (!elements.length) return;
    // The anchor row's point (its fraction passed) goes to the same fraction of the viewport.
    const element = elements[anchor - first];
    const point = element.offsetTop + Math.min(1, at - anchor) * element.offsetHeight;
    const y = s.scrollTop + fraction * s.clientHeight - point;
    this.rows.style.transform = `translateY(${y}px)`;
    this.drawn = { first, elements, point };
  }
}

// Lines of a row, about (a long line that wraps takes more).
function lineCount(row) {
  if (row.lines === undefined) row.lines = Math.max(1, row.content.split("\n").length - 1);
  return row.lines;
}
