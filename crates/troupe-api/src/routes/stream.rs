//! Live streams: one run's events (WebSocket and Server-Sent Events), and changes of many runs
//! for dashboards.
//!
//! A run stream sends every event with a counter above `after`: history from the store first,
//! then live events as they are stored, with no gap and no duplicate whatever the timing (the
//! subscription to live events is made before the history is read, and live events already
//! sent are skipped). It ends with an `end` message carrying the run's final status. A client
//! that cannot keep up (its buffer of `stream_buffer_events` is full) gets a `lagged` message
//! with the counter to resume from, and the stream closes; memory per subscriber is bounded.

use crate::AppState;
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiPath, ApiQuery};
use crate::limits::StreamGuard;
use axum::Extension;
use axum::extract::State;
use axum::extract::ws::{Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::http::HeaderMap;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use serde::Serialize;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use troupe_core::flow::FlowChange;
use troupe_wire::streams::{ChangesQuery, RunStreamMessage, RunStreamQuery};
use troupe_worker::{RunChange, RunMessage, event_frame};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(run_events_ws))
        .routes(routes!(run_events_sse))
        .routes(routes!(changes_ws))
        .routes(routes!(changes_sse))
}

/// Events read from the store per page while catching up.
const PAGE: i64 = 1000;
/// How long a live stream waits for a notification before it looks at the store itself (events
/// written by another troupe process sharing the store arrive this way).
const IDLE_POLL: Duration = Duration::from_secs(1);

/// A stream message as sent: serialized once (live events are serialized by the hub for
/// every subscriber at once), with its SSE event name and id.
pub(crate) struct Frame {
    /// `event`, `end`, `lagged`...: its SSE event name.
    pub(crate) name: &'static str,
    id: Option<i64>,
    /// The message, JSON.
    pub(crate) json: Bytes,
}

impl Frame {
    fn message(msg: &RunStreamMessage) -> Self {
        Frame {
            name: msg.sse_name(),
            id: None,
            json: serde_json::to_vec(msg).map(Bytes::from).unwrap_or_default(),
        }
    }

    fn event(counter: i64, json: Bytes) -> Self {
        Frame {
            name: "event",
            id: Some(counter),
            json,
        }
    }

    fn sse(self) -> SseEvent {
        let mut ev = SseEvent::default().event(self.name);
        if let Some(id) = self.id {
            ev = ev.id(id.to_string());
        }
        ev.data(std::str::from_utf8(&self.json).unwrap_or_default())
    }
}

/// Follows a run's events over WebSocket: JSON text messages `{"type": "event", "event": {...}}`,
/// then `{"type": "end", ...}`, or `{"type": "lagged", "resume_after": N}`.
#[utoipa::path(get, path = "/api/v1/runs/{id}/events/ws", params(("id" = i64, Path), RunStreamQuery),
    responses((status = 101, description = "WebSocket of RunStreamMessage"), (status = 404, body = crate::error::ErrorBody),
        (status = 429, body = crate::error::ErrorBody)))]
async fn run_events_ws(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiPath(id): ApiPath<i64>,
    ApiQuery(q): ApiQuery<RunStreamQuery>,
    ws: WebSocketUpgrade,
) -> ApiResult<Response> {
    state.store.get_run(id).await?;
    let guard = state.limits.open_stream(caller.token_id)?;
    let rx = start_run_stream(&state, id, q.after.unwrap_or(0));
    Ok(ws
        .on_upgrade(move |socket| pump_ws(socket, rx, guard))
        .into_response())
}

/// Follows a run's events as Server-Sent Events: `event: event` with `id: <counter>` (so a
/// browser's `Last-Event-ID` resumes), then `event: end`, or `event: lagged`.
#[utoipa::path(get, path = "/api/v1/runs/{id}/events/sse", params(("id" = i64, Path), RunStreamQuery),
    responses((status = 200, content_type = "text/event-stream", body = RunStreamMessage), (status = 404, body = crate::error::ErrorBody),
        (status = 429, body = crate::error::ErrorBody)))]
async fn run_events_sse(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiPath(id): ApiPath<i64>,
    ApiQuery(q): ApiQuery<RunStreamQuery>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    state.store.get_run(id).await?;
    let last_event_id = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<i64>().ok());
    let after = q.after.or(last_event_id).unwrap_or(0);
    let guard = state.limits.open_stream(caller.token_id)?;
    let rx = start_run_stream(&state, id, after);
    Ok(sse_response(rx, guard))
}

