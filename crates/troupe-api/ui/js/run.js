// One run, live: stdout with ansible's colours, the host × task grid, the task timeline and the
// failures, all filled from the run's event stream as it arrives.
//
// Events go into a plain model (no state per event); the page re-renders at most once per
// animation frame. Stdout is kept as closed chunks of HTML (only the last one changes, and
// `content-visibility` lets the browser skip chunks off screen), and grid rows re-render only
// when one of their cells changed, so a run of thousands of events does not freeze the page.
import { html, useState, useEffect, useRef } from "./html.js";
import { Component } from "../vendor/preact.mjs";
import { AnsiUp } from "../vendor/ansi_up.js";
import { api, followRun, followChanges } from "./api.js";
import { go, fmtTime, fmtDuration, Status, ErrorBox, Loading } from "./common.js";

// Events per stdout chunk.
const CHUNK_EVENTS = 100;

const RESULT_STATE = {
  runner_on_ok: "ok",
  runner_on_failed: "failed",
  runner_on_skipped: "skipped",
  runner_on_unreachable: "unreachable",
  runner_on_start: "running",
};
const STATES = ["ok", "changed", "failed", "skipped", "unreachable"];
const TASK_START = new Set(["playbook_on_task_start", "playbook_on_handler_task_start"]);

class RunModel {
  constructor() {
    this.ansi = new AnsiUp();
    this.ansi.use_classes = true;
    this.chunks = [];
    this.open = null;
    this.hosts = [];
    this.hostRows = new Map();
    this.tasks = [];
    this.taskIndex = new Map();
    this.failures = [];
    this.count = 0;
    this.last = 0;
    this.first = null;
    this.latest = null;
  }

  add(events) {
    for (const ev of events) this.addOne(ev);
    if (this.open) this.open.html = this.open.parts.join("");
  }

  addOne(ev) {
    this.count++;
    this.last = ev.counter;
    const at = ev.created ? Date.parse(ev.created) : null;
    if (at) {
      if (this.first === null) this.first = at;
      this.latest = at;
    }
    if (ev.stdout) this.addStdout(ev.stdout);
    const d = ev.event_data || {};
    if (TASK_START.has(ev.event)) {
      this.task(d.task_uuid || ev.uuid, d.task || d.name || "", at);
      return;
    }
    const state = RESULT_STATE[ev.event];
    if (!state || !d.host) return;
    const task = this.task(d.task_uuid || d.task || "?", d.task || "", at);
    if (at) task.end = Math.max(task.end ?? at, at);
    const res = d.res || {};
    let cell = state;
    if (state === "ok" && (res.changed || d.changed)) cell = "changed";
    const row = this.host(d.host);
    const before = row.cells.get(task.index);
    if (cell === "running" && before) return;
    row.cells.set(task.index, cell);
    row.version++;
    if (state === "failed" || state === "unreachable") {
      this.failures.push({
        counter: ev.counter,
        host: d.host,
        task: d.task || task.name,
        state: d.ignore_errors && state === "failed" ? "failed (ignored)" : state,
        msg: res.msg || res.reason || res.stderr || (res.results ? "one or more items failed" : "") || JSON.stringify(res),
      });
    }
  }

  addStdout(text) {
    if (!this.open || this.open.events >= CHUNK_EVENTS) {
      if (this.open) this.open.html = this.open.parts.join("");
      this.open = { parts: [], events: 0, html: "" };
      this.chunks.push(this.open);
    }
    this.open.parts.push(this.ansi.ansi_to_html(text.replace(/\r/g, "")));
    this.open.events++;
  }

  task(uuid, name, at) {
    let t = this.taskIndex.get(uuid);
    if (!t) {
      t = { uuid, name, index: this.tasks.length, start: at, end: at };
      this.tasks.push(t);
      this.taskIndex.set(uuid, t);
    }
    return t;
  }

  host(name) {
    let row = this.hostRows.get(name);
    if (!row) {
      row = { name, cells: new Map(), version: 0 };
      this.hostRows.set(name, row);
      this.hosts.push(row);
    }
    return row;
  }

