//! Load generator for the webhook receiver: sends signed, realistic Loop deliveries
//! (plus a fraction of redeliveries of already-acknowledged ids) over HTTP/1.1
//! keep-alive and prints one JSON line of throughput and ack latency. Exits non-zero
//! when any request failed or got an unexpected answer. With `--half-open N` it first
//! opens N connections that send a request line and never finish their headers (a
//! slowloris), holds them during the load, and reports when the receiver closed them.

use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{TimeZone as _, Utc};
use clap::Parser;
use loop_webhooks::signature::{sign_base64, sign_hex, Encoding};
use rand::Rng as _;
use serde_json::json;

#[derive(Parser)]
#[command(
    name = "loop-webhook-load",
    about = "Load-test a Loop webhook receiver"
)]
struct Args {
    /// Webhook endpoint, e.g. http://127.0.0.1:8080/webhooks/loop
    #[arg(long)]
    url: String,
    /// Secret to sign with.
    #[arg(long, env = "LOOP_WEBHOOK_SECRET", hide_env_values = true)]
    secret: String,
    /// Signature encoding: hex or base64.
    #[arg(long, default_value = "hex")]
    encoding: Encoding,
    /// Distinct events to send.
    #[arg(long, default_value_t = 20_000)]
    events: usize,
    /// Requests in flight.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Deliveries per second, paced from the start (0: as fast as --concurrency allows).
    /// Give enough concurrency for the rate: each request in flight holds one.
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
    /// Redeliveries of already-acknowledged ids, as a fraction of --events.
    #[arg(long, default_value_t = 0.05)]
    duplicate_fraction: f64,
    /// Comma-separated topics to mix.
    #[arg(
        long,
        default_value = "subscription/updated,order/processed,subscription/created,order/upcoming"
    )]
    topics: String,
    /// Distinct subscription/order ids the events are about.
    #[arg(long, default_value_t = 2_000)]
    entities: u64,
    /// Connections that send a request line and one header, then nothing, opened before
    /// the load and held during it.
    #[arg(long, default_value_t = 0)]
    half_open: usize,
    /// How long, from its opening, each half-open connection is watched for the
    /// receiver to close it.
    #[arg(long, default_value_t = 60)]
    watch_seconds: u64,
}

/// What became of one half-open connection.
struct HalfOpenFate {
    /// When the receiver closed it, after it was opened; None if still open at the end.
    closed_after: Option<Duration>,
    /// It was answered `503` (over the receiver's cap) rather than just closed.
    refused: bool,
}

/// Opens `n` connections to `url`'s host that send a partial head, each watched (in its
/// own task) for up to `watch` for the receiver to close it.
async fn open_half_open(
    url: &str,
    n: usize,
    watch: Duration,
) -> anyhow::Result<Vec<tokio::task::JoinHandle<HalfOpenFate>>> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let parsed = reqwest::Url::parse(url)?;
    let host = parsed
        .host_str()
        .ok_or_else(|| anyhow::anyhow!("--url has no host"))?
        .to_string();
    let port = parsed.port_or_known_default().unwrap_or(80);
    let mut watchers = Vec::with_capacity(n);
    for _ in 0..n {
        let mut stream = tokio::net::TcpStream::connect((host.as_str(), port)).await?;
        let opened = Instant::now();
        let head = format!("POST {} HTTP/1.1\r\nHost: {host}\r\n", parsed.path());
        stream.write_all(head.as_bytes()).await?;
        watchers.push(tokio::spawn(async move {
            let mut got = Vec::new();
            let mut chunk = [0u8; 512];
            let read = tokio::time::timeout(watch, async {
                loop {
                    match stream.read(&mut chunk).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => got.extend_from_slice(&chunk[..n]),
                    }
                }
            })
            .await;
            HalfOpenFate {
                closed_after: read.ok().map(|()| opened.elapsed()),
                refused: got.starts_with(b"HTTP/1.1 503"),
            }
        }));
    }
    Ok(watchers)
}

struct Prepared {
    id: String,
    topic: String,
    body: Vec<u8>,
    signature: String,
}

