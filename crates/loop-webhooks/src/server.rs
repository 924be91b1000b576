//! The HTTP receiver: checks a delivery (size, signature, headers, JSON, in that order),
//! journals it through the group-committing writer, and answers 2xx only after commit.
//! Also serves `/healthz`, `/readyz` and `/metrics`, and with `emit` prints every
//! accepted event as one JSON line on stdout, in commit order.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use http_body_util::{BodyExt as _, LengthLimitError, Limited};
use loop_entities::is_known_topic;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{json, Value};
use sha2::{Digest as _, Sha256};
use tokio::io::AsyncWriteExt as _;
use tokio::sync::mpsc;

use crate::connection::{accept_loop, fit_fd_limit, ConnectionLimits};
use crate::journal::{
    AppendOutcome, CommittedEvent, EntityRef, Journal, JournalError, JournalOptions, NewEvent,
};
use crate::metrics::Metrics;
use crate::signature::{self, Encoding, Secret};

pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
pub const DEFAULT_PATH: &str = "/webhooks/loop";
pub const DEFAULT_MAX_BODY_BYTES: usize = 1024 * 1024;

const HEADER_SIGNATURE: &str = "x-loop-signature";
const HEADER_ID: &str = "x-loop-webhook-id";
const HEADER_TOPIC: &str = "x-loop-webhook-topic";
const HEADER_API_VERSION: &str = "x-loop-webhook-api-version";
const HEADER_CREATED_AT: &str = "x-loop-webhook-created-at";
const HEADER_DELIVERY_AT: &str = "x-loop-webhook-delivery-at";
const HEADER_RETRY_COUNT: &str = "x-loop-webhook-retry-count";

/// How long `/readyz` waits for the writer to commit its probe.
const READY_TIMEOUT: Duration = Duration::from_secs(2);

/// Why the receiver did not start, or stopped with an error. Each says what to change.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// Every problem with the [`ServerConfig`], found before anything is opened.
    #[error("invalid webhook receiver config:\n  {}", .problems.join("\n  "))]
    InvalidConfig { problems: Vec<String> },
    /// The journal could not be opened or read (its message names the file).
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error("cannot listen on {addr}: {source} ({})", bind_hint(.source))]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// What to do when the listen address cannot be bound, by the reason it could not.
fn bind_hint(e: &std::io::Error) -> &'static str {
    match e.kind() {
        std::io::ErrorKind::AddrInUse => {
            "is another process using it? stop it or choose another port"
        }
        std::io::ErrorKind::PermissionDenied => {
            "ports below 1024 need privileges: choose a higher port"
        }
        std::io::ErrorKind::AddrNotAvailable => {
            "this machine has no such address: use 127.0.0.1, 0.0.0.0 or one of its own addresses"
        }
        _ => "is another process using it, or is the address not this machine's?",
    }
}

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    /// Path of the webhook endpoint, e.g. `/webhooks/loop`.
    pub path: String,
    /// Any of these may have signed a delivery (one per webhook, plus rotation).
    pub secrets: Vec<Secret>,
    pub encoding: Encoding,
    pub max_body_bytes: usize,
    pub journal_path: PathBuf,
    /// Print each accepted event as a JSON line on stdout after commit.
    pub emit: bool,
    /// The cap on open connections and the timeouts that free them.
    pub limits: ConnectionLimits,
}

impl ServerConfig {
    /// A config with the defaults: 127.0.0.1:8080, `/webhooks/loop`, auto encoding,
    /// 1 MiB body limit, no emit, the default [`ConnectionLimits`].
    pub fn new(journal_path: impl Into<PathBuf>, secrets: Vec<Secret>) -> Self {
        ServerConfig {
            listen: DEFAULT_LISTEN.parse().expect("valid default address"),
            path: DEFAULT_PATH.to_string(),
            secrets,
            encoding: Encoding::Auto,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            journal_path: journal_path.into(),
            emit: false,
            limits: ConnectionLimits::default(),
        }
    }

