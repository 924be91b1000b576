//! Target databases for the loader tests: a SQLite file, or a throwaway PostgreSQL
//! cluster (Debian's binaries) on 127.0.0.1 in a temporary directory, stopped on drop.
//! Postgres tests skip with a loud message when no binaries exist, unless
//! `SOURCE_LOOP_REQUIRE_POSTGRES=1` (scripts/test.sh sets it in CI) makes that a failure.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use source_loop::load::{Database, Target};

/// Where Debian puts the server binaries (newest first).
const PG_BIN_DIRS: &[&str] = &[
    "/usr/lib/postgresql/17/bin",
    "/usr/lib/postgresql/16/bin",
    "/usr/lib/postgresql/15/bin",
];
pub const REQUIRE_POSTGRES: &str = "SOURCE_LOOP_REQUIRE_POSTGRES";
/// The unprivileged user a root test process runs the server as (initdb refuses root).
const SERVER_USER: &str = "nobody";

/// The loader tests take turns: each starts servers, a database (a Postgres cluster) and
/// several syncs, and running them all at once on a 2-core machine starves the timing-
/// sensitive tests elsewhere in this binary (e.g. the rate-limit ones). Hold the guard for
/// the test's duration.
pub fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static TURN: std::sync::Mutex<()> = std::sync::Mutex::new(());
    TURN.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

pub enum TestDb {
    Sqlite { url: String },
    Postgres { url: String, cluster: PgCluster },
}

impl TestDb {
    pub fn sqlite(dir: &Path) -> TestDb {
        TestDb::Sqlite {
            url: format!("sqlite:{}", dir.join("loop.db").display()),
        }
    }

    /// A fresh cluster, or `None` (after a loud message) when Postgres is not installed.
    pub fn postgres(test: &str) -> Option<TestDb> {
        let Some(bin) = PG_BIN_DIRS
            .iter()
            .map(PathBuf::from)
            .find(|d| d.join("initdb").exists())
        else {
            assert!(
                std::env::var(REQUIRE_POSTGRES).is_err(),
                "{REQUIRE_POSTGRES} is set but no PostgreSQL binaries were found in {PG_BIN_DIRS:?}: install the `postgresql` package"
            );
            eprintln!(
                "\n!!!!! SKIPPED {test}: no PostgreSQL server binaries in {PG_BIN_DIRS:?} (apt-get install postgresql) !!!!!\n"
            );
            return None;
        };
        let cluster = PgCluster::start(&bin);
        Some(TestDb::Postgres {
            url: cluster.url(),
            cluster,
        })
    }

    pub fn url(&self) -> &str {
        match self {
            TestDb::Sqlite { url } | TestDb::Postgres { url, .. } => url,
        }
    }

    /// Empties the database: as new, for another load.
    pub fn reset(&self) {
        match self {
            TestDb::Sqlite { url } => {
                let path = url.trim_start_matches("sqlite:");
                for suffix in ["", "-wal", "-shm"] {
                    let _ = std::fs::remove_file(format!("{path}{suffix}"));
                }
            }
            TestDb::Postgres { .. } => {
                self.exec("DROP SCHEMA public CASCADE; CREATE SCHEMA public")
            }
        }
    }

    pub fn is_postgres(&self) -> bool {
        matches!(self, TestDb::Postgres { .. })
    }

    pub fn connect(&self) -> Box<dyn Database> {
        Target::parse(self.url())
            .and_then(|t| t.connect())
            .unwrap_or_else(|e| panic!("connect to {}: {e}", self.url()))
    }