  // Each task's duration: from its start to its last result (or the next task's start).
  timeline(endAt) {
    return this.tasks.map((t, i) => {
      const next = this.tasks[i + 1];
      const end = Math.max(t.end ?? 0, next?.start ?? 0) || endAt || t.start;
      return { ...t, duration: t.start && end ? end - t.start : null };
    });
  }
}

function useFrameRender() {
  const [, setTick] = useState(0);
  const pending = useRef(false);
  return () => {
    if (pending.current) return;
    pending.current = true;
    requestAnimationFrame(() => {
      pending.current = false;
      setTick((t) => t + 1);
    });
  };
}

// The grid, timeline and failures are redrawn at most this often while events pour in (a
// run's history arrives thousands at a time); stdout and the counts follow every frame.
const SLOW_PARTS_MS = 250;

// Children drawn again only when `version` changes.
class Throttled extends Component {
  shouldComponentUpdate(next) {
    return next.version !== this.props.version;
  }
  render({ children }) {
    return children;
  }
}

// The version of the slow parts for this render: bumped when SLOW_PARTS_MS have passed since
// the last bump, else a redraw is scheduled for when they will have.
function useSlowVersion(count, schedule) {
  const state = useRef({ version: 0, at: 0, count: -1, timer: null });
  const s = state.current;
  useEffect(() => () => clearTimeout(s.timer), []);
  if (count !== s.count) {
    const wait = s.at + SLOW_PARTS_MS - performance.now();
    if (wait <= 0) {
      s.version++;
      s.at = performance.now();
      s.count = count;
    } else if (!s.timer) {
      s.timer = setTimeout(() => {
        s.timer = null;
        schedule();
      }, wait);
    }
  }
  return s.version;
}

export function RunPage({ id }) {
  const model = useRef(new RunModel()).current;
  const [run, setRun] = useState(null);
  const [error, setError] = useState(null);
  const [stream, setStream] = useState("connecting");
  const [ended, setEnded] = useState(null);
  const schedule = useFrameRender();

  const reloadRun = () =>
    api(`/runs/${id}`).then(
      (r) => setRun(r),
      (e) => setError(e),
    );

  useEffect(() => {
    reloadRun();
    const ctl = new AbortController();
    followRun(
      id,
      0,
      {
        onEvents(batch) {
          model.add(batch);
          schedule();
        },
        onEnd(end) {
          setEnded(end);
          setStream("ended");
          reloadRun();
        },
        onState: setStream,
      },
      ctl.signal,
    );
    followChanges(
      `runs=${id}`,
      {
        onChange(msg) {
          if (msg.type === "status_changed" || msg.type === "summary_updated") reloadRun();
        },
      },
      ctl.signal,
    );
    return () => ctl.abort();
  }, [id]);

  const slow = useSlowVersion(model.count, schedule);
  if (error && !run) return html`<section><h1>Run #${id}</h1><${ErrorBox} error=${error} /></section>`;
  if (!run) return html`<${Loading} what=${`run #${id}`} />`;
  const status = ended?.status && run.status !== ended.status && !isOver(run.status) ? ended.status : run.status;
  return html`<section class="run">
    <div class="page-head">
      <h1>Run #${run.id}</h1>
      <${Status} status=${status} />
      <span class="muted" aria-live="polite">${model.count} events · stream ${stream}</span>
    </div>
    <${RunFacts} run=${run} />
    <${ErrorBox} error=${error} />
    <${Actions} run=${{ ...run, status }} onChanged=${reloadRun} onError=${setError} />
    <${Throttled} version=${`${slow}/${status}`}><${Failures} failures=${model.failures} /><//>
    <h2>Hosts × tasks</h2>
    <${Throttled} version=${`${slow}/${status}`}><${Grid} model=${model} /><//>
    <h2>Timeline</h2>
    <${Throttled} version=${`${slow}/${run.finished_at}`}><${Timeline} model=${model} run=${run} /><//>
    <h2>Output</h2>
    <${Stdout} model=${model} count=${model.count} />
  </section>`;
}

