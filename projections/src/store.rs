//! The RocksDB side of a projection: column families, records, and the one
//! write path that applies a batch of events together with its checkpoint.
//!
//! Invariant: the resources a projection holds and its checkpoint always
//! change in the same `WriteBatch`, so a crash at any point leaves the
//! projection at some event boundary — never an event applied twice, never
//! one skipped.

use std::path::{Path, PathBuf};

use fleetlog_events::envelope::ChangeKind;
use fleetlog_events::{Revision, StoredEvent};
use rocksdb::{
    ColumnFamilyDescriptor, DB, Direction, IteratorMode, Options, ReadOptions, WriteBatch,
};
use serde::{Deserialize, Serialize};

use crate::error::ProjectionError;

const CF_RESOURCES: &str = "resources";
const CF_META: &str = "meta";

const META_CHECKPOINT: &[u8] = b"checkpoint";
const META_EVENTS_APPLIED: &[u8] = b"events_applied";
const META_API_VERSION: &[u8] = b"api_version";

/// Separates the resource type from the name in a record key; names never
/// contain NUL.
const KEY_SEPARATOR: u8 = 0;

/// One resource as the projection stores it: its protobuf encoding in the
/// projection's API version and the revision of its last event.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub revision: u64,
    pub bytes: Vec<u8>,
}

/// What one event does to the projection.
#[derive(Clone, Debug, PartialEq)]
pub enum Op {
    Put {
        type_name: String,
        name: String,
        record: Record,
    },
    Delete {
        type_name: String,
        name: String,
    },
    /// The event is not for this projection (e.g. an unknown resource type).
    Skip,
}

impl Op {
    /// What `event` does to the record `name` of `type_name`, whose body in
    /// the projection's version is `bytes`: a deletion removes it, any
    /// other change stores the full post-state at the event's revision.
    pub fn for_event(event: &StoredEvent, type_name: String, name: String, bytes: Vec<u8>) -> Op {
        match event.kind() {
            ChangeKind::Deleted => Op::Delete { type_name, name },
            ChangeKind::Created | ChangeKind::Updated | ChangeKind::Action => Op::Put {
                type_name,
                name,
                record: Record {
                    revision: event.revision.get(),
                    bytes,
                },
            },
            ChangeKind::Unspecified => Op::Skip,
        }
    }
}

/// The key of a record: `{type_name}\0{name}`. All records of one
/// collection under one parent share the prefix `{type_name}\0{parent}/{collection}/`.
pub fn record_key(type_name: &str, name: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(type_name.len() + 1 + name.len());
    key.extend_from_slice(type_name.as_bytes());
    key.push(KEY_SEPARATOR);
    key.extend_from_slice(name.as_bytes());
    key
}

fn bincode_config() -> bincode::config::Configuration {
    bincode::config::standard()
}

fn encode_record(record: &Record) -> Result<Vec<u8>, ProjectionError> {
    bincode::serde::encode_to_vec(record, bincode_config())
        .map_err(|e| ProjectionError::Storage(format!("encoding a record: {e}")))
}

fn decode_record(bytes: &[u8]) -> Result<Record, ProjectionError> {
    bincode::serde::decode_from_slice(bytes, bincode_config())
        .map(|(record, _)| record)
        .map_err(|e| ProjectionError::Storage(format!("decoding a record: {e}")))
}

/// Persistent state of a projection.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Checkpoint {
    /// The last event applied.
    pub revision: Revision,
    /// How many events were ever applied; equals the number of events up to
    /// `revision` when none was skipped or applied twice.
    pub events_applied: u64,
}

/// A RocksDB instance holding one projection.
pub struct Store {
    db: DB,
    path: PathBuf,
}

impl Store {
    /// Opens (or creates) the projection at `path` for `api_version`.
    /// Opens a projection another process may be writing, as it is now,
    /// without taking its lock (for verification).
    pub fn open_read_only(path: &Path) -> Result<Self, ProjectionError> {
        let cfs = [CF_RESOURCES, CF_META]
            .into_iter()
            .map(|name| ColumnFamilyDescriptor::new(name, Options::default()));
        let db = DB::open_cf_descriptors_read_only(&Options::default(), path, cfs, false)
            .map_err(|e| ProjectionError::Storage(format!("opening {}: {e}", path.display())))?;
        Ok(Store {
            db,
            path: path.to_owned(),
        })
    }

