//! HTTP side: accept loop (hyper, so a connection can really be reset), the API
//! handler and the `/_control/*` endpoints.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, Query, Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use bytes::Bytes;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::{watch, Notify};

use crate::data::{bounds_ms, ListQuery, Stream};
use crate::limiter::{exact_seconds, whole_seconds, Verdict};
use crate::{
    Delivery, FakeConfig, Fault, FaultKind, Mutation, RetryAfter, Shared, Stats, WebhookOnly,
    WebhookOnlyError, WebhookStats,
};

const VERSIONS: [&str; 2] = ["2023-10", "2026-04"];
const MAX_PAGE_SIZE: i64 = 50;
const DEFAULT_PAGE_SIZE: i64 = 10;

/// The fake only ever listens on loopback.
fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// Why the fake did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("fake-loop cannot listen on {addr}: {source} (with a fixed port, is another process using it? port 0 picks a free one)")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("fake-loop cannot start its server thread or runtime: {0}")]
    Runtime(#[source] std::io::Error),
    #[error("fake-loop's server thread stopped before it was listening")]
    ThreadDied,
}

/// A running fake server. Shuts down on [`FakeServer::shutdown`] or drop.
pub struct FakeServer {
    /// `http://127.0.0.1:PORT/admin/2023-10`
    pub base_url: String,
    /// `http://127.0.0.1:PORT`
    pub root_url: String,
    shared: Arc<Shared>,
    shutdown: watch::Sender<bool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FakeServer {
    /// Starts on its own tokio runtime on a std thread; returns once listening.
    pub fn start_in_thread(cfg: FakeConfig) -> Result<FakeServer, StartError> {
        Self::start_in_thread_with_clock(cfg, loop_time::Clock::new())
    }

    /// [`FakeServer::start_in_thread`] telling time by `clock` (a test's clock, moved
    /// forward by the test; see [`FakeServer::clock`]).
    pub fn start_in_thread_with_clock(
        cfg: FakeConfig,
        clock: loop_time::Clock,
    ) -> Result<FakeServer, StartError> {
        let shared = Arc::new(Shared::new(cfg, clock));
        let bind_error = |source| StartError::Bind {
            addr: loopback(0),
            source,
        };
        let std_listener = std::net::TcpListener::bind(loopback(0)).map_err(bind_error)?;
        std_listener.set_nonblocking(true).map_err(bind_error)?;
        let addr = std_listener.local_addr().map_err(bind_error)?;
        let (tx, rx) = watch::channel(false);
        let sh = shared.clone();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<(), StartError>>();
        let thread = std::thread::Builder::new()
            .name("fake-loop".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = ready_tx.send(Err(StartError::Runtime(e)));
                        return;
                    }
                };
                rt.block_on(async move {
                    match TcpListener::from_std(std_listener) {
                        Ok(l) => {
                            let _ = ready_tx.send(Ok(()));
                            serve(l, sh, rx).await;
                        }
                        Err(e) => {
                            let _ = ready_tx.send(Err(StartError::Runtime(e)));
                        }
                    }
                });
                rt.shutdown_timeout(Duration::from_millis(200));
            })
            .map_err(StartError::Runtime)?;
        ready_rx.recv().map_err(|_| StartError::ThreadDied)??;
        Ok(Self::handle(addr, shared, tx, Some(thread)))
    }

    /// Starts on the caller's tokio runtime.
    pub async fn start(cfg: FakeConfig) -> Result<FakeServer, StartError> {
        Self::start_on_port(cfg, 0).await
    }

    /// Starts on the caller's runtime, listening on `port` (0 = any).
    pub async fn start_on_port(cfg: FakeConfig, port: u16) -> Result<FakeServer, StartError> {
        let shared = Arc::new(Shared::new(cfg, loop_time::Clock::new()));
        let bind_error = |source| StartError::Bind {
            addr: loopback(port),
            source,
        };
        let listener = TcpListener::bind(loopback(port))
            .await
            .map_err(bind_error)?;
        let addr = listener.local_addr().map_err(bind_error)?;
        let (tx, rx) = watch::channel(false);
        tokio::spawn(serve(listener, shared.clone(), rx));
        Ok(Self::handle(addr, shared, tx, None))
    }

    fn handle(
        addr: SocketAddr,
        shared: Arc<Shared>,
        shutdown: watch::Sender<bool>,
        thread: Option<std::thread::JoinHandle<()>>,
    ) -> FakeServer {
        let root_url = format!("http://{addr}");
        FakeServer {
            base_url: format!("{root_url}/admin/2023-10"),
            root_url,
            shared,
            shutdown,
            thread,
        }
    }

    /// Current version of every record of a stream (`subscriptions`, `orders`,
    /// `customers`, `products`, `activity_logs`), in id order. Unknown stream: empty.
    pub fn records(&self, stream: &str) -> Vec<Value> {
        self.shared.records(stream).unwrap_or_default()
    }

    /// Applies a mutation now; returns the new versions.
    pub fn mutate(&self, m: Mutation) -> Vec<Value> {
        self.shared.mutate(&m)
    }

    /// Applies a mutation now and sends its webhooks as `how` says (instead of the plan).
    pub fn mutate_with(&self, m: Mutation, how: Delivery) -> Vec<Value> {
        self.shared.mutate_with(&m, how)
    }

    /// Sends a webhook without changing the API's data; returns its payload.
    pub fn webhook_only(&self, w: WebhookOnly) -> Result<Value, WebhookOnlyError> {
        self.shared.webhook_only(&w)
    }

    /// Sends every held webhook, newest first.
    pub fn release_webhooks(&self) {
        self.shared.release_webhooks()
    }

    /// What the webhook outbox did so far (all zero without a webhook target).
    pub fn webhook_stats(&self) -> WebhookStats {
        self.shared.webhook_stats()
    }

    /// Applies `m` just before answering the (`after_requests`+1)-th request to `path`
    /// counted from now.
    pub fn schedule(&self, after_requests: u64, path: &str, m: Mutation) {
        self.shared.schedule(after_requests, path, m)
    }

    /// Applies `m` before every `every_n_requests`-th request to `path` from now on.
    /// Cancel every scheduled and recurring mutation.
    pub fn stop_mutations(&self) {
        self.shared.stop_mutations()
    }

    pub fn mutate_every(&self, path: &str, every_n_requests: u64, m: Mutation) {
        self.shared.mutate_every(path, every_n_requests, m)
    }

    /// Queues a fault; each matching API request consumes one of `times`.
    pub fn inject(&self, f: Fault) {
        self.shared.inject(f)
    }

    pub fn stats(&self) -> Stats {
        self.shared.stats()
    }

    pub fn set_token(&self, t: &str) {
        self.shared.set_token(t)
    }

    /// The fake's clock (a handle sharing it): every `updatedAt`/`createdAt` it stamps,
    /// its webhooks' times and its `Date` header. A test moves it forward
    /// ([`loop_time::Clock::advance`]) instead of sleeping, and starts the connector with
    /// the same offset ([`loop_time::TEST_CLOCK_OFFSET_ENV`]) so that both agree on now.
    pub fn clock(&self) -> loop_time::Clock {
        self.shared.time.clone()
    }

    pub fn shutdown(self) {
        drop(self)
    }
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