/// Frames as Server-Sent Events; the stream counts among its token's until the response is
/// dropped (the client went, or the stream ended).
fn sse_response(rx: mpsc::Receiver<Frame>, guard: StreamGuard) -> Response {
    let stream = ReceiverStream::new(rx).map(move |frame| {
        let _counted = &guard;
        Ok::<_, Infallible>(frame.sse())
    });
    Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}

pub(crate) fn start_run_stream(state: &AppState, run_id: i64, after: i64) -> mpsc::Receiver<Frame> {
    let (tx, rx) = mpsc::channel(state.stream_buffer_events.max(1));
    // Subscribed here, before the producer reads any history: nothing stored after this point
    // can be missed.
    let live = state.hub.subscribe(run_id);
    let state = state.clone();
    tokio::spawn(async move {
        let mut producer = RunProducer {
            state,
            run_id,
            last: after.max(0),
            tx,
        };
        if let Err(Stop) = producer.run(live).await {
            tracing::debug!(run = run_id, "run stream closed");
        }
    });
    rx
}

/// The stream ended early (client gone, or it was cut off).
struct Stop;

struct RunProducer {
    state: AppState,
    run_id: i64,
    /// The highest counter handed to the client.
    last: i64,
    tx: mpsc::Sender<Frame>,
}

impl RunProducer {
    async fn run(&mut self, mut live: broadcast::Receiver<RunMessage>) -> Result<(), Stop> {
        // History, paced by the client (a slow client simply reads it slowly).
        self.catch_up().await?;
        if self.finish_if_over().await? {
            return Ok(());
        }
        loop {
            let msg = tokio::select! {
                msg = live.recv() => msg,
                () = tokio::time::sleep(IDLE_POLL) => {
                    self.catch_up().await?;
                    if self.finish_if_over().await? {
                        return Ok(());
                    }
                    continue;
                }
                () = self.tx.closed() => return Err(Stop),
            };
            match msg {
                Ok(RunMessage::Events(batch)) => {
                    let first = batch.first().map_or(0, |e| e.counter);
                    if first > self.last + 1 {
                        // Some events reached the store between our history read and this
                        // batch's publication order: fetch them rather than skip them.
                        self.catch_up().await?;
                    }
                    for ev in batch.iter() {
                        if ev.counter == self.last + 1 {
                            self.send_live(Frame::event(ev.counter, ev.frame.clone()))
                                .await?;
                            self.last = ev.counter;
                        }
                    }
                }
                Ok(RunMessage::Finished(_)) => {
                    self.catch_up().await?;
                    self.finish_if_over().await?;
                    return Ok(());
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    return self.cut_off("the stream fell too far behind the run").await;
                }
                Err(broadcast::error::RecvError::Closed) => {
                    // The hub dropped the channel: the run ended; the store has the rest.
                    self.catch_up().await?;
                    if !self.finish_if_over().await? {
                        live = self.state.hub.subscribe(self.run_id);
                    }
                }
            }
        }
    }

    /// Sends stored events after `last`, waiting for the client: reading the store is paced
    /// by the client, so this never buffers more than the channel holds.
    async fn catch_up(&mut self) -> Result<(), Stop> {
        loop {
            let page = match self
                .state
                .store
                .list_events(self.run_id, self.last, PAGE)
                .await
            {
                Ok(p) => p,
                Err(e) => {
                    tracing::warn!(run = self.run_id, error = %e, "stream could not read events");
                    return Ok(());
                }
            };
            let n = page.len();
            for event in page {
                let counter = event.counter;
                self.tx
                    .send(Frame::event(counter, event_frame(&event)))
                    .await
                    .map_err(|_| Stop)?;
                self.last = counter;
            }
            if (n as i64) < PAGE {
                return Ok(());
            }
        }
    }

    /// Live events never wait for the client: a full buffer means it cannot keep up.
    async fn send_live(&mut self, msg: Frame) -> Result<(), Stop> {
        match self.tx.try_send(msg) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Closed(_)) => Err(Stop),
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.cut_off("the client did not keep up with the run")
                    .await?;
                Err(Stop)
            }
        }
    }

    async fn cut_off(&mut self, why: &str) -> Result<(), Stop> {
        self.state.telemetry.metrics.stream_lagged();
        let msg = RunStreamMessage::Lagged {
            resume_after: self.last,
            message: format!("{why}; reconnect with after={} to resume", self.last),
        };
        // Delivered after what the client already has queued; if it never reads, the send
        // is abandoned when the connection goes.
        self.tx.send(Frame::message(&msg)).await.map_err(|_| Stop)
    }

    /// If the run is over, sends what is left and the end message.
    async fn finish_if_over(&mut self) -> Result<bool, Stop> {
        let run = match self.state.store.get_run(self.run_id).await {
            Ok(r) => r,
            Err(_) => return Ok(false),
        };
        if !run.status.is_finished() {
            return Ok(false);
        }
        // Every event was stored before the run was finished; read what came since.
        self.catch_up().await?;
        let end = RunStreamMessage::End {
            status: run.status,
            rc: run.rc,
            reason: run.status_reason,
            last_counter: self.last,
        };
        self.tx.send(Frame::message(&end)).await.map_err(|_| Stop)?;
        Ok(true)
    }
}