    fn validate(&self) -> Result<(), ServeError> {
        let mut problems = Vec::new();
        if self.secrets.is_empty() {
            problems.push("no webhook secret is configured: every delivery would be rejected; add the secret shown for the webhook in Loop".to_string());
        }
        if let Some(p) = self.secrets.iter().find_map(secret_problem) {
            problems.push(format!("a webhook secret {p}"));
        }
        problems.extend(path_problem(&self.path));
        if self.max_body_bytes == 0 {
            problems.push("max_body_bytes is 0: use a positive size, e.g. 1048576".to_string());
        }
        problems.extend(self.limits.problems());
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ServeError::InvalidConfig { problems })
        }
    }
}

/// What is wrong with one webhook secret, if anything (the rule every caller applies).
pub fn secret_problem(secret: &Secret) -> Option<&'static str> {
    secret
        .expose()
        .is_empty()
        .then_some("is empty: remove it or set its value")
}

/// What is wrong with the webhook endpoint's path, if anything.
pub fn path_problem(path: &str) -> Option<String> {
    if !path.starts_with('/') {
        return Some(format!(
            "webhook path {path:?} must start with '/', e.g. {DEFAULT_PATH}"
        ));
    }
    if ["/healthz", "/readyz", "/metrics"].contains(&path) {
        return Some(format!(
            "webhook path {path:?} is used by the receiver itself: choose another, e.g. {DEFAULT_PATH}"
        ));
    }
    None
}

struct AppState {
    secrets: Vec<Secret>,
    encoding: Encoding,
    max_body_bytes: usize,
    body_read_timeout: Duration,
    journal: Journal,
    metrics: Metrics,
}

/// A receiver whose socket is bound and journal open, not yet serving.
pub struct BoundServer {
    listener: tokio::net::TcpListener,
    local_addr: SocketAddr,
    router: Router,
    limits: ConnectionLimits,
    metrics: Metrics,
    journal: Journal,
    emitter: Option<tokio::task::JoinHandle<()>>,
}

impl std::fmt::Debug for BoundServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BoundServer")
            .field("local_addr", &self.local_addr)
            .finish_non_exhaustive()
    }
}

/// Validates the config, opens the journal and binds the socket (port 0 picks a free
/// port; see [`BoundServer::local_addr`]). Logs `listening on ADDR` to stderr.
pub async fn bind(mut cfg: ServerConfig) -> Result<BoundServer, ServeError> {
    cfg.validate()?;
    cfg.limits.max_connections = fit_fd_limit(cfg.limits.max_connections);
    let (committed, emitter) = if cfg.emit {
        let (tx, rx) = mpsc::unbounded_channel();
        (Some(tx), Some(tokio::spawn(emit_lines(rx))))
    } else {
        (None, None)
    };
    let journal = Journal::open(
        &cfg.journal_path,
        JournalOptions {
            committed,
            ..JournalOptions::default()
        },
    )?;
    let bind_error = |source| ServeError::Bind {
        addr: cfg.listen,
        source,
    };
    let listener = tokio::net::TcpListener::bind(cfg.listen)
        .await
        .map_err(bind_error)?;
    let local_addr = listener.local_addr().map_err(bind_error)?;
    let metrics = Metrics::new();
    let state = Arc::new(AppState {
        secrets: cfg.secrets,
        encoding: cfg.encoding,
        max_body_bytes: cfg.max_body_bytes,
        body_read_timeout: cfg.limits.body_read_timeout,
        journal: journal.clone(),
        metrics: metrics.clone(),
    });
    let router = Router::new()
        .route(&cfg.path, post(receive))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(ready))
        .route("/metrics", get(metrics_text))
        .with_state(state);
    eprintln!(
        "loop-webhooks: listening on {local_addr} path={} journal={} max_connections={} header_read_timeout={:?} body_read_timeout={:?} idle_timeout={:?}",
        cfg.path,
        cfg.journal_path.display(),
        cfg.limits.max_connections,
        cfg.limits.header_read_timeout,
        cfg.limits.body_read_timeout,
        cfg.limits.idle_timeout,
    );
    Ok(BoundServer {
        listener,
        local_addr,
        router,
        limits: cfg.limits,
        metrics,
        journal,
        emitter,
    })
}

