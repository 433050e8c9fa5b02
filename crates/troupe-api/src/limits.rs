//! Limits of the HTTP layer, each answered in the API's error shape: request bodies (413,
//! naming the setting), webhook deliveries per source (429 with `Retry-After`, the event not
//! stored) and live streams per token (429 before a stream starts). Counts and buckets live
//! in this process: replicas each apply the limits to the requests they serve.

use crate::error::ApiError;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use troupe_events::config::RateLimit;

/// The limits the API applies.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// Largest accepted request body (`max_body_bytes`), but on the worker protocol.
    pub max_body_bytes: usize,
    /// Largest accepted body on the worker protocol (`/api/v1/worker/...`).
    pub max_worker_body_bytes: usize,
    /// Largest event stored whole (from a remote worker's batches too); bigger ones are cut.
    pub max_event_bytes: usize,
    /// Live streams one token may have open at once.
    pub max_streams_per_token: usize,
    /// Webhook deliveries a source accepts when its rules set no `rate`.
    pub webhook_rate: RateLimit,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            max_body_bytes: 8 * 1024 * 1024,
            max_worker_body_bytes: 64 * 1024 * 1024,
            max_event_bytes: 1024 * 1024,
            max_streams_per_token: 64,
            webhook_rate: RateLimit {
                per_second: 100.0,
                burst: Some(200),
            },
        }
    }
}

/// The limits and what they count (streams open, webhook buckets).
pub struct Limits {
    cfg: ApiConfig,
    streams: Arc<Mutex<HashMap<i64, usize>>>,
    buckets: Mutex<HashMap<String, Bucket>>,
}

impl Limits {
    /// Limits as configured, nothing counted yet.
    pub fn new(cfg: ApiConfig) -> Self {
        Self {
            cfg,
            streams: Arc::default(),
            buckets: Mutex::default(),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &ApiConfig {
        &self.cfg
    }

    /// The body limit of a request to `path`, and the setting that sets it.
    fn body_limit(&self, path: &str) -> BodyLimit {
        if path.starts_with("/api/v1/worker/") {
            BodyLimit {
                bytes: self.cfg.max_worker_body_bytes,
                setting: "max_worker_body_bytes",
            }
        } else {
            BodyLimit {
                bytes: self.cfg.max_body_bytes,
                setting: "max_body_bytes",
            }
        }
    }

    /// Counts a new live stream of the token `token_id`; 429 when it has
    /// `max_streams_per_token` open already. The stream counts until the guard is dropped.
    pub fn open_stream(&self, token_id: i64) -> Result<StreamGuard, ApiError> {
        let max = self.cfg.max_streams_per_token;
        let mut counts = self
            .streams
            .lock()
            .map_err(|_| ApiError::internal("could not count streams", &"poisoned lock"))?;
        let open = counts.entry(token_id).or_insert(0);
        if *open >= max {
            return Err(ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_streams",
                format!(
                    "this token has {open} live streams open, the most it may \
                     (max_streams_per_token); close one first"
                ),
            ));
        }
        *open += 1;
        Ok(StreamGuard {
            counts: Arc::clone(&self.streams),
            token_id,
        })
    }

    /// Live streams the token `token_id` has open.
    pub fn streams_open(&self, token_id: i64) -> usize {
        self.streams
            .lock()
            .map(|c| c.get(&token_id).copied().unwrap_or(0))
            .unwrap_or(0)
    }

    /// Live streams open, all tokens together.
    pub fn streams_open_total(&self) -> usize {
        self.streams.lock().map(|c| c.values().sum()).unwrap_or(0)
    }

    /// Takes one delivery from the webhook source `source`'s bucket (`rate`, or the server's
    /// default); 429 with `Retry-After` when it is empty.
    pub fn admit_webhook(&self, source: &str, rate: Option<RateLimit>) -> Result<(), ApiError> {
        let rate = rate.unwrap_or(self.cfg.webhook_rate);
        if rate.is_unlimited() {
            return Ok(());
        }
        let now = Instant::now();
        let Ok(mut buckets) = self.buckets.lock() else {
            return Ok(());
        };
        let bucket = buckets
            .entry(source.to_owned())
            .or_insert_with(|| Bucket::full(rate, now));
        if bucket.rate != rate {
            // The rules changed the source's rate: start again from a full bucket.
            *bucket = Bucket::full(rate, now);
        }
        bucket.take(now).map_err(|wait| {
            let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                format!(
                    "source {source:?} accepts {} events a second (burst {}); this event was \
                     not stored: send it again in {seconds} s",
                    rate.per_second,
                    rate.burst()
                ),
            )
            .retry_after(seconds.max(1))
        })
    }
}

