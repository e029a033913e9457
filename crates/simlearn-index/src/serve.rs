//! The HTTP search service (axum on tokio).
//!
//! | route | answer |
//! |---|---|
//! | `GET /` | the web page: drop or pick an image (or type an id), see its neighbours |
//! | `POST /search` | JSON `{"vector": [..], "k": 10}` or `{"id": 3, "k": 10}`; or an image body (`Content-Type: image/*` or `application/octet-stream`, `?k=10`), embedded with the index's model |
//! | `GET /items/{id}` | the item's payload image (only from inside the index's image root) |
//! | `GET /healthz` | `{"status": "ok", "items": .., "dim": .., ..}` |
//! | `GET /metrics` | Prometheus text: requests by route and status, latency histograms |
//!
//! Every error is JSON `{"error": "...", "status": N}`:
//!
//! | status | when |
//! |---|---|
//! | 400 | the body is not valid JSON, or gives neither / both of `vector` and `id`; a malformed id in the URL |
//! | 403 | a payload path that resolves outside the image root |
//! | 404 | an unknown id or route; an item without a payload |
//! | 413 | a body over the limit ([`ServeConfig::body_limit`]) |
//! | 415 | a content type that is neither JSON nor an image |
//! | 422 | wrong dimension, NaN / infinity, k out of range, an undecodable image, an image query to an index without a model |
//! | 503 | the search did not finish within [`ServeConfig::timeout`] |
//!
//! At most [`ServeConfig::concurrency`] requests are handled at once (the rest wait in the
//! accept queue); searches run on tokio's blocking pool so the reactor never stalls.
//! [`serve`] stops accepting on the shutdown signal and lets requests in flight finish.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{MatchedPath, Path, Query, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use simlearn_eval::Matrix;

use crate::artifact::{Hit, Index, MAX_K};
use crate::IndexError;

/// Turns an encoded image (the request body) into a query vector with the index's model.
pub type Embedder = Arc<dyn Fn(&[u8]) -> Result<Vec<f32>, String> + Send + Sync>;

/// Limits of the service.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// Largest request body in bytes (default 8 MiB); a larger one gets 413.
    pub body_limit: usize,
    /// Longest a search may take (default 10 s); then 503.
    pub timeout: Duration,
    /// Requests handled at once (default 64).
    pub concurrency: usize,
    /// Neighbours when the request names no `k` (default 10).
    pub default_k: usize,
}

impl Default for ServeConfig {
    fn default() -> Self {
        Self {
            body_limit: 8 << 20,
            timeout: Duration::from_secs(10),
            concurrency: 64,
            default_k: 10,
        }
    }
}

/// Upper bounds (ms) of the latency histogram buckets.
const BUCKETS_MS: [f64; 14] = [
    0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0, 5000.0,
];

#[derive(Default)]
struct RouteStats {
    by_status: BTreeMap<u16, u64>,
    buckets: [u64; BUCKETS_MS.len()],
    count: u64,
    sum_ms: f64,
}

/// Request counters and latency histograms by route.
#[derive(Default)]
pub struct Metrics {
    routes: Mutex<BTreeMap<String, RouteStats>>,
}

impl Metrics {
    fn record(&self, route: &str, status: u16, ms: f64) {
        let mut g = self.routes.lock().unwrap_or_else(|e| e.into_inner());
        let r = g.entry(route.to_string()).or_default();
        *r.by_status.entry(status).or_default() += 1;
        r.count += 1;
        r.sum_ms += ms;
        for (b, &ub) in r.buckets.iter_mut().zip(BUCKETS_MS.iter()) {
            if ms <= ub {
                *b += 1;
            }
        }
    }

