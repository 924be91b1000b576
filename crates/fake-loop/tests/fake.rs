use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use chrono::DateTime;
use fake_loop::{
    Counts, FakeConfig, FakeServer, Fault, FaultKind, FilterBounds, LimiterKind, Mutation,
    PageOrder, RetryAfter, ServerJitter,
};
use serde_json::Value;

const TOKEN: &str = "fake-token";

fn cfg() -> FakeConfig {
    FakeConfig {
        counts: Counts {
            subscriptions: 260,
            orders: 300,
            customers: 40,
            products: 12,
            activity_logs: 200,
        },
        ..FakeConfig::default()
    }
}

async fn get(url: &str) -> reqwest::Response {
    reqwest::Client::new()
        .get(url)
        .header("X-Loop-Token", TOKEN)
        .send()
        .await
        .expect("request")
}

async fn get_json(url: &str) -> (u16, Value) {
    let r = get(url).await;
    let status = r.status().as_u16();
    (status, r.json().await.expect("json body"))
}

fn ms(v: &Value, field: &str) -> i64 {
    DateTime::parse_from_rfc3339(v[field].as_str().expect("timestamp"))
        .expect("valid timestamp")
        .timestamp_millis()
}

/// Pages through an endpoint; returns every record served.
async fn all_pages(base: &str, path: &str, extra: &str) -> Vec<Value> {
    let mut out = Vec::new();
    for page in 1.. {
        let (st, body) = get_json(&format!("{base}{path}?pageNo={page}&pageSize=50{extra}")).await;
        assert_eq!(st, 200, "{body}");
        assert_eq!(body["success"], true);
        assert_eq!(body["code"], "SUCCESS");
        assert_eq!(body["pageInfo"]["hasPreviousPage"], page > 1);
        out.extend(body["data"].as_array().expect("data array").iter().cloned());
        if body["pageInfo"]["hasNextPage"] == false {
            break;
        }
    }
    out
}

fn key(v: &Value) -> i64 {
    v.get("id")
        .unwrap_or(&v["shopifyId"])
        .as_i64()
        .expect("int key")
}

#[tokio::test]
async fn pagination_covers_every_record_once_in_every_order() {
    for order in [PageOrder::Id, PageOrder::UpdatedAsc, PageOrder::UpdatedDesc] {
        let srv = FakeServer::start(FakeConfig {
            page_order: order,
            ..cfg()
        })
        .await
        .unwrap();
        for (stream, path, extra) in [
            ("subscriptions", "/subscription", ""),
            ("orders", "/order", ""),
            ("customers", "/customer", ""),
            ("products", "/product", "&type=ALL"),
            ("activity_logs", "/activityLog", ""),
        ] {
            let served = all_pages(&srv.base_url, path, extra).await;
            let keys: Vec<i64> = served.iter().map(key).collect();
            let unique: BTreeSet<i64> = keys.iter().copied().collect();
            assert_eq!(unique.len(), keys.len(), "{stream} {order:?}: duplicates");
            let expected: BTreeSet<i64> = srv.records(stream).iter().map(key).collect();
            assert_eq!(unique, expected, "{stream} {order:?}");
            if stream == "subscriptions" {
                let t: Vec<(i64, i64)> = served
                    .iter()
                    .map(|v| (ms(v, "updatedAt"), key(v)))
                    .collect();
                let mut sorted = t.clone();
                match order {
                    PageOrder::Id => sorted.sort_by_key(|x| x.1),
                    PageOrder::UpdatedAsc => sorted.sort(),
                    PageOrder::UpdatedDesc => sorted.sort_by(|a, b| b.cmp(a)),
                }
                assert_eq!(t, sorted, "{order:?}");
            }
        }
    }
}