/// One live stream of a token, counted until dropped.
pub struct StreamGuard {
    counts: Arc<Mutex<HashMap<i64, usize>>>,
    token_id: i64,
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        if let Ok(mut counts) = self.counts.lock()
            && let Some(open) = counts.get_mut(&self.token_id)
        {
            *open = open.saturating_sub(1);
            if *open == 0 {
                counts.remove(&self.token_id);
            }
        }
    }
}

/// A token bucket: holds up to `burst` tokens, refilled at `per_second`.
#[derive(Debug, Clone)]
struct Bucket {
    rate: RateLimit,
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn full(rate: RateLimit, now: Instant) -> Self {
        Self {
            rate,
            tokens: f64::from(rate.burst()),
            at: now,
        }
    }

    /// Takes a token, or says how long until one is there.
    fn take(&mut self, now: Instant) -> Result<(), Duration> {
        let burst = f64::from(self.rate.burst());
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate.per_second).min(burst);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64(
                (1.0 - self.tokens) / self.rate.per_second,
            ))
        }
    }
}

/// The most a request's body may have, and the setting that says so.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BodyLimit {
    bytes: usize,
    setting: &'static str,
}

impl BodyLimit {
    /// The 413 of a body over this limit (`declared`: its `Content-Length`, when it said).
    pub(crate) fn too_large(self, declared: Option<u64>) -> ApiError {
        let size = match declared {
            Some(n) => format!("is {n} bytes"),
            None => format!("has more than {} bytes", self.bytes),
        };
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!(
                "the request body {size}; this route accepts at most {} ({})",
                self.bytes, self.setting
            ),
        )
    }
}

/// The 413 of a request whose body went over its limit while an extractor read it.
pub(crate) fn body_too_large(limit: Option<BodyLimit>) -> ApiError {
    match limit {
        Some(limit) => limit.too_large(None),
        None => ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            "the request body is too large",
        ),
    }
}

/// Bounds every request's body (see [`Limits::body_limit`]): a `Content-Length` over the
/// limit is refused before anything is read; a body that goes over while it is read fails
/// its extractor. Either way the answer is a JSON 413 naming the limit and its setting (a
/// handler reading raw bytes gets axum's plain-text 413, replaced here).
pub(crate) async fn limit_body(
    State(limits): State<Arc<Limits>>,
    mut req: Request,
    next: Next,
) -> Response {
    let limit = limits.body_limit(req.uri().path());
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if let Some(n) = declared.filter(|n| *n > limit.bytes as u64) {
        let response = limit.too_large(declared).into_response();
        // Most clients send the whole body before they read the answer: closing under one
        // mid-write gives it a broken pipe, not the 413. Read and drop what it sends (within
        // bounds), then answer on a connection that stays usable.
        return if drained(req.into_body(), n).await {
            response
        } else {
            closing(response)
        };
    }
    req.extensions_mut().insert(limit);
    let req = req.map(|body| Body::new(http_body_util::Limited::new(body, limit.bytes)));
    let response = next.run(req).await;
    if response.status() != StatusCode::PAYLOAD_TOO_LARGE {
        return response;
    }
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    closing(if is_json {
        response
    } else {
        limit.too_large(None).into_response()
    })
}

