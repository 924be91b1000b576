//! The records a window holds until its read is verified, bounded in memory: past
//! `held_memory_mb` of record bytes (per stream), a record's serialized bytes go to the
//! stream's spill file and only its id, instant and place in the file stay in memory.
//!
//! The spill file is an anonymous temporary file in `spill_dir` (the system's temporary
//! directory by default): it is unlinked from the moment it is created (never has a name
//! on Linux), so a kill leaves nothing behind, and it is emptied at the start of each
//! window, so it never holds more than one window's records. Records come back from it
//! byte for byte, in the same cursor order as records held in memory.

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;

use serde_json::value::RawValue;

/// Spilled records are written in chunks of about this size (one write per chunk).
const WRITE_CHUNK_BYTES: usize = 256 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum SpillError {
    #[error("cannot create a temporary file in {dir} for the records of a window larger than `held_memory_mb`: {source}; set `spill_dir` to a writable directory (or raise `held_memory_mb`)")]
    Create {
        dir: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot write a window's records to the temporary file in {dir}: {source}; free space there or set `spill_dir` to a directory with room for one window (up to 4 × `window_target_pages` pages of records)")]
    Write {
        dir: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot read a window's records back from the temporary file in {dir}: {source}; set `spill_dir` to a directory on a local, reliable disk")]
    Read {
        dir: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("a record read back from the temporary file in {dir} is not what was written there (the file was changed from outside); set `spill_dir` to a private directory and run the sync again")]
    Corrupt { dir: PathBuf },
}

/// Where one held record's serialized bytes are.
#[derive(Debug)]
pub(super) enum Stored {
    Memory(Box<RawValue>),
    Spilled { offset: u64, len: u32 },
}

/// One record of a verified window, ready to emit.
#[derive(Debug)]
pub(super) struct Ready {
    pub id: String,
    pub at_ms: i64,
    pub data: Stored,
}

/// A stream's spill file (created at the first spill, reused by every later window).
#[derive(Debug)]
pub(super) struct Spill {
    dir: PathBuf,
    file: Option<File>,
    /// Bytes not yet written, which start at `end - pending.len()`.
    pending: Vec<u8>,
    /// The file's logical length, `pending` included.
    end: u64,
}

impl Spill {
    pub(super) fn new(dir: PathBuf) -> Self {
        Spill {
            dir,
            file: None,
            pending: Vec::new(),
            end: 0,
        }
    }

    /// Forget the previous window's records (the file keeps no more than one window).
    fn clear(&mut self) -> Result<(), SpillError> {
        if let Some(f) = &self.file {
            if self.end > self.pending.len() as u64 {
                f.set_len(0).map_err(|source| self.write_error(source))?;
            }
        }
        self.pending.clear();
        self.end = 0;
        Ok(())
    }

    fn append(&mut self, bytes: &[u8]) -> Result<Stored, SpillError> {
        let len = u32::try_from(bytes.len()).map_err(|_| SpillError::Write {
            dir: self.dir.clone(),
            source: io::Error::new(io::ErrorKind::InvalidInput, "a record over 4 GiB"),
        })?;
        let offset = self.end;
        self.pending.extend_from_slice(bytes);
        self.end += u64::from(len);
        if self.pending.len() >= WRITE_CHUNK_BYTES {
            self.flush()?;
        }
        Ok(Stored::Spilled { offset, len })
    }

    fn flush(&mut self) -> Result<(), SpillError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        if self.file.is_none() {
            // unlinked at creation (O_TMPFILE where available): nothing is left behind
            let f = tempfile::tempfile_in(&self.dir).map_err(|source| SpillError::Create {
                dir: self.dir.clone(),
                source,
            })?;
            self.file = Some(f);
        }
        let at = self.end - self.pending.len() as u64;
        if let Some(f) = &self.file {
            f.write_all_at(&self.pending, at)
                .map_err(|source| self.write_error(source))?;
        }
        self.pending.clear();
        Ok(())
    }

    fn write_error(&self, source: io::Error) -> SpillError {
        SpillError::Write {
            dir: self.dir.clone(),
            source,
        }
    }

    /// A held record's bytes, from memory or from the file.
    pub(super) fn load(&self, data: Stored) -> Result<Box<RawValue>, SpillError> {
        let (offset, len) = match data {
            Stored::Memory(raw) => return Ok(raw),
            Stored::Spilled { offset, len } => (offset, len),
        };
        let corrupt = || SpillError::Corrupt {
            dir: self.dir.clone(),
        };
        let mut bytes = vec![0u8; len as usize];
        let pending_from = self.end - self.pending.len() as u64;
        if offset >= pending_from {
            let start = (offset - pending_from) as usize;
            let src = self
                .pending
                .get(start..start + bytes.len())
                .ok_or_else(corrupt)?;
            bytes.copy_from_slice(src);
        } else {
            let f = self.file.as_ref().ok_or_else(corrupt)?;
            f.read_exact_at(&mut bytes, offset)
                .map_err(|source| SpillError::Read {
                    dir: self.dir.clone(),
                    source,
                })?;
        }
        let text = String::from_utf8(bytes).map_err(|_| corrupt())?;
        RawValue::from_string(text).map_err(|_| corrupt())
    }
}

/// The newest version of each record of one window, in memory up to a budget of record
/// bytes and in the stream's [`Spill`] past it.
pub(super) struct HeldRecords<'s> {
    /// id -> the held version's instant and its bytes (None: the version is skipped as
    /// invalid, but still the newest seen).
    records: HashMap<String, (i64, Option<Stored>)>,
    in_memory: usize,
    budget: usize,
    spill: &'s mut Spill,
}

