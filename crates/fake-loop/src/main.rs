//! `fake-loop`: serve a fake Loop Subscriptions Admin API on 127.0.0.1.
//!
//! Prints one JSON line `{"base_url":...,"root_url":...}` once listening, then serves
//! until SIGTERM/SIGINT (or stdin EOF with `--exit-on-stdin-eof`).

use std::io::Write;

use clap::Parser;
use fake_loop::{
    Counts, Distribution, FakeConfig, FakeServer, FilterBounds, LimiterKind, PageOrder, RetryAfter,
};

#[derive(Parser, Debug)]
#[command(
    name = "fake-loop",
    about = "A fake Loop Subscriptions Admin API on 127.0.0.1"
)]
struct Args {
    /// Port to listen on (0 = any free port).
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// Value expected in the X-Loop-Token header.
    #[arg(long, default_value = "fake-token")]
    token: String,
    #[arg(long, default_value_t = 42)]
    seed: u64,
    #[arg(long, default_value_t = Counts::default().subscriptions)]
    subscriptions: usize,
    #[arg(long, default_value_t = Counts::default().orders)]
    orders: usize,
    #[arg(long, default_value_t = Counts::default().customers)]
    customers: usize,
    #[arg(long, default_value_t = Counts::default().products)]
    products: usize,
    #[arg(long, default_value_t = Counts::default().activity_logs)]
    activity_logs: usize,
    #[arg(long, value_enum, default_value_t = PageOrder::Id)]
    page_order: PageOrder,
    #[arg(long, value_enum, default_value_t = FilterBounds::Inclusive)]
    filter_bounds: FilterBounds,
    /// Enforce Loop's per-endpoint rate limits (subscription, order, activityLog 2 per
    /// 3 s; customer 1/s; product 6/s; subscription detail 5/s).
    #[arg(long)]
    rate_limits: bool,
    /// How a limit of n per W seconds is counted: gcra (token bucket, bursts of n),
    /// sliding-window (refused when (t-W, t] already holds n accepted requests),
    /// fixed-window (n per calendar window of W seconds).
    #[arg(long, value_enum, default_value_t = LimiterKind::Gcra)]
    limiter: LimiterKind,
    /// Multiply every rate-limit interval by this factor (0.01 = 100x faster).
    #[arg(long, default_value_t = 1.0)]
    rate_scale: f64,
    /// Retry-After on a limiter's 429: always (exact seconds, e.g. 0.15), never,
    /// sometimes (every other 429, whole seconds), rounded-up (always, whole seconds).
    #[arg(long, value_enum, default_value_t = RetryAfter::Sometimes)]
    retry_after: RetryAfter,
    /// Where createdAt/updatedAt of subscriptions, orders and activity logs fall in the
    /// two years before --data-end: default (the original generation, with the hot
    /// second), uniform, recent (~2 % in the last 10 minutes, most within weeks),
    /// bursts (seconds holding 60-120 records each).
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
    /// Exit when stdin reaches EOF (for parents that cannot send signals).
    #[arg(long)]
    exit_on_stdin_eof: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    let mut cfg = FakeConfig {
        seed: a.seed,
        counts: Counts {
            subscriptions: a.subscriptions,
            orders: a.orders,
            customers: a.customers,
            products: a.products,
            activity_logs: a.activity_logs,
        },
        token: a.token,
        page_order: a.page_order,
        filter_bounds: a.filter_bounds,
        rate_limits: a.rate_limits,
        limiter: a.limiter,
        rate_scale: a.rate_scale,
        retry_after: a.retry_after,
        distribution: a.distribution,
        hot_second_records: a.hot_second_records,
        messy_timestamps: a.messy_timestamps,
        ..FakeConfig::default()
    };
    if let Some(end) = a.data_end {
        cfg.data_end = end;
    }
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