#[tokio::test]
async fn filters_respect_bounds() {
    for bounds in [FilterBounds::Inclusive, FilterBounds::Exclusive] {
        let srv = FakeServer::start(FakeConfig {
            filter_bounds: bounds,
            ..cfg()
        })
        .await
        .unwrap();
        let subs = srv.records("subscriptions");
        // The hot second: the most shared updatedAt second.
        let mut counts = std::collections::BTreeMap::<i64, usize>::new();
        for s in &subs {
            *counts
                .entry(ms(s, "updatedAt").div_euclid(1000))
                .or_default() += 1;
        }
        let (&hot, &n) = counts.iter().max_by_key(|x| *x.1).unwrap();
        assert!(n >= 70);
        let (start, end) = (hot - 5, hot + 5);
        let served = all_pages(
            &srv.base_url,
            "/subscription",
            &format!("&updatedAtStartEpoch={start}&updatedAtEndEpoch={end}"),
        )
        .await;
        let got: BTreeSet<i64> = served.iter().map(key).collect();
        let want: BTreeSet<i64> = subs
            .iter()
            .filter(|s| {
                let t = ms(s, "updatedAt");
                match bounds {
                    FilterBounds::Inclusive => (start..=end).contains(&t.div_euclid(1000)),
                    FilterBounds::Exclusive => start * 1000 < t && t < end * 1000,
                }
            })
            .map(key)
            .collect();
        assert_eq!(got, want);
        // A window of exactly the hot second.
        let (_, body) = get_json(&format!(
            "{}/subscription?pageSize=50&updatedAtStartEpoch={hot}&updatedAtEndEpoch={hot}",
            srv.base_url
        ))
        .await;
        let n_page = body["data"].as_array().unwrap().len();
        match bounds {
            FilterBounds::Inclusive => {
                assert_eq!(n_page, 50);
                assert_eq!(body["pageInfo"]["hasNextPage"], true);
            }
            FilterBounds::Exclusive => assert_eq!(n_page, 0),
        }
        // Status and createdAt filters.
        let active = all_pages(&srv.base_url, "/subscription", "&status=ACTIVE").await;
        assert!(!active.is_empty() && active.iter().all(|s| s["status"] == "ACTIVE"));
        let logs = srv.records("activity_logs");
        let c0 = ms(&logs[logs.len() / 2], "createdAt") / 1000;
        let served = all_pages(
            &srv.base_url,
            "/activityLog",
            &format!("&createdAtStartEpoch={c0}"),
        )
        .await;
        assert!(!served.is_empty() && served.iter().all(|l| ms(l, "createdAt") / 1000 >= c0));
    }
}

#[tokio::test]
async fn auth_validation_and_versions() {
    let srv = FakeServer::start(cfg()).await.unwrap();
    let c = reqwest::Client::new();
    let url = format!("{}/subscription", srv.base_url);
    let r = c.get(&url).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let body: Value = r.json().await.unwrap();
    assert_eq!(
        body,
        serde_json::json!({"success": false, "message": "invalid token", "data": {}})
    );
    let r = c
        .get(&url)
        .header("X-Loop-Token", "nope")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    srv.set_token("other");
    assert_eq!(get(&url).await.status(), 401);
    srv.set_token(TOKEN);
    assert_eq!(get(&url).await.status(), 200);
    assert_eq!(srv.stats().unauthorized, 3);
    assert_eq!(srv.stats().requests["/subscription"], 4);

    let (st, body) = get_json(&format!("{url}?pageSize=0")).await;
    assert_eq!((st, &body["success"]), (422, &Value::Bool(false)));
    assert_eq!(get(&format!("{url}?pageSize=abc")).await.status(), 422);
    assert_eq!(
        get(&format!("{url}?updatedAtStartEpoch=1.5"))
            .await
            .status(),
        422
    );
    let (_, body) = get_json(&format!("{url}?pageSize=500&foo=bar")).await;
    assert_eq!(body["data"].as_array().unwrap().len(), 50);
    let (_, body) = get_json(&url).await;
    assert_eq!(body["data"].as_array().unwrap().len(), 10);
    let (_, body) = get_json(&format!("{url}?pageNo=999")).await;
    assert_eq!(body["data"].as_array().unwrap().len(), 0);
    assert_eq!(body["pageInfo"]["hasNextPage"], false);

    let v2026 = format!("{}/admin/2026-04", srv.root_url);
    assert_eq!(get(&format!("{v2026}/order")).await.status(), 404);
    assert_eq!(get(&format!("{v2026}/subscription")).await.status(), 200);
    assert_eq!(get(&format!("{}/nope", srv.base_url)).await.status(), 404);
    let id = srv.records("subscriptions")[3]["id"].as_i64().unwrap();
    let (st, body) = get_json(&format!("{}/subscription/loop-{id}", srv.base_url)).await;
    assert_eq!((st, body["data"]["id"].as_i64()), (200, Some(id)));
}

