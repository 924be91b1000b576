//! The transaction guard. A [`Tx`] owns the connection for as long as its transaction is
//! open, and the only ways out are [`Tx::commit`], [`Tx::rollback`] or dropping it
//! (which rolls back). Owning rather than borrowing the connection is what lets the
//! loader keep one transaction open across many `Writer::write` calls (rows stay
//! uncommitted until the stream's next checkpoint): it holds either an idle connection
//! or a `Tx`, never a connection plus a flag that must be kept true to what the database
//! is doing. Whatever ends a transaction gives the connection back, idle.

use std::ops::{Deref, DerefMut};

use super::dialect::{Database, DbError};

/// An open transaction on the connection it owns. Statements run through it (it derefs
/// to the [`Database`]).
pub struct Tx {
    /// `Some` until `commit` or `rollback` takes it (so `Drop` knows not to roll back).
    db: Option<Box<dyn Database>>,
}

/// A transaction that could not begin or commit, and the connection, idle again (a failed
/// commit is rolled back).
pub struct TxFailed {
    pub db: Box<dyn Database>,
    pub error: DbError,
}

impl std::fmt::Debug for TxFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TxFailed")
            .field("error", &self.error)
            .finish_non_exhaustive()
    }
}

impl Tx {
    pub fn begin(mut db: Box<dyn Database>) -> Result<Tx, TxFailed> {
        match db.begin_transaction() {
            Ok(()) => Ok(Tx { db: Some(db) }),
            Err(error) => Err(TxFailed { db, error }),
        }
    }

    /// Makes every statement of the transaction durable, or none of them.
    pub fn commit(mut self) -> Result<Box<dyn Database>, TxFailed> {
        let mut db = self.take();
        match db.commit_transaction() {
            Ok(()) => Ok(db),
            Err(error) => {
                // a commit can fail and leave the transaction open (SQLite when busy):
                // end it, so the connection is idle either way
                let _ = db.rollback_transaction();
                Err(TxFailed { db, error })
            }
        }
    }

    /// Undoes every statement of the transaction. The connection comes back even when
    /// the rollback fails (the server ends the transaction when the connection drops).
    pub fn rollback(mut self) -> (Box<dyn Database>, Result<(), DbError>) {
        let mut db = self.take();
        let result = db.rollback_transaction();
        (db, result)
    }

    fn take(&mut self) -> Box<dyn Database> {
        self.db
            .take()
            .expect("a Tx holds its connection until commit or rollback consumes it")
    }
}

impl Deref for Tx {
    type Target = dyn Database;
    fn deref(&self) -> &Self::Target {
        self.db
            .as_deref()
            .expect("a Tx holds its connection until commit or rollback consumes it")
    }
}

impl DerefMut for Tx {
    fn deref_mut(&mut self) -> &mut Self::Target {
        self.db
            .as_deref_mut()
            .expect("a Tx holds its connection until commit or rollback consumes it")
    }
}

/// Not committed: rolled back (an error or a panic between begin and commit writes
/// nothing).
impl Drop for Tx {
    fn drop(&mut self) {
        if let Some(db) = self.db.as_mut() {
            let _ = db.rollback_transaction();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::load::columns::Cell;
    use crate::load::dialect::{Dialect, SavedState};
    use crate::load::sqlite::Sqlite;

    fn open(dir: &std::path::Path) -> Sqlite {
        Sqlite::open(&dir.join("tx.db")).unwrap()
    }

    /// A connection that outlives its box, as in a pool: dropping the box hands it back
    /// to `pool` still open, so a transaction a guard left open would still be open on
    /// it (closing a connection would roll back by itself and prove nothing).
    struct Pooled {
        db: Option<Sqlite>,
        pool: Arc<Mutex<Option<Sqlite>>>,
    }

    impl Pooled {
        fn boxed(db: Sqlite, pool: &Arc<Mutex<Option<Sqlite>>>) -> Box<dyn Database> {
            Box::new(Pooled {
                db: Some(db),
                pool: pool.clone(),
            })
        }

        fn db(&mut self) -> &mut Sqlite {
            self.db.as_mut().unwrap()
        }
    }

    impl Drop for Pooled {
        fn drop(&mut self) {
            *self.pool.lock().unwrap() = self.db.take();
        }
    }

    impl Database for Pooled {
        fn dialect(&self) -> &'static dyn Dialect {
            &crate::load::sqlite::SqliteDialect
        }
        fn batch(&mut self, sql: &str) -> Result<(), DbError> {
            self.db().batch(sql)
        }
        fn execute(&mut self, sql: &str, params: &[Cell]) -> Result<u64, DbError> {
            self.db().execute(sql, params)
        }
        fn columns(&mut self, table: &str) -> Result<Option<Vec<(String, String)>>, DbError> {
            self.db().columns(table)
        }
        fn is_partitioned(&mut self, table: &str) -> Result<bool, DbError> {
            self.db().is_partitioned(table)
        }
        fn row_count(&mut self, table: &str) -> Result<i64, DbError> {
            self.db().row_count(table)
        }
        fn saved_states(&mut self) -> Result<Vec<SavedState>, DbError> {
            self.db().saved_states()
        }
        fn begin_transaction(&mut self) -> Result<(), DbError> {
            self.db().begin_transaction()
        }
        fn commit_transaction(&mut self) -> Result<(), DbError> {
            self.db().commit_transaction()
        }
        fn rollback_transaction(&mut self) -> Result<(), DbError> {
            self.db().rollback_transaction()
        }
    }

    #[test]
    fn a_dropped_transaction_is_rolled_back() {
        let dir = tempfile::tempdir().unwrap();
        let mut db = open(dir.path());
        db.batch("CREATE TABLE t (x INTEGER)").unwrap();
        let pool = Arc::new(Mutex::new(None));
        let mut tx = Tx::begin(Pooled::boxed(db, &pool)).unwrap();
        tx.batch("INSERT INTO t VALUES (1)").unwrap();
        assert_eq!(
            tx.row_count("t").unwrap(),
            1,
            "the transaction sees its row"
        );
        drop(tx);
        let mut same = pool.lock().unwrap().take().expect("the connection is back");
        assert_eq!(
            same.row_count("t").unwrap(),
            0,
            "rolled back on its connection"
        );
        same.begin_transaction()
            .expect("no transaction is left open on the connection");
        assert_eq!(open(dir.path()).row_count("t").unwrap(), 0);
    }

    #[test]
    fn a_committed_transaction_persists_and_gives_the_connection_back() {
        let dir = tempfile::tempdir().unwrap();
        let mut db = open(dir.path());
        db.batch("CREATE TABLE t (x INTEGER)").unwrap();
        let mut tx = Tx::begin(Box::new(db)).unwrap();
        tx.batch("INSERT INTO t VALUES (1)").unwrap();
        let db = tx.commit().unwrap();
        assert_eq!(open(dir.path()).row_count("t").unwrap(), 1);
        // idle again: a new transaction begins on it
        let mut tx = Tx::begin(db).unwrap();
        tx.batch("INSERT INTO t VALUES (2)").unwrap();
        let (mut db, rolled_back) = tx.rollback();
        rolled_back.unwrap();
        assert_eq!(db.row_count("t").unwrap(), 1);
    }
}
