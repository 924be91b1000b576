//! The accept loop and what bounds each connection: a cap on open connections and the
//! timeouts that free a slot held by a client that sends too little, too slowly.
//!
//! Without them a client that opens connections and never finishes a request holds a
//! file descriptor each, for ever. Each limit, and who enforces it:
//! - **cap** ([`ConnectionLimits::max_connections`]): a semaphore permit per connection;
//!   a connection over the cap gets a `503` and is closed, its request not handled.
//! - **header read** (`header_read_timeout`): hyper's own timer. It runs from the moment
//!   the connection waits for a request head (on accept, and again after each response)
//!   until the whole head has arrived; bytes trickling in do not extend it.
//! - **idle** (`idle_timeout`): a connection on which no request has started (nothing read
//!   since accept or since the last response) and nothing moved for this long is closed.
//!   Hyper has no idle timeout of its own, so [`Tracked`] notes when bytes move. Hyper's
//!   header timer also runs while a connection waits, so an idle connection is closed
//!   after the shorter of the two; either way it is counted as `idle_timeout`.
//! - **body read** (`body_read_timeout`): enforced by the handler around reading the body
//!   (see `server::receive`), answered `408` with `Connection: close`.
//!
//! A delivery in progress is never cut by the idle timer: the service wrapper counts the
//! requests being handled (a journal commit may take a while with no byte moving).

use std::convert::Infallible;
use std::future::Future;
use std::io::Write as _;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};

use crate::metrics::Metrics;

/// Loop gives a delivery 5 s; a sender that has not sent its whole head in twice that
/// has long given up.
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Same reasoning as the header timeout, for the body.
pub const DEFAULT_BODY_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Keep-alive connections (and connections that never send anything) are closed after
/// this long without a request.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(5);
/// Open connections at most. Loop delivers with little concurrency; this leaves room for
/// a few thousand idle or slow clients (a 1 500-connection slowloris still leaves room
/// for deliveries) while bounding the file descriptors and memory (about 27 KiB each,
/// measured: some 110 MiB at the cap) they can hold.
pub const DEFAULT_MAX_CONNECTIONS: usize = 4096;

/// The body of the `503` a connection over the cap gets.
const OVER_CAPACITY_BODY: &str = r#"{"error":"too many open connections, retry in a moment"}"#;

/// On shutdown, how long a connection with no request being handled gets to finish
/// writing what it was answering before it is dropped.
const SHUTDOWN_GRACE: Duration = Duration::from_millis(250);

/// How long a refused connection may take to read its `503` and close.
const REFUSAL_LINGER: Duration = Duration::from_millis(500);
/// Refused connections given [`REFUSAL_LINGER`] at once; more are closed at once.
const MAX_LINGERING_REFUSALS: usize = 64;

/// How long to wait before accepting again after `accept` failed (out of descriptors).
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// The per-connection bounds. All timeouts must be positive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    pub header_read_timeout: Duration,
    pub body_read_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_connections: usize,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits {
            header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
            body_read_timeout: DEFAULT_BODY_READ_TIMEOUT,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            max_connections: DEFAULT_MAX_CONNECTIONS,
        }
    }
}

impl ConnectionLimits {
    /// Every problem, each naming the setting and a value that works.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        for (name, d, default) in [
            (
                "header_read_timeout",
                self.header_read_timeout,
                DEFAULT_HEADER_READ_TIMEOUT,
            ),
            (
                "body_read_timeout",
                self.body_read_timeout,
                DEFAULT_BODY_READ_TIMEOUT,
            ),
            ("idle_timeout", self.idle_timeout, DEFAULT_IDLE_TIMEOUT),
        ] {
            if d.is_zero() {
                problems.push(format!(
                    "{name} is 0: use a positive duration, e.g. {}s",
                    default.as_secs()
                ));
            }
        }
        if self.max_connections == 0 {
            problems.push(format!(
                "max_connections is 0: nothing could connect; use e.g. {DEFAULT_MAX_CONNECTIONS}"
            ));
        }
        problems
    }
}

/// File descriptors kept aside for everything but connections: stdio, the listener, the
/// journal's database, WAL and shared memory, the runtime's own, and refused connections
/// reading their 503 ([`MAX_LINGERING_REFUSALS`]).
const RESERVED_FDS: u64 = 64 + MAX_LINGERING_REFUSALS as u64;

/// What the file-descriptor limit means for the cap: the soft limit to raise it to (if
/// it must rise), and the cap that fits under the hard limit.
#[derive(Debug, PartialEq, Eq)]
struct FdPlan {
    raise_soft_to: Option<u64>,
    cap: usize,
}

