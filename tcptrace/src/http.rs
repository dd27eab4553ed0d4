//! The HTTP side (axum): `/metrics` for Prometheus, `/healthz`, and a read-only JSON
//! API. Nothing here changes state; table questions go to the loop that owns it.

use std::{sync::Arc, time::Duration};

use axum::{
    extract::{Path, Query as UrlQuery, State},
    http::{header, StatusCode},
    response::{IntoResponse, Response},
    routing::get,
    Json, Router,
};
use serde::Deserialize;
use tokio::sync::{mpsc, oneshot, watch};
use tower_http::timeout::TimeoutLayer;

use crate::{
    api::{self, ConnectionQuery, Query},
    detect::{HalfOpenReport, LeakReport, ListenerReport},
    metrics::Metrics,
    state::TcpState,
    tracker::CloseKind,
};

/// A request that takes longer than this is answered 408 and dropped.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// The Prometheus text format's content type.
const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

#[derive(Clone)]
pub struct ApiState {
    pub metrics: Arc<Metrics>,
    pub queries: mpsc::Sender<Query>,
    pub leaks: watch::Receiver<Arc<LeakReport>>,
    pub listeners: watch::Receiver<Arc<ListenerReport>>,
}

pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/api/connections", get(connections))
        .route("/api/connections/{id}", get(connection))
        .route("/api/closed", get(closed))
        .route("/api/leaks", get(leaks))
        .route("/api/listeners", get(listeners))
        .route("/api/half-open", get(half_open))
        .merge(crate::ui::routes())
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            REQUEST_TIMEOUT,
        ))
        .with_state(state)
}

/// An error answer: a status and a one-line reason.
pub(crate) struct ApiError(pub(crate) StatusCode, pub(crate) String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(serde_json::json!({ "error": self.1 }))).into_response()
    }
}

async fn metrics(State(state): State<ApiState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, PROMETHEUS_TEXT)],
        state.metrics.render(),
    )
}

/// 200 while the loop that reads the kernel's events runs.
async fn healthz(State(state): State<ApiState>) -> impl IntoResponse {
    crate::fault::maybe_panic(crate::fault::Point::Http);
    if state.queries.is_closed() {
        (StatusCode::SERVICE_UNAVAILABLE, "stopped\n")
    } else {
        (StatusCode::OK, "ok\n")
    }
}

/// Sends a question to the loop and waits for its answer.
pub(crate) async fn ask<T>(
    state: &ApiState,
    make: impl FnOnce(oneshot::Sender<T>) -> Query,
) -> Result<T, ApiError> {
    let unavailable = || {
        ApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            "tcptrace is stopping".into(),
        )
    };
    let (reply, answer) = oneshot::channel();
    state
        .queries
        .send(make(reply))
        .await
        .map_err(|_| unavailable())?;
    answer.await.map_err(|_| unavailable())
}

#[derive(Debug, Default, Deserialize)]
struct ListParams {
    state: Option<String>,
    port: Option<u16>,
    netns: Option<u32>,
    container: Option<String>,
    offset: Option<usize>,
    limit: Option<usize>,
}

fn offset(requested: Option<usize>) -> Result<usize, ApiError> {
    match requested.unwrap_or(0) {
        n if n > api::MAX_OFFSET => Err(ApiError(
            StatusCode::BAD_REQUEST,
            format!("offset must be at most {}", api::MAX_OFFSET),
        )),
        n => Ok(n),
    }
}

pub(crate) fn limit(requested: Option<usize>) -> Result<usize, ApiError> {
    match requested.unwrap_or(api::DEFAULT_LIMIT) {
        0 => Err(ApiError(
            StatusCode::BAD_REQUEST,
            "limit must be at least 1".into(),
        )),
        n if n > api::MAX_LIMIT => Err(ApiError(
            StatusCode::BAD_REQUEST,
            format!("limit must be at most {}", api::MAX_LIMIT),
        )),
        n => Ok(n),
    }
}

async fn connections(
    State(state): State<ApiState>,
    UrlQuery(params): UrlQuery<ListParams>,
) -> Result<Json<api::ConnectionList>, ApiError> {
    let tcp_state = params
        .state
        .as_deref()
        .map(str::parse::<TcpState>)
        .transpose()
        .map_err(|e| ApiError(StatusCode::BAD_REQUEST, e.to_string()))?;
    let query = ConnectionQuery {
        state: tcp_state,
        port: params.port,
        netns: params.netns,
        container: params.container.filter(|c| !c.is_empty()),
        offset: offset(params.offset)?,
        limit: limit(params.limit)?,
    };
    ask(&state, |reply| Query::Connections { query, reply })
        .await
        .map(Json)
}

async fn connection(
    State(state): State<ApiState>,
    Path(id): Path<u64>,
) -> Result<Json<serde_json::Value>, ApiError> {
    ask(&state, |reply| Query::Connection { id, reply })
        .await?
        .map(Json)
        .ok_or_else(|| {
            ApiError(
                StatusCode::NOT_FOUND,
                format!("no connection {id}: not live, or finished too long ago"),
            )
        })
}

#[derive(Debug, Default, Deserialize)]
struct ClosedParams {
    kind: Option<String>,
    port: Option<u16>,
    netns: Option<u32>,
    limit: Option<usize>,
}

/// Recently finished connections (the finished ring): how each ended, what it carried.
async fn closed(
    State(state): State<ApiState>,
    UrlQuery(params): UrlQuery<ClosedParams>,
) -> Result<Json<api::ClosedList>, ApiError> {
    let kind = params
        .kind
        .as_deref()
        .map(str::parse::<CloseKind>)
        .transpose()
        .map_err(|e| ApiError(StatusCode::BAD_REQUEST, e.to_string()))?;
    let query = api::ClosedQuery {
        kind,
        port: params.port,
        netns: params.netns,
        limit: limit(params.limit)?,
    };
    ask(&state, |reply| Query::Closed { query, reply })
        .await
        .map(Json)
}

#[derive(Debug, Default, Deserialize)]
struct LeakParams {
    limit: Option<usize>,
}

/// The last detector pass: stuck CLOSE_WAIT with owners and ages, TIME_WAIT hot spots,
/// half-open suspects.
async fn leaks(
    State(state): State<ApiState>,
    UrlQuery(params): UrlQuery<LeakParams>,
) -> Result<Json<LeakReport>, ApiError> {
    let limit = limit(params.limit)?;
    // The watch channel's lock is held only while the kept part is copied.
    let report = state.leaks.borrow().limited(limit);
    Ok(Json(report))
}

#[derive(Debug, Default, Deserialize)]
struct ListenerParams {
    limit: Option<usize>,
    netns: Option<u32>,
}

/// The last reconcile's listeners, fullest accept queue first, and each namespace's
/// listen counters.
async fn listeners(
    State(state): State<ApiState>,
    UrlQuery(params): UrlQuery<ListenerParams>,
) -> Result<Json<ListenerReport>, ApiError> {
    let limit = limit(params.limit)?;
    let report = state.listeners.borrow().limited(limit, params.netns);
    Ok(Json(report))
}

/// The last half-open pass: connections whose peer stopped answering, with owners,
/// longest unanswered first (the same as `half_open` in `/api/leaks`).
async fn half_open(
    State(state): State<ApiState>,
    UrlQuery(params): UrlQuery<LeakParams>,
) -> Result<Json<HalfOpenReport>, ApiError> {
    let limit = limit(params.limit)?;
    let report = state.leaks.borrow().half_open.limited(limit);
    Ok(Json(report))
}
