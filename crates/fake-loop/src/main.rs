//! `fake-loop`: serve a fake Loop Subscriptions Admin API on 127.0.0.1.
//!
//! Prints one JSON line `{"base_url":...,"root_url":...}` once listening, then serves
//! until SIGTERM/SIGINT (or stdin EOF with `--exit-on-stdin-eof`). Every option maps
//! to one field of [`FakeConfig`]; what Loop leaves unknown (how limits are counted,
//! `Retry-After`, the shape of the data, filter bounds, page order) is an option.

use std::io::Write;

use anyhow::Context;
use clap::Parser;
use fake_loop::{
    Counts, DeliveryPlan, Distribution, FakeConfig, FakeServer, FilterBounds, LimiterKind,
    PageOrder, RetryAfter, SeedData, ServerJitter, SignatureEncoding, WebhookTarget,
};

#[derive(Parser, Debug)]
#[command(
    name = "fake-loop",
    about = "A fake Loop Subscriptions Admin API on 127.0.0.1",
    long_about = "A fake Loop Subscriptions Admin API on 127.0.0.1, for tests, demos and \
benchmarks.\n\n\
Prints one JSON line {\"base_url\":...,\"root_url\":...} once listening. Data is \
generated from --seed; what Loop does not document (how rate limits are counted, \
Retry-After, the shape of the data, filter bounds, page order) is chosen with the \
options below. Control endpoints under root_url: POST /_control/mutate, /schedule, \
/mutate_every, /fault, /token; GET /_control/records/{stream}; GET /_control/stats \
(requests, rate_limited and rate_limited_by_path per endpoint, e.g. \"/subscription\")."
)]
struct Args {
    /// Port to listen on (0 = any free port).
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// Value expected in the X-Loop-Token header.
    #[arg(long, default_value = "fake-token")]
    token: String,
    /// Seed of the generated data: the same seed and options give the same data.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Subscriptions to generate (a million start in about a second, ~0.5 GB).
    #[arg(long, default_value_t = Counts::default().subscriptions)]
    subscriptions: usize,
    /// Orders to generate.
    #[arg(long, default_value_t = Counts::default().orders)]
    orders: usize,
    /// Customers to generate.
    #[arg(long, default_value_t = Counts::default().customers)]
    customers: usize,
    /// Products to generate.
    #[arg(long, default_value_t = Counts::default().products)]
    products: usize,
    /// Activity logs to generate.
    #[arg(long, default_value_t = Counts::default().activity_logs)]
    activity_logs: usize,
    /// Order of list endpoints (ties by id).
    #[arg(long, value_enum, default_value_t = PageOrder::Id)]
    page_order: PageOrder,
    /// How *StartEpoch/*EndEpoch filters compare: inclusive (whole seconds in
    /// [start, end]) or exclusive (start < t < end, in ms).
    #[arg(long, value_enum, default_value_t = FilterBounds::Inclusive)]
    filter_bounds: FilterBounds,
    /// Enforce Loop's per-endpoint rate limits (subscription, order, activityLog 2 per
    /// 3 s; customer 1/s; product 6/s; subscription detail 5/s).
    #[arg(long)]
    rate_limits: bool,
    /// How a limit of n requests per W seconds is counted (with --rate-limits).
    #[arg(long, value_enum, default_value_t = LimiterKind::Gcra)]
    limiter: LimiterKind,
    /// Multiply every rate-limit interval by this factor (0.01 = 100x faster).
    #[arg(long, default_value_t = 1.0)]
    rate_scale: f64,
    /// Whether and how a rate limiter's 429 carries Retry-After (the wait until a
    /// request would be accepted).
    #[arg(long, value_enum, default_value_t = RetryAfter::Sometimes)]
    retry_after: RetryAfter,
    /// Delay every API request before it is counted and answered, as a loaded server
    /// does: 0 to --jitter-max-ms, and --jitter-stall-percent of requests
    /// --jitter-stall-ms more (defaults 10 ms, 2 %, 50 ms).
    #[arg(long)]
    jitter: bool,
    /// Largest per-request delay with --jitter (uniform from 0).
    #[arg(long, value_name = "MS", default_value_t = ServerJitter::default().max_delay_ms)]
    jitter_max_ms: u64,
    /// Share of requests that stall with --jitter, in percent.
    #[arg(long, value_name = "PERCENT", default_value_t = ServerJitter::default().stall_percent)]
    jitter_stall_percent: f64,
    /// How long a stall lasts with --jitter.
    #[arg(long, value_name = "MS", default_value_t = ServerJitter::default().stall_ms)]
    jitter_stall_ms: u64,
    /// Where updatedAt (createdAt of activity logs) of subscriptions, orders and
    /// activity logs falls in the two years before --data-end.
    #[arg(long, value_enum, default_value_t = Distribution::Default)]
    distribution: Distribution,
    /// Subscriptions and orders sharing one updatedAt second (default distribution).
    #[arg(long, default_value_t = 70)]
    hot_second_records: usize,
    /// ~1 in 20 timestamps in other valid ISO 8601 forms.
    #[arg(long)]
    messy_timestamps: bool,
    /// End of the generated data range (RFC 3339); default now minus 1 hour.
    #[arg(long)]
    data_end: Option<chrono::DateTime<chrono::Utc>>,
    /// Serve the hand-made records in this JSON file (stream name → list of records)
    /// instead of generated data.
    #[arg(long, value_name = "FILE")]
    data: Option<std::path::PathBuf>,
    /// Exit when stdin reaches EOF (for parents that cannot send signals).
    #[arg(long)]
    exit_on_stdin_eof: bool,
    /// Send signed webhooks for new subscription and order versions to this URL, e.g.
    /// http://127.0.0.1:8080/webhooks/loop.
    #[arg(long, value_name = "URL")]
    webhook_url: Option<String>,
    /// HMAC-SHA256 key of X-Loop-Signature (with --webhook-url).
    #[arg(
        long,
        env = "FAKE_LOOP_WEBHOOK_SECRET",
        default_value = "fake-webhook-secret",
        hide_env_values = true
    )]
    webhook_secret: String,
    /// How X-Loop-Signature encodes the HMAC.
    #[arg(long, value_enum, default_value_t = SignatureEncoding::Hex)]
    webhook_encoding: SignatureEncoding,
    /// Lose every n-th webhook (0 = none).
    #[arg(long, default_value_t = 0, value_name = "N")]
    webhook_drop_every: u64,
    /// Send every n-th webhook twice, same webhook id (0 = none).
    #[arg(long, default_value_t = 0, value_name = "N")]
    webhook_duplicate_every: u64,
    /// Wait this long before posting each webhook.
    #[arg(long, default_value_t = 0, value_name = "MS")]
    webhook_delay_ms: u64,
    /// Send webhooks in batches of N, each batch newest first (0 or 1 = in order).
    #[arg(long, default_value_t = 0, value_name = "N")]
    webhook_reorder_batch: usize,
}