function isOver(status) {
  return !["queued", "running"].includes(status);
}

function RunFacts({ run }) {
  const end = run.finished_at ? new Date(run.finished_at) : null;
  const start = run.started_at ? new Date(run.started_at) : null;
  return html`<dl class="facts">
    <dt>Playbook</dt><dd>${run.playbook}</dd>
    <dt>Project</dt><dd><a href=${`#/projects/${run.project_id}`}>${run.project_id}</a></dd>
    ${run.inventory_id != null && html`<dt>Inventory</dt><dd><a href=${`#/inventories/${run.inventory_id}`}>${run.inventory_id}</a></dd>`}
    ${run.options?.limit && html`<dt>Limit</dt><dd class="limit">${run.options.limit}</dd>`}
    ${run.relaunch_of != null && html`<dt>Relaunch of</dt><dd><a href=${`#/runs/${run.relaunch_of}`}>#${run.relaunch_of}</a></dd>`}
    <dt>Created</dt><dd>${fmtTime(run.created_at)}</dd>
    ${start && html`<dt>Duration</dt><dd>${fmtDuration((end || new Date()) - start)}</dd>`}
    ${run.rc != null && html`<dt>Exit code</dt><dd>${run.rc}</dd>`}
    ${run.status_reason && html`<dt>Reason</dt><dd>${run.status_reason}</dd>`}
    ${run.cancel_requested && html`<dt>Cancel</dt><dd>${run.cancel_requested} cancel requested</dd>`}
  </dl>`;
}

function Actions({ run, onChanged, onError }) {
  const [busy, setBusy] = useState(false);
  async function act(fn) {
    setBusy(true);
    onError(null);
    try {
      await fn();
    } catch (e) {
      onError(e);
    } finally {
      setBusy(false);
    }
  }
  const cancel = (mode) =>
    act(async () => {
      await api(`/runs/${run.id}/cancel`, { method: "POST", body: { mode } });
      onChanged();
    });
  const relaunch = (hosts, from) =>
    act(async () => {
      const created = await api(`/runs/${run.id}/relaunch`, { method: "POST", body: { hosts, from } });
      go(`runs/${created.id}`);
    });
  const active = !isOver(run.status);
  return html`<div class="actions" role="group" aria-label="Run actions">
    ${active
      ? html`<button type="button" disabled=${busy} onClick=${() => cancel("graceful")}>Cancel</button>
          <button type="button" class="danger" disabled=${busy} onClick=${() => cancel("force")}>Force cancel</button>`
      : html`<button type="button" disabled=${busy} onClick=${() => relaunch("all", "start")}>Relaunch</button>
          <button type="button" disabled=${busy} onClick=${() => relaunch("failed", "start")}>Relaunch failed hosts</button>
          <button type="button" disabled=${busy} onClick=${() => relaunch("failed", "failed_task")}>Relaunch from failed task</button>`}
  </div>`;
}

function Failures({ failures }) {
  if (failures.length === 0) return null;
  return html`<section class="failures" aria-labelledby="failures-title">
    <h2 id="failures-title">Failures (${failures.length})</h2>
    <ul>${failures.slice(0, 200).map(
      (f) => html`<li key=${f.counter}><strong class=${`f-${f.state.split(" ")[0]}`}>${f.state}</strong>${" "}
        <span class="host">${f.host}</span> · <span class="task">${f.task}</span>
        <pre class="msg">${f.msg}</pre></li>`,
    )}</ul>
    ${failures.length > 200 && html`<p class="muted">and ${failures.length - 200} more</p>`}
  </section>`;
}

const escapeHtml = (text) =>
  String(text).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);

// One host's row, as HTML: thousands of cells are cheaper to build as one string per row than
// as a component each. Re-rendered only when one of its cells changed.
class GridRow extends Component {
  shouldComponentUpdate(next) {
    return next.version !== this.props.version || next.tasks !== this.props.tasks;
  }
  render({ row, tasks }) {
    const host = escapeHtml(row.name);
    let cells = `<th scope="row" class="host">${host}</th>`;
    for (let i = 0; i < tasks.length; i++) {
      const state = row.cells.get(i) || "";
      const task = escapeHtml(tasks[i].name);
      cells += `<td class="cell c-${state || "none"}" data-task="${task}" data-state="${state}" title="${host} · ${task}: ${
        state || "not run"
      }">${state ? `<span class="sr">${state}</span>` : ""}</td>`;
    }
    return html`<tr data-host=${row.name} dangerouslySetInnerHTML=${{ __html: cells }}></tr>`;
  }
}