    /// The Prometheus text exposition of the counters.
    pub fn render(&self) -> String {
        let g = self.routes.lock().unwrap_or_else(|e| e.into_inner());
        let mut s = String::from(
            "# HELP simlearn_requests_total Requests by route and status.\n# TYPE simlearn_requests_total counter\n",
        );
        for (route, r) in g.iter() {
            for (status, n) in &r.by_status {
                s += &format!(
                    "simlearn_requests_total{{route=\"{route}\",status=\"{status}\"}} {n}\n"
                );
            }
        }
        s += "# HELP simlearn_request_duration_ms Request latency in milliseconds.\n# TYPE simlearn_request_duration_ms histogram\n";
        for (route, r) in g.iter() {
            for (b, ub) in r.buckets.iter().zip(BUCKETS_MS.iter()) {
                s += &format!(
                    "simlearn_request_duration_ms_bucket{{route=\"{route}\",le=\"{ub}\"}} {b}\n"
                );
            }
            s += &format!(
                "simlearn_request_duration_ms_bucket{{route=\"{route}\",le=\"+Inf\"}} {}\nsimlearn_request_duration_ms_sum{{route=\"{route}\"}} {:.3}\nsimlearn_request_duration_ms_count{{route=\"{route}\"}} {}\n",
                r.count, r.sum_ms, r.count
            );
        }
        s
    }
}

/// What every handler shares.
pub struct AppState {
    index: Arc<Index>,
    embedder: Option<Embedder>,
    cfg: ServeConfig,
    metrics: Metrics,
    image_root: Option<PathBuf>,
}

/// A JSON error with its status code.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({"error": self.message, "status": self.status.as_u16()});
        (self.status, Json(body)).into_response()
    }
}

impl From<IndexError> for ApiError {
    fn from(e: IndexError) -> Self {
        match &e {
            IndexError::Invalid(m) if m.starts_with("no item with id") => {
                Self::new(StatusCode::NOT_FOUND, e.to_string())
            }
            IndexError::Invalid(_) | IndexError::Eval(_) => {
                Self::new(StatusCode::UNPROCESSABLE_ENTITY, e.to_string())
            }
            IndexError::File { .. } => Self::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SearchRequest {
    // f64 so that values beyond the f32 range are seen (and refused), not silently clamped.
    vector: Option<Vec<f64>>,
    id: Option<i64>,
    k: Option<usize>,
}

#[derive(Deserialize)]
struct KQuery {
    k: Option<usize>,
}

#[derive(Serialize)]
struct SearchResponse {
    k: usize,
    hits: Vec<Hit>,
    /// The calibrated threshold hits were judged against, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    threshold: Option<f64>,
    took_ms: f64,
}

/// The service's router (see the module docs for the routes).
pub fn router(index: Arc<Index>, embedder: Option<Embedder>, cfg: ServeConfig) -> Router {
    let image_root = index.image_root().and_then(|r| r.canonicalize().ok());
    let concurrency = cfg.concurrency.max(1);
    let state = Arc::new(AppState {
        index,
        embedder,
        cfg,
        metrics: Metrics::default(),
        image_root,
    });
    Router::new()
        .route("/", get(page))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/search", post(search))
        .route("/items/{id}", get(item))
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(state.clone(), track))
        .layer(tower::limit::ConcurrencyLimitLayer::new(concurrency))
        .with_state(state)
}

/// Serves `app` on `listener` until `shutdown` completes, then drains requests in flight.
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

async fn track(State(st): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "other".to_string(), |m| m.as_str().to_string());
    let t = Instant::now();
    let resp = next.run(req).await;
    st.metrics.record(
        &route,
        resp.status().as_u16(),
        t.elapsed().as_secs_f64() * 1e3,
    );
    resp
}

async fn page() -> Html<&'static str> {
    Html(include_str!("page.html"))
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "no such route")
}

async fn healthz(State(st): State<Arc<AppState>>) -> Json<serde_json::Value> {
    let m = st.index.manifest();
    Json(serde_json::json!({
        "status": "ok",
        "items": st.index.len(),
        "dim": m.dim,
        "kind": m.kind,
        "similarity": m.similarity,
        "labels": m.labels,
        "payloads": m.paths && st.image_root.is_some(),
        "image_queries": st.embedder.is_some(),
        "threshold": m.threshold.as_ref().map(|t| t.score),
        "max_k": MAX_K.min(st.index.len()),
    }))
}

async fn metrics(State(st): State<Arc<AppState>>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        st.metrics.render(),
    )
}

enum SearchQuery {
    Vector(Vec<f32>),
    Id(i64),
    Image(Bytes),
}

