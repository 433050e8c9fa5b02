// Launch a run: from a template, or a project + playbook + inventory; extra vars in YAML or
// JSON checked as you type (errors with their line); then the live run page.
import { html, useState, useEffect } from "./html.js";
import { api } from "./api.js";
import { go, ErrorBox, useApi } from "./common.js";

// The YAML library (about 70 modules) is loaded when a page first needs it, not with the app.
let yaml = null;
let yamlLoading = null;
export function useYaml() {
  const [, setLoaded] = useState(Boolean(yaml));
  useEffect(() => {
    if (yaml) return;
    yamlLoading ??= import("../vendor/yaml/index.js").then((m) => (yaml = m));
    yamlLoading.then(() => setLoaded(true));
  }, []);
  return yaml;
}

// Extra vars text -> { value } or { error: {message, line} } ({ pending } until the YAML
// library is loaded). Empty text is no extra vars.
export function parseVars(text) {
  if (!text.trim()) return { value: null };
  if (!yaml) return { pending: true };
  let value;
  try {
    value = yaml.parse(text, { prettyErrors: true });
  } catch (e) {
    const line = e.linePos?.[0]?.line;
    return { error: { message: e.message.split("\n")[0], line } };
  }
  if (value === null || typeof value !== "object" || Array.isArray(value)) {
    return { error: { message: "Extra vars must be a mapping (key: value), not a list or a single value." } };
  }
  return { value };
}

function csv(text) {
  return text
    .split(",")
    .map((s) => s.trim())
    .filter(Boolean);
}

export function VarsEditor({ id, value, onInput, parsed }) {
  const err = parsed.error;
  return html`<div class="field">
    <label for=${id}>Extra vars <span class="muted">(YAML or JSON)</span></label>
    <textarea id=${id} class="code" rows="6" spellcheck="false" value=${value}
      onInput=${(e) => onInput(e.target.value)} aria-invalid=${err ? "true" : "false"}
      aria-describedby=${err ? `${id}-error` : undefined} placeholder="greeting: hi"></textarea>
    ${err && html`<p id=${`${id}-error`} class="error inline" role="alert">${err.line ? `Line ${err.line}: ` : ""}${err.message}</p>`}
  </div>`;
}

function FieldError({ error, field }) {
  if (!error || error.field !== field) return null;
  return html`<p class="error inline" role="alert">${error.message}</p>`;
}