impl BoundServer {
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Serves until `shutdown` resolves, then finishes in-flight requests, lets the
    /// writer commit what is queued, and flushes emitted lines.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServeError> {
        accept_loop(
            self.listener,
            self.router,
            self.limits,
            self.metrics,
            shutdown,
        )
        .await;
        eprintln!("loop-webhooks: stopping; draining the journal writer");
        self.journal.shutdown().await;
        if let Some(emitter) = self.emitter {
            let _ = emitter.await;
        }
        eprintln!("loop-webhooks: stopped");
        Ok(())
    }
}

/// Binds and serves until `shutdown` resolves (see [`bind`] and [`BoundServer::run`]).
pub async fn serve(
    cfg: ServerConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    bind(cfg).await?.run(shutdown).await
}

/// Resolves on SIGTERM or SIGINT (Ctrl-C).
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}

fn error_response(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({ "error": message.into() }))).into_response()
}

impl AppState {
    fn reject(&self, status: StatusCode, reason: &str, message: String) -> Response {
        self.metrics.reject(reason);
        eprintln!(
            "loop-webhooks: rejected reason={reason} status={} {message}",
            status.as_u16()
        );
        error_response(status, message)
    }
}

#[derive(Deserialize)]
struct Delivery<'a> {
    #[serde(borrow)]
    payload: Option<&'a RawValue>,
    #[serde(rename = "metaData", borrow)]
    meta_data: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct MetaData {
    #[serde(rename = "myshopifyDomain")]
    myshopify_domain: Option<String>,
}

#[derive(Deserialize)]
struct PayloadKeys {
    id: Option<Value>,
    #[serde(rename = "updatedAt")]
    updated_at: Option<Value>,
}

