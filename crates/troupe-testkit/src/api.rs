//! The HTTP client with the admin token, and the requests the tests and the benchmark share.

use crate::log::Log;
use anyhow::{Context, bail};
use serde_json::{Value, json};
use std::path::Path;
use std::time::{Duration, Instant};

/// How often [`Api::wait_run`] looks at a run.
const POLL: Duration = Duration::from_millis(100);

/// How long [`Api::wait_finished`] waits for a run to end.
const RUN_TIMEOUT: Duration = Duration::from_secs(120);

/// Whether a run's status is final (neither `queued` nor `running`).
pub fn is_finished(status: &str) -> bool {
    !matches!(status, "queued" | "running")
}

/// A client of one server's API, sending its admin token with every request. Bodies that are
/// not JSON come back as a JSON string, so a test can show whatever the server answered.
#[derive(Debug, Clone)]
pub struct Api {
    /// `http://127.0.0.1:PORT` (`https://` for a server with TLS).
    pub base: String,
    /// The underlying client, for requests the helpers do not cover (streams, headers).
    pub http: reqwest::Client,
    token: String,
    // The server's log, for the failure messages of waits.
    log: Log,
}

impl Api {
    /// A client of the server at `base` (`http://host:port`) with `token`; `log` is the
    /// server's, quoted when a wait fails (an empty [`Log`] when there is none).
    pub fn new(base: String, token: String, http: reqwest::Client, log: Log) -> Api {
        Api {
            base,
            http,
            token,
            log,
        }
    }

    /// The token requests carry.
    pub fn token(&self) -> &str {
        &self.token
    }

    /// The URL of an API path.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// (status, JSON body) of a request with the token.
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<(u16, Value)> {
        let mut req = self
            .http
            .request(method, self.url(path))
            .bearer_auth(&self.token);
        if let Some(b) = body {
            req = req.json(b);
        }
        answer(req.send().await?).await
    }

    /// GET, expecting 200.
    pub async fn get(&self, path: &str) -> anyhow::Result<Value> {
        let (s, v) = self.call(reqwest::Method::GET, path, None).await?;
        if s != 200 {
            bail!("GET {path} -> {s}: {v}");
        }
        Ok(v)
    }

    /// POST, expecting 2xx.
    pub async fn post(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        let (s, v) = self.call(reqwest::Method::POST, path, Some(body)).await?;
        if !(200..300).contains(&s) {
            bail!("POST {path} -> {s}: {v}");
        }
        Ok(v)
    }

    /// The body of a GET as text, whatever the status.
    pub async fn text(&self, path: &str) -> anyhow::Result<String> {
        let resp = self
            .http
            .get(self.url(path))
            .bearer_auth(&self.token)
            .send()
            .await?;
        Ok(resp.text().await?)
    }

    /// Every inbound event record matching `query` (e.g. `source=hook`), newest first, all
    /// pages.
    pub async fn event_records(&self, query: &str) -> anyhow::Result<Vec<Value>> {
        let mut out = Vec::new();
        let mut cursor: Option<i64> = None;
        loop {
            let mut path = format!("/api/v1/events?limit=500&{query}");
            if let Some(c) = cursor {
                path.push_str(&format!("&cursor={c}"));
            }
            let page = self.get(&path).await?;
            out.extend(page["events"].as_array().cloned().unwrap_or_default());
            match page["next_cursor"].as_i64() {
                Some(c) => cursor = Some(c),
                None => return Ok(out),
            }
        }
    }

    /// PUTs a rules document (YAML); (status, body).
    pub async fn put_rules(&self, yaml: &str) -> anyhow::Result<(u16, Value)> {
        let resp = self
            .http
            .put(self.url("/api/v1/rules"))
            .bearer_auth(&self.token)
            .header("content-type", "application/yaml")
            .body(yaml.to_owned())
            .send()
            .await?;
        answer(resp).await
    }

    /// PUTs a rules document that must be accepted; the rules view.
    pub async fn apply_rules(&self, yaml: &str) -> anyhow::Result<Value> {
        let (s, v) = self.put_rules(yaml).await?;
        if s != 200 {
            bail!("PUT /api/v1/rules -> {s}: {v}");
        }
        Ok(v)
    }

    /// Registers a project directory under a fresh name; its id.
    pub async fn project(&self, dir: &Path) -> anyhow::Result<i64> {
        let name = format!("p{}", uuid::Uuid::new_v4().simple());
        let v = self
            .post(
                "/api/v1/projects",
                &json!({"name": name, "source": {"type": "dir", "path": dir}}),
            )
            .await?;
        v["id"].as_i64().context("project id")
    }

    /// Creates a run from a whole request body; its id.
    pub async fn create_run(&self, body: &Value) -> anyhow::Result<i64> {
        let v = self.post("/api/v1/runs", body).await?;
        v["id"].as_i64().context("run id")
    }

    /// Starts a playbook of a project on inline hosts, with more fields of the request in
    /// `extra`; the run's id.
    pub async fn launch(
        &self,
        project: i64,
        playbook: &str,
        hosts: &str,
        extra: Value,
    ) -> anyhow::Result<i64> {
        let mut body = json!({"project": project, "playbook": playbook, "hosts": hosts});
        if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
            for (k, v) in e {
                b.insert(k.clone(), v.clone());
            }
        }
        self.create_run(&body).await
    }

    /// Looks at a run every `every` until its status satisfies `pred`; fails after `timeout`
    /// with the server's log.
    pub async fn poll_run(
        &self,
        id: i64,
        every: Duration,
        timeout: Duration,
        pred: impl Fn(&str) -> bool,
    ) -> anyhow::Result<Value> {
        let start = Instant::now();
        loop {
            let run = self.get(&format!("/api/v1/runs/{id}")).await?;
            if run["status"].as_str().is_some_and(&pred) {
                return Ok(run);
            }
            if start.elapsed() > timeout {
                bail!(
                    "run {id} still {} after {timeout:?}\n--- server log ---\n{}",
                    run["status"],
                    self.log.text()
                );
            }
            tokio::time::sleep(every).await;
        }
    }

    /// Waits until the run's status satisfies `pred`.
    pub async fn wait_run(
        &self,
        id: i64,
        timeout: Duration,
        pred: impl Fn(&str) -> bool,
    ) -> anyhow::Result<Value> {
        self.poll_run(id, POLL, timeout, pred).await
    }

    /// Waits until the run has ended (two minutes at most); the run.
    pub async fn wait_finished(&self, id: i64) -> anyhow::Result<Value> {
        self.wait_run(id, RUN_TIMEOUT, is_finished).await
    }

    /// Every event of a run.
    pub async fn events(&self, id: i64) -> anyhow::Result<Vec<Value>> {
        let mut all = Vec::new();
        let mut after = 0;
        loop {
            let page = self
                .get(&format!(
                    "/api/v1/runs/{id}/events?after={after}&limit=1000"
                ))
                .await?;
            let evs = page["events"].as_array().cloned().unwrap_or_default();
            if evs.is_empty() {
                return Ok(all);
            }
            after = page["next_after"].as_i64().unwrap_or(after);
            all.extend(evs);
        }
    }
}

/// (status, body as JSON, or as a JSON string when it is not JSON).
async fn answer(resp: reqwest::Response) -> anyhow::Result<(u16, Value)> {
    let status = resp.status().as_u16();
    let text = resp.text().await?;
    let v = serde_json::from_str(&text).unwrap_or(Value::String(text));
    Ok((status, v))
}
