//! The agent's HTTP interface: the REST API under `/api/v1` (described by
//! `cli/src/serve/openapi.json`, served at `/api/v1/openapi.json`), the
//! event stream, `/metrics`, and the dashboard at `/`.
//!
//! Every error is a 4xx or 5xx with a JSON body `{"error": "..."}`. With an
//! API token every request but the dashboard's page needs it, as
//! `Authorization: Bearer TOKEN` (or `?access_token=TOKEN`, for the event
//! stream, which a browser's EventSource opens without headers). GET never
//! changes state. A POST whose `Origin` is not this server, or whose body
//! is not `application/json`, is refused: a web page elsewhere cannot make
//! a browser submit jobs to an agent on loopback. The event stream checks
//! `Origin` too.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Value, json};

use super::events::Events;
use super::jobs::{ActionError, JobRequest, Jobs, SubmitError};
use super::metrics::Metrics;
use super::store::{State as JobState, Store};

/// What every handler shares.
#[derive(Debug, Clone)]
pub struct AppState {
    /// The job runner.
    pub jobs: Arc<Jobs>,
    /// Jobs and history.
    pub store: Arc<Store>,
    /// The event stream.
    pub events: Arc<Events>,
    /// Counters.
    pub metrics: Arc<Metrics>,
    /// Required on every API request, if set.
    pub api_token: Option<String>,
    /// Facts about this agent for `GET /api/v1/agent`.
    pub agent: Value,
}

/// The OpenAPI document of this API.
pub const OPENAPI: &str = include_str!("openapi.json");

const DASHBOARD: &str = include_str!("dashboard.html");

/// An error response: `status` and `{"error": message}`.
pub fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, axum::Json(json!({"error": message.into()}))).into_response()
}

/// The router.
pub fn router(state: AppState) -> Router {
    let api = Router::new()
        .route("/api/v1/agent", get(agent))
        .route("/api/v1/openapi.json", get(openapi))
        .route(
            "/api/v1/transfers",
            get(list)
                .post(submit)
                .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY)),
        )
        .route("/api/v1/transfers/{id}", get(show))
        .route("/api/v1/transfers/{id}/{action}", post(act))
        .route("/api/v1/events", get(events))
        .route("/metrics", get(metrics))
        .fallback(|| async { error(StatusCode::NOT_FOUND, "no such endpoint") })
        .layer(axum::middleware::from_fn_with_state(state.clone(), guard))
        .with_state(state);
    Router::new()
        .route("/", get(|| async { Html(DASHBOARD) }))
        .merge(api)
}

/// Whether `origin` (an `Origin` header) names the host this request was
/// sent to (`Host`).
fn same_origin(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return true;
    };
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or_default();
    let origin = origin.to_str().unwrap_or_default();
    origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"))
        .is_some_and(|o| !host.is_empty() && o == host)
}

/// The API token, the Origin check, and JSON bodies on POST.
async fn guard(State(state): State<AppState>, request: Request, next: Next) -> Response {
    if let Some(want) = &state.api_token {
        let bearer = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        let query = request
            .uri()
            .query()
            .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("access_token=")));
        let given = bearer.or(query).unwrap_or_default();
        if !chunkstream_engine::session::constant_time_eq(given.as_bytes(), want.as_bytes()) {
            return error(
                StatusCode::UNAUTHORIZED,
                if given.is_empty() {
                    "this agent needs its API token: Authorization: Bearer TOKEN"
                } else {
                    "wrong API token"
                },
            );
        }
    }
    let post = request.method() == axum::http::Method::POST;
    let is_events = request.uri().path() == "/api/v1/events";
    if (post || is_events) && !same_origin(request.headers()) {
        return error(
            StatusCode::FORBIDDEN,
            "cross-origin requests are refused (Origin does not match Host)",
        );
    }
    next.run(request).await
}

async fn agent(State(s): State<AppState>) -> Response {
    axum::Json(s.agent.clone()).into_response()
}

async fn openapi() -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        OPENAPI,
    )
        .into_response()
}

#[derive(Debug, Deserialize)]
struct ListQuery {
    state: Option<String>,
    limit: Option<usize>,
}

/// A query string's fields, or a 400 with a JSON error.
fn query<T>(q: Result<Query<T>, QueryRejection>) -> Result<T, Box<Response>> {
    q.map(|Query(v)| v)
        .map_err(|e| Box::new(error(StatusCode::BAD_REQUEST, e.body_text())))
}