fn plan_fds(requested: usize, soft: u64, hard: u64) -> FdPlan {
    let needed = (requested as u64).saturating_add(RESERVED_FDS);
    if needed <= soft {
        return FdPlan {
            raise_soft_to: None,
            cap: requested,
        };
    }
    if needed <= hard {
        return FdPlan {
            raise_soft_to: Some(needed),
            cap: requested,
        };
    }
    FdPlan {
        raise_soft_to: (hard > soft).then_some(hard),
        cap: cap_under(hard),
    }
}

fn cap_under(fd_limit: u64) -> usize {
    usize::try_from(fd_limit.saturating_sub(RESERVED_FDS).max(1)).unwrap_or(usize::MAX)
}

/// Makes room for `requested` connections under the process's file-descriptor limit:
/// raises the soft limit as far as needed (the hard limit allowing; Go's runtime does
/// the same). Returns the cap to use: `requested`, or lower, with a warning on stderr,
/// when the hard limit does not allow it (past it, `accept` would fail instead of the
/// cap answering 503).
pub(crate) fn fit_fd_limit(requested: usize) -> usize {
    #[cfg(unix)]
    {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes into the struct we pass and reads nothing else.
        if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
            return requested;
        }
        let (soft, hard): (u64, u64) = (limit.rlim_cur, limit.rlim_max);
        let plan = plan_fds(requested, soft, hard);
        let mut cap = plan.cap;
        if let Some(raised) = plan.raise_soft_to {
            let new = libc::rlimit {
                rlim_cur: raised,
                rlim_max: limit.rlim_max,
            };
            // SAFETY: setrlimit reads the struct we pass.
            if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &new) } != 0 {
                cap = cap.min(cap_under(soft));
            }
        }
        if cap < requested {
            eprintln!(
                "loop-webhooks: WARNING max_connections {requested} does not fit under the file-descriptor limit (soft {soft}, hard {hard}, {RESERVED_FDS} kept for the journal and the rest): using {cap}; raise the limit (ulimit -n, LimitNOFILE= in systemd) or lower webhook_max_connections"
            );
        }
        cap
    }
    #[cfg(not(unix))]
    {
        requested
    }
}

/// Accepts until `shutdown` resolves, serving each admitted connection with `router`
/// under `limits`; then lets every open connection finish its request (each is bounded
/// by the timeouts) and returns.
pub(crate) async fn accept_loop(
    listener: TcpListener,
    router: Router,
    limits: ConnectionLimits,
    metrics: Metrics,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    metrics
        .connections_max
        .set(i64::try_from(limits.max_connections).unwrap_or(i64::MAX));
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let lingering = Arc::new(Semaphore::new(MAX_LINGERING_REFUSALS));
    let service = TowerToHyperService::new(router);
    // `stop` tells connections to finish; every connection holds a `done` receiver, so
    // `done_tx.closed()` resolves when the last one has ended.
    let (stop_tx, stop_rx) = watch::channel(false);
    let (done_tx, done_rx) = watch::channel(());
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => stream,
                Err(e) => {
                    accept_failed(&e).await;
                    continue;
                }
            },
        };
        let Ok(permit) = Arc::clone(&slots).try_acquire_owned() else {
            refuse_over_capacity(stream, &lingering);
            metrics.cut("over_capacity");
            continue;
        };
        metrics.connections_accepted.inc();
        let conn = Connection {
            service: service.clone(),
            limits,
            metrics: metrics.clone(),
            stop: stop_rx.clone(),
        };
        let done = done_rx.clone();
        tokio::spawn(async move {
            conn.serve(stream).await;
            drop(permit);
            drop(done);
        });
    }
    drop(listener);
    let _ = stop_tx.send(true);
    drop(done_rx);
    done_tx.closed().await;
}

/// Out of file descriptors (or a transient accept error): log, pause, go on. Connection
/// errors of a single peer (reset before accept) need no pause.
async fn accept_failed(e: &std::io::Error) {
    use std::io::ErrorKind::*;
    if matches!(
        e.kind(),
        ConnectionAborted | ConnectionReset | ConnectionRefused | Interrupted
    ) {
        return;
    }
    eprintln!(
        "loop-webhooks: ERROR cannot accept a connection: {e} (out of file descriptors? lower webhook_max_connections below `ulimit -n`, or raise the limit)"
    );
    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
}