// ---------------------------------------------------------------------------
// Accept loop

#[derive(Clone)]
struct ConnKill(Arc<Notify>);

async fn serve(listener: TcpListener, shared: Arc<Shared>, mut shutdown: watch::Receiver<bool>) {
    if let Some(outbox) = &shared.outbox {
        tokio::spawn(Arc::clone(outbox).run());
    }
    let router = router(shared);
    loop {
        tokio::select! {
            r = listener.accept() => match r {
                Ok((stream, _)) => {
                    tokio::spawn(connection(stream, router.clone(), shutdown.clone()));
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(5)).await,
            },
            _ = shutdown.changed() => break,
        }
    }
}

async fn connection(
    stream: tokio::net::TcpStream,
    router: Router,
    mut shutdown: watch::Receiver<bool>,
) {
    let _ = stream.set_nodelay(true);
    // A duplicate of the socket, so a `ConnectionReset` fault can set SO_LINGER 0 and
    // make the close a real RST.
    let Ok(std_stream) = stream.into_std() else {
        return;
    };
    let dup = std_stream.try_clone().ok();
    let Ok(stream) = tokio::net::TcpStream::from_std(std_stream) else {
        return;
    };
    let kill = Arc::new(Notify::new());
    let k = kill.clone();
    let svc = hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
        req.extensions_mut().insert(ConnKill(k.clone()));
        let mut r = router.clone();
        async move { tower_service::Service::call(&mut r, req).await }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .keep_alive(true)
        .serve_connection(hyper_util::rt::TokioIo::new(stream), svc);
    tokio::select! {
        _ = conn => {}
        _ = kill.notified() => {
            if let Some(d) = &dup {
                let _ = socket2::SockRef::from(d).set_linger(Some(Duration::ZERO));
            }
        }
        _ = shutdown.changed() => {}
    }
    drop(dup);
}

fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/_control/mutate", post(ctl_mutate))
        .route("/_control/schedule", post(ctl_schedule))
        .route("/_control/mutate_every", post(ctl_mutate_every))
        .route("/_control/fault", post(ctl_fault))
        .route("/_control/token", post(ctl_token))
        .route("/_control/records/{stream}", get(ctl_records))
        .route("/_control/stats", get(ctl_stats))
        .route("/_control/mutate_with", post(ctl_mutate_with))
        .route("/_control/webhook_only", post(ctl_webhook_only))
        .route("/_control/webhooks", get(ctl_webhook_stats))
        .route("/_control/webhooks/release", post(ctl_webhooks_release))
        .fallback(api)
        .with_state(shared)
}

// ---------------------------------------------------------------------------
// Control endpoints

async fn ctl_mutate(State(s): State<Arc<Shared>>, Json(m): Json<Mutation>) -> Json<Vec<Value>> {
    Json(s.mutate(&m))
}

#[derive(Deserialize)]
struct MutateWithReq {
    mutation: Mutation,
    #[serde(default)]
    delivery: Delivery,
}

async fn ctl_mutate_with(
    State(s): State<Arc<Shared>>,
    Json(r): Json<MutateWithReq>,
) -> Json<Vec<Value>> {
    Json(s.mutate_with(&r.mutation, r.delivery))
}

async fn ctl_webhook_only(State(s): State<Arc<Shared>>, Json(w): Json<WebhookOnly>) -> Response {
    match s.webhook_only(&w) {
        Ok(payload) => Json(payload).into_response(),
        Err(e) => error(StatusCode::UNPROCESSABLE_ENTITY, &e.to_string()),
    }
}

async fn ctl_webhook_stats(State(s): State<Arc<Shared>>) -> Json<WebhookStats> {
    Json(s.webhook_stats())
}

async fn ctl_webhooks_release(State(s): State<Arc<Shared>>) -> Json<Value> {
    s.release_webhooks();
    Json(json!({"ok": true}))
}

#[derive(Deserialize)]
struct ScheduleReq {
    #[serde(default)]
    after_requests: u64,
    path: String,
    mutation: Mutation,
}

async fn ctl_schedule(State(s): State<Arc<Shared>>, Json(r): Json<ScheduleReq>) -> Json<Value> {
    s.schedule(r.after_requests, &r.path, r.mutation);
    Json(json!({"ok": true}))
}

#[derive(Deserialize)]
struct EveryReq {
    path: String,
    every_n_requests: u64,
    mutation: Mutation,
}

async fn ctl_mutate_every(State(s): State<Arc<Shared>>, Json(r): Json<EveryReq>) -> Json<Value> {
    s.mutate_every(&r.path, r.every_n_requests, r.mutation);
    Json(json!({"ok": true}))
}

