// Flows and their executions; an execution's steps drawn as a graph (SVG): one lane per phase
// (pre, steps, on_success/on_failure, finally), steps in order along it, each coloured by its
// status and linked to the runs and executions it started. Refreshed while it runs.
import { html, useEffect } from "./html.js";
import { go, fmtTime, fmtDuration, Status, ErrorBox, Loading, Table, Fields, Json, useApi } from "./common.js";

export function FlowsPage() {
  const { data, error } = useApi("/flows");
  return html`<section>
    <h1>Flows</h1>
    <${ErrorBox} error=${error} />
    ${data
      ? html`<${Table} label="Flows" rows=${data.flows} href=${(f) => `flows/${encodeURIComponent(f.name)}`}
          cols=${[
            ["Name", (f) => f.name],
            ["Version", (f) => f.version],
            ["Inputs", (f) => f.inputs.join(", ")],
            ["Description", (f) => f.description ?? ""],
            ["Created", (f) => fmtTime(f.created_at)],
          ]} empty="No flows." />`
      : !error && html`<${Loading} what="flows" />`}
  </section>`;
}

export function FlowPage({ name }) {
  const flow = useApi(`/flows/${encodeURIComponent(name)}`);
  return html`<section>
    <div class="page-head"><h1>Flow ${name}</h1>
      <a class="button" href=${`#/executions?flow=${encodeURIComponent(name)}`}>Its executions</a></div>
    <${ErrorBox} error=${flow.error} />
    ${flow.data ? html`<${Fields} value=${flow.data} />` : !flow.error && html`<${Loading} what="flow" />`}
  </section>`;
}

export function ExecutionsPage({ query }) {
  const q = new URLSearchParams();
  for (const k of ["flow", "status"]) if (query.get(k)) q.set(k, query.get(k));
  q.set("limit", "100");
  const { data, error } = useApi(`/executions?${q}`);
  return html`<section>
    <h1>Executions${query.get("flow") ? ` of ${query.get("flow")}` : ""}</h1>
    <${ErrorBox} error=${error} />
    ${data
      ? html`<${Table} label="Executions" rows=${data.executions} href=${(x) => `executions/${x.id}`}
          cols=${[
            ["Id", (x) => `#${x.id}`],
            ["Flow", (x) => `${x.flow} v${x.version}`],
            ["Status", (x) => html`<${Status} status=${x.status} />`],
            ["Started by", (x) => x.started_by],
            ["Created", (x) => fmtTime(x.created_at)],
            ["Error", (x) => x.error ?? ""],
          ]} empty="No executions." />`
      : !error && html`<${Loading} what="executions" />`}
  </section>`;
}

const LANES = ["pre", "steps", "on_success", "on_failure", "finally"];
const NODE_W = 150;
const NODE_H = 44;
const GAP_X = 36;
const GAP_Y = 30;