#[tokio::test]
async fn rate_limit_answers_429() {
    let srv = FakeServer::start(FakeConfig {
        rate_limits: true,
        ..cfg()
    })
    .await
    .unwrap();
    let url = format!("{}/customer", srv.base_url);
    let r = get(&url).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-ratelimit-remaining"], "0");
    let r = get(&url).await;
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["retry-after"], "1");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["message"], "Too many requests");
    let r = get(&url).await;
    assert_eq!(r.status(), 429);
    assert!(r.headers().get("retry-after").is_none(), "every other 429");
    // Subscriptions: burst of 2, then limited; other endpoints are independent.
    let surl = format!("{}/subscription", srv.base_url);
    assert_eq!(get(&surl).await.status(), 200);
    assert_eq!(get(&surl).await.status(), 200);
    assert_eq!(get(&surl).await.status(), 429);
    assert_eq!(srv.stats().rate_limited, 3);

    let fast = FakeServer::start(FakeConfig {
        rate_limits: true,
        rate_scale: 0.01,
        ..cfg()
    })
    .await
    .unwrap();
    let url = format!("{}/customer", fast.base_url);
    assert_eq!(get(&url).await.status(), 200);
    tokio::time::sleep(Duration::from_millis(15)).await;
    assert_eq!(get(&url).await.status(), 200);
}

/// The `Retry-After` of the 429 that follows `first_n` accepted immediate requests to
/// `path`.
async fn retry_after_after(srv: &FakeServer, path: &str, first_n: usize) -> Option<String> {
    let url = format!("{}{path}", srv.base_url);
    for _ in 0..first_n {
        assert_eq!(get(&url).await.status(), 200);
    }
    let r = get(&url).await;
    assert_eq!(r.status(), 429);
    r.headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_string())
}

#[tokio::test]
async fn always_sends_the_exact_wait_and_rounded_up_sends_whole_seconds() {
    let limited = |retry_after| FakeConfig {
        rate_limits: true,
        retry_after,
        ..cfg()
    };
    // /product allows 6 per second (GCRA: a burst of 6, then one per 1/6 s): the 7th
    // immediate request waits just under 0.167 s.
    let srv = FakeServer::start(limited(RetryAfter::Always))
        .await
        .unwrap();
    let exact = retry_after_after(&srv, "/product", 6).await.unwrap();
    let secs: f64 = exact.parse().unwrap();
    assert!(
        exact.starts_with("0.") && secs > 0.1 && secs <= 0.167,
        "{exact}"
    );
    let srv = FakeServer::start(limited(RetryAfter::RoundedUp))
        .await
        .unwrap();
    assert_eq!(
        retry_after_after(&srv, "/customer", 1).await.as_deref(),
        Some("1")
    );
    assert_eq!(
        retry_after_after(&srv, "/customer", 0).await.as_deref(),
        Some("1"),
        "every 429 carries it"
    );
}

#[tokio::test]
async fn the_limiter_kind_decides_the_wait_a_429_reports() {
    // Two immediate requests to /subscription (2 per 3 s), then a third.
    let wait = |limiter| async move {
        let srv = FakeServer::start(FakeConfig {
            rate_limits: true,
            retry_after: RetryAfter::Always,
            limiter,
            ..cfg()
        })
        .await
        .unwrap();
        let w = retry_after_after(&srv, "/subscription", 2).await.unwrap();
        w.parse::<f64>().unwrap()
    };
    // A token bucket refills one request after 1.5 s.
    let gcra = wait(LimiterKind::Gcra).await;
    assert!(gcra > 1.0 && gcra <= 1.5, "{gcra}");
    // A sliding window waits for the first request to leave the 3 s window.
    let sliding = wait(LimiterKind::SlidingWindow).await;
    assert!(sliding > 2.5 && sliding <= 3.0, "{sliding}");
    // A fixed window waits for the next calendar 3 s boundary, whenever that is.
    let fixed = wait(LimiterKind::FixedWindow).await;
    assert!(fixed > 0.0 && fixed <= 3.0, "{fixed}");
}

#[tokio::test]
async fn jitter_delays_a_request_and_the_limiter_counts_it_only_after_the_delay() {
    // Every request stalls 300 ms and nothing else, so the test knows when.
    let srv = FakeServer::start(FakeConfig {
        rate_limits: true,
        limiter: LimiterKind::SlidingWindow,
        retry_after: RetryAfter::Always,
        jitter: Some(ServerJitter {
            max_delay_ms: 0,
            stall_percent: 100.0,
            stall_ms: 300,
        }),
        ..cfg()
    })
    .await
    .unwrap();
    let url = format!("{}/customer", srv.base_url);
    let sent = Instant::now();
    let first = tokio::spawn({
        let url = url.clone();
        async move { get(&url).await.status() }
    });
    tokio::time::sleep(Duration::from_millis(150)).await;
    // arrived, but not counted yet: neither in the stats nor by the limiter (one lock)
    assert_eq!(srv.stats().requests.get("/customer"), None);
    assert_eq!(first.await.unwrap(), 200);
    assert!(sent.elapsed() >= Duration::from_millis(300));
    assert_eq!(srv.stats().requests.get("/customer"), Some(&1));
    // a second request sent at once is refused when it is counted, itself 300 ms late:
    // 1 s after the first one's count less at least those 300 ms
    let r = get(&url).await;
    assert_eq!(r.status(), 429);
    let wait: f64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(wait > 0.0 && wait <= 0.701, "{wait}");
}