async fn ctl_fault(State(s): State<Arc<Shared>>, Json(f): Json<Fault>) -> Json<Value> {
    s.inject(f);
    Json(json!({"ok": true}))
}

#[derive(Deserialize)]
struct TokenReq {
    token: String,
}

async fn ctl_token(State(s): State<Arc<Shared>>, Json(t): Json<TokenReq>) -> Json<Value> {
    s.set_token(&t.token);
    Json(json!({"ok": true}))
}

async fn ctl_records(State(s): State<Arc<Shared>>, Path(stream): Path<String>) -> Response {
    match s.records(&stream) {
        Some(r) => Json(r).into_response(),
        None => error(StatusCode::NOT_FOUND, "Unknown stream"),
    }
}

async fn ctl_stats(State(s): State<Arc<Shared>>) -> Json<Stats> {
    Json(s.stats())
}

// ---------------------------------------------------------------------------
// API

fn error(status: StatusCode, message: &str) -> Response {
    let body = json!({"success": false, "message": message, "data": {}}).to_string();
    json_response(status, body)
}

fn json_response(status: StatusCode, body: impl Into<Body>) -> Response {
    let mut r = Response::new(body.into());
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    r
}

/// Limit (requests, per seconds) of an endpoint key.
fn limit_of(key: &str) -> Option<(u32, f64)> {
    Some(match key {
        "/subscription" | "/order" | "/activityLog" => (2, 3.0),
        "/customer" => (1, 1.0),
        "/product" => (6, 1.0),
        "/subscription/{id}" => (5, 1.0),
        _ => return None,
    })
}

enum Limit {
    Ok {
        remaining: u32,
    },
    /// Refused; the `Retry-After` text when this 429 carries one.
    Over {
        retry_after: Option<String>,
    },
}

/// Splits `/admin/{version}/{rest}`; returns (version, endpoint, stats key).
fn route(path: &str) -> Option<(&str, &str, String)> {
    let rest = path.strip_prefix("/admin/")?;
    let (version, _) = rest.split_once('/')?;
    let endpoint = &rest[version.len()..];
    let endpoint = endpoint.trim_end_matches('/');
    let key = match endpoint.strip_prefix("/subscription/") {
        Some(id) if !id.contains('/') => "/subscription/{id}".to_string(),
        _ => endpoint.to_string(),
    };
    Some((version, endpoint, key))
}

struct Decision {
    mutations: Vec<Mutation>,
    fault: Option<FaultKind>,
    authorized: bool,
    limit: Option<Limit>,
}

fn decide(shared: &Shared, key: &str, token: Option<&str>, limited: bool) -> Decision {
    let mut c = shared.ctl();
    let count = {
        let n = c.stats.requests.entry(key.to_string()).or_default();
        *n += 1;
        *n
    };
    let mut mutations = Vec::new();
    let mut i = 0;
    while i < c.scheduled.len() {
        if c.scheduled[i].path == key && c.scheduled[i].at <= count {
            mutations.push(c.scheduled.remove(i).m);
        } else {
            i += 1;
        }
    }
    for r in &c.recurring {
        if r.path == key && count > r.base && (count - r.base) % r.every == 0 {
            mutations.push(r.m.clone());
        }
    }
    let mut fault = None;
    if let Some(pos) = c
        .faults
        .iter()
        .position(|f| f.path.as_deref().is_none_or(|p| p == key))
    {
        let f = &mut c.faults[pos];
        fault = Some(f.kind.clone());
        f.times -= 1;
        if f.times == 0 {
            c.faults.remove(pos);
        }
        c.stats.faults_served += 1;
        if matches!(fault, Some(FaultKind::RateLimited { .. })) {
            c.stats.rate_limited += 1;
            *c.stats
                .rate_limited_by_path
                .entry(key.to_string())
                .or_default() += 1;
        }
    }
    let authorized = token == Some(c.token.as_str());
    let blocking = matches!(fault, Some(FaultKind::Slow { .. }) | None);
    if !authorized && blocking {
        c.stats.unauthorized += 1;
    }
    let mut limit = None;
    if authorized && blocking && limited && shared.cfg.rate_limits {
        if let Some((n, per)) = limit_of(key) {
            let lim = crate::limiter::Limit::scaled(n, per, shared.cfg.rate_scale);
            let now = shared.clock.now();
            limit = Some(match c.limiters.check(key, lim, now) {
                Verdict::Accepted { remaining } => Limit::Ok { remaining },
                Verdict::Refused { wait } => {
                    c.limited_count += 1;
                    c.stats.rate_limited += 1;
                    *c.stats
                        .rate_limited_by_path
                        .entry(key.to_string())
                        .or_default() += 1;
                    let retry_after = match shared.cfg.retry_after {
                        RetryAfter::Always => Some(exact_seconds(wait)),
                        RetryAfter::Never => None,
                        RetryAfter::Sometimes => {
                            (c.limited_count % 2 == 1).then(|| whole_seconds(wait))
                        }
                        RetryAfter::RoundedUp => Some(whole_seconds(wait)),
                    };
                    Limit::Over { retry_after }
                }
            });
        }
    }
    Decision {
        mutations,
        fault,
        authorized,
        limit,
    }
}

