//! The receiver under connections that never finish: `source-loop serve` closes them on
//! its timeouts, refuses connections over its cap, and keeps acknowledging valid
//! deliveries; `/metrics` counts every cut. Raw sockets on 127.0.0.1, each wait bounded.

use std::io::{ErrorKind, Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::webhooks::{delivery, metric, raw_get, serve_config, Delivery, Serve, SECRET};

/// How long the receiver may take, beyond its configured timeouts, to close a socket.
const CLOSE_LIMIT: Duration = Duration::from_secs(30);

/// `serve` with the test secret and `limits` (config keys), started and healthy.
fn serve_with_limits(dir: &std::path::Path, limits: serde_json::Value) -> Serve {
    let mut extra = json!({ "webhook_secrets": [SECRET] });
    for (k, v) in limits.as_object().unwrap() {
        extra[k] = v.clone();
    }
    Serve::start(&serve_config(dir, extra), false, &[])
}

fn connect(addr: SocketAddr) -> TcpStream {
    TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect to serve")
}

/// A connection that sent a request line and one header, and will send nothing more.
fn half_open(addr: SocketAddr) -> TcpStream {
    let mut s = connect(addr);
    write!(s, "POST /webhooks/loop HTTP/1.1\r\nHost: {addr}\r\n").unwrap();
    s
}

/// Writes `d` as one HTTP/1.1 request on `s` (`connection` is `close` or `keep-alive`).
fn write_delivery(s: &mut TcpStream, d: &Delivery, connection: &str) {
    let addr = s.peer_addr().unwrap();
    let mut head = format!(
        "POST /webhooks/loop HTTP/1.1\r\nHost: {addr}\r\nConnection: {connection}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
        d.body.len()
    );
    for (k, v) in &d.headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    // A refused connection may be closed before the whole request is written.
    let _ = s.write_all(head.as_bytes());
    let _ = s.write_all(&d.body);
}

/// A delivery over its own connection (`Connection: close`): status and response body.
fn post_once(addr: SocketAddr, d: &Delivery) -> (u16, String) {
    let mut s = connect(addr);
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write_delivery(&mut s, d, "close");
    let mut resp = Vec::new();
    let _ = s.read_to_end(&mut resp);
    let resp = String::from_utf8_lossy(&resp).to_string();
    let status = resp
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = resp.split_once("\r\n\r\n").map_or("", |x| x.1).to_string();
    (status, body)
}

fn signed(i: usize) -> Delivery {
    let payload = json!({"id": 500 + i, "updatedAt": "2024-05-01T10:00:00.000Z"});
    delivery(
        &format!("wh-limits-{i}"),
        "subscription/updated",
        &payload,
        SECRET,
    )
}

/// Whether the receiver closed `s` by `deadline`: reads until EOF or reset, keeping
/// what came (a 408 or 503 answer before the close).
fn closed_by(s: &mut TcpStream, deadline: Instant) -> Result<Vec<u8>, String> {
    let mut got = Vec::new();
    let mut chunk = [0u8; 1024];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(format!(
                "still open; received {:?}",
                String::from_utf8_lossy(&got)
            ));
        }
        s.set_read_timeout(Some(left)).unwrap();
        match s.read(&mut chunk) {
            Ok(0) => return Ok(got),
            Ok(n) => got.extend_from_slice(&chunk[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::ConnectionReset | ErrorKind::BrokenPipe) => {
                return Ok(got)
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) => return Err(format!("read failed: {e}")),
        }
    }
}

/// `GET /metrics` on a kept-alive connection, left open: the body.
fn scrape_kept_alive(s: &mut TcpStream) -> String {
    s.set_read_timeout(Some(CLOSE_LIMIT)).unwrap();
    write!(s, "GET /metrics HTTP/1.1\r\nHost: receiver\r\n\r\n").unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut byte).expect("metrics answer head");
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).to_lowercase();
    assert!(head.starts_with("http/1.1 200"), "{head}");
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no content-length in {head}"));
    let mut body = vec![0u8; length];
    s.read_exact(&mut body).expect("metrics answer body");
    String::from_utf8(body).unwrap()
}

fn metrics(serve: &Serve) -> String {
    let (status, text) = raw_get(serve.addr, "/metrics").expect("GET /metrics");
    assert_eq!(status, 200, "{text}");
    text
}

