// The other resources, read-mostly: projects, templates, jobs and their units (the RedRunner
// view: each unit's latest action runs), events received and the rules in force, schedules
// and workers. Each is a list (the shared Table) and, where it has one, a detail page.
import { html, useState } from "./html.js";
import { api } from "./api.js";
import { go, fmtTime, Status, ErrorBox, Loading, Table, Fields, Json, useApi } from "./common.js";

// A page that loads `path` and shows `body(data)`.
function Resource({ title, path, children: body, actions }) {
  const { data, error, reload } = useApi(path);
  return html`<section>
    <div class="page-head"><h1>${title}</h1>${actions}<button type="button" onClick=${reload}>Refresh</button></div>
    <${ErrorBox} error=${error} />
    ${data ? body(data, reload) : !error && html`<${Loading} what=${title.toLowerCase()} />`}
  </section>`;
}

function RunLinks({ ids }) {
  if (!ids?.length) return "";
  return html`${ids.map((id, i) => html`${i ? ", " : ""}<a href=${`#/runs/${id}`}>#${id}</a>`)}`;
}

export function ProjectsPage() {
  return html`<${Resource} title="Projects" path="/projects">${(d) =>
    html`<${Table} label="Projects" rows=${d.projects} href=${(p) => `projects/${p.id}`}
      cols=${[
        ["Name", (p) => p.name],
        ["Source", (p) => p.source?.kind ?? Object.keys(p.source || {})[0] ?? ""],
        ["Created", (p) => fmtTime(p.created_at)],
      ]} />`}<//>`;
}

export function ProjectPage({ id }) {
  const playbooks = useApi(`/projects/${id}/playbooks`);
  const [syncMsg, setSyncMsg] = useState(null);
  async function sync() {
    try {
      await api(`/projects/${id}/sync`, { method: "POST" });
      setSyncMsg("Sync started.");
    } catch (e) {
      setSyncMsg(e.message);
    }
  }
  return html`<${Resource} title=${`Project ${id}`} path=${`/projects/${id}`}
    actions=${html`<button type="button" onClick=${sync}>Sync</button>`}>${(p) => html`
      ${syncMsg && html`<p role="status">${syncMsg}</p>`}
      <${Fields} value=${p} />
      <h2>Playbooks</h2>
      <ul>${(playbooks.data?.playbooks || []).map(
        (pb) => html`<li>${pb}</li>`,
      )}</ul>
      <p><a class="button primary" href=${`#/launch?project=${p.id}`}>Launch a run</a>
        <a class="button" href=${`#/runs?project=${p.id}`}>Its runs</a></p>`}<//>`;
}

export function TemplatesPage() {
  return html`<${Resource} title="Templates" path="/templates">${(d) =>
    html`<${Table} label="Templates" rows=${d.templates} href=${(t) => `templates/${t.id}`}
      cols=${[
        ["Name", (t) => t.name],
        ["Playbook", (t) => t.playbook],
        ["Project", (t) => t.project_id],
        ["Inventory", (t) => t.inventory_id],
        ["Overrides", (t) => t.allow_overrides.join(", ")],
      ]} />`}<//>`;
}

export function TemplatePage({ id }) {
  return html`<${Resource} title=${`Template ${id}`} path=${`/templates/${id}`}>${(t) => html`
    <p><a class="button primary" href=${`#/launch?template=${t.id}`}>Launch</a></p>
    <${Fields} value=${t} />`}<//>`;
}

export function JobsPage() {
  return html`<${Resource} title="Jobs" path="/jobs">${(d) =>
    html`<${Table} label="Jobs" rows=${d.jobs} href=${(j) => `jobs/${j.id}`}
      cols=${[
        ["Tag", (j) => j.tag],
        ["Units", (j) => j.units.length],
        ["Project", (j) => j.project_id ?? ""],
        ["Created", (j) => fmtTime(j.created_at)],
      ]} />`}<//>`;
}