impl Args {
    /// The server configuration these options describe.
    fn config(&self) -> anyhow::Result<FakeConfig> {
        let mut cfg = FakeConfig {
            seed: self.seed,
            counts: Counts {
                subscriptions: self.subscriptions,
                orders: self.orders,
                customers: self.customers,
                products: self.products,
                activity_logs: self.activity_logs,
            },
            token: self.token.clone(),
            page_order: self.page_order,
            filter_bounds: self.filter_bounds,
            rate_limits: self.rate_limits,
            limiter: self.limiter,
            rate_scale: self.rate_scale,
            retry_after: self.retry_after,
            jitter: self.jitter.then_some(ServerJitter {
                max_delay_ms: self.jitter_max_ms,
                stall_percent: self.jitter_stall_percent,
                stall_ms: self.jitter_stall_ms,
            }),
            distribution: self.distribution,
            hot_second_records: self.hot_second_records,
            messy_timestamps: self.messy_timestamps,
            webhooks: self.webhook_url.as_ref().map(|url| WebhookTarget {
                url: url.clone(),
                secret: self.webhook_secret.clone(),
                encoding: self.webhook_encoding,
                plan: DeliveryPlan {
                    drop_every: self.webhook_drop_every,
                    duplicate_every: self.webhook_duplicate_every,
                    delay_ms: self.webhook_delay_ms,
                    reorder_batch: self.webhook_reorder_batch,
                },
            }),
            ..FakeConfig::default()
        };
        if !(0.0..=100.0).contains(&self.jitter_stall_percent) {
            anyhow::bail!(
                "--jitter-stall-percent {} is not a share of requests: use 0 to 100",
                self.jitter_stall_percent
            );
        }
        if let Some(end) = self.data_end {
            cfg.data_end = end;
        }
        if let Some(path) = &self.data {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read the seed data file {}", path.display()))?;
            let seed = SeedData::from_json_str(&text)
                .with_context(|| format!("seed data file {}", path.display()))?;
            cfg.data = Some(seed);
        }
        Ok(cfg)
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    let cfg = a.config()?;
    // Install the signal handlers before announcing readiness.
    #[cfg(unix)]
    let sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    let ctrl_c = tokio::signal::ctrl_c();
    let server = FakeServer::start_on_port(cfg, a.port).await?;
    {
        let line = serde_json::json!({"base_url": server.base_url, "root_url": server.root_url});
        let mut out = std::io::stdout().lock();
        writeln!(out, "{line}")?;
        out.flush()?;
    }
    let stdin_eof = async {
        if a.exit_on_stdin_eof {
            use tokio::io::AsyncReadExt;
            let mut stdin = tokio::io::stdin();
            let mut buf = [0u8; 1024];
            loop {
                match stdin.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
            }
        } else {
            std::future::pending::<()>().await;
        }
    };
    let term = async move {
        #[cfg(unix)]
        match sigterm {
            Some(mut s) => {
                s.recv().await;
            }
            None => std::future::pending::<()>().await,
        }
        #[cfg(not(unix))]
        std::future::pending::<()>().await;
    };
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
        _ = stdin_eof => {}
    }
    server.shutdown();
    // A pending blocking stdin read would otherwise keep the runtime from exiting.
    std::process::exit(0)
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn the_cli_is_consistent() {
        Args::command().debug_assert();
    }