async fn search(
    State(st): State<Arc<AppState>>,
    Query(kq): Query<KQuery>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<SearchResponse>, ApiError> {
    let t = Instant::now();
    let limit = st.cfg.body_limit;
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body over the limit of {limit} bytes"),
        )
    };
    if let Some(len) = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
    {
        if len > limit as u64 {
            return Err(too_large());
        }
    }
    let bytes = axum::body::to_bytes(body, limit)
        .await
        .map_err(|_| too_large())?;
    let ctype = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    let (query, k) = if ctype.starts_with("application/json")
        || ctype.is_empty() && bytes.first() == Some(&b'{')
    {
        let req: SearchRequest = serde_json::from_slice(&bytes).map_err(|e| {
            ApiError::new(StatusCode::BAD_REQUEST, format!("invalid JSON body: {e}"))
        })?;
        let k = req.k.or(kq.k);
        match (req.vector, req.id) {
            (Some(v), None) => {
                if let Some(i) = v.iter().position(|x| !(*x as f32).is_finite()) {
                    return Err(ApiError::new(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        format!("vector[{i}] = {} is NaN or infinity in f32", v[i]),
                    ));
                }
                (
                    SearchQuery::Vector(v.into_iter().map(|x| x as f32).collect()),
                    k,
                )
            }
            (None, Some(id)) => (SearchQuery::Id(id), k),
            _ => {
                return Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "give exactly one of \"vector\" and \"id\"",
                ))
            }
        }
    } else if ctype.starts_with("image/") || ctype.starts_with("application/octet-stream") {
        (SearchQuery::Image(bytes), kq.k)
    } else {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("content type {ctype:?}: send application/json or an image"),
        ));
    };
    let k = k.unwrap_or(
        st.cfg
            .default_k
            .min(st.index.len().saturating_sub(1).max(1)),
    );
    let st2 = st.clone();
    let work = tokio::task::spawn_blocking(move || -> Result<Vec<Hit>, ApiError> {
        let vector = match query {
            SearchQuery::Id(id) => return Ok(st2.index.search_id(id, k)?),
            SearchQuery::Vector(v) => v,
            SearchQuery::Image(bytes) => {
                let Some(embed) = &st2.embedder else {
                    return Err(ApiError::new(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        "this index has no model: image queries need an index built with --run",
                    ));
                };
                embed(&bytes).map_err(|e| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, e))?
            }
        };
        let dim = vector.len();
        let q = Matrix::new(1, dim, vector)
            .map_err(|e| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, e.to_string()))?;
        if dim == 0 {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "empty vector",
            ));
        }
        Ok(st2.index.search(&q, k)?.pop().unwrap_or_default())
    });
    let hits = match tokio::time::timeout(st.cfg.timeout, work).await {
        Err(_) => {
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("search did not finish within {:?}", st.cfg.timeout),
            ))
        }
        Ok(Err(e)) => {
            return Err(ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("search failed: {e}"),
            ))
        }
        Ok(Ok(r)) => r?,
    };
    Ok(Json(SearchResponse {
        k: hits.len(),
        hits,
        threshold: st.index.manifest().threshold.as_ref().map(|t| t.score),
        took_ms: t.elapsed().as_secs_f64() * 1e3,
    }))
}

async fn item(
    State(st): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id: i64 = id.parse().map_err(|_| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("id {id:?} is not an integer"),
        )
    })?;
    let pos = st.index.position(id)?;
    let (Some(paths), Some(root)) = (st.index.paths(), &st.image_root) else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "this index has no payload images",
        ));
    };
    let rel = PathBuf::from(&paths[pos]);
    let full = if rel.is_absolute() {
        rel
    } else {
        root.join(rel)
    };
    let full = full
        .canonicalize()
        .map_err(|_| ApiError::new(StatusCode::NOT_FOUND, format!("item {id}: payload missing")))?;
    if !full.starts_with(root) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!("item {id}: payload is outside the image root"),
        ));
    }
    let ctype = match full
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        Some("png") => "image/png",
        Some("jpg" | "jpeg") => "image/jpeg",
        Some("webp") => "image/webp",
        Some("bmp") => "image/bmp",
        Some("gif") => "image/gif",
        _ => "application/octet-stream",
    };
    let bytes = tokio::fs::read(&full).await.map_err(|_| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            format!("item {id}: payload unreadable"),
        )
    })?;
    Ok((
        [
            (header::CONTENT_TYPE, ctype),
            (header::CACHE_CONTROL, "max-age=3600"),
        ],
        bytes,
    )
        .into_response())
}