/// The most of a refused body read (and dropped) so its sender gets the answer, and how long
/// that may take; beyond either, the connection is closed instead.
const DRAIN_MAX_BYTES: u64 = 64 * 1024 * 1024;
const DRAIN_TIME: Duration = Duration::from_secs(10);

/// Reads and drops a refused body of `declared` bytes; whether all of it was read within
/// [`DRAIN_MAX_BYTES`] and [`DRAIN_TIME`].
async fn drained(mut body: Body, declared: u64) -> bool {
    use http_body_util::BodyExt;
    if declared > DRAIN_MAX_BYTES {
        return false;
    }
    let read = async {
        let mut seen: u64 = 0;
        while let Some(frame) = body.frame().await {
            let Ok(frame) = frame else {
                return false;
            };
            seen += frame.data_ref().map_or(0, |d| d.len() as u64);
            if seen > DRAIN_MAX_BYTES {
                return false;
            }
        }
        true
    };
    tokio::time::timeout(DRAIN_TIME, read)
        .await
        .unwrap_or(false)
}

/// The rest of a refused body is not read, so the connection cannot carry another request:
/// the client is told so, rather than finding out on its next request.
fn closing(mut response: Response) -> Response {
    response.headers_mut().insert(
        header::CONNECTION,
        header::HeaderValue::from_static("close"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rate(per_second: f64, burst: u32) -> RateLimit {
        RateLimit {
            per_second,
            burst: Some(burst),
        }
    }

    #[test]
    fn a_bucket_takes_its_burst_then_its_rate() {
        let t0 = Instant::now();
        let mut b = Bucket::full(rate(2.0, 3), t0);
        for _ in 0..3 {
            assert!(b.take(t0).is_ok());
        }
        let wait = b.take(t0).expect_err("empty");
        assert_eq!(wait, Duration::from_millis(500));
        // Half a second later one token is back, and only one.
        let t1 = t0 + Duration::from_millis(500);
        assert!(b.take(t1).is_ok());
        assert!(b.take(t1).is_err());
        // A long quiet time fills it to the burst, no more.
        let t2 = t1 + Duration::from_secs(60);
        for _ in 0..3 {
            assert!(b.take(t2).is_ok());
        }
        assert!(b.take(t2).is_err());
    }

    #[test]
    fn webhook_rates_are_per_source_and_answer_429_with_retry_after() {
        let limits = Limits::new(ApiConfig {
            webhook_rate: rate(1.0, 2),
            ..ApiConfig::default()
        });
        assert!(limits.admit_webhook("a", None).is_ok());
        assert!(limits.admit_webhook("a", None).is_ok());
        let err = limits.admit_webhook("a", None).expect_err("over");
        assert_eq!(err.status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(err.code, "rate_limited");
        assert_eq!(err.retry_after_s, Some(1));
        assert!(err.message.contains("not stored"), "{}", err.message);
        assert!(limits.admit_webhook("b", None).is_ok(), "another source");
        let unlimited = RateLimit {
            per_second: 0.0,
            burst: None,
        };
        for _ in 0..1000 {
            assert!(limits.admit_webhook("c", Some(unlimited)).is_ok());
        }
    }

    #[test]
    fn streams_are_counted_per_token_until_dropped() {
        let limits = Limits::new(ApiConfig {
            max_streams_per_token: 2,
            ..ApiConfig::default()
        });
        let a = limits.open_stream(1).expect("first");
        let _b = limits.open_stream(1).expect("second");
        let err = limits.open_stream(1).err().expect("third refused");
        assert_eq!(err.status, StatusCode::TOO_MANY_REQUESTS);
        assert!(limits.open_stream(2).is_ok(), "another token");
        drop(a);
        assert_eq!(limits.streams_open(1), 1);
        assert!(limits.open_stream(1).is_ok());
    }
}