/// Answers `503` and closes. Closing a socket with unread request bytes would send a
/// reset, which can destroy the answer before the client reads it, so while few
/// refusals are pending each gets a short task: the answer, our end closed, and the
/// request read and dropped until the client closes or [`REFUSAL_LINGER`] passes. In a
/// flood past [`MAX_LINGERING_REFUSALS`], the answer is written without waiting (a
/// fresh socket's send buffer is empty) and the socket closed at once.
fn refuse_over_capacity(stream: TcpStream, lingering: &Arc<Semaphore>) {
    let response = format!(
        "HTTP/1.1 503 Service Unavailable\r\nretry-after: 1\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{OVER_CAPACITY_BODY}",
        OVER_CAPACITY_BODY.len()
    );
    match Arc::clone(lingering).try_acquire_owned() {
        Ok(permit) => {
            tokio::spawn(async move {
                use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
                let mut stream = stream;
                let _ = tokio::time::timeout(REFUSAL_LINGER, async {
                    stream.write_all(response.as_bytes()).await?;
                    stream.shutdown().await?;
                    let mut discard = [0u8; 1024];
                    while stream.read(&mut discard).await? > 0 {}
                    Ok::<(), std::io::Error>(())
                })
                .await;
                drop(permit);
            });
        }
        Err(_) => {
            if let Ok(std_stream) = stream.into_std() {
                let _ = (&std_stream).write(response.as_bytes());
            }
        }
    }
}

struct Connection {
    service: TowerToHyperService<Router>,
    limits: ConnectionLimits,
    metrics: Metrics,
    stop: watch::Receiver<bool>,
}

impl Connection {
    async fn serve(mut self, stream: TcpStream) {
        let _open = OpenGauge::new(&self.metrics);
        let activity = Arc::new(Activity::new());
        let io = TokioIo::new(Tracked {
            inner: stream,
            activity: Arc::clone(&activity),
        });
        let service = CountingService {
            inner: self.service.clone(),
            activity: Arc::clone(&activity),
        };
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(self.limits.header_read_timeout)
            .keep_alive(true);
        let conn = builder.serve_connection(io, service);
        let mut conn = std::pin::pin!(conn);
        let idle = self.limits.idle_timeout;
        let mut check_idle_at = activity.idle_deadline(idle);
        // On shutdown: hyper finishes a request being handled and closes an idle
        // connection, but would wait for a head that never completes (its header timer
        // stops with the reading), so a connection with no request being handled is
        // dropped after a short grace. Nothing acknowledged is lost: a request not yet
        // handled gets no answer, and Loop retries it.
        let mut drain_check_at = None;
        let mut stopping = *self.stop.borrow();
        if stopping {
            conn.as_mut().graceful_shutdown();
            drain_check_at = Some(tokio::time::Instant::now() + SHUTDOWN_GRACE);
        }
        loop {
            tokio::select! {
                served = conn.as_mut() => {
                    if let Err(e) = served {
                        if e.is_timeout() {
                            // Hyper's header timer: a request had begun, or it was waiting.
                            let reason = if activity.request_begun() {
                                "header_timeout"
                            } else {
                                "idle_timeout"
                            };
                            self.metrics.cut(reason);
                        }
                    }
                    return;
                }
                () = tokio::time::sleep_until(check_idle_at) => {
                    if activity.is_idle(idle) {
                        self.metrics.cut("idle_timeout");
                        // Dropping the connection closes the socket.
                        return;
                    }
                    // Bytes moved since, or a request is under way (then its own timers
                    // bound it): look again later, never in a tight loop.
                    let now = tokio::time::Instant::now();
                    let deadline = activity.idle_deadline(idle);
                    check_idle_at = if deadline > now { deadline } else { now + idle };
                }
                changed = self.stop.changed(), if !stopping => {
                    stopping = true;
                    if changed.is_ok() {
                        conn.as_mut().graceful_shutdown();
                        drain_check_at = Some(tokio::time::Instant::now() + SHUTDOWN_GRACE);
                    }
                }
                () = sleep_until_some(drain_check_at), if drain_check_at.is_some() => {
                    if activity.in_flight.load(Ordering::Relaxed) == 0 {
                        return;
                    }
                    drain_check_at = Some(tokio::time::Instant::now() + SHUTDOWN_GRACE);
                }
            }
        }
    }
}