/// Forwards frames to a WebSocket until the stream ends or the client goes. Frames already
/// queued are written together and flushed once. The stream counts among its token's until
/// this returns (`_counted` is dropped).
async fn pump_ws(socket: WebSocket, rx: mpsc::Receiver<Frame>, counted: StreamGuard) {
    pump_ws_with(socket, rx, counted, |frame| Some(frame.json)).await;
}

/// [`pump_ws`], with each frame turned into the message sent by `message` (a frame it answers
/// `None` for is not sent).
pub(crate) async fn pump_ws_with(
    socket: WebSocket,
    mut rx: mpsc::Receiver<Frame>,
    _counted: StreamGuard,
    mut message: impl FnMut(Frame) -> Option<Bytes> + Send,
) {
    let (mut sink, mut incoming) = socket.split();
    loop {
        tokio::select! {
            frame = rx.recv() => {
                let Some(mut frame) = frame else { break };
                loop {
                    if let Some(json) = message(frame) {
                        let Ok(text) = Utf8Bytes::try_from(json) else { break };
                        if sink.feed(Message::Text(text)).await.is_err() {
                            return;
                        }
                    }
                    match rx.try_recv() {
                        Ok(next) => frame = next,
                        Err(_) => break,
                    }
                }
                if sink.flush().await.is_err() {
                    return;
                }
            }
            incoming_msg = incoming.next() => match incoming_msg {
                // Pings are answered by axum; anything else from the client is ignored.
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                Some(Ok(_)) => {}
            }
        }
    }
    let _ = sink.send(Message::Close(None)).await;
}

struct ChangeFilter {
    /// `None`: as the run filters say; `Some(None)`: every execution (`*`); `Some(Some(ids))`.
    executions: Option<Option<Vec<i64>>>,
    runs: Option<Vec<i64>>,
    label: Option<(String, Option<String>)>,
    tag: Option<String>,
    project: Option<i64>,
    status_only: bool,
}

impl ChangeFilter {
    fn parse(q: ChangesQuery) -> ApiResult<Self> {
        Ok(Self {
            executions: match q.executions {
                Some(all) if all.trim() == "*" => Some(None),
                other => ids(other, "executions")?.map(Some),
            },
            runs: ids(q.runs, "runs")?,
            label: q.label.map(|l| match l.split_once('=') {
                Some((k, v)) => (k.to_owned(), Some(v.to_owned())),
                None => (l, None),
            }),
            tag: q.tag,
            project: q.project,
            status_only: q.status_only,
        })
    }

    /// Whether execution changes are wanted: asked for by id, or no run filter narrows the
    /// stream to runs.
    fn matches_flow(&self, change: &FlowChange) -> bool {
        match &self.executions {
            Some(None) => true,
            Some(Some(ids)) => ids.contains(&change.execution_id()),
            None => {
                self.runs.is_none()
                    && self.label.is_none()
                    && self.tag.is_none()
                    && self.project.is_none()
                    && (!self.status_only || matches!(change, FlowChange::ExecutionChanged { .. }))
            }
        }
    }

    fn matches(&self, change: &RunChange) -> bool {
        if self.executions.is_some() {
            return false;
        }
        if self.status_only && !matches!(change, RunChange::StatusChanged { .. }) {
            return false;
        }
        if self
            .runs
            .as_ref()
            .is_some_and(|r| !r.contains(&change.run_id()))
        {
            return false;
        }
        let (project, tag, labels) = change.run_keys();
        if self.project.is_some_and(|p| p != project) {
            return false;
        }
        if self.tag.as_deref().is_some_and(|t| Some(t) != tag) {
            return false;
        }
        match &self.label {
            None => true,
            Some((k, None)) => labels.contains_key(k),
            Some((k, Some(v))) => labels.get(k) == Some(v),
        }
    }
}

