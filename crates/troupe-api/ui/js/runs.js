// The runs list: filters in the URL (`#/runs?status=failed&tag=x`), statuses updated live from
// the changes stream, new runs added as they are created.
import { html, useState, useEffect, useRef } from "./html.js";
import { api, followChanges } from "./api.js";
import { go, fmtTime, fmtDuration, Status, ErrorBox, Loading } from "./common.js";

const STATUSES = ["", "queued", "running", "successful", "failed", "canceled", "timeout", "error"];
const FILTERS = ["status", "project", "tag", "label"];

function filterQuery(query) {
  const q = new URLSearchParams();
  for (const k of FILTERS) if (query.get(k)) q.set(k, query.get(k));
  return q;
}

export function RunsPage({ query }) {
  const filters = filterQuery(query);
  const key = filters.toString();
  const [runs, setRuns] = useState(null);
  const [cursor, setCursor] = useState(null);
  const [error, setError] = useState(null);
  const [live, setLive] = useState(false);
  const reloadTimer = useRef(null);

  async function load(more) {
    const q = new URLSearchParams(filters);
    q.set("limit", "50");
    if (more && cursor) q.set("cursor", String(cursor));
    try {
      const page = await api(`/runs?${q}`);
      setRuns((old) => (more && old ? [...old, ...page.runs] : page.runs));
      setCursor(page.next_cursor ?? null);
      setError(null);
    } catch (e) {
      setError(e);
    }
  }

  useEffect(() => {
    setRuns(null);
    load(false);
    const ctl = new AbortController();
    const sq = new URLSearchParams();
    for (const k of ["project", "tag", "label"]) if (filters.get(k)) sq.set(k, filters.get(k));
    setLive(true);
    followChanges(
      sq.toString(),
      {
        onChange(msg) {
          if (msg.type === "status_changed") {
            setRuns((old) =>
              old?.map((r) => (r.id === msg.run_id ? { ...r, status: msg.status, rc: msg.rc ?? r.rc } : r)),
            );
            // Times and filters by status come from the server: refresh soon after changes.
            clearTimeout(reloadTimer.current);
            reloadTimer.current = setTimeout(() => load(false), 1000);
          } else if (msg.type === "run_created") {
            clearTimeout(reloadTimer.current);
            reloadTimer.current = setTimeout(() => load(false), 200);
          }
        },
        onResync: () => load(false),
      },
      ctl.signal,
    ).finally(() => setLive(false));
    return () => {
      ctl.abort();
      clearTimeout(reloadTimer.current);
    };
  }, [key]);

  function setFilter(name, value) {
    const q = new URLSearchParams(filters);
    if (value) q.set(name, value);
    else q.delete(name);
    go(`runs${q.toString() ? `?${q}` : ""}`);
  }

  function submit(e) {
    e.preventDefault();
    const form = new FormData(e.target);
    const q = new URLSearchParams();
    for (const k of FILTERS) if (form.get(k)) q.set(k, String(form.get(k)).trim());
    go(`runs${q.toString() ? `?${q}` : ""}`);
  }

  return html`<section>
    <div class="page-head">
      <h1>Runs</h1>
      <span class=${`live ${live ? "on" : ""}`} aria-live="polite">${live ? "live" : "offline"}</span>
      <a class="button primary" href="#/launch">Launch</a>
    </div>
    <form class="filters" onSubmit=${submit} key=${key} aria-label="Filter runs">
      <label>Status
        <select name="status" value=${filters.get("status") || ""} onChange=${(e) => setFilter("status", e.target.value)}>
          ${STATUSES.map((s) => html`<option value=${s}>${s || "any"}</option>`)}
        </select>
      </label>
      <label>Project id <input name="project" inputmode="numeric" size="5" defaultValue=${filters.get("project") || ""} /></label>
      <label>Tag <input name="tag" size="10" defaultValue=${filters.get("tag") || ""} /></label>
      <label>Label <input name="label" placeholder="key=value" size="12" defaultValue=${filters.get("label") || ""} /></label>
      <button type="submit">Filter</button>
    </form>
    <${ErrorBox} error=${error} />
    ${runs === null ? html`<${Loading} what="runs" />` : html`<${RunTable} runs=${runs} />`}
    ${cursor && html`<button type="button" onClick=${() => load(true)}>Load more</button>`}
  </section>`;
}

function duration(r) {
  if (!r.started_at) return "";
  const end = r.finished_at ? new Date(r.finished_at) : new Date();
  return fmtDuration(end - new Date(r.started_at));
}

function RunTable({ runs }) {
  if (runs.length === 0) return html`<p class="muted">No runs match.</p>`;
  return html`<div class="table-wrap"><table class="runs" aria-label="Runs">
    <thead><tr><th scope="col">Run</th><th scope="col">Status</th><th scope="col">Playbook</th>
      <th scope="col">Project</th><th scope="col">Created</th><th scope="col">Duration</th></tr></thead>
    <tbody>${runs.map(
      (r) => html`<tr data-run=${r.id}>
        <td><a href=${`#/runs/${r.id}`}>#${r.id}</a></td>
        <td><${Status} status=${r.status} /></td>
        <td>${r.playbook}${r.tag ? html` <span class="tag">${r.tag}</span>` : ""}</td>
        <td>${r.project_id}</td>
        <td>${fmtTime(r.created_at)}</td>
        <td>${duration(r)}</td>
      </tr>`,
    )}</tbody>
  </table></div>`;
}