#[derive(Default)]
struct Tally {
    latencies: Vec<Duration>,
    errors: usize,
    duplicates: usize,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(anyhow::Error::from)
        .and_then(|rt| rt.block_on(run(args)))
    {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("loop-webhook-load: error: {e:#}");
            ExitCode::from(2)
        }
    }
}

async fn run(args: Args) -> anyhow::Result<bool> {
    let topics: Vec<String> = args
        .topics
        .split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(str::to_string)
        .collect();
    anyhow::ensure!(
        !topics.is_empty(),
        "--topics is empty: give at least one topic"
    );
    anyhow::ensure!(
        (0.0..=1.0).contains(&args.duplicate_fraction),
        "--duplicate-fraction must be between 0 and 1"
    );
    let concurrency = args.concurrency.max(1);
    anyhow::ensure!(
        args.rate.is_finite() && args.rate >= 0.0,
        "--rate must be a number of deliveries per second, 0 or more"
    );
    // The interval between two sends' scheduled times (None: unpaced).
    let pace = (args.rate > 0.0).then(|| Duration::from_secs_f64(1.0 / args.rate));
    let sends = Arc::new(AtomicUsize::new(0));
    let run_id = format!("{:x}", Utc::now().timestamp_micros());
    let prepared: Arc<Vec<Prepared>> = Arc::new(
        (0..args.events)
            .map(|i| {
                prepare(
                    i,
                    &run_id,
                    &topics,
                    args.entities.max(1),
                    &args.secret,
                    args.encoding,
                )
            })
            .collect(),
    );
    let duplicates_wanted = (args.events as f64 * args.duplicate_fraction).round() as usize;
    let client = reqwest::Client::builder()
        .http1_only()
        .pool_max_idle_per_host(concurrency)
        .timeout(Duration::from_secs(30))
        .build()?;

    let half_open = open_half_open(
        &args.url,
        args.half_open,
        Duration::from_secs(args.watch_seconds),
    )
    .await?;

    let next = Arc::new(AtomicUsize::new(0));
    let dup_budget = Arc::new(AtomicUsize::new(duplicates_wanted));
    let acked: Arc<Mutex<Vec<usize>>> = Arc::new(Mutex::new(Vec::with_capacity(args.events)));
    let dup_probability = if args.events == 0 {
        0.0
    } else {
        (duplicates_wanted as f64 / args.events as f64).min(1.0)
    };
    let started = Instant::now();
    let mut workers = Vec::with_capacity(concurrency);
    for _ in 0..concurrency {
        let (client, url, prepared) = (client.clone(), args.url.clone(), Arc::clone(&prepared));
        let (next, dup_budget, acked, sends) = (
            Arc::clone(&next),
            Arc::clone(&dup_budget),
            Arc::clone(&acked),
            Arc::clone(&sends),
        );
        workers.push(tokio::spawn(async move {
            let mut tally = Tally::default();
            loop {
                // Redeliver an acknowledged id now and then, while the budget lasts.
                let resend = if rand::rng().random_bool(dup_probability) {
                    pick_acked(&acked).filter(|_| take_one(&dup_budget))
                } else {
                    None
                };
                let (index, duplicate) = match resend {
                    Some(i) => (i, true),
                    None => {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= prepared.len() {
                            // New events are done; spend what is left of the budget.
                            match pick_acked(&acked).filter(|_| take_one(&dup_budget)) {
                                Some(i) => (i, true),
                                None => break,
                            }
                        } else {
                            (i, false)
                        }
                    }
                };
                let event = &prepared[index];
                if let Some(pace) = pace {
                    // The n-th send (over all workers) is due n intervals after the start.
                    let n = sends.fetch_add(1, Ordering::Relaxed) as u32;
                    tokio::time::sleep_until((started + pace * n).into()).await;
                }
                let sent = Instant::now();
                let outcome = send(&client, &url, event).await;
                tally.latencies.push(sent.elapsed());
                let expected = if duplicate { "duplicate" } else { "accepted" };
                match outcome {
                    Ok(status) if status == expected => {
                        if duplicate {
                            tally.duplicates += 1;
                        } else {
                            acked.lock().unwrap_or_else(|e| e.into_inner()).push(index);
                        }
                    }
                    Ok(status) => {
                        tally.errors += 1;
                        report_error(
                            &tally,
                            &format!("{}: expected {expected}, got {status}", event.id),
                        );
                    }
                    Err(e) => {
                        tally.errors += 1;
                        report_error(&tally, &format!("{}: {e:#}", event.id));
                    }
                }
            }
            tally
        }));
    }
    let mut total = Tally::default();
    for worker in workers {
        let t = worker.await?;
        total.latencies.extend(t.latencies);
        total.errors += t.errors;
        total.duplicates += t.duplicates;
    }
    let seconds = started.elapsed().as_secs_f64();
    total.latencies.sort_unstable();
    let pct = |p: f64| -> f64 {
        if total.latencies.is_empty() {
            return 0.0;
        }
        let rank =
            ((p * total.latencies.len() as f64).ceil() as usize).clamp(1, total.latencies.len());
        ms(total.latencies[rank - 1])
    };
    let requests = total.latencies.len();
    let mut fates = Vec::with_capacity(half_open.len());
    for watcher in half_open {
        fates.push(watcher.await?);
    }
    let mut close_times: Vec<Duration> = fates.iter().filter_map(|f| f.closed_after).collect();
    close_times.sort_unstable();
    let close_pct = |p: f64| -> Option<f64> {
        if close_times.is_empty() {
            return None;
        }
        let rank = ((p * close_times.len() as f64).ceil() as usize).clamp(1, close_times.len());
        close_times.get(rank - 1).map(|d| round3(d.as_secs_f64()))
    };
    let line = json!({
        "events": args.events,
        "duplicates": total.duplicates,
        "requests": requests,
        "seconds": round3(seconds),
        "events_per_sec": round3(args.events as f64 / seconds),
        "requests_per_sec": round3(requests as f64 / seconds),
        "p50_ms": round3(pct(0.50)),
        "p99_ms": round3(pct(0.99)),
        "max_ms": round3(total.latencies.last().copied().map_or(0.0, ms)),
        "errors": total.errors,
        "concurrency": concurrency,
        "rate": args.rate,
        "half_open": fates.len(),
        "half_open_refused_503": fates.iter().filter(|f| f.refused).count(),
        "half_open_closed": close_times.len(),
        "half_open_still_open": fates.len() - close_times.len(),
        "half_open_closed_p50_s": close_pct(0.50),
        "half_open_closed_max_s": close_times.last().map(|d| round3(d.as_secs_f64())),
    });
    println!("{line}");
    Ok(total.errors == 0)
}