    #[test]
    fn flags_for_the_unknowns_map_onto_the_config() {
        let a = Args::try_parse_from([
            "fake-loop",
            "--rate-limits",
            "--limiter",
            "sliding-window",
            "--retry-after",
            "rounded-up",
            "--distribution",
            "bursts",
            "--subscriptions",
            "1000000",
        ])
        .expect("valid flags");
        let cfg = a.config().expect("no data file");
        assert!(cfg.rate_limits);
        assert_eq!(cfg.limiter, LimiterKind::SlidingWindow);
        assert_eq!(cfg.retry_after, RetryAfter::RoundedUp);
        assert_eq!(cfg.distribution, Distribution::Bursts);
        assert_eq!(cfg.counts.subscriptions, 1_000_000);
        let fixed = Args::try_parse_from(["fake-loop", "--limiter", "fixed-window"]);
        assert_eq!(
            fixed.expect("valid").config().expect("config").limiter,
            LimiterKind::FixedWindow
        );
    }

    #[test]
    fn webhook_flags_map_onto_the_target_and_its_plan() {
        let cfg = Args::try_parse_from([
            "fake-loop",
            "--webhook-url",
            "http://127.0.0.1:8080/webhooks/loop",
            "--webhook-secret",
            "s3",
            "--webhook-encoding",
            "base64",
            "--webhook-drop-every",
            "5",
            "--webhook-duplicate-every",
            "3",
            "--webhook-delay-ms",
            "20",
            "--webhook-reorder-batch",
            "4",
        ])
        .expect("valid flags")
        .config()
        .expect("config");
        let t = cfg.webhooks.expect("a webhook target");
        assert_eq!(t.url, "http://127.0.0.1:8080/webhooks/loop");
        assert_eq!(
            (t.secret.as_str(), t.encoding),
            ("s3", SignatureEncoding::Base64)
        );
        assert_eq!(
            t.plan,
            DeliveryPlan {
                drop_every: 5,
                duplicate_every: 3,
                delay_ms: 20,
                reorder_batch: 4
            }
        );
        let none = Args::try_parse_from(["fake-loop"])
            .expect("no flags")
            .config()
            .expect("config");
        assert!(none.webhooks.is_none(), "no URL, no webhooks");
    }

    #[test]
    fn defaults_are_the_original_behaviour() {
        let cfg = Args::try_parse_from(["fake-loop"])
            .expect("no flags")
            .config()
            .expect("config");
        assert_eq!(cfg.limiter, LimiterKind::Gcra);
        assert_eq!(cfg.retry_after, RetryAfter::Sometimes);
        assert_eq!(cfg.distribution, Distribution::Default);
        assert_eq!(cfg.hot_second_records, 70);
        assert_eq!(cfg.jitter, None, "no server-side delay unless asked");
    }

    #[test]
    fn jitter_flags_map_onto_the_server_jitter() {
        let parse = |args: &[&str]| {
            Args::try_parse_from([&["fake-loop"], args].concat())
                .expect("valid flags")
                .config()
        };
        let on = parse(&["--jitter"]).expect("config");
        assert_eq!(on.jitter, Some(ServerJitter::default()));
        let tuned = parse(&[
            "--jitter",
            "--jitter-max-ms",
            "30",
            "--jitter-stall-percent",
            "5",
            "--jitter-stall-ms",
            "200",
        ])
        .expect("config");
        assert_eq!(
            tuned.jitter,
            Some(ServerJitter {
                max_delay_ms: 30,
                stall_percent: 5.0,
                stall_ms: 200
            })
        );
        let bad = parse(&["--jitter", "--jitter-stall-percent", "150"]);
        assert!(bad.is_err());
    }

    #[test]
    fn data_serves_a_hand_made_file_and_a_bad_one_names_the_problem() {
        let path = std::env::temp_dir().join(format!("fake-loop-seed-{}.json", std::process::id()));
        std::fs::write(
            &path,
            r#"{"orders": [{"id": 7, "updatedAt": "2025-01-01T00:00:00Z"}]}"#,
        )
        .expect("write");
        let a = Args::try_parse_from(["fake-loop", "--data", path.to_str().expect("utf-8")])
            .expect("valid flags");
        let cfg = a.config().expect("a valid seed file");
        assert_eq!(cfg.data.expect("seeded").streams["orders"].len(), 1);
        std::fs::write(&path, r#"{"orders": [{"number": 7}]}"#).expect("write");
        let a = Args::try_parse_from(["fake-loop", "--data", path.to_str().expect("utf-8")])
            .expect("valid flags");
        let e = format!("{:#}", a.config().expect_err("no id"));
        assert!(e.contains("orders[0]: needs an integer `id`"), "{e}");
        let _ = std::fs::remove_file(&path);
    }
}