// The steps as a graph: lanes per phase, arrows along each lane and from the end of one lane
// to the start of the next that has steps.
export function StepGraph({ steps }) {
  const lanes = LANES.map((phase) => steps.filter((s) => s.phase === phase).sort((a, b) => a.position - b.position)).filter(
    (l) => l.length > 0,
  );
  if (lanes.length === 0) return html`<p class="muted">No steps yet.</p>`;
  const width = Math.max(...lanes.map((l) => l.length)) * (NODE_W + GAP_X) + 90;
  const height = lanes.length * (NODE_H + GAP_Y) + GAP_Y;
  const pos = (li, si) => ({ x: 90 + si * (NODE_W + GAP_X), y: GAP_Y / 2 + li * (NODE_H + GAP_Y) });
  const edges = [];
  lanes.forEach((lane, li) => {
    lane.forEach((_, si) => {
      if (si > 0) {
        const a = pos(li, si - 1);
        const b = pos(li, si);
        edges.push([a.x + NODE_W, a.y + NODE_H / 2, b.x, b.y + NODE_H / 2]);
      }
    });
    if (li > 0) {
      const a = pos(li - 1, lanes[li - 1].length - 1);
      const b = pos(li, 0);
      edges.push([a.x + NODE_W / 2, a.y + NODE_H, b.x + NODE_W / 2, b.y]);
    }
  });
  return html`<div class="graph-wrap"><svg class="graph" viewBox=${`0 0 ${width} ${height}`} width=${width} height=${height}
      role="img" aria-label=${`Steps: ${steps.map((s) => `${s.key} ${s.status}`).join(", ")}`}>
    <defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" orient="auto-start-reverse">
      <path d="M0,0 L10,5 L0,10 z" class="arrow-head" /></marker></defs>
    ${lanes.map((lane, li) => html`<text class="lane" x="4" y=${pos(li, 0).y + NODE_H / 2 + 4}>${lane[0].phase}</text>`)}
    ${edges.map(([x1, y1, x2, y2]) => html`<line class="edge" x1=${x1} y1=${y1} x2=${x2} y2=${y2} marker-end="url(#arrow)" />`)}
    ${lanes.map((lane, li) =>
      lane.map((s, si) => {
        const p = pos(li, si);
        const target = s.run_ids.length ? `runs/${s.run_ids[s.run_ids.length - 1]}` : s.execution_ids.length ? `executions/${s.execution_ids[s.execution_ids.length - 1]}` : null;
        const node = html`<g class=${`node s-${s.status}`} transform=${`translate(${p.x},${p.y})`}>
          <title>${s.key} (${s.kind}): ${s.status}${s.error ? ` — ${s.error}` : ""}</title>
          <rect width=${NODE_W} height=${NODE_H} rx="6" />
          <text x="8" y="18" class="n-key">${s.key.length > 18 ? `${s.key.slice(0, 17)}…` : s.key}</text>
          <text x="8" y="35" class="n-status">${s.kind} · ${s.status}</text>
        </g>`;
        return target ? html`<a href=${`#/${target}`} onClick=${(e) => {
          e.preventDefault();
          go(target);
        }}>${node}</a>` : node;
      }),
    )}
  </svg></div>`;
}

export function ExecutionPage({ id }) {
  const { data, error, reload } = useApi(`/executions/${id}`);
  const running = data && ["queued", "running"].includes(data.execution.status);
  useEffect(() => {
    if (!running) return undefined;
    const t = setInterval(reload, 2000);
    return () => clearInterval(t);
  }, [running]);
  if (!data) return error ? html`<${ErrorBox} error=${error} />` : html`<${Loading} what="execution" />`;
  const x = data.execution;
  return html`<section>
    <div class="page-head"><h1>Execution #${x.id}</h1><${Status} status=${x.status} /></div>
    <p><a href=${`#/flows/${encodeURIComponent(x.flow)}`}>${x.flow}</a> v${x.version} · started by ${x.started_by} · ${fmtTime(x.created_at)}
      ${x.parent && html` · child of <a href=${`#/executions/${x.parent.execution_id}`}>#${x.parent.execution_id}</a>`}</p>
    ${x.error && html`<p class="error">${x.error}</p>`}
    <h2>Steps</h2>
    <${StepGraph} steps=${data.steps} />
    <${Table} label="Steps" rows=${data.steps}
      cols=${[
        ["Step", (s) => s.key],
        ["Phase", (s) => s.phase],
        ["Status", (s) => html`<${Status} status=${s.status} />`],
        ["Attempts", (s) => s.attempts],
        ["Duration", (s) => (s.started_at && s.finished_at ? fmtDuration(new Date(s.finished_at) - new Date(s.started_at)) : "")],
        ["Runs", (s) => s.run_ids.map((r) => html`<a href=${`#/runs/${r}`}>#${r} </a>`)],
        ["Error", (s) => s.error ?? ""],
      ]} />
    <details><summary>Inputs</summary><${Json} value=${x.inputs} /></details>
  </section>`;
}
