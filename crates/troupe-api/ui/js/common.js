// What the pages share: navigation, formatting, loading data, and small components.
import { html, useState, useEffect, useCallback } from "./html.js";
import { api } from "./api.js";

export function go(path) {
  location.hash = `#/${path}`;
}

export function fmtTime(iso) {
  if (!iso) return "";
  const d = new Date(iso);
  return d.toLocaleString(undefined, { dateStyle: "short", timeStyle: "medium" });
}

export function fmtDuration(ms) {
  if (ms == null || !isFinite(ms) || ms < 0) return "";
  if (ms < 1000) return `${Math.round(ms)} ms`;
  const s = ms / 1000;
  if (s < 60) return `${s.toFixed(1)} s`;
  const m = Math.floor(s / 60);
  return `${m} min ${Math.round(s - m * 60)} s`;
}

// Loads `path` and reloads it when `deps` change; `reload()` loads again.
export function useApi(path, deps = []) {
  const [state, setState] = useState({ data: null, error: null, loading: true });
  const [tick, setTick] = useState(0);
  useEffect(() => {
    if (!path) return undefined;
    const ctl = new AbortController();
    setState((s) => ({ ...s, loading: true }));
    api(path, { signal: ctl.signal }).then(
      (data) => setState({ data, error: null, loading: false }),
      (error) => ctl.signal.aborted || setState({ data: null, error, loading: false }),
    );
    return () => ctl.abort();
  }, [path, tick, ...deps]);
  const reload = useCallback(() => setTick((t) => t + 1), []);
  return { ...state, reload };
}

export function Status({ status }) {
  return html`<span class=${`status s-${status}`}>${status}</span>`;
}

export function ErrorBox({ error }) {
  if (!error) return null;
  return html`<p class="error" role="alert">${error.message}${error.field ? html` (<code>${error.field}</code>)` : ""}</p>`;
}

export function Loading({ what }) {
  return html`<p class="muted" aria-live="polite">Loading ${what}…</p>`;
}

// A table of `rows` with `cols` = [[header, row => cell], ...]; rows link to `href(row)`.
export function Table({ rows, cols, href, empty = "Nothing yet.", label }) {
  if (!rows || rows.length === 0) return html`<p class="muted">${empty}</p>`;
  return html`<div class="table-wrap"><table aria-label=${label}>
    <thead><tr>${cols.map(([h]) => html`<th scope="col">${h}</th>`)}</tr></thead>
    <tbody>${rows.map(
      (r) => html`<tr>${cols.map(([, cell], i) => {
        const v = cell(r);
        return html`<td>${i === 0 && href ? html`<a href=${`#/${href(r)}`}>${v}</a>` : v}</td>`;
      })}</tr>`,
    )}</tbody>
  </table></div>`;
}

// A value as readable JSON (details of a resource).
export function Json({ value }) {
  return html`<pre class="json">${JSON.stringify(value, null, 2)}</pre>`;
}

// An object's scalar fields as a definition list; nested values as JSON.
export function Fields({ value, skip = [] }) {
  const entries = Object.entries(value || {}).filter(([k]) => !skip.includes(k));
  return html`<dl class="fields">${entries.map(
    ([k, v]) => html`<dt>${k}</dt><dd>${v !== null && typeof v === "object" ? html`<${Json} value=${v} />` : String(v)}</dd>`,
  )}</dl>`;
}