async fn receive(State(app): State<Arc<AppState>>, headers: HeaderMap, body: Body) -> Response {
    let started = Instant::now();
    app.metrics.received.inc();
    let limit = app.max_body_bytes;

    // 1. Size.
    let declared = headers
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return app.reject(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!("body is larger than the limit of {limit} bytes"),
        );
    }
    // A sender that stops half way would otherwise hold the connection for ever.
    let read = tokio::time::timeout(app.body_read_timeout, Limited::new(body, limit).collect());
    let Ok(read) = read.await else {
        app.metrics.cut("body_timeout");
        let after = app.body_read_timeout;
        eprintln!("loop-webhooks: cut reason=body_timeout status=408 the body did not arrive within {after:?}");
        let mut response = error_response(
            StatusCode::REQUEST_TIMEOUT,
            format!("the body did not arrive within {after:?}"),
        );
        response.headers_mut().insert(
            axum::http::header::CONNECTION,
            axum::http::HeaderValue::from_static("close"),
        );
        return response;
    };
    let bytes = match read {
        Ok(collected) => collected.to_bytes(),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => {
            return app.reject(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                format!("body is larger than the limit of {limit} bytes"),
            );
        }
        Err(e) => {
            return app.reject(
                StatusCode::BAD_REQUEST,
                "bad_json",
                format!("could not read the request body: {e}"),
            );
        }
    };

    // 2. Signature, over the raw bytes.
    let Some(sig) = headers.get(HEADER_SIGNATURE) else {
        return app.reject(
            StatusCode::UNAUTHORIZED,
            "missing_signature",
            "missing X-Loop-Signature header".into(),
        );
    };
    let sig = sig.to_str().unwrap_or("");
    if !signature::verify(&app.secrets, app.encoding, &bytes, sig) {
        return app.reject(
            StatusCode::UNAUTHORIZED,
            "bad_signature",
            "X-Loop-Signature does not match the body under any configured secret".into(),
        );
    }
    app.metrics.verified.inc();

    // 3. Headers.
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(str::to_string)
    };
    let Some(webhook_id) = header(HEADER_ID) else {
        return app.reject(
            StatusCode::BAD_REQUEST,
            "missing_header",
            "missing X-Loop-Webhook-Id header".into(),
        );
    };
    let Some(topic) = header(HEADER_TOPIC) else {
        return app.reject(
            StatusCode::BAD_REQUEST,
            "missing_header",
            "missing X-Loop-Webhook-Topic header".into(),
        );
    };

    // 4. JSON.
    let (payload, shop_domain, entity) = match parse_body(&bytes, &topic) {
        Ok(parsed) => parsed,
        Err(message) => return app.reject(StatusCode::BAD_REQUEST, "bad_json", message),
    };

    let known_topic = is_known_topic(&topic);
    let event = NewEvent {
        webhook_id,
        topic,
        api_version: header(HEADER_API_VERSION),
        created_at: header(HEADER_CREATED_AT),
        delivery_at: header(HEADER_DELIVERY_AT),
        retry_count: header(HEADER_RETRY_COUNT).and_then(|v| v.parse().ok()),
        received_at: loop_time::now(),
        shop_domain,
        entity,
        payload,
        body_sha256: hex::encode(Sha256::digest(&bytes)),
    };
    let webhook_id_for_log =
        (!known_topic).then(|| (event.webhook_id.clone(), event.topic.clone()));
    match app.journal.append(event).await {
        Ok(AppendOutcome::Accepted { seq, stale }) => {
            if stale {
                app.metrics.stale.inc();
            }
            if let Some((id, topic)) = webhook_id_for_log {
                app.metrics.unknown_topic.inc();
                eprintln!(
                    "loop-webhooks: journaled unknown topic={topic:?} webhook_id={id:?} seq={seq}"
                );
            }
            app.metrics
                .ack_seconds
                .observe(started.elapsed().as_secs_f64());
            (
                StatusCode::OK,
                Json(json!({ "status": "accepted", "seq": seq })),
            )
                .into_response()
        }
        Ok(AppendOutcome::Duplicate) => {
            app.metrics.duplicates.inc();
            app.metrics
                .ack_seconds
                .observe(started.elapsed().as_secs_f64());
            (StatusCode::OK, Json(json!({ "status": "duplicate" }))).into_response()
        }
        Err(e) => app.reject(
            StatusCode::SERVICE_UNAVAILABLE,
            "journal_error",
            format!("the delivery could not be journaled, retry later: {e}"),
        ),
    }
}

/// The payload text as received, the shop domain, and the entity the event is about.
fn parse_body(
    bytes: &[u8],
    topic: &str,
) -> Result<(String, Option<String>, Option<EntityRef>), String> {
    let text = std::str::from_utf8(bytes).map_err(|_| "body is not UTF-8 JSON".to_string())?;
    let trimmed = text.trim_start();
    if trimmed.is_empty() {
        return Err("body is empty: expected a JSON object with a \"payload\" field".into());
    }
    if !trimmed.starts_with('{') {
        return Err(
            "body is not a JSON object: expected {\"payload\": {...}, \"metaData\": {...}}".into(),
        );
    }
    let delivery: Delivery<'_> =
        serde_json::from_str(text).map_err(|e| format!("body is not valid JSON: {e}"))?;
    let payload = delivery
        .payload
        .filter(|p| p.get().trim_start().starts_with('{'))
        .ok_or_else(|| "body has no \"payload\" object".to_string())?;
    let shop_domain = delivery
        .meta_data
        .and_then(|m| serde_json::from_str::<MetaData>(m.get()).ok())
        .and_then(|m| m.myshopify_domain);
    let keys: PayloadKeys = serde_json::from_str(payload.get())
        .map_err(|e| format!("\"payload\" is not a JSON object: {e}"))?;
    let entity = entity_of(topic, keys);
    Ok((payload.get().to_string(), shop_domain, entity))
}

