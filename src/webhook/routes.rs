//! The HTTP surface: routes, and the layers every request passes through.

use std::any::Any;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tokio_util::sync::CancellationToken;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::timeout::TimeoutLayer;

use crate::admission::{self, Answer, MAX_REVIEW_BYTES};
use crate::api::PostgresCluster;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::validate::SourceLookup;

#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub metrics: Arc<Metrics>,
    /// Cancelled when the process begins to shut down; `/readyz` fails from then on.
    pub shutdown: CancellationToken,
    /// Reads the source cluster of a new cluster's restore, when the webhook runs inside
    /// the operator; the webhook alone reads nothing.
    pub clusters: Option<kube::Client>,
}

/// How long admission waits for the source cluster of a restore (the API server gives
/// the whole review 5 s).
const SOURCE_TIMEOUT: Duration = Duration::from_secs(2);

/// pgpilot's routes, without the layers (see [`harden`]).
pub fn routes(state: AppState) -> Router {
    Router::new()
        .route("/mutate", post(mutate))
        .route("/validate", post(validate))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state)
}

/// What wraps any routes served: a body limit (413), a request timeout (408), a panic in a
/// handler turned into a 500 for that request only, and request metrics around it all.
pub fn harden(routes: Router, metrics: Arc<Metrics>, request_timeout: Duration) -> Router {
    routes
        // The limit below applies instead of axum's own 2 MB default, which is too small.
        .layer(DefaultBodyLimit::disable())
        .layer(RequestBodyLimitLayer::new(MAX_REVIEW_BYTES))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            request_timeout,
        ))
        .layer(CatchPanicLayer::custom(panic_response))
        .layer(middleware::from_fn_with_state(metrics, record))
}

async fn mutate(State(state): State<AppState>, body: Bytes) -> Response {
    reply(admission::mutate(&body, &state.config))
}

async fn validate(State(state): State<AppState>, body: Bytes) -> Response {
    let source = match (&state.clusters, admission::restore_source(&body)) {
        (Some(client), Some((namespace, name))) => {
            Some(look_up(client.clone(), &namespace, &name).await)
        }
        _ => None,
    };
    reply(admission::validate(&body, &state.config, source.as_ref()))
}

async fn look_up(client: kube::Client, namespace: &str, name: &str) -> SourceLookup {
    let clusters: kube::Api<PostgresCluster> = kube::Api::namespaced(client, namespace);
    match tokio::time::timeout(SOURCE_TIMEOUT, clusters.get_opt(name)).await {
        Ok(Ok(Some(found))) => SourceLookup::Found(Box::new(found)),
        Ok(Ok(None)) => SourceLookup::Missing,
        Ok(Err(e)) => SourceLookup::Failed(e.to_string()),
        Err(_) => SourceLookup::Failed(format!(
            "no answer from the API server within {} s",
            SOURCE_TIMEOUT.as_secs()
        )),
    }
}

async fn readyz(State(state): State<AppState>) -> Response {
    if state.shutdown.is_cancelled() {
        (StatusCode::SERVICE_UNAVAILABLE, "shutting down").into_response()
    } else {
        "ok".into_response()
    }
}

async fn metrics(State(state): State<AppState>) -> Response {
    let content_type = "text/plain; version=0.0.4; charset=utf-8";
    (
        [(header::CONTENT_TYPE, content_type)],
        state.metrics.render(),
    )
        .into_response()
}

/// The outcome label of a response, set by the admission handlers.
#[derive(Clone, Copy)]
struct Outcome(&'static str);

fn reply(answer: Answer) -> Response {
    let outcome = Outcome(answer.verdict().as_str());
    let mut response = match answer {
        Answer::Reviewed(review) => (
            [(header::CONTENT_TYPE, "application/json")],
            admission::to_json(review.as_ref()),
        )
            .into_response(),
        Answer::BadRequest(message) => (StatusCode::BAD_REQUEST, message).into_response(),
    };
    response.extensions_mut().insert(outcome);
    response
}

fn panic_response(panic: Box<dyn Any + Send + 'static>) -> Response<Body> {
    let what = panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("a panic");
    tracing::error!("a request handler panicked: {what}");
    let message = "internal error: the webhook failed while answering this request";
    (StatusCode::INTERNAL_SERVER_ERROR, message).into_response()
}

async fn record(State(metrics): State<Arc<Metrics>>, request: Request, next: Next) -> Response {
    let endpoint = endpoint(request.uri().path());
    let start = Instant::now();
    let response = next.run(request).await;
    let outcome = match response.extensions().get::<Outcome>() {
        Some(Outcome(outcome)) => outcome,
        None if response.status().is_success() => "ok",
        None if response.status().is_client_error() => "client_error",
        None => "server_error",
    };
    metrics.observe(endpoint, outcome, start.elapsed());
    response
}

/// The endpoint label: the known paths, and one label for everything else so that
/// scanners cannot grow the series without bound.
fn endpoint(path: &str) -> &'static str {
    match path {
        "/mutate" => "mutate",
        "/validate" => "validate",
        "/healthz" => "healthz",
        "/readyz" => "readyz",
        "/metrics" => "metrics",
        _ => "other",
    }
}