export function LaunchPage({ query }) {
  const [mode, setMode] = useState(query.get("template") ? "template" : "project");
  const projects = useApi("/projects");
  const inventories = useApi("/inventories");
  const templates = useApi("/templates");
  const [form, setForm] = useState({
    template: query.get("template") || "",
    project: query.get("project") || "",
    playbook: "",
    inventory: "",
    limit: "",
    tags: "",
    skip_tags: "",
    check: false,
    diff: false,
    verbosity: "0",
    forks: "",
    timeout_s: "",
  });
  useYaml();
  const [vars, setVars] = useState("");
  const parsed = parseVars(vars);
  const [error, setError] = useState(null);
  const [busy, setBusy] = useState(false);
  const playbooks = useApi(form.project ? `/projects/${form.project}/playbooks` : null, [form.project]);
  const set = (k) => (e) => setForm({ ...form, [k]: e.target.type === "checkbox" ? e.target.checked : e.target.value });

  useEffect(() => {
    const list = projects.data?.projects;
    if (!form.project && list?.length) setForm((f) => ({ ...f, project: String(list[0].id) }));
  }, [projects.data]);
  useEffect(() => {
    const list = playbooks.data?.playbooks;
    if (list?.length && !list.includes(form.playbook)) setForm((f) => ({ ...f, playbook: list[0] }));
  }, [playbooks.data]);

  function options() {
    const o = {};
    if (form.limit.trim()) o.limit = form.limit.trim();
    if (csv(form.tags).length) o.tags = csv(form.tags);
    if (csv(form.skip_tags).length) o.skip_tags = csv(form.skip_tags);
    if (form.check) o.check = true;
    if (form.diff) o.diff = true;
    if (Number(form.verbosity)) o.verbosity = Number(form.verbosity);
    if (form.forks) o.forks = Number(form.forks);
    if (form.timeout_s) o.timeout_s = Number(form.timeout_s);
    if (parsed.value) o.extra_vars = parsed.value;
    return o;
  }

  async function submit(e) {
    e.preventDefault();
    if (parsed.error || parsed.pending) return;
    setBusy(true);
    setError(null);
    try {
      let run;
      if (mode === "template") {
        if (!form.template) throw { message: "Choose a template.", field: "template" };
        run = await api(`/templates/${form.template}/launch`, { method: "POST", body: options() });
      } else {
        if (!form.project || !form.playbook) throw { message: "Choose a project and a playbook.", field: "playbook" };
        const body = { project: Number(form.project), playbook: form.playbook, ...options() };
        if (form.inventory) body.inventory = Number(form.inventory);
        run = await api("/runs", { method: "POST", body });
      }
      go(`runs/${run.id}`);
    } catch (err) {
      setError(err);
    } finally {
      setBusy(false);
    }
  }

  // Errors about a field on the form are shown next to it; others above the button.
  const inline = ["template", "project", "playbook", "inventory", "limit", "extra_vars"];
  const fieldErr = inline.includes(error?.field) && error.field !== "extra_vars" ? error : null;
  return html`<section>
    <h1>Launch a run</h1>
    <form class="form launch" onSubmit=${submit}>
      <fieldset class="mode">
        <legend>Launch from</legend>
        <label><input type="radio" name="mode" value="project" checked=${mode === "project"} onChange=${() => setMode("project")} /> Project and playbook</label>
        <label><input type="radio" name="mode" value="template" checked=${mode === "template"} onChange=${() => setMode("template")} /> Template</label>
      </fieldset>
      ${mode === "template"
        ? html`<div class="field">
            <label for="l-template">Template</label>
            <select id="l-template" value=${form.template} onChange=${set("template")}>
              <option value="">Choose…</option>
              ${(templates.data?.templates || []).map((t) => html`<option value=${t.id}>${t.name} (${t.playbook})</option>`)}
            </select>
            <p class="muted">Only the options the template allows to override are sent.</p>
            <${FieldError} error=${fieldErr} field="template" />
          </div>`
        : html`<div class="field">
              <label for="l-project">Project</label>
              <select id="l-project" value=${form.project} onChange=${set("project")}>
                ${(projects.data?.projects || []).map((p) => html`<option value=${p.id}>${p.name}</option>`)}
              </select>
              <${FieldError} error=${fieldErr} field="project" />
            </div>
            <div class="field">
              <label for="l-playbook">Playbook</label>
              <select id="l-playbook" value=${form.playbook} onChange=${set("playbook")}>
                ${(playbooks.data?.playbooks || []).map((p) => html`<option value=${p}>${p}</option>`)}
              </select>
              <${FieldError} error=${fieldErr} field="playbook" />
            </div>
            <div class="field">
              <label for="l-inventory">Inventory</label>
              <select id="l-inventory" value=${form.inventory} onChange=${set("inventory")}>
                <option value="">None (the project's ansible.cfg)</option>
                ${(inventories.data?.inventories || []).map((i) => html`<option value=${i.id}>${i.name} (${i.host_count} hosts)</option>`)}
              </select>
              <${FieldError} error=${fieldErr} field="inventory" />
            </div>`}
      <${VarsEditor} id="l-vars" value=${vars} onInput=${setVars} parsed=${parsed} />
      ${error?.field === "extra_vars" && html`<p class="error inline" role="alert">${error.message}</p>`}
      <details class="options">
        <summary>Options</summary>
        <div class="field"><label for="l-limit">Limit</label><input id="l-limit" value=${form.limit} onInput=${set("limit")} placeholder="web:&db" />
          <${FieldError} error=${fieldErr} field="limit" /></div>
        <div class="field"><label for="l-tags">Tags</label><input id="l-tags" value=${form.tags} onInput=${set("tags")} placeholder="a, b" /></div>
        <div class="field"><label for="l-skip">Skip tags</label><input id="l-skip" value=${form.skip_tags} onInput=${set("skip_tags")} /></div>
        <div class="field row">
          <label><input type="checkbox" checked=${form.check} onChange=${set("check")} /> Check mode</label>
          <label><input type="checkbox" checked=${form.diff} onChange=${set("diff")} /> Diff</label>
        </div>
        <div class="field"><label for="l-verbosity">Verbosity</label>
          <select id="l-verbosity" value=${form.verbosity} onChange=${set("verbosity")}>${[0, 1, 2, 3, 4].map((v) => html`<option value=${v}>${v ? `-${"v".repeat(v)}` : "normal"}</option>`)}</select></div>
        <div class="field"><label for="l-forks">Forks</label><input id="l-forks" type="number" min="1" value=${form.forks} onInput=${set("forks")} /></div>
        <div class="field"><label for="l-timeout">Timeout (s)</label><input id="l-timeout" type="number" min="1" value=${form.timeout_s} onInput=${set("timeout_s")} /></div>
      </details>
      ${error && !inline.includes(error.field) && html`<${ErrorBox} error=${error} />`}
      <button type="submit" class="primary" disabled=${busy || Boolean(parsed.error || parsed.pending)}>Launch</button>
    </form>
  </section>`;
}
