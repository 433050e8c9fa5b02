// The API client: the token (sessionStorage), JSON calls to /api/v1 with its errors, and
// Server-Sent Events read with fetch() so the Authorization header goes along (EventSource
// cannot send headers).

const TOKEN_KEY = "troupe.token";

export function token() {
  return sessionStorage.getItem(TOKEN_KEY);
}

export function setToken(value) {
  if (value) sessionStorage.setItem(TOKEN_KEY, value);
  else sessionStorage.removeItem(TOKEN_KEY);
}

// An error answered by the API: `{"error": {"code", "message", "field", "problems"}}`.
export class ApiError extends Error {
  constructor(status, detail) {
    super(detail.message || `HTTP ${status}`);
    this.status = status;
    this.code = detail.code || "http_error";
    this.field = detail.field || null;
    this.problems = detail.problems || [];
  }
}

// Listeners told when the API refuses the token (it expired or was revoked): the app logs out.
const unauthorized = new Set();
export function onUnauthorized(fn) {
  unauthorized.add(fn);
  return () => unauthorized.delete(fn);
}

function headers(extra, tok) {
  const h = { Accept: "application/json", ...extra };
  const t = tok ?? token();
  if (t) h.Authorization = `Bearer ${t}`;
  return h;
}

async function failure(res) {
  let detail = {};
  try {
    detail = (await res.json()).error || {};
  } catch {
    detail = { message: `${res.status} ${res.statusText}` };
  }
  return new ApiError(res.status, detail);
}

// Calls `path` (under /api/v1) and returns its JSON (null for 204). Throws ApiError.
export async function api(path, { method = "GET", body, tok, signal } = {}) {
  const init = { method, signal, headers: headers({}, tok) };
  if (body !== undefined) {
    init.body = JSON.stringify(body);
    init.headers["Content-Type"] = "application/json";
  }
  const res = await fetch(`/api/v1${path}`, init);
  if (!res.ok) {
    const err = await failure(res);
    if (res.status === 401 && tok === undefined) unauthorized.forEach((fn) => fn(err));
    throw err;
  }
  if (res.status === 204) return null;
  return res.json();
}

// Messages handled between two yields to the browser.
const FRAMES_PER_SLICE = 250;

// Reads one SSE response, calling `onFrame({event, data, id})` per message and `onRead()`
// after each piece read from the network (so callers can hand on what they batched). Resolves
// when the server closes the stream; rejects when the connection fails or `signal` aborts.
async function readSse(path, onFrame, signal, onRead = () => {}) {
  const res = await fetch(`/api/v1${path}`, {
    headers: headers({ Accept: "text/event-stream" }),
    signal,
  });
  if (!res.ok) throw await failure(res);
  const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
  let buf = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buf += value;
    let cut;
    let frames = 0;
    while ((cut = buf.indexOf("\n\n")) >= 0) {
      // A read may hold thousands of messages (a run's history): hand them on in slices and
      // let the page draw in between, rather than block it for the whole read.
      if (++frames % FRAMES_PER_SLICE === 0) {
        onRead();
        await new Promise((resolve) => setTimeout(resolve, 0));
      }
      const block = buf.slice(0, cut);
      buf = buf.slice(cut + 2);
      const frame = { event: "message", data: "", id: null };
      const data = [];
      for (const line of block.split("\n")) {
        if (line.startsWith(":")) continue;
        const colon = line.indexOf(":");
        const field = colon < 0 ? line : line.slice(0, colon);
        const val = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
        if (field === "event") frame.event = val;
        else if (field === "data") data.push(val);
        else if (field === "id") frame.id = val;
      }
      if (data.length === 0) continue;
      frame.data = data.join("\n");
      onFrame(frame);
    }
    onRead();
  }
}

const sleep = (ms, signal) =>
  new Promise((resolve) => {
    const t = setTimeout(resolve, ms);
    signal?.addEventListener("abort", () => {
      clearTimeout(t);
      resolve();
    });
  });

// Follows a run's events from counter `after`: `onEvents(batch)` with events in counter
// order, `onEnd(end)` once the run is over. Reconnects after drops and `lagged` messages,
// resuming after the last counter received, until the end or `signal` aborts.
export async function followRun(id, after, { onEvents, onEnd, onState }, signal) {
  let last = after;
  let wait = 250;
  while (!signal.aborted) {
    let ended = false;
    let batch = [];
    const flush = () => {
      if (batch.length) onEvents(batch);
      batch = [];
    };
    try {
      onState?.("live");
      await readSse(
        `/runs/${id}/events/sse?after=${last}`,
        (f) => {
          const msg = JSON.parse(f.data);
          if (msg.type === "event") {
            if (msg.event.counter <= last) return;
            last = msg.event.counter;
            batch.push(msg.event);
          } else if (msg.type === "end") {
            ended = true;
            flush();
            onEnd(msg);
          }
        },
        signal,
        flush,
      );
      wait = 250;
    } catch (e) {
      if (signal.aborted) return;
      if (e instanceof ApiError && e.status !== 429 && e.status < 500) {
        onState?.(`error: ${e.message}`);
        return;
      }
    } finally {
      flush();
    }
    if (ended) return;
    onState?.("reconnecting");
    await sleep(wait, signal);
    wait = Math.min(wait * 2, 5000);
  }
}

// Follows run changes (created, status, summary) for dashboards; `onChange(msg)` per message.
// After a drop it calls `onResync()` (changes are not replayed) and reconnects.
export async function followChanges(query, { onChange, onResync }, signal) {
  let wait = 500;
  while (!signal.aborted) {
    try {
      await readSse(`/stream/sse?${query}`, (f) => onChange({ type: f.event, ...JSON.parse(f.data) }), signal);
      wait = 500;
    } catch (e) {
      if (signal.aborted) return;
      if (e instanceof ApiError && e.status === 401) return;
    }
    await sleep(wait, signal);
    if (signal.aborted) return;
    wait = Math.min(wait * 2, 10000);
    onResync?.();
  }
}
