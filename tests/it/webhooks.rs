//! The webhook receiver end to end: `source-loop serve` as a child process on a free
//! 127.0.0.1 port, deliveries signed like Loop's, and the journal read back through
//! `source-loop read` (the `webhook_events` stream and folding into subscriptions and
//! orders). Every child is bounded in time and killed when its guard drops.

use std::io::Read as _;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{SecondsFormat, Utc};
use loop_webhooks::signature::{sign_base64, sign_hex};
use loop_webhooks::JournalReader;
use serde_json::{json, Value};

use crate::harness::{self, bin, command, p, write_catalog, write_config, write_json, Run, TOKEN};

pub(crate) const SECRET: &str = "whsec-TEST-7d41c0ffee";
const SECRET_2: &str = "whsec-ROTATED-99ab12";
const SHOP: &str = "shop.myshopify.com";

/// How long a `serve` child may take to answer `/healthz`.
const START_LIMIT: Duration = Duration::from_secs(10);
/// How long a `serve` child may take to exit after SIGTERM.
const STOP_LIMIT: Duration = Duration::from_secs(10);

fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().unwrap().port()
}

/// A config file for `serve` (and `read` of `webhook_events`, which makes no API
/// request): the connector's required keys plus `extra`.
pub(crate) fn serve_config(dir: &Path, extra: Value) -> PathBuf {
    let mut c = json!({
        "api_token": TOKEN,
        // Nothing listens here; `serve` and the journal stream never call the API.
        "base_url": "http://127.0.0.1:9",
        "start_date": "2015-01-01T00:00:00Z",
        "journal_path": dir.join("journal.sqlite"),
    });
    for (k, v) in extra.as_object().unwrap() {
        c[k] = v.clone();
    }
    write_json(dir, "config.json", &c)
}

fn shared_reader(
    mut r: impl std::io::Read + Send + 'static,
) -> (Arc<Mutex<String>>, std::thread::JoinHandle<()>) {
    let buf = Arc::new(Mutex::new(String::new()));
    let b = Arc::clone(&buf);
    let t = std::thread::spawn(move || {
        let mut chunk = [0u8; 8192];
        loop {
            match r.read(&mut chunk) {
                Ok(0) | Err(_) => break,
                Ok(n) => b
                    .lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&chunk[..n])),
            }
        }
    });
    (buf, t)
}

/// A running `source-loop serve`; killed (SIGKILL) and reaped on drop.
pub(crate) struct Serve {
    child: Arc<Mutex<Child>>,
    pub(crate) addr: SocketAddr,
    stdout: Arc<Mutex<String>>,
    stderr: Arc<Mutex<String>>,
    readers: Vec<std::thread::JoinHandle<()>>,
    status: Option<ExitStatus>,
}

impl Serve {
    /// Starts `serve` on a free port and waits until it answers `/healthz`. A port
    /// taken between choosing and binding it is retried with another one.
    pub(crate) fn start(config: &Path, emit: bool, envs: &[(&str, &str)]) -> Serve {
        Serve::start_with(config, emit, envs, &[])
    }

    /// `start` with more arguments (e.g. `--into URL`).
    pub(crate) fn start_with(
        config: &Path,
        emit: bool,
        envs: &[(&str, &str)],
        more: &[&str],
    ) -> Serve {
        for _ in 0..5 {
            let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
            let mut cmd = command(bin());
            cmd.args([
                "serve",
                "--config",
                p(config),
                "--listen",
                &addr.to_string(),
            ]);
            if emit {
                cmd.arg("--emit");
            }
            cmd.args(more);
            cmd.env_remove("LOOP_WEBHOOK_SECRETS")
                .envs(envs.iter().copied())
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
            let mut child = cmd.spawn().expect("spawn source-loop serve");
            let (stdout, t1) = shared_reader(child.stdout.take().unwrap());
            let (stderr, t2) = shared_reader(child.stderr.take().unwrap());
            let mut s = Serve {
                child: Arc::new(Mutex::new(child)),
                addr,
                stdout,
                stderr,
                readers: vec![t1, t2],
                status: None,
            };
            match s.wait_healthy() {
                Ok(()) => return s,
                Err(stderr) if stderr.contains("cannot listen") => continue,
                Err(stderr) => panic!("serve exited during startup; stderr:\n{stderr}"),
            }
        }
        panic!("serve could not bind a free port in 5 attempts");
    }