function Grid({ model }) {
  if (model.hosts.length === 0) return html`<p class="muted">No host results yet.</p>`;
  // A new array when tasks are added, so rows know to draw the new columns.
  const tasks = useTaskList(model.tasks);
  return html`<div class="grid-wrap">
    <ul class="legend" aria-label="Legend">${STATES.map((s) => html`<li><span class=${`swatch c-${s}`}></span>${s}</li>`)}</ul>
    <div class="table-wrap"><table class="grid" aria-label="Host by task results">
      <thead><tr><th scope="col">Host</th>${tasks.map(
        (t, i) => html`<th scope="col" title=${t.name}><span class="task-no">${i + 1}</span><span class="sr">${t.name}</span></th>`,
      )}</tr></thead>
      <tbody>${model.hosts.map((row) => html`<${GridRow} key=${row.name} row=${row} version=${row.version} tasks=${tasks} />`)}</tbody>
    </table></div>
  </div>`;
}

function useTaskList(tasks) {
  const ref = useRef({ n: -1, list: [] });
  if (ref.current.n !== tasks.length) ref.current = { n: tasks.length, list: tasks.slice() };
  return ref.current.list;
}

function Timeline({ model, run }) {
  if (model.tasks.length === 0) return html`<p class="muted">No tasks yet.</p>`;
  const endAt = run.finished_at ? Date.parse(run.finished_at) : model.latest;
  const rows = model.timeline(endAt);
  const t0 = rows[0].start ?? model.first;
  const span = Math.max(1, (endAt ?? model.latest ?? t0) - t0);
  return html`<ol class="timeline">${rows.map(
    (t, i) => html`<li key=${t.uuid}>
      <span class="t-name"><span class="task-no">${i + 1}</span> ${t.name}</span>
      <span class="t-bar-wrap"><span class="t-bar" style=${{
        marginLeft: `${(((t.start ?? t0) - t0) / span) * 100}%`,
        width: `${Math.max(0.5, ((t.duration ?? 0) / span) * 100)}%`,
      }}></span></span>
      <span class="t-dur">${fmtDuration(t.duration)}</span>
    </li>`,
  )}</ol>`;
}

// One chunk of stdout HTML (ansi_up escapes the text); unchanged chunks are skipped.
// Closed chunks may be skipped by the browser while off screen; the open one is always drawn.
class Chunk extends Component {
  shouldComponentUpdate(next) {
    return next.html !== this.props.html || next.open !== this.props.open;
  }
  render({ html: h, open }) {
    return html`<div class=${open ? "chunk" : "chunk closed"} dangerouslySetInnerHTML=${{ __html: h }}></div>`;
  }
}

function Stdout({ model, count }) {
  const box = useRef();
  const [follow, setFollow] = useState(true);
  useEffect(() => {
    if (follow && box.current) box.current.scrollTop = box.current.scrollHeight;
  }, [count, follow]);
  function onScroll() {
    const b = box.current;
    const atEnd = b.scrollHeight - b.scrollTop - b.clientHeight < 40;
    if (atEnd !== follow) setFollow(atEnd);
  }
  return html`<div class="stdout-head">
      <label><input type="checkbox" checked=${follow} onChange=${(e) => setFollow(e.target.checked)} /> Follow output</label>
    </div>
    <div class="stdout" ref=${box} onScroll=${onScroll} tabindex="0" role="log" aria-label="Run output">
      ${model.chunks.map((c, i) => html`<${Chunk} key=${i} html=${c.html} open=${i === model.chunks.length - 1} />`)}
    </div>`;
}