/// Comma-separated ids in a query parameter.
fn ids(list: Option<String>, field: &str) -> ApiResult<Option<Vec<i64>>> {
    let Some(list) = list else {
        return Ok(None);
    };
    list.split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|s| s.trim().parse::<i64>())
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
        .map_err(|_| {
            ApiError::new(
                axum::http::StatusCode::BAD_REQUEST,
                "invalid_query",
                format!("{field} must be comma-separated ids"),
            )
            .field(field)
        })
}

/// One message of the changes stream.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(untagged)]
pub(crate) enum ChangeMessage {
    /// A change of a run (`run_created`, `status_changed`, `summary_updated`).
    Change(RunChange),
    /// A change of a flow execution (`execution_changed`, `step_changed`, `execution_log`).
    Flow(FlowChange),
    /// The client fell behind and missed changes; the stream closes.
    Lagged {
        /// Always `lagged`.
        r#type: &'static str,
        /// How many changes were missed.
        missed: u64,
    },
}

impl ChangeMessage {
    fn frame(&self) -> Frame {
        let name = match self {
            ChangeMessage::Change(RunChange::RunCreated { .. }) => "run_created",
            ChangeMessage::Change(RunChange::StatusChanged { .. }) => "status_changed",
            ChangeMessage::Change(RunChange::SummaryUpdated { .. }) => "summary_updated",
            ChangeMessage::Flow(FlowChange::ExecutionChanged { .. }) => "execution_changed",
            ChangeMessage::Flow(FlowChange::StepChanged { .. }) => "step_changed",
            ChangeMessage::Flow(FlowChange::ExecutionLog { .. }) => "execution_log",
            ChangeMessage::Lagged { .. } => "lagged",
        };
        Frame {
            name,
            id: None,
            json: serde_json::to_vec(self)
                .map(Bytes::from)
                .unwrap_or_default(),
        }
    }
}

fn start_changes(state: &AppState, filter: ChangeFilter) -> mpsc::Receiver<Frame> {
    let (tx, rx) = mpsc::channel(state.stream_buffer_events.max(1));
    let mut changes = state.hub.subscribe_changes();
    let mut flows = state.hub.subscribe_flows();
    let telemetry = Arc::clone(&state.telemetry);
    tokio::spawn(async move {
        loop {
            let msg = tokio::select! {
                m = changes.recv() => m.map(|c| filter.matches(&c).then_some(ChangeMessage::Change(c))),
                m = flows.recv() => m.map(|c| filter.matches_flow(&c).then_some(ChangeMessage::Flow(c))),
                () = tx.closed() => return,
            };
            let missed = match msg {
                Ok(Some(message)) => {
                    if tx.try_send(message.frame()).is_ok() {
                        continue;
                    }
                    1
                }
                Ok(None) => continue,
                Err(broadcast::error::RecvError::Lagged(n)) => n,
                Err(broadcast::error::RecvError::Closed) => return,
            };
            telemetry.metrics.stream_lagged();
            let _ = tx
                .send(
                    ChangeMessage::Lagged {
                        r#type: "lagged",
                        missed,
                    }
                    .frame(),
                )
                .await;
            return;
        }
    });
    rx
}

/// Changes of many runs over WebSocket, for dashboards.
#[utoipa::path(get, path = "/api/v1/stream/ws", params(ChangesQuery),
    responses((status = 101, description = "WebSocket of ChangeMessage"), (status = 429, body = crate::error::ErrorBody)))]
async fn changes_ws(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiQuery(q): ApiQuery<ChangesQuery>,
    ws: WebSocketUpgrade,
) -> ApiResult<Response> {
    let filter = ChangeFilter::parse(q)?;
    let guard = state.limits.open_stream(caller.token_id)?;
    let rx = start_changes(&state, filter);
    Ok(ws
        .on_upgrade(move |socket| pump_ws(socket, rx, guard))
        .into_response())
}

/// Changes of many runs as Server-Sent Events (`event: run_created|status_changed|summary_updated|lagged`).
#[utoipa::path(get, path = "/api/v1/stream/sse", params(ChangesQuery),
    responses((status = 200, content_type = "text/event-stream", body = ChangeMessage), (status = 429, body = crate::error::ErrorBody)))]
async fn changes_sse(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiQuery(q): ApiQuery<ChangesQuery>,
) -> ApiResult<Response> {
    let filter = ChangeFilter::parse(q)?;
    let guard = state.limits.open_stream(caller.token_id)?;
    let rx = start_changes(&state, filter);
    Ok(sse_response(rx, guard))
}