impl<'s> HeldRecords<'s> {
    /// An empty window's records; the spill file is emptied of the previous window's.
    pub(super) fn new(budget_bytes: usize, spill: &'s mut Spill) -> Result<Self, SpillError> {
        spill.clear()?;
        Ok(HeldRecords {
            records: HashMap::new(),
            in_memory: 0,
            budget: budget_bytes,
            spill,
        })
    }

    /// A version at `at_ms` would replace nothing newer.
    pub(super) fn is_newer(&self, id: &str, at_ms: i64) -> bool {
        self.records.get(id).is_none_or(|(held, _)| *held < at_ms)
    }

    /// Hold `data` as `id`'s newest version (the caller checked [`Self::is_newer`]). A
    /// replaced version's bytes stay in the file until the next window.
    pub(super) fn hold(
        &mut self,
        id: String,
        at_ms: i64,
        data: Option<Box<RawValue>>,
    ) -> Result<(), SpillError> {
        let stored = match data {
            None => None,
            Some(raw) if self.in_memory + raw.get().len() <= self.budget => {
                self.in_memory += raw.get().len();
                Some(Stored::Memory(raw))
            }
            Some(raw) => Some(self.spill.append(raw.get().as_bytes())?),
        };
        if let Some((_, Some(Stored::Memory(old)))) = self.records.insert(id, (at_ms, stored)) {
            self.in_memory -= old.get().len();
        }
        Ok(())
    }

    /// The records to emit, in cursor order (instant, then id); skipped versions are left
    /// out. Spilled bytes are read back with [`Spill::load`].
    pub(super) fn into_cursor_order(self) -> Result<Vec<Ready>, SpillError> {
        self.spill.flush()?;
        let mut ready: Vec<Ready> = self
            .records
            .into_iter()
            .filter_map(|(id, (at_ms, data))| data.map(|data| Ready { id, at_ms, data }))
            .collect();
        ready.sort_unstable_by(|a, b| (a.at_ms, &a.id).cmp(&(b.at_ms, &b.id)));
        Ok(ready)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn raw(s: &str) -> Box<RawValue> {
        RawValue::from_string(s.to_string()).unwrap()
    }

    /// Holds `versions` (id, instant, record or skipped) under `budget`, then returns what
    /// would be emitted, in order.
    fn emitted(
        versions: &[(u8, i64, Option<String>)],
        budget: usize,
        spill: &mut Spill,
    ) -> Vec<(String, i64, String)> {
        let mut held = HeldRecords::new(budget, spill).unwrap();
        for (id, t, rec) in versions {
            let id = id.to_string();
            if held.is_newer(&id, *t) {
                held.hold(id, *t, rec.as_deref().map(raw)).unwrap();
            }
        }
        let ready = held.into_cursor_order().unwrap();
        ready
            .into_iter()
            .map(|r| {
                let text = spill.load(r.data).unwrap().get().to_string();
                (r.id, r.at_ms, text)
            })
            .collect()
    }

    fn version() -> impl Strategy<Value = (u8, i64, Option<String>)> {
        (
            0u8..40,
            0i64..20,
            prop::option::weighted(0.9, "[a-z ]{0,300}"),
        )
            .prop_map(|(id, t, text)| {
                let rec = text.map(|s| format!(r#"{{"id":{id},"at":{t},"note":"{s}"}}"#));
                (id, t, rec)
            })
    }

    proptest! {
        /// Spilling changes where bytes wait, never what is emitted or in which order:
        /// a window spilled entirely, or past a small bound, emits exactly the records,
        /// bytes and order of the same window held in memory; and the next window through
        /// the same file sees none of the previous one.
        #[test]
        fn a_spilled_window_emits_the_same_records_in_the_same_order_as_one_in_memory(
            windows in prop::collection::vec(prop::collection::vec(version(), 0..120), 1..4),
            bound in 0usize..4000,
        ) {
            let dir = tempfile::tempdir().unwrap();
            let mut in_memory = Spill::new(dir.path().to_path_buf());
            let mut spilled = Spill::new(dir.path().to_path_buf());
            let mut partly = Spill::new(dir.path().to_path_buf());
            for versions in &windows {
                let want = emitted(versions, usize::MAX, &mut in_memory);
                prop_assert!(in_memory.file.is_none());
                prop_assert_eq!(&emitted(versions, 0, &mut spilled), &want);
                prop_assert_eq!(&emitted(versions, bound, &mut partly), &want);
            }
        }
    }

    #[test]
    fn the_spill_file_has_no_name_in_the_directory() {
        let dir = tempfile::tempdir().unwrap();
        let mut spill = Spill::new(dir.path().to_path_buf());
        let versions: Vec<(u8, i64, Option<String>)> = (0..50)
            .map(|i| (i, i64::from(i), Some(format!(r#"{{"id":{i}}}"#))))
            .collect();
        let out = emitted(&versions, 0, &mut spill);
        assert_eq!(out.len(), 50);
        assert!(
            spill.file.is_some(),
            "records past the bound went to a file"
        );
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn an_unusable_spill_dir_is_named_in_the_error_with_the_key_to_fix_it() {
        let mut spill = Spill::new(PathBuf::from("/nonexistent/spill-here"));
        let mut held = HeldRecords::new(0, &mut spill).unwrap();
        held.hold("1".into(), 1, Some(raw("{}"))).unwrap();
        let err = held.into_cursor_order().unwrap_err();
        let text = err.to_string();
        assert!(text.contains("/nonexistent/spill-here"), "{text}");
        assert!(text.contains("`spill_dir`"), "{text}");
    }
}
