// troupe's web UI: the shell (login, navigation, theme) and the hash router (`#/runs/42`), so
// the server serves one page and needs no fallback route.
import { html, render, useState, useEffect, useRef } from "./html.js";
import { api, token, setToken, onUnauthorized } from "./api.js";
import { RunsPage } from "./runs.js";
import { RunPage } from "./run.js";
import { LaunchPage } from "./launch.js";
import { InventoriesPage, InventoryPage } from "./inventories.js";
import { ProjectsPage, ProjectPage, TemplatesPage, TemplatePage, JobsPage, JobPage, EventsPage, SchedulesPage, WorkersPage } from "./resources.js";
import { FlowsPage, FlowPage, ExecutionsPage, ExecutionPage } from "./flows.js";

const NAV = [
  ["runs", "Runs"],
  ["launch", "Launch"],
  ["projects", "Projects"],
  ["inventories", "Inventories"],
  ["templates", "Templates"],
  ["jobs", "Jobs"],
  ["events", "Events"],
  ["flows", "Flows"],
  ["executions", "Executions"],
  ["schedules", "Schedules"],
  ["workers", "Workers"],
];

// `#/runs/42?x=1` -> { parts: ["runs", "42"], query: URLSearchParams }
function parseHash() {
  const raw = location.hash.replace(/^#\/?/, "");
  const [path, q] = raw.split("?");
  return { parts: path.split("/").filter(Boolean).map(decodeURIComponent), query: new URLSearchParams(q || "") };
}

function useRoute() {
  const [route, setRoute] = useState(parseHash());
  useEffect(() => {
    const on = () => setRoute(parseHash());
    addEventListener("hashchange", on);
    return () => removeEventListener("hashchange", on);
  }, []);
  return route;
}

function page({ parts, query }) {
  const [section, id] = parts;
  switch (section) {
    case undefined:
    case "runs":
      return id ? html`<${RunPage} key=${id} id=${Number(id)} />` : html`<${RunsPage} query=${query} />`;
    case "launch":
      return html`<${LaunchPage} query=${query} />`;
    case "inventories":
      return id ? html`<${InventoryPage} key=${id} id=${id} />` : html`<${InventoriesPage} />`;
    case "projects":
      return id ? html`<${ProjectPage} key=${id} id=${id} />` : html`<${ProjectsPage} />`;
    case "templates":
      return id ? html`<${TemplatePage} key=${id} id=${id} />` : html`<${TemplatesPage} />`;
    case "jobs":
      return id ? html`<${JobPage} key=${id} id=${id} />` : html`<${JobsPage} />`;
    case "events":
      return html`<${EventsPage} />`;
    case "flows":
      return id ? html`<${FlowPage} key=${id} name=${id} />` : html`<${FlowsPage} />`;
    case "executions":
      return id ? html`<${ExecutionPage} key=${id} id=${id} />` : html`<${ExecutionsPage} query=${query} />`;
    case "schedules":
      return html`<${SchedulesPage} />`;
    case "workers":
      return html`<${WorkersPage} />`;
    default:
      return html`<section><h1>Not found</h1><p>No page at <code>${location.hash}</code>.</p></section>`;
  }
}

const THEMES = ["auto", "light", "dark"];

function useTheme() {
  const [theme, setTheme] = useState(localStorage.getItem("troupe.theme") || "auto");
  useEffect(() => {
    document.documentElement.dataset.theme = theme;
    localStorage.setItem("troupe.theme", theme);
  }, [theme]);
  return [theme, () => setTheme(THEMES[(THEMES.indexOf(theme) + 1) % THEMES.length])];
}

function Login({ onLogin }) {
  const [value, setValue] = useState("");
  const [error, setError] = useState(null);
  const [busy, setBusy] = useState(false);
  const input = useRef();
  useEffect(() => input.current?.focus(), []);
  async function submit(e) {
    e.preventDefault();
    const tok = value.trim();
    if (!tok) {
      setError("Enter an API token.");
      return;
    }
    setBusy(true);
    setError(null);
    try {
      await api("/runs?limit=1", { tok });
      setToken(tok);
      onLogin();
    } catch (err) {
      setError(err.status === 401 ? "That token was refused: it is unknown, revoked or expired." : err.message);
    } finally {
      setBusy(false);
    }
  }
  return html`<main id="main" class="login">
    <form onSubmit=${submit} aria-labelledby="login-title">
      <h1 id="login-title">troupe</h1>
      <p>Sign in with an API token (<code>troupe token create</code>, or the admin token
        <code>serve</code> printed).</p>
      <label for="token">API token</label>
      <input id="token" name="token" type="password" autocomplete="current-password" ref=${input}
        value=${value} onInput=${(e) => setValue(e.target.value)}
        aria-invalid=${error ? "true" : "false"} aria-describedby=${error ? "login-error" : undefined} />
      ${error && html`<p id="login-error" class="error" role="alert">${error}</p>`}
      <button type="submit" class="primary" disabled=${busy}>Log in</button>
    </form>
  </main>`;
}

function Shell({ route, onLogout }) {
  const [theme, nextTheme] = useTheme();
  const [menu, setMenu] = useState(false);
  const main = useRef();
  const section = route.parts[0] || "runs";
  useEffect(() => setMenu(false), [route]);
  function skip(e) {
    e.preventDefault();
    main.current?.focus();
  }
  return html`
    <a class="skip" href="" onClick=${skip}>Skip to content</a>
    <header class="top">
      <a class="brand" href="#/runs">troupe</a>
      <button type="button" class="menu-toggle" aria-expanded=${menu} aria-controls="nav"
        onClick=${() => setMenu(!menu)}>Menu</button>
      <nav id="nav" class=${menu ? "open" : ""} aria-label="Sections">
        ${NAV.map(([k, label]) => html`<a href=${`#/${k}`} aria-current=${section === k ? "page" : undefined}>${label}</a>`)}
      </nav>
      <div class="top-actions">
        <button type="button" onClick=${nextTheme} title="Colour theme">Theme: ${theme}</button>
        <button type="button" onClick=${onLogout}>Log out</button>
      </div>
    </header>
    <main id="main" tabindex="-1" ref=${main}>${page(route)}</main>`;
}

function App() {
  const route = useRoute();
  const [authed, setAuthed] = useState(Boolean(token()));
  useEffect(
    () =>
      onUnauthorized(() => {
        setToken(null);
        setAuthed(false);
      }),
    [],
  );
  if (!authed) return html`<${Login} onLogin=${() => setAuthed(true)} />`;
  return html`<${Shell} route=${route} onLogout=${() => {
    setToken(null);
    setAuthed(false);
  }} />`;
}

// The boot message is replaced, not kept beside the app (render appends to what is there).
const root = document.getElementById("app");
root.textContent = "";
render(html`<${App} />`, root);