    /// Every row as text, read with the database's own client (the loader's connection
    /// only reads what the loader needs, decoded).
    pub fn query(&self, sql: &str) -> Vec<Vec<Option<String>>> {
        self.try_query(sql).unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    fn try_query(&self, sql: &str) -> Result<Vec<Vec<Option<String>>>, String> {
        match self {
            TestDb::Sqlite { url } => sqlite_text_rows(url.trim_start_matches("sqlite:"), sql),
            TestDb::Postgres { url, .. } => postgres_text_rows(url, sql),
        }
    }

    pub fn exec(&self, sql: &str) {
        self.connect()
            .batch(sql)
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    /// One value, or None when the query fails (the table is not there yet, the server
    /// is down): for polling.
    pub fn try_scalar(&self, sql: &str) -> Option<String> {
        self.try_query(sql)
            .ok()?
            .into_iter()
            .next()
            .and_then(|r| r.into_iter().next().flatten())
    }

    /// One value.
    pub fn scalar(&self, sql: &str) -> Option<String> {
        self.query(sql)
            .into_iter()
            .next()
            .and_then(|r| r.into_iter().next().flatten())
    }
}

fn sqlite_text_rows(path: &str, sql: &str) -> Result<Vec<Vec<Option<String>>>, String> {
    use rusqlite::types::ValueRef;
    let conn = rusqlite::Connection::open(path).map_err(|e| e.to_string())?;
    conn.busy_timeout(Duration::from_secs(30))
        .map_err(|e| e.to_string())?;
    let mut stmt = conn.prepare(sql).map_err(|e| e.to_string())?;
    let n = stmt.column_count();
    let rows = stmt
        .query_map([], |r| {
            (0..n)
                .map(|i| {
                    Ok(match r.get_ref(i)? {
                        ValueRef::Null => None,
                        ValueRef::Integer(v) => Some(v.to_string()),
                        ValueRef::Real(v) => Some(v.to_string()),
                        ValueRef::Text(t) | ValueRef::Blob(t) => {
                            Some(String::from_utf8_lossy(t).into_owned())
                        }
                    })
                })
                .collect::<rusqlite::Result<Vec<_>>>()
        })
        .map_err(|e| e.to_string())?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string());
    rows
}

/// The simple protocol returns every value as text.
fn postgres_text_rows(url: &str, sql: &str) -> Result<Vec<Vec<Option<String>>>, String> {
    let mut client = postgres::Client::connect(url, postgres::NoTls).map_err(|e| e.to_string())?;
    let messages = client.simple_query(sql).map_err(|e| e.to_string())?;
    Ok(messages
        .into_iter()
        .filter_map(|m| match m {
            postgres::SimpleQueryMessage::Row(r) => {
                Some((0..r.len()).map(|i| r.get(i).map(str::to_string)).collect())
            }
            _ => None,
        })
        .collect())
}

pub struct PgCluster {
    bin: PathBuf,
    dir: tempfile::TempDir,
    port: u16,
    as_user: Option<&'static str>,
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

impl PgCluster {
    fn command(&self, tool: &str) -> Command {
        let exe = self.bin.join(tool);
        match self.as_user {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.args(["-u", user, "--"]).arg(exe);
                c
            }
            None => Command::new(exe),
        }
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn start(bin: &Path) -> PgCluster {
        let dir = tempfile::tempdir().expect("tempdir");
        let as_user = is_root().then_some(SERVER_USER);
        if as_user.is_some() {
            let status = Command::new("chown")
                .arg(format!("{SERVER_USER}:"))
                .arg(dir.path())
                .status()
                .expect("chown");
            assert!(
                status.success(),
                "chown the cluster directory to {SERVER_USER}"
            );
        }
        let mut cluster = PgCluster {
            bin: bin.to_path_buf(),
            dir,
            port: 0,
            as_user,
        };
        let out = cluster
            .command("initdb")
            .args([
                "-A",
                "trust",
                "-U",
                "postgres",
                "-E",
                "UTF8",
                "--no-sync",
                "-D",
            ])
            .arg(cluster.data())
            .stdout(Stdio::null())
            .output()
            .expect("run initdb");
        assert!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        // a port taken between probe and start: try another
        for _ in 0..5 {
            cluster.port = free_port();
            if cluster.pg_ctl_start() {
                cluster.wait_ready();
                return cluster;
            }
        }
        let log = std::fs::read_to_string(cluster.dir.path().join("log")).unwrap_or_default();
        panic!("postgres did not start: {log}");
    }

    fn pg_ctl_start(&self) -> bool {
        let opts = format!(
            "-c listen_addresses=127.0.0.1 -p {} -c unix_socket_directories={} -c fsync=off",
            self.port,
            self.dir.path().display()
        );
        self.command("pg_ctl")
            .args(["-w", "-t", "60", "-s", "-D"])
            .arg(self.data())
            .args(["-l"])
            .arg(self.dir.path().join("log"))
            .args(["-o", &opts, "start"])
            .status()
            .expect("run pg_ctl")
            .success()
    }

    /// Starts the stopped server again on the same port.
    pub fn start_again(&self) {
        assert!(self.pg_ctl_start(), "postgres did not start again");
        self.wait_ready();
    }

    fn wait_ready(&self) {
        let start = Instant::now();
        while Target::parse(&self.url())
            .and_then(|t| t.connect())
            .is_err()
        {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "postgres did not accept connections"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Stops the server (fast shutdown), e.g. to test that loads wait for it.
    pub fn stop(&self) {
        let _ = self
            .command("pg_ctl")
            .args(["-s", "-m", "immediate", "-D"])
            .arg(self.data())
            .arg("stop")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        self.stop();
    }
}
