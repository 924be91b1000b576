//! End-to-end tests of the receiver over HTTP on 127.0.0.1: in-process servers for the
//! request checks, and the real `loop-webhooks-serve` binary for kill -9 durability,
//! graceful shutdown and `--emit`.

use std::collections::HashSet;
use std::io::{BufRead as _, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use loop_webhooks::journal::JournalReader;
use loop_webhooks::server::{self, ServerConfig};
use loop_webhooks::signature::{sign_base64, sign_hex, Encoding, Secret};
use serde_json::{json, Value};
use tokio::sync::oneshot;

const SECRET: &str = "whsec-test-one";
const ROTATED: &str = "whsec-test-two";

struct TestServer {
    addr: SocketAddr,
    journal: PathBuf,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<Result<(), server::ServeError>>>,
    _dir: tempfile::TempDir,
}

impl TestServer {
    async fn start(tweak: impl FnOnce(&mut ServerConfig)) -> TestServer {
        let dir = tempfile::tempdir().unwrap();
        let journal = dir.path().join("journal.sqlite");
        let mut cfg = ServerConfig::new(&journal, vec![Secret::new(SECRET), Secret::new(ROTATED)]);
        cfg.listen = "127.0.0.1:0".parse().unwrap();
        tweak(&mut cfg);
        let bound = server::bind(cfg).await.unwrap();
        let addr = bound.local_addr();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(bound.run(async {
            let _ = stopped.await;
        }));
        TestServer {
            addr,
            journal,
            stop: Some(stop),
            task: Some(task),
            _dir: dir,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn reader(&self) -> JournalReader {
        JournalReader::open(&self.journal).unwrap()
    }

    async fn metrics(&self) -> String {
        reqwest::get(self.url("/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        let task = self.task.take().unwrap();
        tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .expect("server stops within 10 s")
            .unwrap()
            .unwrap();
    }
}

fn body_for(id: impl Into<Value>, updated_at: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "payload": {"id": id.into(), "updatedAt": updated_at, "status": "ACTIVE", "totalPrice": "300.00"},
        "metaData": {"myshopifyDomain": "shop.myshopify.com"},
    }))
    .unwrap()
}

/// Headers of a proper delivery; `None` values are left out.
fn delivery(
    client: &reqwest::Client,
    url: &str,
    id: Option<&str>,
    topic: Option<&str>,
    signature: Option<String>,
    body: Vec<u8>,
) -> reqwest::RequestBuilder {
    let mut req = client
        .post(url)
        .header("content-type", "application/json")
        .header("x-loop-webhook-api-version", "2023-10")
        .header("x-loop-webhook-created-at", "2024-01-05T01:43:34.000Z")
        .header("x-loop-webhook-delivery-at", "2024-01-05T01:43:35.000Z")
        .header("x-loop-webhook-retry-count", "0");
    if let Some(id) = id {
        req = req.header("x-loop-webhook-id", id);
    }
    if let Some(topic) = topic {
        req = req.header("x-loop-webhook-topic", topic);
    }
    if let Some(sig) = signature {
        req = req.header("x-loop-signature", sig);
    }
    req.body(body)
}

async fn send_signed(
    client: &reqwest::Client,
    url: &str,
    id: &str,
    topic: &str,
    body: Vec<u8>,
) -> (u16, Value) {
    let sig = sign_hex(SECRET, &body);
    answer(delivery(
        client,
        url,
        Some(id),
        Some(topic),
        Some(sig),
        body,
    ))
    .await
}

async fn answer(req: reqwest::RequestBuilder) -> (u16, Value) {
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or_else(|| panic!("metric {name} not in:\n{text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accepts_hex_base64_prefixed_and_rotated_signatures() {
    let srv = TestServer::start(|_| {}).await;
    let client = reqwest::Client::new();
    let url = srv.url("/webhooks/loop");
    let body = body_for(1, "2024-01-05T01:43:34.000Z");
    let signatures = [
        sign_hex(SECRET, &body),
        sign_base64(SECRET, &body),
        format!("sha256={}", sign_hex(SECRET, &body)),
        sign_hex(ROTATED, &body),
        sign_base64(ROTATED, &body),
    ];
    for (i, sig) in signatures.into_iter().enumerate() {
        let id = format!("sig-{i}");
        let (status, reply) = answer(delivery(
            &client,
            &url,
            Some(&id),
            Some("subscription/updated"),
            Some(sig),
            body.clone(),
        ))
        .await;
        assert_eq!(status, 200, "{reply}");
        assert_eq!(reply, json!({"status": "accepted", "seq": i + 1}));
    }
    let stored = srv.reader().events_after(0, 100).unwrap();
    assert_eq!(stored.len(), 5);
    let first = &stored[0];
    assert_eq!(first.webhook_id, "sig-0");
    assert_eq!(first.topic, "subscription/updated");
    assert_eq!(first.api_version.as_deref(), Some("2023-10"));
    assert_eq!(
        first.created_at.as_deref(),
        Some("2024-01-05T01:43:34.000Z")
    );
    assert_eq!(first.shop_domain.as_deref(), Some("shop.myshopify.com"));
    assert_eq!(first.retry_count, Some(0));
    assert_eq!(first.entity_kind.as_deref(), Some("subscription"));
    assert_eq!(first.entity_id.as_deref(), Some("1"));
    assert_eq!(first.entity_updated_at_ms, Some(1_704_419_014_000));
    assert_eq!(first.payload["totalPrice"], json!("300.00"));
    assert!(first.received_at.ends_with('Z') && first.received_at.len() == 24);
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configured_encoding_refuses_the_other_one() {
    let srv = TestServer::start(|cfg| cfg.encoding = Encoding::Base64).await;
    let client = reqwest::Client::new();
    let url = srv.url("/webhooks/loop");
    let body = body_for(1, "2024-01-05T01:43:34.000Z");
    let hex = sign_hex(SECRET, &body);
    let (status, _) = answer(delivery(
        &client,
        &url,
        Some("a"),
        Some("order/processed"),
        Some(hex),
        body.clone(),
    ))
    .await;
    assert_eq!(status, 401);
    let b64 = sign_base64(SECRET, &body);
    let (status, _) = answer(delivery(
        &client,
        &url,
        Some("a"),
        Some("order/processed"),
        Some(b64),
        body,
    ))
    .await;
    assert_eq!(status, 200);
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_or_missing_signature_is_401_and_not_stored() {
    let srv = TestServer::start(|_| {}).await;
    let client = reqwest::Client::new();
    let url = srv.url("/webhooks/loop");
    let body = body_for(1, "2024-01-05T01:43:34.000Z");
    let wrong_secret = sign_hex("not-the-secret", &body);
    let other_body = sign_hex(SECRET, b"{}");
    for sig in [
        Some(wrong_secret),
        Some(other_body),
        Some("garbage".into()),
        None,
    ] {
        let missing = sig.is_none();
        let (status, reply) = answer(delivery(
            &client,
            &url,
            Some("x"),
            Some("order/processed"),
            sig,
            body.clone(),
        ))
        .await;
        assert_eq!(status, 401, "{reply}");
        let error = reply["error"].as_str().unwrap();
        assert!(error.contains("X-Loop-Signature"), "{error}");
        if missing {
            assert!(error.contains("missing"), "{error}");
        }
    }
    assert_eq!(srv.reader().max_seq().unwrap(), 0);
    let m = srv.metrics().await;
    assert_eq!(
        metric(&m, "loop_webhooks_rejected_total{reason=\"bad_signature\"}"),
        3.0
    );
    assert_eq!(
        metric(
            &m,
            "loop_webhooks_rejected_total{reason=\"missing_signature\"}"
        ),
        1.0
    );
    assert_eq!(metric(&m, "loop_webhooks_received_total"), 4.0);
    assert_eq!(metric(&m, "loop_webhooks_verified_total"), 0.0);
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_400_or_413_with_a_json_error() {
    let srv = TestServer::start(|cfg| cfg.max_body_bytes = 2048).await;
    let client = reqwest::Client::new();
    let url = srv.url("/webhooks/loop");
    let topic = Some("subscription/updated");

    let malformed = b"{\"payload\": {\"id\": 1,".to_vec();
    let (status, reply) = answer(delivery(
        &client,
        &url,
        Some("m"),
        topic,
        Some(sign_hex(SECRET, &malformed)),
        malformed,
    ))
    .await;
    assert_eq!(status, 400);
    assert!(
        reply["error"].as_str().unwrap().contains("not valid JSON"),
        "{reply}"
    );

    let (status, reply) = answer(delivery(
        &client,
        &url,
        Some("e"),
        topic,
        Some(sign_hex(SECRET, b"")),
        Vec::new(),
    ))
    .await;
    assert_eq!(status, 400);
    assert!(
        reply["error"].as_str().unwrap().contains("empty"),
        "{reply}"
    );

    let no_payload = br#"{"metaData":{"myshopifyDomain":"s"}}"#.to_vec();
    let (status, reply) = answer(delivery(
        &client,
        &url,
        Some("p"),
        topic,
        Some(sign_hex(SECRET, &no_payload)),
        no_payload,
    ))
    .await;
    assert_eq!(status, 400);
    assert!(
        reply["error"].as_str().unwrap().contains("payload"),
        "{reply}"
    );

    // Size is checked before the signature: no valid signature needed for a 413.
    let big = serde_json::to_vec(&json!({"payload": {"id": 1, "blob": "x".repeat(4096)}})).unwrap();
    let (status, reply) = answer(delivery(
        &client,
        &url,
        Some("b"),
        topic,
        Some(sign_hex(SECRET, &big)),
        big,
    ))
    .await;
    assert_eq!(status, 413);
    assert!(reply["error"].as_str().unwrap().contains("2048"), "{reply}");

    let body = body_for(1, "2024-01-05T01:43:34.000Z");
    let sig = || Some(sign_hex(SECRET, &body));
    let (status, reply) = answer(delivery(&client, &url, None, topic, sig(), body.clone())).await;
    assert_eq!(status, 400);
    assert!(
        reply["error"]
            .as_str()
            .unwrap()
            .contains("X-Loop-Webhook-Id"),
        "{reply}"
    );
    let (status, reply) = answer(delivery(
        &client,
        &url,
        Some("t"),
        None,
        sig(),
        body.clone(),
    ))
    .await;
    assert_eq!(status, 400);
    assert!(
        reply["error"]
            .as_str()
            .unwrap()
            .contains("X-Loop-Webhook-Topic"),
        "{reply}"
    );

    // Signature before headers: an unsigned request without id is 401, not 400.
    let (status, _) = answer(delivery(&client, &url, None, topic, None, body.clone())).await;
    assert_eq!(status, 401);

    assert_eq!(srv.reader().max_seq().unwrap(), 0);
    let m = srv.metrics().await;
    assert_eq!(
        metric(&m, "loop_webhooks_rejected_total{reason=\"bad_json\"}"),
        3.0
    );
    assert_eq!(
        metric(&m, "loop_webhooks_rejected_total{reason=\"too_large\"}"),
        1.0
    );
    assert_eq!(
        metric(
            &m,
            "loop_webhooks_rejected_total{reason=\"missing_header\"}"
        ),
        2.0
    );
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_topic_is_stored_and_counted() {
    let srv = TestServer::start(|_| {}).await;
    let client = reqwest::Client::new();
    let url = srv.url("/webhooks/loop");
    let (status, reply) = send_signed(
        &client,
        &url,
        "u1",
        "subscription/teleported",
        body_for(5, "2024-01-05T01:43:34.000Z"),
    )
    .await;
    assert_eq!(
        (status, reply),
        (200, json!({"status": "accepted", "seq": 1}))
    );
    let (status, _) = send_signed(
        &client,
        &url,
        "u2",
        "flow/completed",
        body_for(6, "2024-01-05T01:43:34.000Z"),
    )
    .await;
    assert_eq!(status, 200);
    let stored = srv.reader().events_after(0, 10).unwrap();
    assert_eq!(stored[0].topic, "subscription/teleported");
    // flow/* is not about a subscription or an order.
    assert_eq!(stored[1].entity_kind, None);
    let m = srv.metrics().await;
    assert_eq!(metric(&m, "loop_webhooks_unknown_topic_total"), 1.0);
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_copies_are_stored_once() {
    let srv = TestServer::start(|_| {}).await;
    let client = reqwest::Client::new();
    let url = srv.url("/webhooks/loop");
    let body = body_for(77, "2024-01-05T01:43:34.000Z");
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let (client, url, body) = (client.clone(), url.clone(), body.clone());
        tasks.push(tokio::spawn(async move {
            send_signed(&client, &url, "same-id", "subscription/updated", body).await
        }));
    }
    let mut accepted = 0;
    let mut duplicates = 0;
    for t in tasks {
        let (status, reply) = t.await.unwrap();
        assert_eq!(status, 200, "{reply}");
        match reply["status"].as_str() {
            Some("accepted") => accepted += 1,
            Some("duplicate") => duplicates += 1,
            _ => panic!("unexpected reply {reply}"),
        }
    }
    assert_eq!((accepted, duplicates), (1, 49));
    assert_eq!(srv.reader().count().unwrap(), 1);
    let m = srv.metrics().await;
    assert_eq!(metric(&m, "loop_webhooks_duplicates_total"), 49.0);
    assert_eq!(metric(&m, "loop_webhooks_journal_events"), 1.0);
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn older_versions_never_replace_newer_and_ties_go_to_the_later_delivery() {
    let srv = TestServer::start(|_| {}).await;
    let client = reqwest::Client::new();
    let url = srv.url("/webhooks/loop");
    let topic = "subscription/updated";
    // Newer first, then older (an hour earlier, written with another offset).
    send_signed(
        &client,
        &url,
        "v-new",
        topic,
        body_for(10, "2024-03-01T12:00:00.000Z"),
    )
    .await;
    let (_, reply) = send_signed(
        &client,
        &url,
        "v-old",
        topic,
        body_for(10, "2024-03-01T12:00:00+01:00"),
    )
    .await;
    assert_eq!(
        reply["status"], "accepted",
        "stale events are still journaled"
    );
    let reader = srv.reader();
    let newer_ms = 1_709_294_400_000;
    assert_eq!(
        reader.entity_version("subscription", "10").unwrap(),
        Some((newer_ms, 1))
    );

    // Same instant written differently: a tie, so the later delivery (seq 3) wins.
    send_signed(
        &client,
        &url,
        "v-tie",
        topic,
        body_for(10, "2024-03-01T13:00:00.000+01:00"),
    )
    .await;
    assert_eq!(
        reader.entity_version("subscription", "10").unwrap(),
        Some((newer_ms, 3))
    );

    // String ids and order topics use their own key space; bad updatedAt is ignored.
    send_signed(
        &client,
        &url,
        "o-1",
        "order/processed",
        body_for("10", "2024-03-02T00:00:00Z"),
    )
    .await;
    send_signed(
        &client,
        &url,
        "o-2",
        "order/processed",
        body_for("10", "not a time"),
    )
    .await;
    assert_eq!(
        reader.entity_version("order", "10").unwrap(),
        Some((1_709_337_600_000, 4))
    );

    let newest = reader.newest_entities_after("subscription", 0, 10).unwrap();
    assert_eq!(
        newest
            .iter()
            .map(|e| e.webhook_id.as_str())
            .collect::<Vec<_>>(),
        ["v-tie"]
    );
    let orders = reader.newest_entities_after("order", 0, 10).unwrap();
    assert_eq!(orders.iter().map(|e| e.seq).collect::<Vec<_>>(), [4]);
    assert_eq!(reader.max_seq().unwrap(), 5);
    let m = srv.metrics().await;
    assert_eq!(metric(&m, "loop_webhooks_stale_total"), 1.0);
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_readiness_and_metrics_endpoints() {
    let srv = TestServer::start(|cfg| cfg.path = "/hooks".into()).await;
    let client = reqwest::Client::new();
    let health = client.get(srv.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    assert_eq!(health.text().await.unwrap(), "ok");
    assert_eq!(
        client
            .get(srv.url("/readyz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let (status, _) = send_signed(
        &client,
        &srv.url("/hooks"),
        "h1",
        "order/upcoming",
        body_for(1, "2024-01-05T01:43:34Z"),
    )
    .await;
    assert_eq!(status, 200);
    let m = srv.metrics().await;
    for name in [
        "loop_webhooks_received_total",
        "loop_webhooks_verified_total",
        "loop_webhooks_rejected_total{reason=\"journal_error\"}",
        "loop_webhooks_duplicates_total",
        "loop_webhooks_unknown_topic_total",
        "loop_webhooks_stale_total",
        "loop_webhooks_journal_events",
        "loop_webhooks_journal_bytes",
        "loop_webhooks_last_event_age_seconds",
        "loop_webhooks_ack_seconds_count",
    ] {
        metric(&m, name);
    }
    assert_eq!(metric(&m, "loop_webhooks_verified_total"), 1.0);
    assert_eq!(metric(&m, "loop_webhooks_ack_seconds_count"), 1.0);
    assert!(metric(&m, "loop_webhooks_journal_bytes") > 0.0);
    assert!((0.0..60.0).contains(&metric(&m, "loop_webhooks_last_event_age_seconds")));
    assert!(!m.contains(SECRET));
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_is_503_while_the_journal_cannot_be_written() {
    let srv = TestServer::start(|_| {}).await;
    let client = reqwest::Client::new();
    assert_eq!(
        client
            .get(srv.url("/readyz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    // Another process holding the write lock keeps the writer from committing.
    let locker = rusqlite_lock(&srv.journal);
    let resp = client.get(srv.url("/readyz")).send().await.unwrap();
    assert_eq!(resp.status(), 503);
    let reply: Value = resp.json().await.unwrap();
    assert!(
        reply["error"].as_str().unwrap().contains("journal"),
        "{reply}"
    );
    drop(locker);
    assert_eq!(
        client
            .get(srv.url("/readyz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    srv.stop().await;
}

/// Takes the journal's write lock on a connection of our own until dropped.
fn rusqlite_lock(path: &Path) -> rusqlite::Connection {
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.execute_batch("BEGIN IMMEDIATE").unwrap();
    conn
}

// ---- the real binary ----

struct Served {
    child: Child,
    addr: SocketAddr,
}

fn spawn_server(journal: &Path, emit: bool) -> Served {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_loop-webhooks-serve"));
    cmd.args(["--listen", "127.0.0.1:0", "--secret", SECRET, "--journal"])
        .arg(journal)
        .stdin(Stdio::null())
        .stdout(if emit { Stdio::piped() } else { Stdio::null() })
        .stderr(Stdio::piped());
    if emit {
        cmd.arg("--emit");
    }
    let mut child = cmd.spawn().unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut tx = Some(tx);
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(rest) = line.split("listening on ").nth(1) {
                let addr: SocketAddr = rest.split_whitespace().next().unwrap().parse().unwrap();
                if let Some(tx) = tx.take() {
                    let _ = tx.send(addr);
                }
            }
        }
    });
    let addr = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("server logs its address within 10 s");
    Served { child, addr }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_loses_no_acknowledged_event() {
    const EVENTS: usize = 1500;
    const KILL_AFTER_ACKS: usize = 300;
    let dir = tempfile::tempdir().unwrap();
    let journal = dir.path().join("journal.sqlite");
    let served = spawn_server(&journal, false);
    let url = format!("http://{}/webhooks/loop", served.addr);
    let child = Arc::new(Mutex::new(served.child));
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let ids: Vec<String> = (0..EVENTS).map(|i| format!("kill-{i}")).collect();
    let bodies: Vec<Vec<u8>> = (0..EVENTS)
        .map(|i| {
            body_for(
                i % 50,
                &format!("2024-01-05T01:{:02}:{:02}.000Z", i / 60 % 60, i % 60),
            )
        })
        .collect();
    let acked = Arc::new(Mutex::new(Vec::new()));
    let next = Arc::new(AtomicUsize::new(0));
    let mut workers = Vec::new();
    for _ in 0..32 {
        let (client, url, ids, bodies) = (client.clone(), url.clone(), ids.clone(), bodies.clone());
        let (acked, next, child) = (Arc::clone(&acked), Arc::clone(&next), Arc::clone(&child));
        workers.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= EVENTS {
                    break;
                }
                let body = bodies[i].clone();
                let sig = sign_hex(SECRET, &body);
                let sent = delivery(
                    &client,
                    &url,
                    Some(&ids[i]),
                    Some("subscription/updated"),
                    Some(sig),
                    body,
                )
                .send()
                .await;
                if let Ok(resp) = sent {
                    if resp.status().is_success() {
                        let mut acked = acked.lock().unwrap();
                        acked.push(i);
                        if acked.len() == KILL_AFTER_ACKS {
                            // SIGKILL mid-burst: requests are in flight and queued.
                            let _ = child.lock().unwrap().kill();
                        }
                    }
                }
            }
        }));
    }
    for w in workers {
        tokio::time::timeout(Duration::from_secs(60), w)
            .await
            .unwrap()
            .unwrap();
    }
    let _ = child.lock().unwrap().wait();
    let acked: HashSet<usize> = acked.lock().unwrap().iter().copied().collect();
    assert!(acked.len() >= KILL_AFTER_ACKS);
    assert!(
        acked.len() < EVENTS,
        "the kill came too late to test anything"
    );

    let reader = JournalReader::open(&journal).unwrap();
    let stored = reader.events_after(0, EVENTS * 2).unwrap();
    let stored_ids: HashSet<&str> = stored.iter().map(|e| e.webhook_id.as_str()).collect();
    assert_eq!(stored_ids.len(), stored.len(), "an id is stored twice");
    for i in &acked {
        assert!(
            stored_ids.contains(ids[*i].as_str()),
            "acknowledged {} was lost",
            ids[*i]
        );
    }
    drop(reader);

    // Restart on the same journal and redeliver everything.
    let mut served = spawn_server(&journal, false);
    let url = format!("http://{}/webhooks/loop", served.addr);
    let next = Arc::new(AtomicUsize::new(0));
    let mut workers = Vec::new();
    for _ in 0..16 {
        let (client, url, ids, bodies, next) = (
            client.clone(),
            url.clone(),
            ids.clone(),
            bodies.clone(),
            Arc::clone(&next),
        );
        let acked = acked.clone();
        workers.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= EVENTS {
                    break;
                }
                let (status, reply) = send_signed(
                    &client,
                    &url,
                    &ids[i],
                    "subscription/updated",
                    bodies[i].clone(),
                )
                .await;
                assert_eq!(status, 200, "{reply}");
                if acked.contains(&i) {
                    assert_eq!(
                        reply["status"], "duplicate",
                        "{} was acknowledged before",
                        ids[i]
                    );
                }
            }
        }));
    }
    for w in workers {
        tokio::time::timeout(Duration::from_secs(60), w)
            .await
            .unwrap()
            .unwrap();
    }
    let reader = JournalReader::open(&journal).unwrap();
    let stored = reader.events_after(0, EVENTS * 2).unwrap();
    assert_eq!(stored.len(), EVENTS);
    let stored_ids: HashSet<&str> = stored.iter().map(|e| e.webhook_id.as_str()).collect();
    assert!(ids.iter().all(|id| stored_ids.contains(id.as_str())));
    let _ = served.child.kill();
    let _ = served.child.wait();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_and_emit_prints_lines_in_commit_order() {
    let dir = tempfile::tempdir().unwrap();
    let journal = dir.path().join("journal.sqlite");
    let mut served = spawn_server(&journal, true);
    let url = format!("http://{}/webhooks/loop", served.addr);
    let client = reqwest::Client::new();
    for (i, id) in ["e1", "e2", "e1", "e3"].iter().enumerate() {
        let (status, _) = send_signed(
            &client,
            &url,
            id,
            "order/processed",
            body_for(i, "2024-01-05T01:43:34Z"),
        )
        .await;
        assert_eq!(status, 200);
    }
    let pid = served.child.id().to_string();
    let killed = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(killed.success());
    let mut stdout = served.child.stdout.take().unwrap();
    let output = tokio::task::spawn_blocking(move || {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut stdout, &mut s).unwrap();
        s
    });
    let output = tokio::time::timeout(Duration::from_secs(10), output)
        .await
        .unwrap()
        .unwrap();
    let status = served.child.wait().unwrap();
    assert!(status.success(), "exit status {status}");
    let lines: Vec<Value> = output
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let got: Vec<(i64, &str)> = lines
        .iter()
        .map(|l| {
            (
                l["seq"].as_i64().unwrap(),
                l["webhook_id"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(got, [(1, "e1"), (2, "e2"), (3, "e3")]);
    assert_eq!(lines[0]["payload"]["totalPrice"], "300.00");
    assert_eq!(lines[0]["shop_domain"], "shop.myshopify.com");
    assert_eq!(lines[0]["topic"], "order/processed");
}