async fn list(State(s): State<AppState>, q: Result<Query<ListQuery>, QueryRejection>) -> Response {
    let q = match query(q) {
        Ok(q) => q,
        Err(r) => return *r,
    };
    let state = match q.state.as_deref() {
        None => None,
        Some(name) => match JobState::parse(name) {
            Some(st) => Some(st),
            None => {
                return error(
                    StatusCode::BAD_REQUEST,
                    format!(
                        "state {name:?}: expected queued, running, paused, done, failed or cancelled"
                    ),
                );
            }
        },
    };
    let limit = q.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return error(StatusCode::BAD_REQUEST, "limit: 1 to 1000");
    }
    match s.store.list(state, limit) {
        Ok(rows) => {
            let rows: Vec<Value> = rows.iter().map(|r| with_progress(&s, r)).collect();
            axum::Json(json!({"transfers": rows})).into_response()
        }
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

/// A record as JSON, with the live progress of a running job.
fn with_progress(s: &AppState, r: &super::store::Record) -> Value {
    let mut v = r.to_public_json();
    if let (Some(p), Some(o)) = (s.jobs.progress(r.id), v.as_object_mut()) {
        o.insert("bytes_done".into(), p.bytes_done.into());
        o.insert(
            "progress".into(),
            serde_json::to_value(p).unwrap_or_default(),
        );
    }
    v
}

/// Largest job request body: a job is a few paths and settings; a
/// megabyte holds thousands of inputs.
pub const MAX_BODY: usize = 1 << 20;

async fn submit(
    State(s): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Response {
    let body = match body {
        Ok(b) => b,
        // Over MAX_BODY (413), or a body that could not be read.
        Err(r) => return error(r.status(), format!("bad job body: {}", r.body_text())),
    };
    let json_body = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !json_body {
        return error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "send the job as JSON (Content-Type: application/json)",
        );
    }
    let request: JobRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("bad job: {e}")),
    };
    match s.jobs.submit(&request) {
        Ok(id) => (
            StatusCode::CREATED,
            [(header::LOCATION, format!("/api/v1/transfers/{id}"))],
            axum::Json(json!({"id": id, "state": "queued"})),
        )
            .into_response(),
        Err(SubmitError::Invalid(e)) => error(StatusCode::UNPROCESSABLE_ENTITY, e),
        Err(SubmitError::Forbidden(e)) => error(StatusCode::FORBIDDEN, e),
    }
}

/// A transfer id from the path: a positive integer.
fn parse_id(id: &str) -> Option<i64> {
    id.parse::<i64>().ok().filter(|i| *i > 0)
}

fn no_transfer(id: &str) -> Response {
    error(StatusCode::NOT_FOUND, format!("no transfer {id:?}"))
}

async fn show(State(s): State<AppState>, Path(id): Path<String>) -> Response {
    let Some(id) = parse_id(&id) else {
        return no_transfer(&id);
    };
    match s.store.get(id) {
        Ok(Some(r)) => axum::Json(with_progress(&s, &r)).into_response(),
        Ok(None) => error(StatusCode::NOT_FOUND, format!("no transfer {id}")),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

async fn act(State(s): State<AppState>, Path((id, action)): Path<(String, String)>) -> Response {
    let Some(id) = parse_id(&id) else {
        return no_transfer(&id);
    };
    let result = match action.as_str() {
        "cancel" => s.jobs.stop(id, false),
        "pause" => s.jobs.stop(id, true),
        "resume" => s.jobs.resume(id),
        _ => {
            return error(
                StatusCode::NOT_FOUND,
                format!("no action {action:?}: cancel, pause or resume"),
            );
        }
    };
    match result {
        Ok(()) => (
            StatusCode::ACCEPTED,
            axum::Json(json!({"id": id, "action": action})),
        )
            .into_response(),
        Err(ActionError::NotFound) => error(StatusCode::NOT_FOUND, format!("no transfer {id}")),
        Err(ActionError::Conflict(m)) => error(StatusCode::CONFLICT, m),
        Err(ActionError::Internal(m)) => error(StatusCode::INTERNAL_SERVER_ERROR, m),
    }
}

#[derive(Debug, Deserialize)]
struct EventsQuery {
    since: Option<u64>,
}

/// Server-sent events: each with its id (rising by one), `data` the event
/// as JSON. `Last-Event-ID` or `?since=ID` replays the kept events after it.
async fn events(
    State(s): State<AppState>,
    headers: HeaderMap,
    q: Result<Query<EventsQuery>, QueryRejection>,
) -> Response {
    let q = match query(q) {
        Ok(q) => q,
        Err(r) => return *r,
    };
    let after = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .or(q.since)
        .unwrap_or_else(|| s.events.last_id());
    let (missed, rx) = s.events.subscribe_after(after);
    let last_replayed = missed.last().map_or(after, |e| e.id);
    let replay = futures_util::stream::iter(missed);
    let live = futures_util::stream::unfold((rx, last_replayed), |(mut rx, last)| async move {
        loop {
            match rx.recv().await {
                Ok(e) if e.id <= last => continue,
                Ok(e) => return Some((e, (rx, last))),
                // Too slow: skip ahead; the client sees the gap in ids.
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
            }
        }
    });
    use futures_util::StreamExt;
    let stream = replay.chain(live).map(|e| {
        Ok::<_, Infallible>(
            SseEvent::default()
                .id(e.id.to_string())
                .data(e.to_json().to_string()),
        )
    });
    Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}

async fn metrics(State(s): State<AppState>) -> Response {
    let queued = s.store.count(JobState::Queued).unwrap_or(0);
    let text = s
        .metrics
        .render(s.jobs.running(), queued, &s.jobs.live_paths());
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        text,
    )
        .into_response()
}