fn pick_acked(acked: &Mutex<Vec<usize>>) -> Option<usize> {
    let acked = acked.lock().unwrap_or_else(|e| e.into_inner());
    if acked.is_empty() {
        return None;
    }
    Some(acked[rand::rng().random_range(0..acked.len())])
}

fn take_one(budget: &AtomicUsize) -> bool {
    budget
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
        .is_ok()
}

fn report_error(tally: &Tally, message: &str) {
    if tally.errors <= 5 {
        eprintln!("loop-webhook-load: {message}");
    }
}

async fn send(client: &reqwest::Client, url: &str, event: &Prepared) -> anyhow::Result<String> {
    let now = loop_time::format_instant(Utc::now());
    let response = client
        .post(url)
        .header("content-type", "application/json")
        .header("x-loop-signature", &event.signature)
        .header("x-loop-webhook-id", &event.id)
        .header("x-loop-webhook-topic", &event.topic)
        .header("x-loop-webhook-api-version", "2023-10")
        .header("x-loop-webhook-created-at", &now)
        .header("x-loop-webhook-delivery-at", &now)
        .header("x-loop-webhook-retry-count", "0")
        .body(event.body.clone())
        .send()
        .await?;
    let status = response.status();
    let body: serde_json::Value = response.json().await?;
    anyhow::ensure!(status.is_success(), "HTTP {status}: {body}");
    Ok(body["status"].as_str().unwrap_or("").to_string())
}