/// Every API answer carries the fake's own `Date` (the engine reads the server's clock
/// from it), so that a test that moved the fake's clock sees it there too.
async fn api(State(shared): State<Arc<Shared>>, req: Request) -> Response {
    let mut r = api_answer(Arc::clone(&shared), req).await;
    let date = shared
        .time
        .now()
        .format("%a, %d %b %Y %H:%M:%S GMT")
        .to_string();
    if let Ok(v) = HeaderValue::try_from(date) {
        r.headers_mut().insert(header::DATE, v);
    }
    r
}

async fn api_answer(shared: Arc<Shared>, req: Request) -> Response {
    let kill = req.extensions().get::<ConnKill>().cloned();
    let method = req.method().clone();
    let uri = req.uri().clone();
    let headers = req.headers().clone();
    drop(req);

    let Some((version, endpoint, key)) = route(uri.path()) else {
        return error(StatusCode::NOT_FOUND, "Not found");
    };
    let token = headers.get("x-loop-token").and_then(|v| v.to_str().ok());
    let known = VERSIONS.contains(&version)
        && method == Method::GET
        && !(version == "2026-04" && endpoint == "/order");
    // A loaded server's delay comes before the count: the limiter sees the request late.
    if let Some(jitter) = &shared.cfg.jitter {
        let delay = jitter.sample();
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
    }
    let d = decide(&shared, &key, token, known);
    for m in &d.mutations {
        shared.mutate(m);
    }
    match d.fault {
        None => {}
        Some(FaultKind::Slow { millis }) => tokio::time::sleep(Duration::from_millis(millis)).await,
        Some(FaultKind::Status(n)) => {
            let st = StatusCode::from_u16(n).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            return error(st, st.canonical_reason().unwrap_or("Error"));
        }
        Some(FaultKind::RateLimited { retry_after_secs }) => {
            let mut r = error(StatusCode::TOO_MANY_REQUESTS, "Too many requests");
            r.headers_mut()
                .insert("x-ratelimit-remaining", HeaderValue::from(0));
            if let Some(s) = retry_after_secs {
                r.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(s));
            }
            return r;
        }
        Some(FaultKind::ConnectionReset) => {
            if let Some(k) = kill {
                k.0.notify_one();
            }
            // The connection task drops this future together with the connection.
            tokio::time::sleep(Duration::from_secs(5)).await;
            return error(StatusCode::INTERNAL_SERVER_ERROR, "Connection reset");
        }
        Some(FaultKind::HtmlErrorPage) => {
            let mut r = Response::new(Body::from(
                "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>cloudflare</center>\r\n</body>\r\n</html>\r\n",
            ));
            *r.status_mut() = StatusCode::BAD_GATEWAY;
            r.headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html"));
            return r;
        }
        Some(FaultKind::SuccessFalse) => {
            return json_response(
                StatusCode::OK,
                r#"{"success":false,"message":"Internal error","data":{}}"#,
            );
        }
        Some(FaultKind::MalformedJson) => {
            let body = fault_body(&shared, version, endpoint, uri.query());
            let cut = (body.len() / 2).max(1).min(body.len());
            return json_response(StatusCode::OK, body.slice(..cut));
        }
        Some(FaultKind::TruncatedBody) => {
            let body = fault_body(&shared, version, endpoint, uri.query());
            let full = body.len() + 1;
            let part = body.slice(..body.len() / 2);
            let stream = futures::stream::unfold(0u8, move |st| {
                let part = part.clone();
                async move {
                    match st {
                        0 => Some((Ok::<Bytes, std::io::Error>(part), 1)),
                        1 => {
                            tokio::time::sleep(Duration::from_millis(30)).await;
                            Some((Err(std::io::Error::other("truncated body")), 2))
                        }
                        _ => None,
                    }
                }
            });
            let mut r = json_response(StatusCode::OK, Body::from_stream(stream));
            r.headers_mut()
                .insert(header::CONTENT_LENGTH, HeaderValue::from(full));
            return r;
        }
    }
    if !d.authorized {
        return error(StatusCode::UNAUTHORIZED, "invalid token");
    }
    if !known {
        return error(StatusCode::NOT_FOUND, "Not found");
    }
    let mut remaining = None;
    match d.limit {
        Some(Limit::Over { retry_after }) => {
            let mut r = error(StatusCode::TOO_MANY_REQUESTS, "Too many requests");
            r.headers_mut()
                .insert("x-ratelimit-remaining", HeaderValue::from(0));
            if let Some(v) = retry_after.and_then(|t| HeaderValue::try_from(t).ok()) {
                r.headers_mut().insert(header::RETRY_AFTER, v);
            }
            return r;
        }
        Some(Limit::Ok { remaining: n }) => remaining = Some(n),
        None => {}
    }
    let mut r = match answer(&shared, endpoint, uri.query()) {
        Ok(body) => {
            shared.ctl().stats.pages_served += 1;
            json_response(StatusCode::OK, body)
        }
        Err((st, msg)) => error(st, &msg),
    };
    if let Some(n) = remaining {
        r.headers_mut()
            .insert("x-ratelimit-remaining", HeaderValue::from(n));
    }
    r
}