// A job's units with, per unit, its latest runs (one per action), as RedRunner shows them.
export function JobPage({ id }) {
  return html`<${Resource} title=${`Job ${id}`} path=${`/jobs/${id}`}>${(j) => html`
    <p>Tag <strong>${j.tag}</strong> · <${Status} status=${j.status} /> · created ${fmtTime(j.created_at)}</p>
    <div class="table-wrap"><table aria-label="Units">
      <thead><tr><th scope="col">Unit</th><th scope="col">Status</th><th scope="col">Latest action runs</th></tr></thead>
      <tbody>${j.units.map(
        (u) => html`<tr><th scope="row">${u.name}</th><td><${Status} status=${u.status} /></td>
          <td>${u.runs.length
            ? u.runs.map((r) => html`<span class="unit-run"><a href=${`#/runs/${r.id}`}>#${r.id}</a>
                ${r.playbook} <${Status} status=${r.status} /></span>`)
            : html`<span class="muted">no runs</span>`}</td></tr>`,
      )}</tbody>
    </table></div>`}<//>`;
}

export function EventsPage() {
  const rules = useApi("/rules");
  return html`<${Resource} title="Events" path="/events?limit=100">${(d) => html`
    <${Table} label="Events received" rows=${d.events}
      cols=${[
        ["Id", (e) => e.id],
        ["Received", (e) => fmtTime(e.received_at)],
        ["Source", (e) => e.source],
        ["Routing key", (e) => e.routing_key],
        ["Status", (e) => html`<${Status} status=${e.status} />`],
        ["Runs", (e) => html`<${RunLinks} ids=${e.run_ids} />`],
        ["Executions", (e) => e.execution_ids.map((x) => html`<a href=${`#/executions/${x}`}>#${x} </a>`)],
        ["Reason", (e) => e.reason ?? ""],
      ]} empty="No events received yet." />
    <h2>Rules in force</h2>
    <${ErrorBox} error=${rules.error} />
    ${rules.data && html`
      <p class="muted">Revision ${rules.data.in_force_revision} in force (latest ${rules.data.revision})${rules.data.updated_at ? `, updated ${fmtTime(rules.data.updated_at)}` : ""}.</p>
      ${rules.data.explain.length > 0 && html`<ul class="explain">${rules.data.explain.map((line) => html`<li>${line}</li>`)}</ul>`}
      <h3>Sources</h3>
      <${Table} label="Sources" rows=${Object.entries(rules.data.sources).map(([name, s]) => ({ name, ...s }))}
        cols=${[
          ["Source", (s) => s.name],
          ["Kind", (s) => s.type],
          ["State", (s) => s.state],
          ["Delivered", (s) => s.delivered],
          ["Last error", (s) => s.last_error ?? ""],
        ]} empty="No sources." />
      <details><summary>Rules document</summary><${Json} value=${rules.data.document} /></details>`}`}<//>`;
}

export function SchedulesPage() {
  return html`<${Resource} title="Schedules" path="/schedules">${(d) =>
    html`<${Table} label="Schedules" rows=${d.schedules}
      cols=${[
        ["Name", (s) => s.name],
        ["Cron", (s) => html`<code>${s.cron}</code> ${s.timezone}`],
        ["Next", (s) => fmtTime(s.next_fire_at)],
        ["Last", (s) => fmtTime(s.last_fire_at)],
        ["Last result", (s) => s.last_result ?? ""],
        ["Target", (s) => JSON.stringify(s.target)],
      ]} empty="No schedules." />`}<//>`;
}

export function WorkersPage() {
  async function drain(id, reload) {
    try {
      await api(`/workers/${encodeURIComponent(id)}/drain`, { method: "POST" });
    } finally {
      reload();
    }
  }
  return html`<${Resource} title="Workers" path="/workers">${(d, reload) =>
    html`<${Table} label="Workers" rows=${d.workers}
      cols=${[
        ["Name", (w) => w.name],
        ["Status", (w) => html`<${Status} status=${w.status} />`],
        ["Kind", (w) => w.kind],
        ["Runs", (w) => html`${w.active_runs}/${w.capacity} <${RunLinks} ids=${w.runs} />`],
        ["Labels", (w) => w.labels.join(", ")],
        ["Heartbeat", (w) => fmtTime(w.last_heartbeat)],
        ["", (w) => (w.status === "active" ? html`<button type="button" onClick=${() => drain(w.id, reload)}>Drain</button>` : "")],
      ]} empty="No workers." />`}<//>`;
}