fn entity_of(topic: &str, keys: PayloadKeys) -> Option<EntityRef> {
    let kind = loop_entities::of_topic(topic)?.kind;
    let id = match keys.id? {
        Value::Number(n) => n.to_string(),
        Value::String(s) if !s.is_empty() => s,
        _ => return None,
    };
    // RFC 3339 only: Loop always sends a full date-time, and a bare date is too coarse
    // to order versions of an entity by.
    let updated_at_ms = match keys.updated_at {
        Some(Value::String(s)) => loop_time::parse_rfc3339_ms(&s),
        _ => None,
    };
    Some(EntityRef {
        kind: kind.to_string(),
        id,
        updated_at_ms,
    })
}

async fn ready(State(app): State<Arc<AppState>>) -> Response {
    match tokio::time::timeout(READY_TIMEOUT, app.journal.probe()).await {
        Ok(Ok(())) => (StatusCode::OK, "ready").into_response(),
        Ok(Err(e)) => error_response(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("journal is not writable: {e}"),
        ),
        Err(_) => error_response(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("journal did not commit a probe within {READY_TIMEOUT:?}"),
        ),
    }
}

async fn metrics_text(State(app): State<Arc<AppState>>) -> Response {
    let stats = app.journal.stats();
    app.metrics.journal_events.set(stats.events());
    let path = app.journal.path();
    let mut bytes = 0u64;
    for suffix in ["", "-wal"] {
        let mut p = path.as_os_str().to_owned();
        p.push(suffix);
        if let Ok(meta) = std::fs::metadata(&p) {
            bytes += meta.len();
        }
    }
    app.metrics
        .journal_bytes
        .set(i64::try_from(bytes).unwrap_or(i64::MAX));
    let age = stats.last_received_ms().map_or(-1.0, |ms| {
        ((loop_time::now().timestamp_millis() - ms).max(0) as f64) / 1000.0
    });
    app.metrics.last_event_age_seconds.set(age);
    app.metrics.observe_reconciliation(path);
    (
        StatusCode::OK,
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        app.metrics.render(),
    )
        .into_response()
}

/// Owns stdout: writes each committed event as a JSON line, in commit order, flushing
/// whenever the queue is empty. The writer thread never waits on this task.
async fn emit_lines(mut rx: mpsc::UnboundedReceiver<CommittedEvent>) {
    let mut out = tokio::io::BufWriter::new(tokio::io::stdout());
    let mut line = Vec::with_capacity(4096);
    let mut broken = false;
    while let Some(first) = rx.recv().await {
        let mut next = Some(first);
        while let Some(committed) = next.take() {
            if !broken {
                line.clear();
                let written = committed
                    .event
                    .to_stored(committed.seq)
                    .map_err(|e| e.to_string())
                    .and_then(|stored| {
                        serde_json::to_writer(&mut line, &stored).map_err(|e| e.to_string())
                    });
                match written {
                    Ok(()) => {
                        line.push(b'\n');
                        if let Err(e) = out.write_all(&line).await {
                            broken = stdout_failed(e);
                        }
                    }
                    Err(e) => eprintln!(
                        "loop-webhooks: ERROR cannot emit event seq={}: {e} (it is in the journal)",
                        committed.seq
                    ),
                }
            }
            next = rx.try_recv().ok();
        }
        if !broken {
            if let Err(e) = out.flush().await {
                broken = stdout_failed(e);
            }
        }
    }
    if !broken {
        let _ = out.flush().await;
    }
}