    /// Ok once the child logged that it listens on `addr` and `/healthz` answers;
    /// Err(stderr) when it exited first.
    fn wait_healthy(&mut self) -> Result<(), String> {
        let start = Instant::now();
        let listening = format!("listening on {}", self.addr);
        loop {
            if self.child.lock().unwrap().try_wait().unwrap().is_some() {
                for t in self.readers.drain(..) {
                    let _ = t.join();
                }
                return Err(self.stderr());
            }
            // The log line comes after the bind, so this is our server, not another
            // process that took the port.
            if self.stderr().contains(&listening) {
                if let Some((200, body)) = raw_get(self.addr, "/healthz") {
                    assert_eq!(body.trim(), "ok");
                    return Ok(());
                }
            }
            assert!(
                start.elapsed() < START_LIMIT,
                "serve did not answer /healthz within {START_LIMIT:?}; stderr:\n{}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn stdout(&self) -> String {
        self.stdout.lock().unwrap().clone()
    }

    pub(crate) fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// SIGTERM, then waits (bounded) for the exit and for the output pipes to close.
    pub(crate) fn terminate(&mut self) -> ExitStatus {
        let pid = self.child.lock().unwrap().id().to_string();
        let ok = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("run kill");
        assert!(ok.success(), "kill -TERM {pid} failed");
        let start = Instant::now();
        let status = loop {
            if let Some(s) = self.child.lock().unwrap().try_wait().unwrap() {
                break s;
            }
            assert!(
                start.elapsed() < STOP_LIMIT,
                "serve did not exit within {STOP_LIMIT:?} of SIGTERM; stderr:\n{}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(10));
        };
        for t in self.readers.drain(..) {
            let _ = t.join();
        }
        self.status = Some(status);
        status
    }

    /// SIGKILL now (no graceful shutdown), and reap.
    fn kill9(&mut self) {
        let mut c = self.child.lock().unwrap();
        let _ = c.kill();
        let _ = c.wait();
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        if self.status.is_none() {
            let mut c = self.child.lock().unwrap_or_else(|e| e.into_inner());
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// GET over a raw HTTP/1.1 connection (no runtime needed): status and body.
pub(crate) fn raw_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    use std::io::Write as _;
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut resp = String::new();
    s.read_to_string(&mut resp).ok()?;
    let status = resp.split_whitespace().nth(1)?.parse().ok()?;
    let body = resp.split_once("\r\n\r\n").map(|x| x.1.to_string())?;
    Some((status, body))
}

/// POST with a chunked body (no Content-Length) over raw HTTP/1.1: the status code.
fn raw_post_chunked(addr: SocketAddr, path: &str, d: &Delivery) -> Option<u16> {
    use std::io::Write as _;
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let mut head = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n"
    );
    for (k, v) in &d.headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).ok()?;
    // The server may answer (and stop reading) before the last chunk.
    for chunk in d.body.chunks(1000) {
        let _ = write!(s, "{:x}\r\n", chunk.len());
        let _ = s.write_all(chunk);
        let _ = s.write_all(b"\r\n");
    }
    let _ = s.write_all(b"0\r\n\r\n");
    let mut resp = Vec::new();
    let _ = s.read_to_end(&mut resp);
    String::from_utf8_lossy(&resp)
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// An async reqwest client on a small runtime, used blocking from the tests.
struct Http {
    rt: tokio::runtime::Runtime,
    client: reqwest::Client,
}

impl Http {
    fn new() -> Http {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let client = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap();
        Http { rt, client }
    }

    fn get(&self, url: &str) -> (u16, String) {
        self.rt.block_on(async {
            let r = self.client.get(url).send().await.expect("GET");
            (r.status().as_u16(), r.text().await.unwrap())
        })
    }

    fn post(&self, url: &str, headers: &[(&str, String)], body: Vec<u8>) -> (u16, Value) {
        self.rt
            .block_on(post(&self.client, url, headers, body))
            .expect("POST")
    }
}

async fn post(
    client: &reqwest::Client,
    url: &str,
    headers: &[(&str, String)],
    body: Vec<u8>,
) -> reqwest::Result<(u16, Value)> {
    let mut req = client
        .post(url)
        .header("content-type", "application/json")
        .body(body);
    for (k, v) in headers {
        req = req.header(*k, v);
    }
    let r = req.send().await?;
    let status = r.status().as_u16();
    let text = r.text().await?;
    Ok((
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    ))
}

/// A delivery as Loop sends it: body bytes and headers (signature included).
pub(crate) struct Delivery {
    id: String,
    pub(crate) body: Vec<u8>,
    pub(crate) headers: Vec<(&'static str, String)>,
}

pub(crate) fn delivery(id: &str, topic: &str, payload: &Value, secret: &str) -> Delivery {
    let body =
        serde_json::to_vec(&json!({"payload": payload, "metaData": {"myshopifyDomain": SHOP}}))
            .unwrap();
    let signature = sign_hex(secret, &body);
    Delivery {
        id: id.to_string(),
        headers: vec![
            ("x-loop-webhook-id", id.to_string()),
            ("x-loop-webhook-topic", topic.to_string()),
            ("x-loop-webhook-api-version", "2023-10".to_string()),
            (
                "x-loop-webhook-created-at",
                "2024-05-01T10:00:00Z".to_string(),
            ),
            ("x-loop-webhook-retry-count", "0".to_string()),
            ("x-loop-signature", signature),
        ],
        body,
    }
}

impl Delivery {
    fn with_header(mut self, name: &'static str, value: Option<String>) -> Self {
        self.headers.retain(|(k, _)| *k != name);
        if let Some(v) = value {
            self.headers.push((name, v));
        }
        self
    }

    fn send(self, http: &Http, serve: &Serve) -> (u16, Value) {
        http.post(&serve.url("/webhooks/loop"), &self.headers, self.body)
    }
}

fn accepted_seq(resp: &(u16, Value)) -> i64 {
    assert_eq!(resp.0, 200, "{resp:?}");
    assert_eq!(resp.1["status"], "accepted", "{resp:?}");
    resp.1["seq"].as_i64().unwrap()
}

/// The value of an unlabelled (or exactly labelled) sample in Prometheus text.
pub(crate) fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            (k == name).then(|| v.parse().unwrap())
        })
        .unwrap_or_else(|| panic!("metric {name} not found in:\n{text}"))
}

fn ts(t: chrono::DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// `serve` that is expected to exit at once (bad config): code, stdout, stderr.
fn run_serve_briefly(config: &Path) -> Run {
    let mut child = command(bin())
        .args(["serve", "--config", p(config), "--listen", "127.0.0.1:0"])
        .env_remove("LOOP_WEBHOOK_SECRETS")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn source-loop serve");
    let (stdout, t1) = shared_reader(child.stdout.take().unwrap());
    let (stderr, t2) = shared_reader(child.stderr.take().unwrap());
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if start.elapsed() > START_LIMIT {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "serve kept running with an invalid config; stderr:\n{}",
                stderr.lock().unwrap()
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let _ = (t1.join(), t2.join());
    let stdout = stdout.lock().unwrap().clone();
    let stderr = stderr.lock().unwrap().clone();
    Run {
        protocol: crate::harness::Protocol::Airbyte,
        code: status.code(),
        messages: Vec::new(),
        stdout,
        stderr,
    }
}

fn assert_no_secret(what: &str, text: &str) {
    for s in [SECRET, SECRET_2, TOKEN] {
        assert!(!text.contains(s), "a secret leaked into {what}:\n{text}");
    }
}

#[test]
fn serve_verifies_signatures_and_rejects_bad_deliveries() {
    let dir = tempfile::tempdir().unwrap();
    let config = serve_config(
        dir.path(),
        json!({"webhook_secrets": [SECRET], "webhook_max_body_bytes": 2048}),
    );
    let mut serve = Serve::start(&config, false, &[]);
    let http = Http::new();
    let payload = json!({"id": 101, "updatedAt": "2024-05-01T10:00:00.000Z", "status": "ACTIVE"});

    // Hex and base64 signatures both verify.
    let hex = delivery("wh-hex", "subscription/updated", &payload, SECRET);
    assert_eq!(accepted_seq(&hex.send(&http, &serve)), 1);
    let b64 = delivery("wh-b64", "subscription/paused", &payload, SECRET);
    let sig = sign_base64(SECRET, &b64.body);
    let b64 = b64.with_header("x-loop-signature", Some(sig));
    assert_eq!(accepted_seq(&b64.send(&http, &serve)), 2);

    // Same id again: 200, duplicate, not journaled twice.
    let dup = delivery("wh-hex", "subscription/updated", &payload, SECRET).send(&http, &serve);
    assert_eq!(dup.0, 200, "{dup:?}");
    assert_eq!(dup.1["status"], "duplicate", "{dup:?}");

    // Signature: wrong secret, tampered body, missing header -> 401.
    let wrong = delivery(
        "wh-401a",
        "subscription/updated",
        &payload,
        "not-the-secret",
    );
    assert_eq!(wrong.send(&http, &serve).0, 401);
    let mut tampered = delivery("wh-401b", "subscription/updated", &payload, SECRET);
    tampered.body = tampered
        .body
        .iter()
        .map(|&b| if b == b'A' { b'B' } else { b })
        .collect();
    assert_eq!(tampered.send(&http, &serve).0, 401);
    let missing = delivery("wh-401c", "subscription/updated", &payload, SECRET)
        .with_header("x-loop-signature", None);
    let r = missing.send(&http, &serve);
    assert_eq!(r.0, 401, "{r:?}");
    assert!(r.1["error"].as_str().unwrap().contains("X-Loop-Signature"));

    // Correctly signed but malformed JSON, or no id header -> 400.
    let mut bad_json = delivery("wh-400a", "subscription/updated", &payload, SECRET);
    bad_json.body = br#"{"payload": {"id": 1,"#.to_vec();
    let sig = sign_hex(SECRET, &bad_json.body);
    let r = bad_json
        .with_header("x-loop-signature", Some(sig))
        .send(&http, &serve);
    assert_eq!(r.0, 400, "{r:?}");
    let no_id = delivery("wh-400b", "subscription/updated", &payload, SECRET)
        .with_header("x-loop-webhook-id", None);
    let r = no_id.send(&http, &serve);
    assert_eq!(r.0, 400, "{r:?}");
    assert!(r.1["error"].as_str().unwrap().contains("X-Loop-Webhook-Id"));

    // Over webhook_max_body_bytes -> 413 (even when correctly signed).
    let big = json!({"id": 102, "note": "x".repeat(4000)});
    let r = delivery("wh-413", "subscription/updated", &big, SECRET).send(&http, &serve);
    assert_eq!(r.0, 413, "{r:?}");
    // Also when the body is chunked and the size is only known while reading it.
    let chunked = delivery("wh-413c", "subscription/updated", &big, SECRET);
    assert_eq!(
        raw_post_chunked(serve.addr, "/webhooks/loop", &chunked),
        Some(413)
    );
    // A small chunked delivery is fine.
    let small = delivery("wh-chunked", "subscription/updated", &payload, SECRET);
    assert_eq!(
        raw_post_chunked(serve.addr, "/webhooks/loop", &small),
        Some(200)
    );

    // Readiness commits a probe through the writer.
    assert_eq!(http.get(&serve.url("/readyz")), (200, "ready".to_string()));

    let (code, m) = http.get(&serve.url("/metrics"));
    assert_eq!(code, 200);
    assert_eq!(metric(&m, "loop_webhooks_received_total"), 11.0);
    assert_eq!(metric(&m, "loop_webhooks_verified_total"), 6.0);
    assert_eq!(metric(&m, "loop_webhooks_duplicates_total"), 1.0);
    assert_eq!(metric(&m, "loop_webhooks_journal_events"), 3.0);
    assert_eq!(
        metric(
            &m,
            r#"loop_webhooks_rejected_total{reason="bad_signature"}"#
        ),
        2.0
    );
    assert_eq!(
        metric(
            &m,
            r#"loop_webhooks_rejected_total{reason="missing_signature"}"#
        ),
        1.0
    );
    assert_eq!(
        metric(&m, r#"loop_webhooks_rejected_total{reason="bad_json"}"#),
        1.0
    );
    assert_eq!(
        metric(
            &m,
            r#"loop_webhooks_rejected_total{reason="missing_header"}"#
        ),
        1.0
    );
    assert_eq!(
        metric(&m, r#"loop_webhooks_rejected_total{reason="too_large"}"#),
        2.0
    );
    assert_eq!(metric(&m, "loop_webhooks_ack_seconds_count"), 4.0);
    assert!(metric(&m, "loop_webhooks_last_event_age_seconds") >= 0.0);

    assert_eq!(http.get(&serve.url("/nope")).0, 404);
    let status = serve.terminate();
    assert!(status.success(), "{status}");
    assert_no_secret("serve stdout", &serve.stdout());
    assert_no_secret("serve stderr", &serve.stderr());
    assert_eq!(
        serve.stdout(),
        "",
        "serve without --emit prints nothing on stdout"
    );
    assert_eq!(
        JournalReader::open(&dir.path().join("journal.sqlite"))
            .unwrap()
            .count()
            .unwrap(),
        3
    );
}

#[test]
fn serve_without_a_secret_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let config = serve_config(dir.path(), json!({}));
    let r = run_serve_briefly(&config);
    assert_ne!(r.code, Some(0), "{r:?}");
    assert!(r.stderr.contains("webhook_secrets"), "{}", r.stderr);
    assert!(
        !dir.path().join("journal.sqlite").exists(),
        "no journal without a secret"
    );

    // A malformed secret list names the key too, and does not echo the values.
    let config = serve_config(dir.path(), json!({"webhook_secrets": [SECRET, 7]}));
    let r = run_serve_briefly(&config);
    assert_ne!(r.code, Some(0), "{r:?}");
    assert!(r.stderr.contains("webhook_secrets"), "{}", r.stderr);
    assert_no_secret("stderr", &r.stderr);
    assert_no_secret("stdout", &r.stdout);
}

#[test]
fn serve_emit_prints_accepted_events_and_exits_cleanly_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    // Secrets from the environment only; two of them, as during a rotation.
    let config = serve_config(dir.path(), json!({}));
    let env = format!("{SECRET}, {SECRET_2}");
    let mut serve = Serve::start(&config, true, &[("LOOP_WEBHOOK_SECRETS", &env)]);
    let http = Http::new();
    let ids = ["e-1", "e-2", "e-3"];
    for (i, id) in ids.iter().enumerate() {
        let secret = if i == 1 { SECRET_2 } else { SECRET };
        let payload =
            json!({"id": 500 + i, "updatedAt": "2024-05-01T10:00:00Z", "totalPrice": "5.390"});
        let r = delivery(id, "order/processed", &payload, secret).send(&http, &serve);
        assert_eq!(accepted_seq(&r), i as i64 + 1);
    }
    // Redelivery and a rejected delivery print nothing.
    let payload = json!({"id": 500, "updatedAt": "2024-05-01T10:00:00Z"});
    assert_eq!(
        delivery("e-1", "order/processed", &payload, SECRET)
            .send(&http, &serve)
            .1["status"],
        "duplicate"
    );
    assert_eq!(
        delivery("e-9", "order/processed", &payload, "wrong")
            .send(&http, &serve)
            .0,
        401
    );

    let status = serve.terminate();
    assert_eq!(status.code(), Some(0), "stderr:\n{}", serve.stderr());
    let lines = harness::parse_lines(&serve.stdout());
    let got: Vec<&str> = lines
        .iter()
        .map(|l| l["webhook_id"].as_str().unwrap())
        .collect();
    assert_eq!(got, ids, "stdout:\n{}", serve.stdout());
    for (i, l) in lines.iter().enumerate() {
        assert_eq!(l["seq"], i as i64 + 1);
        assert_eq!(l["topic"], "order/processed");
        assert_eq!(l["shop_domain"], SHOP);
        assert_eq!(l["entity_kind"], "order");
        assert_eq!(l["entity_id"], (500 + i).to_string());
        // The decimal string is kept exactly as received.
        assert_eq!(l["payload"]["totalPrice"].to_string(), "\"5.390\"");
        assert!(l["received_at"].as_str().unwrap().ends_with('Z'));
    }
    assert!(serve.stderr().contains("stopped"), "{}", serve.stderr());
    assert_no_secret("serve stdout", &serve.stdout());
    assert_no_secret("serve stderr", &serve.stderr());
}

/// The final STATE of `stream` in a run.
fn stream_state(run: &Run, stream: &str) -> Value {
    run.final_state()
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["stream"]["stream_descriptor"]["name"] == stream)
        .unwrap_or_else(|| panic!("no STATE for {stream}: {run:?}"))["stream"]["stream_state"]
        .clone()
}

fn assert_ok(run: &Run) {
    assert_eq!(
        run.code,
        Some(0),
        "stderr:\n{}\nerrors: {:?}",
        run.stderr,
        run.errors()
    );
    assert!(run.errors().is_empty(), "{:?}", run.errors());
}

#[test]
fn newer_webhook_versions_are_folded_into_read() {
    let fake = harness::fake(harness::small());
    let dir = tempfile::tempdir().unwrap();
    let journal = dir.path().join("journal.sqlite");
    // One config for serve and read.
    let config = write_config(
        dir.path(),
        &fake,
        json!({"journal_path": journal, "webhook_secrets": [SECRET]}),
    );
    write_catalog(dir.path(), &["subscriptions", "orders"]);

    // First sync: the journal does not exist yet, nothing to fold.
    let first = harness::read(dir.path(), None);
    assert_ok(&first);
    let subs = first.records("subscriptions");
    let orders = first.records("orders");
    assert!(subs.len() > 10 && !orders.is_empty());
    let s1 = subs[0].clone();
    let s2 = subs[1].clone();
    let o1 = orders[0].clone();
    assert_ne!(s1["id"], s2["id"]);

    let mut serve = Serve::start(&config, false, &[]);
    let http = Http::new();
    let future = ts(Utc::now() + chrono::Duration::seconds(30));

    // (a) a newer version of s1, with a changed field.
    let mut a = s1.clone();
    a["updatedAt"] = json!(future);
    a["cancellationComment"] = json!("changed by webhook a");
    let seq_a =
        accepted_seq(&delivery("fold-a", "subscription/updated", &a, SECRET).send(&http, &serve));
    // (b) an old version of s2.
    let mut b = s2.clone();
    b["updatedAt"] = json!("2020-03-01T00:00:00.000Z");
    b["cancellationComment"] = json!("stale webhook b");
    let seq_b =
        accepted_seq(&delivery("fold-b", "subscription/cancelled", &b, SECRET).send(&http, &serve));
    // (c) an older version of s1, delivered after (a).
    let mut c = s1.clone();
    c["updatedAt"] = json!("2021-06-01T00:00:00.000Z");
    c["cancellationComment"] = json!("stale webhook c");
    let seq_c =
        accepted_seq(&delivery("fold-c", "subscription/paused", &c, SECRET).send(&http, &serve));
    // (d) a newer version of an order.
    let mut d = o1.clone();
    d["updatedAt"] = json!(future);
    d["fulfillmentStatus"] = json!("changed by webhook d");
    let seq_d =
        accepted_seq(&delivery("fold-d", "order/processed", &d, SECRET).send(&http, &serve));
    assert!(seq_a < seq_b && seq_b < seq_c && seq_c < seq_d);

    let reader = JournalReader::open(&journal).unwrap();
    let future_ms = harness::ms(&future);
    assert_eq!(
        reader
            .entity_version("subscription", &s1["id"].to_string())
            .unwrap(),
        Some((future_ms, seq_a)),
        "the older (c) must not replace (a)"
    );

    // Second sync, while serve keeps running: (a) and (d) come from the journal.
    let second = harness::read(dir.path(), Some(&first.final_state()));
    assert_ok(&second);
    let from_hooks: Vec<&Value> = second
        .records("subscriptions")
        .into_iter()
        .filter(|r| r["id"] == s1["id"] || r["id"] == s2["id"])
        .collect();
    assert_eq!(from_hooks.len(), 1, "{from_hooks:?}");
    assert_eq!(from_hooks[0]["id"], s1["id"]);
    assert_eq!(from_hooks[0]["cancellationComment"], "changed by webhook a");
    assert_eq!(
        harness::ms(from_hooks[0]["updatedAt"].as_str().unwrap()),
        future_ms
    );
    for r in second.records("subscriptions") {
        let comment = r["cancellationComment"].as_str().unwrap_or_default();
        assert!(
            !comment.starts_with("stale"),
            "a stale version was emitted: {r}"
        );
    }
    let orders2: Vec<&Value> = second
        .records("orders")
        .into_iter()
        .filter(|r| r["id"] == o1["id"])
        .collect();
    assert_eq!(orders2.len(), 1, "{orders2:?}");
    assert_eq!(orders2[0]["fulfillmentStatus"], "changed by webhook d");

    let sub_state = stream_state(&second, "subscriptions");
    let ws = sub_state["webhook_seq"]
        .as_i64()
        .unwrap_or_else(|| panic!("{sub_state}"));
    assert!(ws >= seq_b && ws <= seq_d, "{sub_state}");
    let ord_state = stream_state(&second, "orders");
    assert_eq!(ord_state["webhook_seq"], seq_d, "{ord_state}");

    // Third sync: the journal has nothing new, (a) and (d) are not emitted again.
    let third = harness::read(dir.path(), Some(&second.final_state()));
    assert_ok(&third);
    assert!(
        !third
            .records("subscriptions")
            .iter()
            .any(|r| r["id"] == s1["id"]),
        "{:?}",
        third.records("subscriptions")
    );
    assert!(!third.records("orders").iter().any(|r| r["id"] == o1["id"]));
    assert_eq!(stream_state(&third, "subscriptions")["webhook_seq"], ws);

    serve.terminate();
    assert_no_secret("serve stderr", &serve.stderr());
    for run in [&first, &second, &third] {
        assert_no_secret("read stdout", &run.stdout);
        assert_no_secret("read stderr", &run.stderr);
    }
}

fn webhook_events_read(dir: &Path, state: Option<&Value>) -> Run {
    let r = harness::read(dir, state);
    assert_ok(&r);
    r
}

#[test]
fn webhook_events_stream_reads_the_journal_incrementally() {
    let dir = tempfile::tempdir().unwrap();
    let config = serve_config(dir.path(), json!({"webhook_secrets": [SECRET]}));

    // Discovered only when journal_path is configured.
    let names = |cfg: &Path| -> Vec<String> {
        let r = harness::run(&["discover", "--config", p(cfg)]);
        assert_eq!(r.code, Some(0), "{r:?}");
        r.of_type("CATALOG")[0]["catalog"]["streams"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["name"].as_str().unwrap().to_string())
            .collect()
    };
    assert!(names(&config).contains(&"webhook_events".to_string()));
    let other = tempfile::tempdir().unwrap();
    let without = write_json(
        other.path(),
        "config.json",
        &json!({"api_token": TOKEN, "start_date": "2015-01-01T00:00:00Z", "base_url": "http://127.0.0.1:9"}),
    );
    assert!(!names(&without).contains(&"webhook_events".to_string()));

    write_catalog(dir.path(), &["webhook_events"]);
    let mut serve = Serve::start(&config, false, &[]);
    let http = Http::new();
    let topics = [
        (
            "subscription/created",
            json!({"id": 1, "updatedAt": "2024-05-01T10:00:00.000Z"}),
        ),
        (
            "order/skipped",
            json!({"id": "o-2", "updatedAt": "2024-05-01T10:00:01+02:00"}),
        ),
        (
            "subscriptionCheckout/success",
            json!({"checkoutId": 3, "price": "12.50"}),
        ),
        ("something/undocumented", json!({"id": 4})),
    ];
    for (i, (topic, payload)) in topics.iter().enumerate() {
        let r = delivery(&format!("ev-{i}"), topic, payload, SECRET).send(&http, &serve);
        assert_eq!(accepted_seq(&r), i as i64 + 1);
    }

    let first = webhook_events_read(dir.path(), None);
    let recs = first.records("webhook_events");
    assert_eq!(recs.len(), 4, "{recs:?}");
    for (i, r) in recs.iter().enumerate() {
        assert_eq!(r["id"], format!("ev-{i}"));
        assert_eq!(r["seq"], i as i64 + 1);
        assert_eq!(r["topic"], topics[i].0);
        assert_eq!(r["shop_domain"], SHOP);
        assert_eq!(r["api_version"], "2023-10");
        assert_eq!(r["retry_count"], 0);
        assert!(harness::ms(r["received_at"].as_str().unwrap()) > 0);
        if i != 1 && i != 2 {
            assert_eq!(r["payload"], topics[i].1, "payload of {r}");
        }
    }
    // Payload timestamps are normalized like API records (UTC, milliseconds).
    assert_eq!(
        recs[1]["payload"],
        json!({"id": "o-2", "updatedAt": "2024-05-01T08:00:01.000Z"})
    );
    // So is money: a JSON number with exactly the digits received (money_type's default).
    assert_eq!(
        recs[2]["payload"].to_string(),
        r#"{"checkoutId":3,"price":12.50}"#
    );
    assert_eq!(recs[0]["entity_kind"], "subscription");
    assert_eq!(recs[0]["entity_id"], "1");
    assert_eq!(recs[1]["entity_kind"], "order");
    assert_eq!(
        harness::ms(recs[1]["entity_updated_at"].as_str().unwrap()),
        harness::ms("2024-05-01T08:00:01Z")
    );
    assert!(recs[2]["entity_kind"].is_null());
    assert_eq!(stream_state(&first, "webhook_events"), json!({"seq": 4}));

    // Nothing new: no records, same position.
    let second = webhook_events_read(dir.path(), Some(&first.final_state()));
    assert!(second.records("webhook_events").is_empty());
    assert_eq!(stream_state(&second, "webhook_events"), json!({"seq": 4}));

    // Later deliveries (one a redelivery of an old id) come with the next read.
    for id in ["ev-4", "ev-0", "ev-5"] {
        let payload = json!({"id": 9, "updatedAt": "2024-05-02T00:00:00Z"});
        delivery(id, "subscription/updated", &payload, SECRET).send(&http, &serve);
    }
    let third = webhook_events_read(dir.path(), Some(&second.final_state()));
    let ids: Vec<&str> = third
        .records("webhook_events")
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["ev-4", "ev-5"]);
    assert_eq!(stream_state(&third, "webhook_events"), json!({"seq": 6}));

    serve.terminate();
}

#[test]
fn acknowledged_events_survive_kill_9() {
    const EVENTS: usize = 300;
    const KILL_AFTER: usize = 100;
    let dir = tempfile::tempdir().unwrap();
    let journal = dir.path().join("journal.sqlite");
    let config = serve_config(dir.path(), json!({"webhook_secrets": [SECRET]}));
    let deliveries: Arc<Vec<Delivery>> = Arc::new(
        (0..EVENTS)
            .map(|i| {
                let id = format!("k9-{i:04}");
                let payload =
                    json!({"id": i, "updatedAt": "2024-05-01T10:00:00Z", "status": "ACTIVE"});
                delivery(&id, "subscription/updated", &payload, SECRET)
            })
            .collect(),
    );
    let http = Http::new();

    let mut serve = Serve::start(&config, false, &[]);
    let url = serve.url("/webhooks/loop");
    let acked = Arc::new(Mutex::new(Vec::<String>::new()));
    let acks = Arc::new(AtomicUsize::new(0));
    let child = Arc::clone(&serve.child);
    http.rt.block_on(async {
        let mut tasks = Vec::new();
        for i in 0..EVENTS {
            let (client, url, deliveries, acked, acks, child) = (
                http.client.clone(),
                url.clone(),
                Arc::clone(&deliveries),
                Arc::clone(&acked),
                Arc::clone(&acks),
                Arc::clone(&child),
            );
            tasks.push(tokio::spawn(async move {
                let d = &deliveries[i];
                if let Ok((status, _)) = post(&client, &url, &d.headers, d.body.clone()).await {
                    if (200..300).contains(&status) {
                        acked.lock().unwrap().push(d.id.clone());
                        if acks.fetch_add(1, Ordering::SeqCst) + 1 == KILL_AFTER {
                            // SIGKILL: no graceful shutdown, no final commit.
                            let _ = child.lock().unwrap().kill();
                        }
                    }
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
    });
    serve.kill9();
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() >= KILL_AFTER, "only {} acks", acked.len());
    eprintln!(
        "kill -9: {} of {EVENTS} deliveries were acknowledged before the kill",
        acked.len()
    );

    // Restart on the same journal: every acknowledged event is there, exactly once.
    let serve = Serve::start(&config, false, &[]);
    let reader = JournalReader::open(&journal).unwrap();
    let stored = reader.events_after(0, 10 * EVENTS).unwrap();
    let stored_ids: Vec<&str> = stored.iter().map(|e| e.webhook_id.as_str()).collect();
    let unique: std::collections::HashSet<&str> = stored_ids.iter().copied().collect();
    assert_eq!(unique.len(), stored_ids.len(), "an event is stored twice");
    for id in &acked {
        assert!(unique.contains(id.as_str()), "acknowledged {id} was lost");
    }
    let seqs: Vec<i64> = stored.iter().map(|e| e.seq).collect();
    assert_eq!(
        seqs,
        (1..=stored.len() as i64).collect::<Vec<_>>(),
        "seq has gaps"
    );

    // Loop redelivers everything: all 2xx; the stored ones are duplicates.
    let url = serve.url("/webhooks/loop");
    let results = http.rt.block_on(async {
        let futs = deliveries.iter().map(|d| {
            let (client, url) = (http.client.clone(), url.clone());
            async move {
                let r = post(&client, &url, &d.headers, d.body.clone())
                    .await
                    .expect("redelivery");
                (d.id.clone(), r)
            }
        });
        futures::future::join_all(futs).await
    });
    for (id, (status, body)) in &results {
        assert_eq!(*status, 200, "{id}: {body}");
        let expected = if unique.contains(id.as_str()) {
            "duplicate"
        } else {
            "accepted"
        };
        assert_eq!(body["status"], expected, "{id}: {body}");
    }
    assert_eq!(reader.count().unwrap(), EVENTS as i64);

    // And `read` of webhook_events sees each of them once.
    write_catalog(dir.path(), &["webhook_events"]);
    let run = webhook_events_read(dir.path(), None);
    let mut ids: Vec<String> = run
        .records("webhook_events")
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_string())
        .collect();
    ids.sort();
    let mut all: Vec<String> = deliveries.iter().map(|d| d.id.clone()).collect();
    all.sort();
    assert_eq!(ids, all);
    drop(serve);
}

#[test]
fn serve_does_not_need_the_api_token() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = crate::harness::write_json(
        dir.path(),
        "receiver.json",
        &serde_json::json!({"webhook_secrets": ["only-a-secret"], "journal_path": dir.path().join("j.sqlite")}),
    );
    let text = std::fs::read_to_string(&cfg).unwrap();
    let (c, _) = source_loop::config::WebhookSettings::from_json_str(&text)
        .expect("no api_token needed to receive");
    assert_eq!(c.secrets.len(), 1);
    // while read still asks for it
    assert!(source_loop::config::Config::from_json_str(&text)
        .unwrap_err()
        .to_string()
        .contains("`api_token` is missing"));
}

#[test]
fn serve_into_a_database_runs_with_webhook_secrets_and_no_api_token() {
    let _turn = crate::databases::one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let db = crate::databases::TestDb::sqlite(dir.path());
    let config = crate::harness::write_json(
        dir.path(),
        "receiver.json",
        &json!({"webhook_secrets": [SECRET], "journal_path": dir.path().join("journal.sqlite"),
                "money_type": "string"}),
    );
    let serve = Serve::start_with(&config, false, &[], &["--into", db.url()]);
    let http = Http::new();
    let payload = subscription(7, "2025-05-01T10:00:00.000Z", "ACTIVE");
    accepted_seq(
        &delivery("w-no-token", "subscription/created", &payload, SECRET).send(&http, &serve),
    );
    eventually("the delivery applied", || {
        db.try_scalar("SELECT status FROM subscriptions WHERE id = 7") == Some("ACTIVE".into())
    });
    assert!(
        !serve.stderr().contains("api_token"),
        "serve asked for a token it never uses: {}",
        serve.stderr()
    );
}

// ---------------------------------------------------------------------------------------
// `serve --into URL`: journaled events upserted into the loader's tables (newest wins)

/// Polls `check` until it holds, for at most 20 s.
fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let start = Instant::now();
    while !check() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "not within 20 s: {what}"
        );
        std::thread::sleep(Duration::from_millis(25));
    }
}

fn subscription(id: i64, updated: &str, status: &str) -> Value {
    json!({"id": id, "createdAt": "2025-04-01T00:00:00Z", "updatedAt": updated, "status": status, "currencyCode": "USD",
           "totalLineItemPrice": "12.30", "lines": [{"price": "12.30", "quantity": 1}]})
}

fn newest_wins_live(db: crate::databases::TestDb, dir: &Path) {
    let config = serve_config(dir, json!({"webhook_secrets": [SECRET]}));
    let serve = Serve::start_with(&config, false, &[], &["--into", db.url()]);
    let http = Http::new();
    let (t1, t2, t3) = (
        "2025-05-01T10:00:00.000Z",
        "2025-05-01T11:00:00.000Z",
        "2025-05-01T12:00:00.000Z",
    );
    // out of order (newest second), duplicated (same id), and redelivered (new id)
    let sends = [
        ("w-1", subscription(42, t1, "ACTIVE")),
        ("w-3", subscription(42, t3, "CANCELLED")),
        ("w-2", subscription(42, t2, "PAUSED")),
        ("w-3", subscription(42, t3, "CANCELLED")),
        ("w-1-again", subscription(42, t1, "ACTIVE")),
        ("w-4", subscription(43, t2, "ACTIVE")),
    ];
    for (id, payload) in &sends {
        let r = delivery(id, "subscription/updated", payload, SECRET).send(&http, &serve);
        assert_eq!(r.0, 200, "{r:?}");
    }
    let order = json!({"id": 900, "createdAt": t1, "updatedAt": t1, "status": "FAILED", "totalPrice": "30.00"});
    accepted_seq(&delivery("w-5", "order/processed", &order, SECRET).send(&http, &serve));
    eventually("every event applied", || {
        db.try_scalar("SELECT state FROM _source_loop_state WHERE stream = 'webhooks:applied'")
            .is_some_and(|s| s.contains("\"seq\": 6") || s.contains("\"seq\":6"))
    });
    assert_eq!(
        db.scalar("SELECT status FROM subscriptions WHERE id = 42"),
        Some("CANCELLED".into()),
        "the newest version won"
    );
    assert_eq!(
        db.scalar("SELECT COUNT(*) FROM subscriptions"),
        Some("2".into())
    );
    assert_eq!(
        db.scalar("SELECT total_price FROM orders WHERE id = 900"),
        Some("30.00".into())
    );
    assert_eq!(
        db.scalar("SELECT COUNT(*) FROM webhook_events"),
        Some("6".into()),
        "one row per journaled delivery (the duplicate was not journaled)"
    );
    // the metric views follow (materialized on Postgres: refreshed after the upserts)
    eventually("churn_by_month sees the subscriptions", || {
        db.try_scalar("SELECT COUNT(*) FROM churn_by_month WHERE month = '2025-05-01'")
            == Some("1".into())
    });
}

#[test]
fn serve_into_sqlite_upserts_each_webhook_newest_wins_whatever_the_order_or_duplicates() {
    let _turn = crate::databases::one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    newest_wins_live(crate::databases::TestDb::sqlite(dir.path()), dir.path());
}

#[test]
fn serve_into_postgres_upserts_each_webhook_newest_wins_whatever_the_order_or_duplicates() {
    let _turn = crate::databases::one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    if let Some(db) = crate::databases::TestDb::postgres("serve_into_postgres_upserts_each_webhook")
    {
        newest_wins_live(db, dir.path());
    }
}

#[test]
fn serve_into_postgres_acknowledges_while_the_database_is_down_and_catches_up_after() {
    let _turn = crate::databases::one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let Some(db) = crate::databases::TestDb::postgres("serve_into_postgres_catches_up") else {
        return;
    };
    let crate::databases::TestDb::Postgres { cluster, .. } = &db else {
        unreachable!("a Postgres TestDb")
    };
    let config = serve_config(dir.path(), json!({"webhook_secrets": [SECRET]}));
    let serve = Serve::start_with(&config, false, &[], &["--into", db.url()]);
    let http = Http::new();
    let t = |h: u32| format!("2025-05-01T{h:02}:00:00.000Z");
    accepted_seq(
        &delivery(
            "d-1",
            "subscription/updated",
            &subscription(7, &t(1), "ACTIVE"),
            SECRET,
        )
        .send(&http, &serve),
    );
    eventually("the first event applied", || {
        db.try_scalar("SELECT status FROM subscriptions WHERE id = 7") == Some("ACTIVE".into())
    });
    cluster.stop();
    for (i, status) in ["PAUSED", "CANCELLED"].iter().enumerate() {
        let id = format!("d-{}", i + 2);
        let payload = subscription(7, &t(2 + i as u32), status);
        accepted_seq(&delivery(&id, "subscription/updated", &payload, SECRET).send(&http, &serve));
    }
    accepted_seq(
        &delivery(
            "d-4",
            "subscription/updated",
            &subscription(8, &t(5), "ACTIVE"),
            SECRET,
        )
        .send(&http, &serve),
    );
    cluster.start_again();
    eventually("the tables caught up from the journal", || {
        db.try_scalar("SELECT COUNT(*) FROM webhook_events") == Some("4".into())
    });
    assert_eq!(
        db.scalar("SELECT status FROM subscriptions WHERE id = 7"),
        Some("CANCELLED".into())
    );
    assert_eq!(
        db.scalar("SELECT COUNT(*) FROM subscriptions"),
        Some("2".into())
    );
    assert!(
        serve.stderr().contains("retrying in"),
        "the outage was reported: {}",
        serve.stderr()
    );
}
