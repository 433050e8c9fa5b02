//! The traffic a server takes while chaos strikes: runs launched through the API and bursts of
//! webhook deliveries, and the ledger of what the server acknowledged.

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::task::JoinHandle;
use troupe_testkit::Api;
use troupe_testkit::fixtures::local_hosts;
use troupe_wire::errors::ErrorBody;
use troupe_wire::events::HookResponse;

/// The webhook source the rules define, and the routing key whose events start a run.
pub const SOURCE: &str = "hook";
const RUN_KEY: &str = "chaos.run";
/// One event in this many starts a run; the others are recorded as unmatched.
const RUN_EVERY: u64 = 15;

/// What the server answered, across every server process of a phase.
#[derive(Debug, Default)]
pub struct Ledger {
    /// Webhook deliveries answered 2xx: delivery id -> event id.
    pub acked_events: BTreeMap<String, i64>,
    /// Webhook deliveries not acknowledged (an error status, or no answer).
    pub unacked_events: usize,
    /// Runs the server said it created: by `POST /runs`, and by acknowledged events.
    pub runs: BTreeSet<i64>,
    /// Answers other than 2xx, by status.
    pub refused: BTreeMap<u16, usize>,
    /// Requests that got no answer (connection refused or cut).
    pub no_answer: usize,
    /// Answers that break the API's promise: a 500, or an error whose body is not the JSON
    /// error shape.
    pub bad: Vec<String>,
}

impl Ledger {
    /// Adds what `other` recorded.
    pub fn absorb(&mut self, other: Ledger) {
        self.acked_events.extend(other.acked_events);
        self.unacked_events += other.unacked_events;
        self.runs.extend(other.runs);
        for (status, n) in other.refused {
            *self.refused.entry(status).or_default() += n;
        }
        self.no_answer += other.no_answer;
        self.bad.extend(other.bad);
    }

    fn answered(&mut self, what: &str, status: u16, body: &str) {
        if (200..300).contains(&status) {
            return;
        }
        *self.refused.entry(status).or_default() += 1;
        let shaped = serde_json::from_str::<ErrorBody>(body).is_ok();
        if status == 500 || !shaped {
            // Kept short: a few examples say enough.
            if self.bad.len() < 10 {
                self.bad.push(format!(
                    "{what} -> {status}: {}",
                    body.chars().take(300).collect::<String>()
                ));
            }
        }
    }
}

/// Traffic against one server process; [`Load::stop`] ends it.
pub struct Load {
    stop: Arc<AtomicBool>,
    tasks: Vec<JoinHandle<()>>,
}

/// Numbers delivery ids across every server process, so a retry is never mistaken for one.
static DELIVERY: AtomicU64 = AtomicU64::new(0);

impl Load {
    /// Starts launching runs of `playbook` in `project` every `launch_every` and posting webhook
    /// bursts, recording answers in `ledger`.
    pub fn start(
        api: &Api,
        project: i64,
        playbook: &str,
        launch_every: Duration,
        seed: u64,
        ledger: &Arc<Mutex<Ledger>>,
    ) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let launcher = tokio::spawn(launch_loop(
            api.clone(),
            project,
            playbook.to_owned(),
            launch_every,
            stop.clone(),
            ledger.clone(),
        ));
        let hooks = tokio::spawn(hook_loop(api.clone(), seed, stop.clone(), ledger.clone()));
        Load {
            stop,
            tasks: vec![launcher, hooks],
        }
    }

    /// Stops the traffic and waits for the requests in flight (each bounded by the client's
    /// timeout).
    pub async fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

async fn launch_loop(
    api: Api,
    project: i64,
    playbook: String,
    every: Duration,
    stop: Arc<AtomicBool>,
    ledger: Arc<Mutex<Ledger>>,
) {
    let body = json!({"project": project, "playbook": playbook, "hosts": local_hosts(1)});
    while !stop.load(Ordering::Relaxed) {
        let resp = api
            .http
            .post(api.url("/api/v1/runs"))
            .bearer_auth(api.token())
            .timeout(Duration::from_secs(10))
            .json(&body)
            .send()
            .await;
        match resp {
            Ok(resp) => {
                let status = resp.status().as_u16();
                let text = resp.text().await.unwrap_or_default();
                let mut l = lock(&ledger);
                if (200..300).contains(&status) {
                    if let Some(id) = serde_json::from_str::<Value>(&text)
                        .ok()
                        .and_then(|v| v["id"].as_i64())
                    {
                        l.runs.insert(id);
                    }
                } else {
                    l.answered("POST /api/v1/runs", status, &text);
                }
            }
            Err(_) => lock(&ledger).no_answer += 1,
        }
        tokio::time::sleep(every).await;
    }
}

async fn hook_loop(api: Api, seed: u64, stop: Arc<AtomicBool>, ledger: Arc<Mutex<Ledger>>) {
    let mut rng = StdRng::seed_from_u64(seed);
    while !stop.load(Ordering::Relaxed) {
        let burst: usize = rng.random_range(5..30);
        for _ in 0..burst {
            if stop.load(Ordering::Relaxed) {
                return;
            }
            let n = DELIVERY.fetch_add(1, Ordering::Relaxed);
            let key = if n.is_multiple_of(RUN_EVERY) {
                RUN_KEY
            } else {
                "chaos.note"
            };
            deliver(&api, &format!("chaos-{seed}-{n}"), key, n, &ledger).await;
        }
        tokio::time::sleep(Duration::from_millis(rng.random_range(100..600))).await;
    }
}

async fn deliver(api: &Api, delivery: &str, key: &str, n: u64, ledger: &Mutex<Ledger>) {
    let resp = api
        .http
        .post(api.url(&format!("/api/v1/hooks/{SOURCE}/{key}")))
        .bearer_auth(api.token())
        .header("Idempotency-Key", delivery)
        .timeout(Duration::from_secs(10))
        .json(&json!({"n": n}))
        .send()
        .await;
    let Ok(resp) = resp else {
        let mut l = lock(ledger);
        l.no_answer += 1;
        l.unacked_events += 1;
        return;
    };
    let status = resp.status().as_u16();
    let text = resp.text().await;
    let mut l = lock(ledger);
    let Ok(text) = text else {
        // The answer was cut: the sender cannot know, so it is not acknowledged.
        l.no_answer += 1;
        l.unacked_events += 1;
        return;
    };
    if !(200..300).contains(&status) {
        l.unacked_events += 1;
        l.answered("POST /api/v1/hooks", status, &text);
        return;
    }
    match serde_json::from_str::<HookResponse>(&text) {
        Ok(hook) => {
            l.acked_events.insert(delivery.to_owned(), hook.event.id);
            l.runs.extend(hook.event.run_ids);
        }
        Err(e) => {
            l.unacked_events += 1;
            l.bad.push(format!(
                "POST /api/v1/hooks -> {status} with a body that is no HookResponse ({e}): {text}"
            ));
        }
    }
}

/// The ledger, even if a task panicked holding it (the counts are still worth reporting).
pub fn lock(ledger: &Mutex<Ledger>) -> std::sync::MutexGuard<'_, Ledger> {
    ledger
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