#[tokio::test]
async fn stats_count_429s_per_path() {
    let srv = FakeServer::start(FakeConfig {
        rate_limits: true,
        limiter: LimiterKind::SlidingWindow,
        ..cfg()
    })
    .await
    .unwrap();
    for path in ["/customer", "/customer", "/customer", "/product"] {
        get(&format!("{}{path}", srv.base_url)).await;
    }
    srv.inject(Fault {
        path: Some("/order".into()),
        kind: FaultKind::RateLimited {
            retry_after_secs: None,
        },
        times: 1,
    });
    get(&format!("{}/order", srv.base_url)).await;
    let stats = srv.stats();
    assert_eq!(stats.rate_limited, 3);
    let by_path: Vec<(&str, u64)> = stats
        .rate_limited_by_path
        .iter()
        .map(|(k, v)| (k.as_str(), *v))
        .collect();
    assert_eq!(by_path, vec![("/customer", 2), ("/order", 1)]);
    let (_, json) = get_json(&format!("{}/_control/stats", srv.root_url)).await;
    assert_eq!(json["rate_limited_by_path"]["/customer"], 2);
}

#[tokio::test]
async fn faults_are_observable() {
    let srv = FakeServer::start(cfg()).await.unwrap();
    let url = format!("{}/subscription", srv.base_url);
    let f = |kind| Fault {
        path: Some("/subscription".into()),
        kind,
        times: 1,
    };

    srv.inject(Fault {
        times: 2,
        ..f(FaultKind::Status(503))
    });
    assert_eq!(get(&url).await.status(), 503);
    assert_eq!(get(&url).await.status(), 503);
    assert_eq!(get(&url).await.status(), 200);

    // Other paths are not affected.
    srv.inject(f(FaultKind::Status(500)));
    assert_eq!(get(&format!("{}/order", srv.base_url)).await.status(), 200);
    assert_eq!(get(&url).await.status(), 500);

    srv.inject(f(FaultKind::RateLimited {
        retry_after_secs: Some(7),
    }));
    let r = get(&url).await;
    assert_eq!(
        (
            r.status().as_u16(),
            r.headers()["retry-after"].to_str().unwrap()
        ),
        (429, "7")
    );

    srv.inject(f(FaultKind::ConnectionReset));
    let r = reqwest::Client::new()
        .get(&url)
        .header("X-Loop-Token", TOKEN)
        .send()
        .await;
    assert!(
        r.is_err(),
        "connection reset must not give a response: {r:?}"
    );

    srv.inject(f(FaultKind::TruncatedBody));
    let r = get(&url).await;
    assert_eq!(r.status(), 200);
    assert!(r.bytes().await.is_err(), "truncated body must fail");

    srv.inject(f(FaultKind::Slow { millis: 300 }));
    let t = Instant::now();
    assert_eq!(get(&url).await.status(), 200);
    assert!(t.elapsed() >= Duration::from_millis(300));

    srv.inject(f(FaultKind::HtmlErrorPage));
    let r = get(&url).await;
    assert_eq!(r.status(), 502);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));

    srv.inject(f(FaultKind::SuccessFalse));
    let (st, body) = get_json(&url).await;
    assert_eq!((st, &body["success"]), (200, &Value::Bool(false)));

    srv.inject(Fault {
        path: None,
        kind: FaultKind::MalformedJson,
        times: 1,
    });
    let r = get(&url).await;
    assert_eq!(r.status(), 200);
    let bytes = r.bytes().await.expect("complete body");
    assert!(serde_json::from_slice::<Value>(&bytes).is_err());

    assert_eq!(get(&url).await.status(), 200);
    assert_eq!(srv.stats().faults_served, 10);
}