fn cut(text: &str, reason: &str) -> f64 {
    metric(
        text,
        &format!("loop_webhooks_connections_cut_total{{reason=\"{reason}\"}}"),
    )
}

/// Polls `/metrics` (bounded) until no connection but the scrape itself is open.
fn wait_only_scrape_open(serve: &Serve) -> String {
    let start = Instant::now();
    loop {
        let text = metrics(serve);
        if metric(&text, "loop_webhooks_connections_open") == 1.0 {
            return text;
        }
        assert!(
            start.elapsed() < CLOSE_LIMIT,
            "connections still open after {CLOSE_LIMIT:?}:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn slow_and_silent_connections_are_closed_on_time_while_deliveries_are_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let serve = serve_with_limits(
        dir.path(),
        json!({
            "webhook_header_read_timeout_seconds": 2,
            "webhook_idle_timeout_seconds": 1,
            "webhook_body_read_timeout_seconds": 1,
            "webhook_max_connections": 2000,
        }),
    );
    let addr = serve.addr;

    // Hundreds of heads that never finish, connections that send nothing, and bodies
    // that stop half way.
    let mut slow: Vec<TcpStream> = (0..400).map(|_| half_open(addr)).collect();
    let mut silent: Vec<TcpStream> = (0..50).map(|_| connect(addr)).collect();
    let mut stalled: Vec<TcpStream> = (0..20)
        .map(|_| {
            let mut s = connect(addr);
            write!(
                s,
                "POST /webhooks/loop HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 500\r\n\r\n{{\"payload\":"
            )
            .unwrap();
            s
        })
        .collect();

    // A delivery on a kept-alive connection, answered; the connection then goes quiet.
    let mut kept_alive = connect(addr);
    write_delivery(&mut kept_alive, &signed(100), "keep-alive");
    let mut answer = [0u8; 12];
    kept_alive.set_read_timeout(Some(CLOSE_LIMIT)).unwrap();
    kept_alive.read_exact(&mut answer).unwrap();
    assert_eq!(&answer, b"HTTP/1.1 200");

    // Meanwhile every valid delivery is acknowledged.
    for i in 0..30 {
        let (status, body) = post_once(addr, &signed(i));
        assert_eq!(status, 200, "delivery {i} under load: {body}");
        assert!(body.contains("\"accepted\""), "{body}");
    }

    let deadline = Instant::now() + CLOSE_LIMIT;
    for (i, s) in slow.iter_mut().enumerate() {
        let got = closed_by(s, deadline).unwrap_or_else(|e| panic!("slow connection {i}: {e}"));
        assert!(
            got.is_empty(),
            "a head timeout closes without answering: {got:?}"
        );
    }
    closed_by(&mut kept_alive, deadline).expect("the kept-alive connection, once idle");
    for (i, s) in silent.iter_mut().enumerate() {
        closed_by(s, deadline).unwrap_or_else(|e| panic!("silent connection {i}: {e}"));
    }
    for (i, s) in stalled.iter_mut().enumerate() {
        let got = closed_by(s, deadline).unwrap_or_else(|e| panic!("stalled body {i}: {e}"));
        let got = String::from_utf8_lossy(&got);
        assert!(got.starts_with("HTTP/1.1 408 "), "stalled body {i}: {got}");
    }

    let text = wait_only_scrape_open(&serve);
    assert_eq!(cut(&text, "header_timeout"), 400.0, "{text}");
    // The 50 silent connections and the kept-alive one.
    assert_eq!(cut(&text, "idle_timeout"), 51.0, "{text}");
    assert_eq!(cut(&text, "body_timeout"), 20.0, "{text}");
    assert_eq!(cut(&text, "over_capacity"), 0.0, "{text}");
    assert_eq!(metric(&text, "loop_webhooks_verified_total"), 31.0);
    assert_eq!(metric(&text, "loop_webhooks_connections_max"), 2000.0);
    assert!(
        serve
            .stderr()
            .contains("cut reason=body_timeout status=408"),
        "{}",
        serve.stderr()
    );
}

#[test]
fn over_the_cap_connections_are_refused_and_the_receiver_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let cap = 40;
    let serve = serve_with_limits(
        dir.path(),
        json!({
            // Long enough that nothing held is cut during the test.
            "webhook_header_read_timeout_seconds": 120,
            "webhook_idle_timeout_seconds": 120,
            "webhook_max_connections": cap,
        }),
    );
    let addr = serve.addr;

    // One kept-alive connection watches `/metrics` without ever closing (a closing
    // connection frees its slot a moment after the client sees it closed). Once only it
    // is open, fill the other slots and see each of them admitted.
    let mut observer = connect(addr);
    let open_now = |observer: &mut TcpStream| {
        metric(
            &scrape_kept_alive(observer),
            "loop_webhooks_connections_open",
        )
    };
    let start = Instant::now();
    while open_now(&mut observer) != 1.0 {
        assert!(
            start.elapsed() < CLOSE_LIMIT,
            "the start-up probe never closed"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let held: Vec<TcpStream> = (0..cap - 1).map(|_| half_open(addr)).collect();
    while open_now(&mut observer) != cap as f64 {
        assert!(
            start.elapsed() < CLOSE_LIMIT,
            "held connections not admitted"
        );
        std::thread::sleep(Duration::from_millis(20));
    }

    // At the cap: each new connection gets a 503 and is closed, deliveries included.
    let deadline = Instant::now() + CLOSE_LIMIT;
    for i in 0..25 {
        let mut s = connect(addr);
        let got = closed_by(&mut s, deadline).unwrap_or_else(|e| panic!("extra {i}: {e}"));
        let got = String::from_utf8_lossy(&got);
        assert!(got.starts_with("HTTP/1.1 503 "), "extra {i}: {got}");
        assert!(got.contains("retry-after: 1"), "{got}");
    }
    let (status, body) = post_once(addr, &signed(0));
    assert_eq!(status, 503, "{body}");

    // The held clients give up: their slots come back and the receiver serves again.
    drop(held);
    drop(observer);
    let mut refused_while_recovering = 0;
    let start = Instant::now();
    let text = loop {
        match raw_get(addr, "/metrics") {
            Some((200, text)) => break text,
            Some((503, _)) => refused_while_recovering += 1,
            other => panic!("unexpected answer while recovering: {other:?}"),
        }
        assert!(start.elapsed() < CLOSE_LIMIT, "no slot came back");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(
        cut(&text, "over_capacity"),
        (25 + 1 + refused_while_recovering) as f64,
        "{text}"
    );
    assert_eq!(cut(&text, "header_timeout"), 0.0, "{text}");
    assert_eq!(
        metric(&text, "loop_webhooks_connections_max"),
        cap as f64,
        "{text}"
    );
    let (status, body) = post_once(addr, &signed(1));
    assert_eq!(status, 200, "{body}");
    assert_eq!(raw_get(addr, "/healthz"), Some((200, "ok".to_string())));
    let text = wait_only_scrape_open(&serve);
    assert_eq!(metric(&text, "loop_webhooks_verified_total"), 1.0);
}

#[test]
fn sigterm_does_not_wait_for_connections_that_never_finish_a_request() {
    let dir = tempfile::tempdir().unwrap();
    let mut serve = serve_with_limits(
        dir.path(),
        json!({
            // Far beyond the shutdown bound: the shutdown must not wait for them.
            "webhook_header_read_timeout_seconds": 120,
            "webhook_idle_timeout_seconds": 120,
        }),
    );
    let addr = serve.addr;
    let mut slow: Vec<TcpStream> = (0..20).map(|_| half_open(addr)).collect();
    let _silent: Vec<TcpStream> = (0..5).map(|_| connect(addr)).collect();
    let (status, body) = post_once(addr, &signed(0));
    assert_eq!(status, 200, "{body}");

    // `terminate` asserts the exit within its bound.
    let exit = serve.terminate();
    assert!(exit.success(), "{exit:?}; stderr:\n{}", serve.stderr());
    assert!(serve.stderr().contains("loop-webhooks: stopped"));
    let deadline = Instant::now() + CLOSE_LIMIT;
    for (i, s) in slow.iter_mut().enumerate() {
        closed_by(s, deadline).unwrap_or_else(|e| panic!("slow connection {i}: {e}"));
    }
    let journal = loop_webhooks::JournalReader::open(&dir.path().join("journal.sqlite")).unwrap();
    assert_eq!(
        journal.max_seq().unwrap(),
        1,
        "the acknowledged delivery is kept"
    );
}