    pub fn open(path: &Path, api_version: &str) -> Result<Self, ProjectionError> {
        let mut options = Options::default();
        options.create_if_missing(true);
        options.create_missing_column_families(true);
        let cfs = [CF_RESOURCES, CF_META]
            .into_iter()
            .map(|name| ColumnFamilyDescriptor::new(name, Options::default()));
        let db = DB::open_cf_descriptors(&options, path, cfs)
            .map_err(|e| ProjectionError::Storage(format!("opening {}: {e}", path.display())))?;
        let store = Store {
            db,
            path: path.to_owned(),
        };
        match store.api_version()? {
            Some(existing) if existing != api_version => {
                return Err(ProjectionError::Storage(format!(
                    "{} holds a {existing} projection, not {api_version}",
                    path.display()
                )));
            }
            Some(_) => {}
            None => {
                let meta = store.cf(CF_META)?;
                store
                    .db
                    .put_cf(meta, META_API_VERSION, api_version.as_bytes())
                    .map_err(storage_error)?;
            }
        }
        Ok(store)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn cf(&self, name: &str) -> Result<&rocksdb::ColumnFamily, ProjectionError> {
        self.db
            .cf_handle(name)
            .ok_or_else(|| ProjectionError::Storage(format!("column family {name} is missing")))
    }

    pub fn api_version(&self) -> Result<Option<String>, ProjectionError> {
        let meta = self.cf(CF_META)?;
        let value = self
            .db
            .get_cf(meta, META_API_VERSION)
            .map_err(storage_error)?;
        Ok(value.map(|v| String::from_utf8_lossy(&v).into_owned()))
    }

    pub fn checkpoint(&self) -> Result<Checkpoint, ProjectionError> {
        let meta = self.cf(CF_META)?;
        let read = |key: &[u8]| -> Result<u64, ProjectionError> {
            match self.db.get_cf(meta, key).map_err(storage_error)? {
                Some(bytes) => {
                    let array: [u8; 8] = bytes.as_slice().try_into().map_err(|_| {
                        ProjectionError::Storage("a checkpoint value is not 8 bytes".into())
                    })?;
                    Ok(u64::from_be_bytes(array))
                }
                None => Ok(0),
            }
        };
        Ok(Checkpoint {
            revision: Revision(read(META_CHECKPOINT)?),
            events_applied: read(META_EVENTS_APPLIED)?,
        })
    }

    /// Applies the ops of consecutive events ending at `last` together with
    /// the new checkpoint, atomically.
    pub fn apply(
        &self,
        ops: &[Op],
        events: u64,
        last: Revision,
        before: Checkpoint,
    ) -> Result<Checkpoint, ProjectionError> {
        let resources = self.cf(CF_RESOURCES)?;
        let meta = self.cf(CF_META)?;
        let mut batch = WriteBatch::default();
        for op in ops {
            match op {
                Op::Put {
                    type_name,
                    name,
                    record,
                } => {
                    batch.put_cf(
                        resources,
                        record_key(type_name, name),
                        encode_record(record)?,
                    );
                }
                Op::Delete { type_name, name } => {
                    batch.delete_cf(resources, record_key(type_name, name));
                }
                Op::Skip => {}
            }
        }
        let after = Checkpoint {
            revision: last,
            events_applied: before.events_applied + events,
        };
        batch.put_cf(meta, META_CHECKPOINT, after.revision.get().to_be_bytes());
        batch.put_cf(
            meta,
            META_EVENTS_APPLIED,
            after.events_applied.to_be_bytes(),
        );
        self.db.write(batch).map_err(storage_error)?;
        Ok(after)
    }

    pub fn get(&self, type_name: &str, name: &str) -> Result<Option<Record>, ProjectionError> {
        let resources = self.cf(CF_RESOURCES)?;
        self.db
            .get_cf(resources, record_key(type_name, name))
            .map_err(storage_error)?
            .map(|bytes| decode_record(&bytes))
            .transpose()
    }

    /// Visits records whose key starts with `prefix`, in key order, from the
    /// first key after `after` (exclusive), reading from one consistent
    /// snapshot. The visitor returns false to stop. Returns the checkpoint of
    /// that snapshot.
    pub fn scan(
        &self,
        prefix: &[u8],
        after: Option<&[u8]>,
        mut visit: impl FnMut(&[u8], Record) -> Result<bool, ProjectionError>,
    ) -> Result<Revision, ProjectionError> {
        let resources = self.cf(CF_RESOURCES)?;
        let meta = self.cf(CF_META)?;
        let snapshot = self.db.snapshot();
        let revision = match snapshot
            .get_cf(meta, META_CHECKPOINT)
            .map_err(storage_error)?
        {
            Some(bytes) => Revision(u64::from_be_bytes(bytes.as_slice().try_into().map_err(
                |_| ProjectionError::Storage("a checkpoint value is not 8 bytes".into()),
            )?)),
            None => Revision(0),
        };
        let mut options = ReadOptions::default();
        options.set_snapshot(&snapshot);
        let start: Vec<u8> = match after {
            // The smallest key greater than `after`.
            Some(after) => {
                let mut key = after.to_vec();
                key.push(0);
                key
            }
            None => prefix.to_vec(),
        };
        let iter = self.db.iterator_cf_opt(
            resources,
            options,
            IteratorMode::From(&start, Direction::Forward),
        );
        for item in iter {
            let (key, value) = item.map_err(storage_error)?;
            if !key.starts_with(prefix) {
                break;
            }
            if !visit(&key[prefix.len()..], decode_record(&value)?)? {
                break;
            }
        }
        Ok(revision)
    }

    /// Every record, in key order: `(type_name, name, record)`. For
    /// verification against a fresh replay.
    pub fn dump(&self) -> Result<Vec<(String, String, Record)>, ProjectionError> {
        let resources = self.cf(CF_RESOURCES)?;
        let mut out = Vec::new();
        for item in self.db.iterator_cf(resources, IteratorMode::Start) {
            let (key, value) = item.map_err(storage_error)?;
            let split = key
                .iter()
                .position(|b| *b == KEY_SEPARATOR)
                .ok_or_else(|| ProjectionError::Storage("a record key has no separator".into()))?;
            out.push((
                String::from_utf8_lossy(&key[..split]).into_owned(),
                String::from_utf8_lossy(&key[split + 1..]).into_owned(),
                decode_record(&value)?,
            ));
        }
        Ok(out)
    }
}

fn storage_error(err: rocksdb::Error) -> ProjectionError {
    ProjectionError::Storage(err.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(name: &str, revision: u64) -> Op {
        Op::Put {
            type_name: "t.Thing".into(),
            name: name.into(),
            record: Record {
                revision,
                bytes: vec![revision as u8],
            },
        }
    }

    #[test]
    fn applies_batches_with_their_checkpoint_and_survives_reopen() -> Result<(), ProjectionError> {
        let dir = tempfile::tempdir().map_err(|e| ProjectionError::Storage(e.to_string()))?;
        {
            let store = Store::open(dir.path(), "v1")?;
            assert_eq!(store.checkpoint()?, Checkpoint::default());
            let cp = store.apply(
                &[put("p/a", 1), put("p/b", 2)],
                2,
                Revision(2),
                Checkpoint::default(),
            )?;
            let cp = store.apply(
                &[
                    Op::Delete {
                        type_name: "t.Thing".into(),
                        name: "p/a".into(),
                    },
                    Op::Skip,
                ],
                2,
                Revision(4),
                cp,
            )?;
            assert_eq!(
                cp,
                Checkpoint {
                    revision: Revision(4),
                    events_applied: 4
                }
            );
        }
        let store = Store::open(dir.path(), "v1")?;
        assert_eq!(
            store.checkpoint()?,
            Checkpoint {
                revision: Revision(4),
                events_applied: 4
            }
        );
        assert_eq!(store.get("t.Thing", "p/a")?, None);
        assert_eq!(store.get("t.Thing", "p/b")?.map(|r| r.revision), Some(2));
        assert!(
            Store::open(dir.path(), "v2").is_err(),
            "a v1 projection is not a v2 one"
        );
        Ok(())
    }

    #[test]
    fn scans_a_prefix_from_a_cursor() -> Result<(), ProjectionError> {
        let dir = tempfile::tempdir().map_err(|e| ProjectionError::Storage(e.to_string()))?;
        let store = Store::open(dir.path(), "v1")?;
        let ops: Vec<Op> = ["p/a", "p/b", "p/c", "q/a"]
            .iter()
            .zip(1..)
            .map(|(n, r)| put(n, r))
            .collect();
        store.apply(&ops, 4, Revision(4), Checkpoint::default())?;
        let prefix = record_key("t.Thing", "p/");
        let mut seen = Vec::new();
        let revision = store.scan(&prefix, Some(&record_key("t.Thing", "p/a")), |key, _| {
            seen.push(String::from_utf8_lossy(key).into_owned());
            Ok(true)
        })?;
        assert_eq!(seen, ["b", "c"]);
        assert_eq!(revision, Revision(4));
        Ok(())
    }
}