/// Body used by TruncatedBody / MalformedJson: the page the request would get.
fn fault_body(shared: &Shared, version: &str, endpoint: &str, query: Option<&str>) -> Bytes {
    let ok = VERSIONS.contains(&version) && !(version == "2026-04" && endpoint == "/order");
    match ok.then(|| answer(shared, endpoint, query)) {
        Some(Ok(b)) => b,
        _ => Bytes::from_static(
            br#"{"success":true,"message":"Fetched successfully","data":[],"code":"SUCCESS","pageInfo":{"hasNextPage":false,"hasPreviousPage":false}}"#,
        ),
    }
}

type ApiError = (StatusCode, String);

fn unprocessable(msg: impl Into<String>) -> ApiError {
    (StatusCode::UNPROCESSABLE_ENTITY, msg.into())
}

fn answer(shared: &Shared, endpoint: &str, query: Option<&str>) -> Result<Bytes, ApiError> {
    let params: HashMap<String, String> = match query {
        Some(q) => Query::<Vec<(String, String)>>::try_from_uri(
            &format!("/?{q}")
                .parse()
                .map_err(|_| unprocessable("Invalid query"))?,
        )
        .map_err(|_| unprocessable("Invalid query"))?
        .0
        .into_iter()
        .collect(),
        None => HashMap::new(),
    };
    if let Some(id) = endpoint.strip_prefix("/subscription/") {
        return detail(shared, id);
    }
    let Some(stream) = Stream::from_path(endpoint) else {
        return Err((StatusCode::NOT_FOUND, "Not found".into()));
    };
    let int = |name: &str| -> Result<Option<i64>, ApiError> {
        match params.get(name) {
            None => Ok(None),
            Some(v) => v
                .trim()
                .parse::<i64>()
                .map(Some)
                .map_err(|_| unprocessable(format!("{name} | Must be an integer"))),
        }
    };
    let page_no = int("pageNo")?.unwrap_or(1);
    if page_no < 1 {
        return Err(unprocessable("pageNo | Must be greater than or equal to 1"));
    }
    let page_size = int("pageSize")?.unwrap_or(DEFAULT_PAGE_SIZE);
    if page_size < 1 {
        return Err(unprocessable(
            "pageSize | Must be greater than or equal to 1",
        ));
    }
    let page_size = page_size.min(MAX_PAGE_SIZE) as usize;
    let fb = shared.cfg.filter_bounds;
    let mut q = ListQuery {
        skip: ((page_no - 1) as usize).saturating_mul(page_size),
        take: page_size,
        ..ListQuery::default()
    };
    if matches!(stream, Stream::Subscriptions | Stream::Orders) {
        q.updated = bounds_ms(int("updatedAtStartEpoch")?, int("updatedAtEndEpoch")?, fb);
    }
    if matches!(stream, Stream::Subscriptions | Stream::ActivityLogs) {
        q.created = bounds_ms(int("createdAtStartEpoch")?, int("createdAtEndEpoch")?, fb);
    }
    if stream == Stream::Subscriptions {
        if let Some(st) = params.get("status").filter(|s| !s.trim().is_empty()) {
            let mut v = Vec::new();
            for s in st.split(',') {
                let s = s.trim().to_ascii_uppercase();
                if !["ACTIVE", "PAUSED", "CANCELLED", "EXPIRED"].contains(&s.as_str()) {
                    return Err(unprocessable(
                        "status | Must be one of ACTIVE, PAUSED, CANCELLED, EXPIRED",
                    ));
                }
                v.push(s);
            }
            q.statuses = Some(v);
        }
    }
    if stream == Stream::Products {
        q.selling_plan_only = !params
            .get("type")
            .is_some_and(|t| t.eq_ignore_ascii_case("ALL"));
    }
    let data = shared.data_read();
    let (recs, has_next) = data.table(stream).page(shared.cfg.page_order, &q);
    let recs: Vec<_> = recs.into_iter().map(|r| data.text(r)).collect();
    let mut body = String::with_capacity(recs.iter().map(|r| r.len() + 1).sum::<usize>() + 200);
    body.push_str(r#"{"success":true,"message":""#);
    body.push_str(stream.message());
    body.push_str(r#"","data":["#);
    for (i, r) in recs.iter().enumerate() {
        if i > 0 {
            body.push(',');
        }
        body.push_str(r);
    }
    body.push_str(r#"],"code":"SUCCESS","pageInfo":{"hasNextPage":"#);
    body.push_str(if has_next { "true" } else { "false" });
    body.push_str(r#","hasPreviousPage":"#);
    body.push_str(if page_no > 1 { "true" } else { "false" });
    body.push_str("}}");
    Ok(Bytes::from(body))
}

fn detail(shared: &Shared, id: &str) -> Result<Bytes, ApiError> {
    let not_found = || (StatusCode::NOT_FOUND, "Subscription not found".to_string());
    let data = shared.data_read();
    let t = data.table(Stream::Subscriptions);
    let key = if let Some(s) = id.strip_prefix("shopify-") {
        let sid: i64 = s.parse().map_err(|_| not_found())?;
        data.subscription_by_shopify_id(sid)
            .ok_or_else(not_found)?
            .key
    } else {
        id.strip_prefix("loop-")
            .unwrap_or(id)
            .parse::<i64>()
            .map_err(|_| not_found())?
    };
    let idx = t
        .recs
        .binary_search_by_key(&key, |r| r.key)
        .map_err(|_| not_found())?;
    let body = format!(
        r#"{{"success":true,"message":"Subscription fetched successfully","data":{},"code":"SUCCESS"}}"#,
        data.text(&t.recs[idx])
    );
    Ok(Bytes::from(body))
}