fn prepare(
    i: usize,
    run_id: &str,
    topics: &[String],
    entities: u64,
    secret: &str,
    encoding: Encoding,
) -> Prepared {
    let topic = topics[i % topics.len()].clone();
    let entity = 100_000 + (i as u64 * 7919) % entities;
    let base = Utc
        .with_ymd_and_hms(2025, 1, 1, 0, 0, 0)
        .single()
        .unwrap_or_default();
    let updated = loop_time::format_instant(base + chrono::Duration::milliseconds(i as i64 * 37));
    let created = loop_time::format_instant(base);
    let payload = if topic.starts_with("order/") {
        json!({
            "id": entity, "shopifyId": 5_000_000_000u64 + entity, "shopifyOrderNumber": 1000 + i,
            "subscriptionId": entity / 2, "customer": {"id": entity % 977, "shopifyId": 7_000_000_000u64 + entity % 977},
            "status": "PAID", "financialStatus": "PAID", "fulfillmentStatus": "UNFULFILLED", "orderType": "RECURRING",
            "billingDateEpoch": 1_735_689_600 + i as i64, "createdAt": created, "updatedAt": updated,
            "currencyCode": "USD", "totalPrice": "42.50", "totalPriceUsd": "42.50", "totalTax": "3.40",
            "totalDiscount": "4.25", "totalShippingPrice": "5.00",
            "lines": lines(entity),
        })
    } else {
        json!({
            "id": entity, "shopifyId": 9_000_000_000u64 + entity, "originOrderShopifyId": 5_000_000_000u64 + entity,
            "createdAt": created, "updatedAt": updated, "status": "ACTIVE", "pausedAt": null, "cancelledAt": null,
            "cancellationReason": null, "isMarkedForCancellation": false, "completedOrdersCount": i % 12,
            "nextBillingDateEpoch": 1_738_368_000 + i as i64, "lastPaymentStatus": "SUCCESS", "currencyCode": "USD",
            "totalLineItemPrice": "45.00", "totalLineItemDiscountedPrice": "40.50", "deliveryPrice": "5.00", "isPrepaid": false,
            "billingPolicy": {"interval": "MONTH", "intervalCount": 1, "minCycles": null, "maxCycles": null, "anchorType": null},
            "deliveryPolicy": {"interval": "MONTH", "intervalCount": 1}, "deliveryMethod": "SHIPPING",
            "shippingAddress": {"address1": "12 Example Street", "city": "Springfield", "zip": "12345", "countryCode": "US"},
            "customer": {"id": entity % 977, "shopifyId": 7_000_000_000u64 + entity % 977, "email": format!("customer{}@example.com", entity % 977)},
            "discounts": [{"code": "WELCOME10", "value": "10.0", "valueType": "PERCENTAGE"}],
            "attributes": [{"key": "source", "value": "load-test"}],
            "lines": lines(entity),
        })
    };
    let body = serde_json::to_vec(&json!({
        "payload": payload,
        "metaData": {"myshopifyDomain": "load-test-shop.myshopify.com"},
    }))
    .unwrap_or_default();
    let signature = match encoding {
        Encoding::Base64 => sign_base64(secret, &body),
        Encoding::Hex | Encoding::Auto => sign_hex(secret, &body),
    };
    Prepared {
        id: format!("load-{run_id}-{i}"),
        topic,
        body,
        signature,
    }
}

fn lines(entity: u64) -> serde_json::Value {
    json!([
        {"id": entity * 10 + 1, "productShopifyId": 8_100_000_000u64 + entity % 50, "variantShopifyId": 4_400_000_000u64 + entity % 200,
         "sellingPlanShopifyId": 6_900_000_000u64, "sellingPlanName": "Deliver every month, save 10%",
         "productTitle": "Single-origin coffee beans", "variantTitle": "1 kg / Whole bean", "price": "27.00",
         "basePrice": "30.00", "discountedPrice": "27.00", "quantity": 1, "sku": "COF-1KG-WB"},
        {"id": entity * 10 + 2, "productShopifyId": 8_100_000_100u64 + entity % 50, "variantShopifyId": 4_400_000_500u64 + entity % 200,
         "sellingPlanShopifyId": 6_900_000_000u64, "sellingPlanName": "Deliver every month, save 10%",
         "productTitle": "Paper filters", "variantTitle": "Pack of 100", "price": "13.50",
         "basePrice": "15.00", "discountedPrice": "13.50", "quantity": 2, "sku": "FIL-100"}
    ])
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}
