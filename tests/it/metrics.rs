//! The metric views' known answers: hand-made data (tests/it/data/metrics_seed.json: a
//! fortnightly and a yearly subscription, one cancelled mid-month, one paused, a failed
//! order) served by the fake, loaded by `source-loop sync`, every view's numbers checked
//! exactly in both dialects. docs/metrics.md works the same numbers out by hand.

use serde_json::json;

use crate::databases::TestDb;
use crate::harness::*;
use crate::load::sync;

const SEED: &str = include_str!("data/metrics_seed.json");

/// Rows as `a|b|c` lines, for readable comparisons.
fn rows(db: &TestDb, sql: &str) -> Vec<String> {
    db.query(sql)
        .into_iter()
        .map(|r| {
            r.into_iter()
                .map(|c| c.unwrap_or_else(|| "NULL".into()))
                .collect::<Vec<_>>()
                .join("|")
        })
        .collect()
}

fn known_answers(db: TestDb, dir: &std::path::Path) {
    let seed = fake_loop::SeedData::from_json_str(SEED).expect("the seed file is valid");
    let server = fake(fake_loop::FakeConfig {
        data: Some(seed),
        ..Default::default()
    });
    write_config(dir, &server, json!({}));
    let r = sync(dir, &db);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    let early = "month < '2025-06-01'";

    assert_eq!(
        rows(
            &db,
            &format!("SELECT month, currency, mrr, active_subscriptions FROM mrr_by_month WHERE {early} ORDER BY month, currency")
        ),
        [
            "2025-01-01|USD|73.33|2",
            "2025-02-01|EUR|15.00|1",
            "2025-02-01|USD|88.33|3",
            "2025-03-01|EUR|15.00|1",
            "2025-03-01|USD|58.33|2",
            "2025-04-01|EUR|15.00|1",
            "2025-04-01|USD|43.33|1",
            "2025-05-01|EUR|15.00|1",
            "2025-05-01|USD|43.33|1",
        ]
    );
    assert_eq!(
        rows(
            &db,
            &format!("SELECT month, active, paused, cancelled FROM subscription_status_by_month WHERE {early} ORDER BY month")
        ),
        [
            "2025-01-01|2|0|0",
            "2025-02-01|4|0|0",
            "2025-03-01|3|0|1",
            "2025-04-01|2|1|1",
            "2025-05-01|2|1|1",
        ]
    );
    assert_eq!(
        rows(
            &db,
            &format!("SELECT month, active_at_start, churned, churn_rate FROM churn_by_month WHERE {early} ORDER BY month")
        ),
        [
            "2025-01-01|0|0|NULL",
            "2025-02-01|2|0|0.0000",
            "2025-03-01|4|1|0.2500",
            "2025-04-01|3|0|0.0000",
            "2025-05-01|2|0|0.0000",
        ]
    );
    // the months run on to the current one
    let months = db.scalar("SELECT COUNT(*) FROM metric_months").unwrap();
    assert!(months.parse::<i64>().unwrap() >= 23, "{months}");
    assert_eq!(
        rows(
            &db,
            "SELECT month, status, currency, orders, amount FROM orders_by_status ORDER BY month, status, currency"
        ),
        [
            "2025-01-01|PAID|USD|3|70.00",
            "2025-02-01|PAID|EUR|1|180.00",
            "2025-02-01|PAID|USD|1|30.00",
            "2025-03-01|FAILED|USD|1|30.00",
            "2025-05-01|SKIPPED|USD|1|45.00",
        ]
    );
    assert_eq!(
        rows(
            &db,
            "SELECT month, currency, attempted, failed, failed_amount, failure_rate FROM failed_payments ORDER BY month, currency"
        ),
        [
            "2025-01-01|USD|3|0|0.00|0.0000",
            "2025-02-01|EUR|1|0|0.00|0.0000",
            "2025-02-01|USD|1|0|0.00|0.0000",
            "2025-03-01|USD|1|1|30.00|1.0000",
        ]
    );
    let first = if db.is_postgres() {
        "to_char(first_order_at AT TIME ZONE 'UTC', 'YYYY-MM-DD')"
    } else {
        "substr(first_order_at, 1, 10)"
    };
    let last = first.replace("first_", "last_");
    assert_eq!(
        rows(
            &db,
            &format!("SELECT customer_id, email, currency, paid_orders, revenue, {first}, {last} FROM customer_ltv ORDER BY customer_id")
        ),
        [
            "7001|c7001@example.org|USD|2|40.00|2025-01-10|2025-01-24",
            "7002|c7002@example.org|USD|2|60.00|2025-01-05|2025-02-05",
            "7003|c7003@example.org|EUR|1|180.00|2025-02-01|2025-02-01",
        ]
    );
    assert_eq!(
        rows(
            &db,
            "SELECT currency, customers, revenue, average_ltv FROM ltv_by_currency ORDER BY currency"
        ),
        ["EUR|1|180.00|180.00", "USD|2|100.00|50.00"]
    );
}

#[test]
fn sqlite_every_metric_view_gives_the_known_answers() {
    let _turn = crate::databases::one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    known_answers(TestDb::sqlite(dir.path()), dir.path());
}

#[test]
fn postgres_every_metric_view_gives_the_known_answers() {
    let _turn = crate::databases::one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    if let Some(db) = TestDb::postgres("postgres_every_metric_view_gives_the_known_answers") {
        known_answers(db, dir.path());
    }
}