/// Sleeps until `at`, or for ever when there is none.
async fn sleep_until_some(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// `loop_webhooks_connections_open` up while a connection is served.
struct OpenGauge(prometheus::IntGauge);

impl OpenGauge {
    fn new(metrics: &Metrics) -> Self {
        metrics.connections_open.inc();
        OpenGauge(metrics.connections_open.clone())
    }
}

impl Drop for OpenGauge {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// What the idle timer needs to know about one connection.
struct Activity {
    born: Instant,
    /// Milliseconds after `born` when bytes last moved either way.
    last_ms: AtomicU64,
    /// Bytes were read since the last write (or accept): a request has begun.
    read_since_write: AtomicBool,
    /// Requests being handled (between the head and the response).
    in_flight: AtomicUsize,
}

impl Activity {
    fn new() -> Self {
        Activity {
            born: Instant::now(),
            last_ms: AtomicU64::new(0),
            read_since_write: AtomicBool::new(false),
            in_flight: AtomicUsize::new(0),
        }
    }

    fn touch(&self) {
        let ms = u64::try_from(self.born.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    fn request_begun(&self) -> bool {
        self.read_since_write.load(Ordering::Relaxed) || self.in_flight.load(Ordering::Relaxed) > 0
    }

    fn idle_deadline(&self, idle: Duration) -> tokio::time::Instant {
        let last = self.born + Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
        tokio::time::Instant::from_std(last + idle)
    }

    /// Nothing moved for `idle` and no request has begun.
    fn is_idle(&self, idle: Duration) -> bool {
        !self.request_begun() && Instant::now() >= self.idle_deadline(idle).into_std()
    }
}

/// The connection's socket, noting in [`Activity`] when bytes move.
struct Tracked {
    inner: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for Tracked {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.touch();
            self.activity
                .read_since_write
                .store(true, Ordering::Relaxed);
        }
        polled
    }
}

impl Tracked {
    fn wrote(&self, polled: &Poll<std::io::Result<usize>>) {
        if matches!(polled, Poll::Ready(Ok(n)) if *n > 0) {
            self.activity.touch();
            self.activity
                .read_since_write
                .store(false, Ordering::Relaxed);
        }
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.wrote(&polled);
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.wrote(&polled);
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// The router, counting the requests being handled so the idle timer leaves them be.
#[derive(Clone)]
struct CountingService {
    inner: TowerToHyperService<Router>,
    activity: Arc<Activity>,
}

/// Holds a request in [`Activity::in_flight`] until dropped.
struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.0.touch();
    }
}

impl hyper::service::Service<hyper::Request<Incoming>> for CountingService {
    type Response = axum::response::Response;
    type Error = Infallible;
    type Future =
        Pin<Box<dyn Future<Output = Result<axum::response::Response, Infallible>> + Send>>;

    fn call(&self, req: hyper::Request<Incoming>) -> Self::Future {
        self.activity.in_flight.fetch_add(1, Ordering::Relaxed);
        let guard = InFlight(Arc::clone(&self.activity));
        let response = self.inner.call(req);
        Box::pin(async move {
            let response = response.await;
            drop(guard);
            response
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_limits_are_each_named_with_a_value_that_works() {
        let limits = ConnectionLimits {
            header_read_timeout: Duration::ZERO,
            body_read_timeout: Duration::ZERO,
            idle_timeout: Duration::ZERO,
            max_connections: 0,
        };
        let problems = limits.problems();
        assert_eq!(problems.len(), 4, "{problems:?}");
        assert!(
            problems[0].starts_with("header_read_timeout is 0: use a positive duration, e.g. 10s")
        );
        assert!(problems[3].contains("e.g. 4096"), "{problems:?}");
        assert!(ConnectionLimits::default().problems().is_empty());
    }

    #[test]
    fn the_fd_limit_is_raised_for_the_cap_or_the_cap_lowered_to_fit() {
        let plan = |requested, soft, hard| plan_fds(requested, soft, hard);
        // Room enough: nothing to do.
        assert_eq!(
            plan(1024, 20_000, 20_000),
            FdPlan {
                raise_soft_to: None,
                cap: 1024
            }
        );
        // systemd's 1024 soft limit: raised to what the cap needs.
        assert_eq!(
            plan(1024, 1024, 524_288),
            FdPlan {
                raise_soft_to: Some(1024 + RESERVED_FDS),
                cap: 1024
            }
        );
        // A hard limit too low: raised to it, and the cap lowered to fit.
        assert_eq!(
            plan(1024, 256, 1024),
            FdPlan {
                raise_soft_to: Some(1024),
                cap: 1024 - RESERVED_FDS as usize
            }
        );
        assert_eq!(plan(1024, 1024, 1024).raise_soft_to, None);
        assert_eq!(plan(10, 20, 20).cap, 1, "never a cap of 0");
        assert_eq!(plan(1024, 2048, u64::MAX).cap, 1024);
    }

    #[test]
    fn a_connection_is_idle_only_when_no_request_has_begun() {
        let idle = Duration::from_millis(1);
        let a = Activity::new();
        std::thread::sleep(Duration::from_millis(5));
        assert!(a.is_idle(idle), "nothing sent since accept");
        // A head has begun: the header timer's business, not the idle timer's.
        a.read_since_write.store(true, Ordering::Relaxed);
        assert!(!a.is_idle(idle));
        assert!(a.request_begun());
        // The response went out: idle again once nothing moves.
        a.read_since_write.store(false, Ordering::Relaxed);
        a.touch();
        assert!(!a.is_idle(Duration::from_secs(60)));
        // A request being handled (say, waiting on a commit) is never idle.
        a.in_flight.fetch_add(1, Ordering::Relaxed);
        std::thread::sleep(Duration::from_millis(5));
        assert!(!a.is_idle(idle));
    }
}