#[tokio::test]
async fn scheduled_mutation_moves_records_mid_sync() {
    let srv = FakeServer::start(FakeConfig {
        page_order: PageOrder::UpdatedAsc,
        ..cfg()
    })
    .await
    .unwrap();
    let first = srv.records("subscriptions")[0]["id"].as_i64().unwrap();
    srv.schedule(
        1,
        "/subscription",
        Mutation::TouchIds {
            stream: "subscriptions".into(),
            ids: vec![first],
        },
    );
    let url = format!("{}/subscription?pageSize=50", srv.base_url);
    let (_, p1) = get_json(&format!("{url}&pageNo=1")).await;
    let before = srv.records("subscriptions");
    let (_, p2) = get_json(&format!("{url}&pageNo=2")).await;
    let after = srv.records("subscriptions");
    assert_ne!(before[0]["updatedAt"], after[0]["updatedAt"]);
    // The touched record is now last in updatedAt order.
    let last = all_pages(&srv.base_url, "/subscription", "").await;
    assert_eq!(last.last().unwrap()["id"].as_i64(), Some(first));
    assert_eq!(p1["data"].as_array().unwrap().len(), 50);
    assert_eq!(p2["data"].as_array().unwrap().len(), 50);

    // Create via the control endpoint.
    let c = reqwest::Client::new();
    let r: Value = c
        .post(format!("{}/_control/mutate", srv.root_url))
        .json(&serde_json::json!({"create": {"stream": "orders", "count": 2}}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r.as_array().unwrap().len(), 2);
    assert_eq!(r[0]["createdAt"], r[0]["updatedAt"]);
    assert_eq!(srv.records("orders").len(), 302);
    let r = c
        .post(format!("{}/_control/fault", srv.root_url))
        .json(&serde_json::json!({"path": "/order", "kind": {"status": 503}, "times": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(get(&format!("{}/order", srv.base_url)).await.status(), 503);
    let stats: Value = c
        .get(format!("{}/_control/stats", srv.root_url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(stats["faults_served"], 1);
    let recs: Value = c
        .get(format!("{}/_control/records/products", srv.root_url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(recs.as_array().unwrap().len(), 12);
}

#[test]
fn thread_server_and_messy_timestamps() {
    let srv = FakeServer::start_in_thread(FakeConfig {
        messy_timestamps: true,
        ..cfg()
    })
    .unwrap();
    assert!(
        srv.base_url.starts_with("http://127.0.0.1:") && srv.base_url.ends_with("/admin/2023-10")
    );
    let subs = srv.records("subscriptions");
    let odd = subs
        .iter()
        .filter(|s| {
            !s["updatedAt"].as_str().unwrap().ends_with('Z')
                || s["updatedAt"].as_str().unwrap().len() != 24
        })
        .count();
    assert!(odd > 0);
    for s in &subs {
        assert!(ms(s, "updatedAt") >= ms(s, "createdAt"));
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let n = rt.block_on(async { all_pages(&srv.base_url, "/subscription", "").await.len() });
    assert_eq!(n, 260);
    srv.shutdown();
}

#[tokio::test]
#[ignore = "perf probe"]
async fn perf_probe() {
    let t = Instant::now();
    let srv = FakeServer::start(FakeConfig {
        counts: Counts {
            subscriptions: 100_000,
            orders: 100_000,
            customers: 20_000,
            products: 100,
            activity_logs: 100_000,
        },
        page_order: PageOrder::UpdatedAsc,
        ..FakeConfig::default()
    })
    .await
    .unwrap();
    eprintln!("generate {:?}", t.elapsed());
    let c = reqwest::Client::new();
    for page in [1, 1000, 1999] {
        let t = Instant::now();
        let r = c
            .get(format!(
                "{}/subscription?pageSize=50&pageNo={page}",
                srv.base_url
            ))
            .header("X-Loop-Token", TOKEN)
            .send()
            .await
            .unwrap();
        let b = r.bytes().await.unwrap();
        eprintln!("page {page}: {} bytes in {:?}", b.len(), t.elapsed());
    }
    let t = Instant::now();
    let r = c
        .get(format!(
            "{}/subscription?pageSize=50&pageNo=1000&updatedAtStartEpoch=1700000000",
            srv.base_url
        ))
        .header("X-Loop-Token", TOKEN)
        .send()
        .await
        .unwrap();
    let _ = r.bytes().await.unwrap();
    eprintln!("filtered page 1000: {:?}", t.elapsed());
    let t = Instant::now();
    srv.mutate(Mutation::Touch {
        stream: "subscriptions".into(),
        count: 100,
    });
    eprintln!("touch 100: {:?}", t.elapsed());
}