fn stdout_failed(e: std::io::Error) -> bool {
    if e.kind() != std::io::ErrorKind::BrokenPipe {
        eprintln!("loop-webhooks: ERROR stdout failed, no longer emitting (events stay in the journal): {e}");
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entity_from_topic_and_payload() {
        let keys = |s: &str| serde_json::from_str::<PayloadKeys>(s).unwrap();
        let e = entity_of(
            "subscription/updated",
            keys(r#"{"id":12345678901234567890,"updatedAt":"2024-01-05T02:43:34.5+01:00"}"#),
        )
        .unwrap();
        assert_eq!(e.kind, "subscription");
        assert_eq!(e.id, "12345678901234567890");
        // 2024-01-05T01:43:34.500Z
        assert_eq!(e.updated_at_ms, Some(1_704_419_014_500));
        let o = entity_of(
            "order/processed",
            keys(r#"{"id":"o-1","updatedAt":"yesterday"}"#),
        )
        .unwrap();
        assert_eq!(
            (o.kind.as_str(), o.id.as_str(), o.updated_at_ms),
            ("order", "o-1", None)
        );
        let bare_date = entity_of(
            "order/processed",
            keys(r#"{"id":"o-2","updatedAt":"2024-01-05"}"#),
        )
        .unwrap();
        assert_eq!(bare_date.updated_at_ms, None);
        assert!(entity_of("subscriptionCheckout/success", keys(r#"{"id":1}"#)).is_none());
        assert!(entity_of(
            "subscription/updated",
            keys(r#"{"updatedAt":"2024-01-05T01:43:34Z"}"#)
        )
        .is_none());
    }

    fn config_in(dir: &std::path::Path) -> ServerConfig {
        let mut cfg = ServerConfig::new(dir.join("journal.sqlite"), vec![Secret::new("s")]);
        cfg.listen = "127.0.0.1:0".parse().unwrap();
        cfg
    }

    #[tokio::test]
    async fn an_invalid_config_lists_every_problem_and_opens_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = config_in(dir.path());
        cfg.secrets.clear();
        cfg.path = "webhooks".into();
        cfg.max_body_bytes = 0;
        let err = bind(cfg).await.unwrap_err();
        let ServeError::InvalidConfig { problems } = &err else {
            panic!("{err:?}");
        };
        assert_eq!(problems.len(), 3, "{problems:?}");
        let text = err.to_string();
        assert!(text.starts_with("invalid webhook receiver config:\n  no webhook secret"));
        assert!(text.contains("\"webhooks\" must start with '/'"), "{text}");
        assert!(text.contains("max_body_bytes is 0"), "{text}");
        assert!(!dir.path().join("journal.sqlite").exists());
    }

    #[tokio::test]
    async fn a_busy_listen_address_is_named_with_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut cfg = config_in(dir.path());
        cfg.listen = taken.local_addr().unwrap();
        let err = bind(cfg).await.unwrap_err();
        assert!(matches!(err, ServeError::Bind { .. }), "{err:?}");
        let text = err.to_string();
        let addr = taken.local_addr().unwrap();
        assert!(
            text.starts_with(&format!("cannot listen on {addr}: ")),
            "{text}"
        );
        assert!(text.contains("another process"), "{text}");
    }

    #[tokio::test]
    async fn a_journal_that_cannot_be_opened_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = config_in(dir.path());
        cfg.journal_path = dir.path().join("no-such-dir").join("journal.sqlite");
        let err = bind(cfg).await.unwrap_err();
        assert!(
            matches!(err, ServeError::Journal(JournalError::Open { .. })),
            "{err:?}"
        );
        let text = err.to_string();
        assert!(text.contains("cannot open journal"), "{text}");
        assert!(text.contains("no-such-dir"), "{text}");
        assert!(text.contains("check that the directory exists"), "{text}");
    }

    #[test]
    fn parse_body_keeps_payload_text_and_shop() {
        let body = br#"{"payload": {"id": 1, "price": 5.390},"metaData":{"myshopifyDomain":"s.myshopify.com"}}"#;
        let (payload, shop, _) = parse_body(body, "order/processed").unwrap();
        assert_eq!(payload, r#"{"id": 1, "price": 5.390}"#);
        assert_eq!(shop.as_deref(), Some("s.myshopify.com"));
        for bad in [
            &b""[..],
            b"  ",
            b"[1,2]",
            b"{\"payload\":",
            b"{\"metaData\":{}}",
            b"{\"payload\":[1]}",
            b"\xff",
        ] {
            assert!(parse_body(bad, "order/processed").is_err());
        }
        // metaData of an unexpected shape is not fatal.
        let (_, shop, _) = parse_body(br#"{"payload":{},"metaData":"x"}"#, "x/y").unwrap();
        assert_eq!(shop, None);
    }
}
