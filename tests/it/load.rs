//! `source-loop sync --into`: the same tests against SQLite and a real PostgreSQL server.

use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::{Duration, Instant};

use fake_loop::{FakeServer, Mutation, PageOrder};
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

use crate::databases::TestDb;
use crate::harness::*;

/// The table's primary key column and version column per stream.
fn key_and_version(stream: &str) -> (&'static str, Option<&'static str>) {
    match stream {
        "products" => ("shopify_id", None),
        "customers" => ("id", None),
        "activity_logs" => ("id", Some("created_at")),
        _ => ("id", Some("updated_at")),
    }
}

/// A timestamp column as ISO text in both dialects.
fn iso(db: &TestDb, col: &str) -> String {
    if db.is_postgres() {
        format!("to_char({col} AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')")
    } else {
        col.to_string()
    }
}

pub fn sync(dir: &std::path::Path, db: &TestDb) -> Run {
    run(&[
        "sync",
        "--config",
        p(&dir.join("config.json")),
        "--into",
        db.url(),
    ])
}

fn sync_ok(dir: &std::path::Path, db: &TestDb) -> Run {
    let r = sync(dir, db);
    assert_eq!(r.code, Some(0), "sync failed: {}", r.stderr);
    r
}

/// Each table holds exactly the fake's records: one row per key, at the fake's version,
/// with the exact money digits the fake served.
fn assert_tables_equal_the_api(server: &FakeServer, db: &TestDb) {
    for stream in ALL {
        let (key, version_col) = key_and_version(stream);
        let want: BTreeMap<String, i64> = server
            .records(stream)
            .iter()
            .map(|r| {
                let (id, at) = version(stream, r);
                (id, if at.is_empty() { 0 } else { ms(&at) })
            })
            .collect();
        let sql = match version_col {
            Some(v) => format!("SELECT {key}, {} FROM {stream}", iso(db, v)),
            None => format!("SELECT {key}, NULL FROM {stream}"),
        };
        let got: Vec<(String, i64)> = db
            .query(&sql)
            .into_iter()
            .map(|r| {
                let at = r[1].as_deref().map_or(0, ms);
                (r[0].clone().unwrap_or_default(), at)
            })
            .collect();
        assert_eq!(got.len(), want.len(), "{stream}: rows vs the API's records");
        let got: BTreeMap<String, i64> = got.into_iter().collect();
        assert_eq!(got, want, "{stream}: keys and versions");
    }
    // money: the exact digits, in a numeric (Postgres) or text (SQLite) column
    let fake_totals: BTreeMap<String, String> = server
        .records("orders")
        .iter()
        .map(|o| {
            (
                o["id"].to_string(),
                o["totalPrice"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let got: BTreeMap<String, String> = db
        .query("SELECT id, total_price FROM orders")
        .into_iter()
        .map(|r| (r[0].clone().unwrap(), r[1].clone().unwrap()))
        .collect();
    assert_eq!(
        got, fake_totals,
        "orders.total_price keeps the exact amounts"
    );
}

fn setup(dir: &std::path::Path, cfg: fake_loop::FakeConfig) -> FakeServer {
    let server = fake(cfg);
    write_config(dir, &server, json!({}));
    server
}

fn full_load_equals_the_api(db: TestDb, dir: &std::path::Path) {
    let server = setup(dir, small());
    let r = sync_ok(dir, &db);
    assert!(
        r.stderr.contains("rows now: activity_logs 150"),
        "{}",
        r.stderr
    );
    assert_tables_equal_the_api(&server, &db);
    // the record is whole in _record, its columns typed
    let rec = db
        .scalar("SELECT _record FROM subscriptions ORDER BY id LIMIT 1")
        .unwrap();
    let rec: Value = serde_json::from_str(&rec).unwrap();
    assert!(
        rec["lines"].is_array() && rec["billingPolicy"].is_object(),
        "{rec}"
    );
    let state = db
        .scalar("SELECT state FROM _source_loop_state WHERE stream = 'subscriptions'")
        .unwrap();
    assert!(state.contains("updatedAt"), "{state}");
    if db.is_postgres() {
        // orders and activity logs live in one partition per month of created_at
        for table in ["orders", "activity_logs"] {
            let months = db
                .scalar(&format!(
                    "SELECT COUNT(DISTINCT date_trunc('month', created_at AT TIME ZONE 'UTC')) FROM {table}"
                ))
                .unwrap();
            let partitions = db
                .scalar(&format!(
                    "SELECT COUNT(*) FROM pg_inherits WHERE inhparent = '{table}'::regclass"
                ))
                .unwrap();
            assert_eq!(partitions, months, "{table}: one partition per month");
            assert!(
                months.parse::<i64>().unwrap() > 12,
                "{table}: {months} months"
            );
            let misplaced = db
                .scalar(&format!(
                    "SELECT COUNT(*) FROM {table} WHERE tableoid::regclass::text \
                     <> '{table}_' || to_char(created_at AT TIME ZONE 'UTC', 'YYYY_MM')"
                ))
                .unwrap();
            assert_eq!(
                misplaced, "0",
                "{table}: every row in its month's partition"
            );
        }
    }
}

#[test]
fn sqlite_a_full_load_equals_the_apis_data() {
    let _turn = crate::databases::one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    full_load_equals_the_api(TestDb::sqlite(dir.path()), dir.path());
}

#[test]
fn postgres_a_full_load_equals_the_apis_data() {
    let _turn = crate::databases::one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    if let Some(db) = TestDb::postgres("postgres_a_full_load_equals_the_apis_data") {
        full_load_equals_the_api(db, dir.path());
    }
}

fn second_load_is_incremental(db: TestDb, dir: &std::path::Path) {
    let server = setup(dir, small());
    sync_ok(dir, &db);
    server.mutate(Mutation::Touch {
        stream: "subscriptions".into(),
        count: 4,
    });
    server.mutate(Mutation::Create {
        stream: "orders".into(),
        count: 3,
    });
    server.mutate(Mutation::Touch {
        stream: "customers".into(),
        count: 2,
    });
    settle();
    let r = sync_ok(dir, &db);
    // only the changes were read: the state came from the database
    assert!(
        r.stderr.contains("subscriptions: complete: 4 records"),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr.contains("orders: complete: 3 records"),
        "{}",
        r.stderr
    );
    assert_tables_equal_the_api(&server, &db);
}

#[test]
fn sqlite_a_second_load_reads_only_the_changes_from_the_databases_own_state() {
    let _turn = crate::databases::one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    second_load_is_incremental(TestDb::sqlite(dir.path()), dir.path());
}

#[test]
fn postgres_a_second_load_reads_only_the_changes_from_the_databases_own_state() {
    let _turn = crate::databases::one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    if let Some(db) = TestDb::postgres("postgres_a_second_load_reads_only_the_changes") {
        second_load_is_incremental(db, dir.path());
    }
}

/// Starts `sync` and SIGKILLs it after `after`.
fn sync_killed_after(dir: &std::path::Path, db: &TestDb, after: Duration) {
    let mut child = command(bin())
        .args([
            "sync",
            "--config",
            p(&dir.join("config.json")),
            "--into",
            db.url(),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while start.elapsed() < after {
        if child.try_wait().unwrap().is_some() {
            return;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    child.kill().unwrap();
    child.wait().unwrap();
}

/// Under each page order Loop may use (it is undocumented), since the order decides which
/// records a checkpoint's transaction holds when the kill lands.
fn killed_loads_resume_exactly_once_under_every_page_order(db: &TestDb) {
    for (i, order) in [PageOrder::Id, PageOrder::UpdatedAsc, PageOrder::UpdatedDesc]
        .into_iter()
        .enumerate()
    {
        db.reset();
        let dir = tempfile::tempdir().unwrap();
        killed_loads_resume_exactly_once(db, dir.path(), order, 18 + i as u64);
    }
}

fn killed_loads_resume_exactly_once(
    db: &TestDb,
    dir: &std::path::Path,
    page_order: PageOrder,
    seed: u64,
) {
    let server = setup(
        dir,
        fake_loop::FakeConfig {
            page_order,
            counts: fake_loop::Counts {
                subscriptions: 1500,
                orders: 2000,
                customers: 300,
                products: 20,
                activity_logs: 1500,
            },
            ..Default::default()
        },
    );
    // how long a whole load takes here (into a scratch SQLite file): kills land anywhere
    // from the first tables to the last checkpoints
    let scratch_dir = tempfile::tempdir().unwrap();
    let start = Instant::now();
    sync_ok(dir, &TestDb::sqlite(scratch_dir.path()));
    let whole = start.elapsed();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    for round in 0..5 {
        let at = whole.mul_f64(rng.random_range(0.05..1.2));
        sync_killed_after(dir, db, at);
        if round == 2 {
            // changes between kills land too
            server.mutate(Mutation::Touch {
                stream: "orders".into(),
                count: 20,
            });
            server.mutate(Mutation::Touch {
                stream: "customers".into(),
                count: 5,
            });
        }
    }
    settle();
    sync_ok(dir, db);
    assert_tables_equal_the_api(&server, db);
}

#[test]
fn sqlite_kill_9_at_random_points_then_rerun_equals_the_api_with_no_duplicates() {
    let _turn = crate::databases::one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    killed_loads_resume_exactly_once_under_every_page_order(&TestDb::sqlite(dir.path()));
}

#[test]
fn postgres_kill_9_at_random_points_then_rerun_equals_the_api_with_no_duplicates() {
    let _turn = crate::databases::one_at_a_time();
    if let Some(db) = TestDb::postgres("postgres_kill_9_at_random_points") {
        killed_loads_resume_exactly_once_under_every_page_order(&db);
    }
}

fn older_versions_never_replace_newer_rows(db: TestDb, dir: &std::path::Path) {
    let server = setup(dir, small());
    sync_ok(dir, &db);
    // a newer version arrived by another way (a webhook) before the API's next version
    let future = "2099-01-01T00:00:00.000Z";
    db.exec(&format!(
        "UPDATE subscriptions SET updated_at = '{future}', status = 'FROM_WEBHOOK' WHERE id = (SELECT MIN(id) FROM subscriptions)"
    ));
    let id: i64 = db
        .scalar("SELECT MIN(id) FROM subscriptions")
        .unwrap()
        .parse()
        .unwrap();
    server.mutate(Mutation::TouchIds {
        stream: "subscriptions".into(),
        ids: vec![id],
    });
    settle();
    let r = sync_ok(dir, &db);
    assert!(
        r.stderr.contains("subscriptions: complete: 1 records"),
        "{}",
        r.stderr
    );
    assert_eq!(
        db.scalar(&format!("SELECT status FROM subscriptions WHERE id = {id}")),
        Some("FROM_WEBHOOK".to_string()),
        "the older API version replaced a newer row"
    );
}

#[test]
fn sqlite_an_older_version_never_replaces_a_newer_row() {
    let _turn = crate::databases::one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    older_versions_never_replace_newer_rows(TestDb::sqlite(dir.path()), dir.path());
}

#[test]
fn postgres_an_older_version_never_replaces_a_newer_row() {
    let _turn = crate::databases::one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    if let Some(db) = TestDb::postgres("postgres_an_older_version_never_replaces_a_newer_row") {
        older_versions_never_replace_newer_rows(db, dir.path());
    }
}

fn full_refresh_replaces_the_table(db: TestDb, dir: &std::path::Path) {
    let server = setup(dir, small());
    sync_ok(dir, &db);
    db.exec("INSERT INTO customers (id, _record) VALUES (999999, '{\"id\": 999999}')");
    sync_ok(dir, &db);
    assert_eq!(
        db.scalar("SELECT COUNT(*) FROM customers WHERE id = 999999"),
        Some("0".into()),
        "a row the complete pass did not see is gone"
    );
    assert_tables_equal_the_api(&server, &db);
}

#[test]
fn sqlite_a_complete_full_refresh_pass_replaces_the_table() {
    let _turn = crate::databases::one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    full_refresh_replaces_the_table(TestDb::sqlite(dir.path()), dir.path());
}

#[test]
fn postgres_a_complete_full_refresh_pass_replaces_the_table() {
    let _turn = crate::databases::one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    if let Some(db) = TestDb::postgres("postgres_a_complete_full_refresh_pass_replaces_the_table") {
        full_refresh_replaces_the_table(db, dir.path());
    }
}

fn schema_changes(db: TestDb, dir: &std::path::Path) {
    let server = setup(dir, small());
    // a column of another type: a clear error, and nothing written
    let id = if db.is_postgres() {
        "bigint"
    } else {
        "INTEGER"
    };
    db.exec(&format!(
        "CREATE TABLE subscriptions (id {id} PRIMARY KEY, status BOOLEAN, _record TEXT NOT NULL)"
    ));
    let r = sync(dir, &db);
    assert_eq!(r.code, Some(2), "{}", r.stderr);
    assert!(
        r.stderr
            .contains("table subscriptions, column status: the database has type"),
        "{}",
        r.stderr
    );
    let mut conn = db.connect();
    for table in ["_source_loop_state", "orders"] {
        assert_eq!(
            conn.columns(table).unwrap(),
            None,
            "nothing is written when the schema conflicts: {table} exists"
        );
    }
    db.exec("DROP TABLE subscriptions");
    sync_ok(dir, &db);
    // a column the table lacks (as after a schema gained a field) is added and filled
    db.exec("ALTER TABLE subscriptions DROP COLUMN shopify_id");
    let r = sync_ok(dir, &db);
    assert!(
        r.stderr
            .contains("table subscriptions: added column shopify_id"),
        "{}",
        r.stderr
    );
    assert_eq!(
        db.scalar("SELECT COUNT(*) FROM subscriptions WHERE shopify_id IS NULL"),
        Some("0".into())
    );
    assert_tables_equal_the_api(&server, &db);
}

#[test]
fn sqlite_tables_and_columns_follow_the_schemas_and_a_type_conflict_names_table_and_column() {
    let _turn = crate::databases::one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    schema_changes(TestDb::sqlite(dir.path()), dir.path());
}

#[test]
fn postgres_tables_and_columns_follow_the_schemas_and_a_type_conflict_names_table_and_column() {
    let _turn = crate::databases::one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    if let Some(db) = TestDb::postgres("postgres_tables_and_columns_follow_the_schemas") {
        schema_changes(db, dir.path());
    }
}

#[test]
fn a_url_that_is_no_database_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let _server = setup(dir.path(), small());
    let r = run(&[
        "sync",
        "--config",
        p(&dir.path().join("config.json")),
        "--into",
        "mysql://root:hunter2@localhost/db",
    ]);
    assert_eq!(r.code, Some(2));
    assert!(r.stderr.contains("use sqlite:PATH"), "{}", r.stderr);
    assert!(!r.stderr.contains("hunter2"), "{}", r.stderr);
}
