//! The `fake-loop` binary sends signed webhooks with its `--webhook-*` faults, driven
//! through its control endpoints, to a receiver in this test on 127.0.0.1.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;

const SECRET: &str = "fake-wh-secret-51";
const LIMIT: Duration = Duration::from_secs(15);

type Received = Arc<Mutex<Vec<(HeaderMap, Bytes)>>>;

/// A receiver that answers the very first post 503 (so the fake retries) and every
/// other one 200.
async fn receiver() -> (String, Received) {
    let got: Received = Arc::default();
    let g = Arc::clone(&got);
    let app = axum::Router::new().route(
        "/hook",
        post(move |headers: HeaderMap, body: Bytes| {
            let g = Arc::clone(&g);
            async move {
                let mut all = g.lock().unwrap();
                all.push((headers, body));
                if all.len() == 1 {
                    StatusCode::SERVICE_UNAVAILABLE
                } else {
                    StatusCode::OK
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, got)
}

fn hex_hmac(body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_signs_drops_duplicates_and_retries_deliveries() {
    let (url, got) = receiver().await;
    let mut child = Command::new(env!("CARGO_BIN_EXE_fake-loop"))
        .args([
            "--subscriptions",
            "30",
            "--orders",
            "30",
            "--webhook-url",
            &url,
            "--webhook-secret",
            SECRET,
            "--webhook-drop-every",
            "3",
            "--webhook-duplicate-every",
            "2",
            "--exit-on-stdin-eof",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn fake-loop");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let root = serde_json::from_str::<Value>(&line).unwrap()["root_url"]
        .as_str()
        .unwrap()
        .to_string();
    let http = reqwest::Client::new();
    let ctl = |path: &str, body: Value| {
        let req = http.post(format!("{root}/_control/{path}")).json(&body);
        async move { req.send().await.unwrap() }
    };
    let get = |path: &str| {
        let req = http.get(format!("{root}/_control/{path}"));
        async move { req.send().await.unwrap().json::<Value>().await.unwrap() }
    };
    let subs = get("records/subscriptions").await;
    let ids: Vec<i64> = subs.as_array().unwrap()[..6]
        .iter()
        .map(|s| s["id"].as_i64().unwrap())
        .collect();
    let r = ctl(
        "mutate",
        json!({"touch_ids": {"stream": "subscriptions", "ids": ids}}),
    )
    .await;
    assert_eq!(r.status(), 200);
    let silent = json!({"mutation": {"touch_ids": {"stream": "subscriptions", "ids": [ids[0]]}},
                        "delivery": "none"});
    assert_eq!(ctl("mutate_with", silent).await.status(), 200);
    let no_topic = ctl(
        "webhook_only",
        json!({"kind": "unknown_entity", "stream": "customers", "id": 1}),
    )
    .await;
    assert_eq!(no_topic.status(), 422);
    assert!(no_topic
        .text()
        .await
        .unwrap()
        .contains("only subscriptions and orders"));

    let start = Instant::now();
    let stats = loop {
        let s = get("webhooks").await;
        if s["pending"] == 0 {
            break s;
        }
        assert!(start.elapsed() < LIMIT, "still pending: {s}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    // 6 made; the 3rd and 6th lost; the 2nd and 4th sent twice; one change silent.
    assert_eq!(
        stats,
        json!({"made": 6, "delivered": 6, "dropped": 2, "duplicated": 2, "silent": 1,
               "failed": 0, "pending": 0, "held": 0})
    );
    let got = got.lock().unwrap().clone();
    assert_eq!(got.len(), 7, "6 deliveries and one retry after the 503");
    let mut webhook_ids = Vec::new();
    for (headers, body) in &got {
        let h = |name: &str| headers.get(name).unwrap().to_str().unwrap().to_string();
        assert_eq!(
            h("x-loop-signature"),
            hex_hmac(body),
            "signed over the raw body"
        );
        assert_eq!(h("x-loop-webhook-topic"), "subscription/updated");
        assert_eq!(h("x-loop-webhook-api-version"), "2023-10");
        let delivery: Value = serde_json::from_slice(body).unwrap();
        assert!(ids.contains(&delivery["payload"]["id"].as_i64().unwrap()));
        assert_eq!(
            delivery["metaData"]["myshopifyDomain"],
            fake_loop::SHOP_DOMAIN
        );
        webhook_ids.push(h("x-loop-webhook-id"));
    }
    let retries: Vec<String> = got
        .iter()
        .map(|(h, _)| {
            h["x-loop-webhook-retry-count"]
                .to_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(
        retries.iter().filter(|r| *r == "1").count(),
        1,
        "{retries:?}"
    );
    webhook_ids.sort();
    webhook_ids.dedup();
    assert_eq!(
        webhook_ids,
        ["fake-wh-1", "fake-wh-2", "fake-wh-4", "fake-wh-5"]
    );
    drop(child.stdin.take());
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        assert!(
            start.elapsed() < LIMIT,
            "fake-loop did not exit on stdin EOF"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}
