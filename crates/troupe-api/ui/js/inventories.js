// Inventories: the list, and one inventory's editor (hosts in YAML or INI, group vars in YAML).
// The server checks an inventory the way runs will read it; its errors (with line and column)
// are shown under the field they are about, and "Go to line" selects that line.
import { html, useState, useEffect, useRef } from "./html.js";
import { api } from "./api.js";
import { go, fmtTime, ErrorBox, Loading, Table, useApi } from "./common.js";
import { parseVars, useYaml } from "./launch.js";

export function InventoriesPage() {
  const { data, error } = useApi("/inventories");
  return html`<section>
    <div class="page-head"><h1>Inventories</h1><a class="button primary" href="#/inventories/new">New inventory</a></div>
    <${ErrorBox} error=${error} />
    ${data
      ? html`<${Table} label="Inventories" rows=${data.inventories} href=${(i) => `inventories/${i.id}`}
          cols=${[
            ["Name", (i) => i.name],
            ["Format", (i) => i.format],
            ["Hosts", (i) => i.host_count],
            ["Revision", (i) => i.revision],
            ["Created", (i) => fmtTime(i.created_at)],
          ]} />`
      : !error && html`<${Loading} what="inventories" />`}
  </section>`;
}

// "... at line 3, column 5: ..." -> 3
function lineOf(message) {
  const m = /line (\d+)/.exec(message || "");
  return m ? Number(m[1]) : null;
}

function selectLine(textarea, line) {
  if (!textarea || !line) return;
  const lines = textarea.value.split("\n");
  let start = 0;
  for (let i = 0; i < line - 1 && i < lines.length; i++) start += lines[i].length + 1;
  const end = start + (lines[line - 1]?.length ?? 0);
  textarea.focus();
  textarea.setSelectionRange(start, end);
}

function CodeField({ id, label, value, onInput, error, hint }) {
  const ref = useRef();
  const line = lineOf(error);
  return html`<div class="field">
    <label for=${id}>${label}</label>
    <textarea id=${id} class="code" rows="10" spellcheck="false" ref=${ref} value=${value}
      onInput=${(e) => onInput(e.target.value)} aria-invalid=${error ? "true" : "false"}
      aria-describedby=${error ? `${id}-error` : undefined}></textarea>
    ${hint && html`<p class="muted">${hint}</p>`}
    ${error && html`<p id=${`${id}-error`} class="error inline" role="alert">${error}
      ${line && html` <button type="button" class="link" onClick=${() => selectLine(ref.current, line)}>Go to line ${line}</button>`}</p>`}
  </div>`;
}

export function InventoryPage({ id }) {
  const isNew = id === "new";
  const [inv, setInv] = useState(null);
  const [form, setForm] = useState(isNew ? { name: "", env: "", version: "", format: "ini", hosts: "", vars: "" } : null);
  const [error, setError] = useState(null);
  const [saved, setSaved] = useState(null);
  const [busy, setBusy] = useState(false);
  useYaml();

  useEffect(() => {
    if (isNew) return;
    api(`/inventories/${id}`).then(
      (i) => {
        setInv(i);
        setForm({ name: i.name, env: i.env || "", version: i.version || "", format: i.format, hosts: i.hosts, vars: i.vars || "" });
      },
      setError,
    );
  }, [id]);

  if (!form) return error ? html`<${ErrorBox} error=${error} />` : html`<${Loading} what="inventory" />`;
  const set = (k) => (v) => {
    setForm({ ...form, [k]: v });
    setSaved(null);
  };
  // Group vars are YAML: checked here as you type; the server checks everything on save.
  const varsCheck = form.vars.trim() ? parseVars(form.vars) : { value: null };
  const varsLocal = varsCheck.error ? `invalid YAML${varsCheck.error.line ? ` at line ${varsCheck.error.line}` : ""}: ${varsCheck.error.message}` : null;
  const errorFor = (field) => (error && error.field === field ? error.message : null);

  async function save(e) {
    e.preventDefault();
    setBusy(true);
    setError(null);
    const body = {
      name: form.name.trim(),
      env: form.env.trim() || null,
      version: form.version.trim() || null,
      format: form.format,
      hosts: form.hosts,
      vars: form.vars.trim() ? form.vars : null,
    };
    try {
      const out = isNew
        ? await api("/inventories", { method: "POST", body })
        : await api(`/inventories/${id}`, { method: "PUT", body });
      setInv(out);
      setSaved(`Saved (revision ${out.revision}, ${out.host_count} hosts).`);
      if (isNew) go(`inventories/${out.id}`);
    } catch (err) {
      setError(err);
    } finally {
      setBusy(false);
    }
  }

  async function remove() {
    if (!confirm(`Delete inventory ${inv.name}?`)) return;
    try {
      await api(`/inventories/${id}`, { method: "DELETE" });
      go("inventories");
    } catch (err) {
      setError(err);
    }
  }

  const known = ["name", "env", "version", "hosts", "vars"];
  return html`<section>
    <h1>${isNew ? "New inventory" : `Inventory ${inv.name}`}</h1>
    ${inv && html`<p class="muted">Revision ${inv.revision} · ${inv.host_count} hosts · <a href=${`#/launch`}>launch a run</a></p>`}
    <form class="form" onSubmit=${save} aria-label="Inventory">
      <div class="field"><label for="i-name">Name</label>
        <input id="i-name" value=${form.name} onInput=${(e) => set("name")(e.target.value)} required
          aria-invalid=${errorFor("name") ? "true" : "false"} />
        ${errorFor("name") && html`<p class="error inline" role="alert">${errorFor("name")}</p>`}</div>
      <div class="field row">
        <label>Env <input value=${form.env} onInput=${(e) => set("env")(e.target.value)} /></label>
        <label>Version <input value=${form.version} onInput=${(e) => set("version")(e.target.value)} /></label>
        <label>Format
          <select value=${form.format} onChange=${(e) => set("format")(e.target.value)}>
            <option value="ini">INI</option><option value="yaml">YAML</option>
          </select></label>
      </div>
      <${CodeField} id="i-hosts" label="Hosts" value=${form.hosts} onInput=${set("hosts")} error=${errorFor("hosts")}
        hint=${form.format === "ini" ? "An Ansible INI inventory: [group] headers, host lines with key=value vars." : "An Ansible YAML inventory: all: hosts:, children:…"} />
      <${CodeField} id="i-vars" label="Group vars (YAML: group name → variables)" value=${form.vars} onInput=${set("vars")}
        error=${errorFor("vars") || varsLocal} />
      ${error && !known.includes(error.field) && html`<${ErrorBox} error=${error} />`}
      ${saved && html`<p class="ok" role="status">${saved}</p>`}
      <div class="actions">
        <button type="submit" class="primary" disabled=${busy}>${isNew ? "Create" : "Save"}</button>
        ${!isNew && html`<button type="button" class="danger" onClick=${remove}>Delete</button>`}
      </div>
    </form>
  </section>`;
}
