//! Snapshots: a partition's whole store in one local file, with the
//! changelog offset it reflects, so that a process restarted on the same
//! machine reads only the changelog written after it.
//!
//! The file is `<state dir>/<group>/<partition>.snapshot`. Format,
//! little-endian: the magic `RFLSNAP1`, the changelog offset (u64) and the
//! entry count (u64); per entry the key length (u32), the key, the state
//! length (u32) and the state as stored in the changelog (its version's
//! prefix and its JSON, see [`crate::version`]); last, a CRC-32 of everything before
//! it. It is written to a temporary file and renamed into place, so a crash
//! leaves either the old snapshot or the new one.

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::store::{encode, Store};
use crate::version::Upgrade;
use riffle_base::crc32;
use riffle_base::error::{Error, Result};

const MAGIC: &[u8; 8] = b"RFLSNAP1";

impl<S: Default + Serialize + DeserializeOwned> Store<S> {
    /// Writes a snapshot reflecting the changelog up to `offset`.
    pub fn save_snapshot(&mut self, path: &Path, offset: i64) -> Result<()> {
        let count = self.entries.len() + self.marks.len();
        let mut w = SnapshotWriter::create(path, offset, count)?;
        let mut buf = Vec::new();
        for (key, entry) in &self.entries {
            encode(key, self.version(), entry, &mut buf)?;
            w.entry(key, &buf)?;
        }
        // The layer's marks, under their reserved keys, as in the changelog.
        for (key, value) in &self.marks {
            w.entry(key, value)?;
        }
        w.finish()?;
        self.changed_since_snapshot = 0;
        Ok(())
    }

    /// Loads a snapshot: the store and the changelog offset it reflects,
    /// its states upgraded as `upgrade` says (entries that do not decode
    /// are set aside, see [`Store::take_damaged`]). `None` when there is
    /// none; an error when the file is damaged.
    pub fn load_snapshot(path: &Path, upgrade: &dyn Upgrade<S>) -> Result<Option<(Self, i64)>> {
        let bytes = match std::fs::read(path) {
            Ok(b) => std::sync::Arc::new(b),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io(format!("snapshot {}", path.display()), &e)),
        };
        let bad = |why: &str| Error::Decode(format!("snapshot {}: {why}", path.display()));
        if bytes.len() < 28 || &bytes[..8] != MAGIC {
            return Err(bad("not a snapshot"));
        }
        let (body, crc) = bytes.split_at(bytes.len() - 4);
        if crc32::crc32(body) != u32::from_le_bytes(crc.try_into().unwrap()) {
            return Err(bad("checksum mismatch"));
        }
        let u64_at = |i: usize| u64::from_le_bytes(body[i..i + 8].try_into().unwrap());
        let offset = u64_at(8) as i64;
        let count = u64_at(16) as usize;
        let mut store = Self::new(upgrade.version());
        store.entries.reserve(count);
        let mut rest = &body[24..];
        fn take<'a>(rest: &mut &'a [u8]) -> Option<&'a [u8]> {
            let r: &'a [u8] = rest;
            let n = u32::from_le_bytes(r.get(..4)?.try_into().ok()?) as usize;
            let field = r.get(4..4 + n)?;
            *rest = &r[4 + n..];
            Some(field)
        }
        for _ in 0..count {
            let (Some(key), Some(value)) = (take(&mut rest), take(&mut rest)) else {
                return Err(bad("truncated"));
            };
            if key.starts_with(crate::store::MARK_PREFIX.as_bytes()) {
                if let Ok(k) = std::str::from_utf8(key) {
                    store.set_mark(k, value);
                }
                continue;
            }
            let Some((key, state, timers)) = store.decode_lazily(&bytes, key, value, upgrade)?
            else {
                continue;
            };
            // A snapshot holds each key once: no lookup before inserting.
            store.insert_new(key, state, timers);
        }
        Ok(Some((store, offset)))
    }
}

/// Writes a snapshot file entry by entry (see the module docs).
pub struct SnapshotWriter {
    path: PathBuf,
    tmp: PathBuf,
    out: Crc32Writer<BufWriter<std::fs::File>>,
}

impl SnapshotWriter {
    pub fn create(path: &Path, offset: i64, entries: usize) -> Result<Self> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| io_error(path, e))?;
        }
        let tmp = path.with_extension("snapshot.tmp");
        let file = std::fs::File::create(&tmp).map_err(|e| io_error(path, e))?;
        let mut w = Self {
            path: path.to_owned(),
            tmp,
            out: Crc32Writer::new(BufWriter::with_capacity(1 << 20, file)),
        };
        w.write(MAGIC)?;
        w.write(&(offset as u64).to_le_bytes())?;
        w.write(&(entries as u64).to_le_bytes())?;
        Ok(w)
    }

    fn write(&mut self, bytes: &[u8]) -> Result<()> {
        self.out
            .write_all(bytes)
            .map_err(|e| io_error(&self.path, e))
    }

    /// One key and its state as JSON.
    pub fn entry(&mut self, key: &str, state: &[u8]) -> Result<()> {
        self.write(&(key.len() as u32).to_le_bytes())?;
        self.write(key.as_bytes())?;
        self.write(&(state.len() as u32).to_le_bytes())?;
        self.write(state)
    }

    /// Adds the checksum, syncs, and renames the file into place.
    pub fn finish(self) -> Result<()> {
        let io = |e| io_error(&self.path, e);
        let crc = self.out.crc;
        let mut file = self.out.inner;
        file.write_all(&crc.to_le_bytes()).map_err(io)?;
        let file = file.into_inner().map_err(|e| io(e.into_error()))?;
        file.sync_all().map_err(io)?;
        std::fs::rename(&self.tmp, &self.path).map_err(io)
    }
}

fn io_error(path: &Path, e: std::io::Error) -> Error {
    Error::io(format!("snapshot {}", path.display()), &e)
}

/// Computes the CRC-32 of what passes through.
struct Crc32Writer<W> {
    inner: W,
    crc: u32,
}

impl<W> Crc32Writer<W> {
    fn new(inner: W) -> Self {
        Self { inner, crc: 0 }
    }
}

impl<W: Write> Write for Crc32Writer<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.crc = crc32::update(self.crc, &buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::tests::store;
    use crate::version::Unversioned;

    #[test]
    fn snapshots_round_trip() {
        let dir = std::env::temp_dir().join(format!("riffle-snap-{}", fastrand::u64(..)));
        let path = dir.join("3.snapshot");
        let mut s = store(1000);
        assert_eq!(s.changed_since_snapshot(), 1000);
        s.save_snapshot(&path, 4242).unwrap();
        assert_eq!(s.changed_since_snapshot(), 0);
        let (mut loaded, offset) = Store::<Vec<u32>>::load_snapshot(&path, &Unversioned)
            .unwrap()
            .unwrap();
        assert_eq!(offset, 4242);
        assert_eq!(loaded.len(), 1000);
        for i in [0, 1, 999] {
            let key = format!("key-{i}");
            assert!(
                !loaded.entries[key.as_str()].dirty,
                "restored state is not a change"
            );
            assert_eq!(loaded.get(&key), Some(&vec![i as u32]));
        }
        assert!(!loaded.has_changes());
        // Saved again with most states never decoded: written as they
        // were read.
        let again = dir.join("4.snapshot");
        loaded.save_snapshot(&again, 4243).unwrap();
        let (mut reloaded, _) = Store::<Vec<u32>>::load_snapshot(&again, &Unversioned)
            .unwrap()
            .unwrap();
        assert_eq!(reloaded.len(), 1000);
        for i in 0..1000 {
            assert_eq!(reloaded.get(&format!("key-{i}")), Some(&vec![i as u32]));
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn missing_snapshot_is_none_and_damage_is_an_error() {
        let dir = std::env::temp_dir().join(format!("riffle-snap-{}", fastrand::u64(..)));
        let path = dir.join("0.snapshot");
        assert!(Store::<u8>::load_snapshot(&path, &Unversioned)
            .unwrap()
            .is_none());
        store(10).save_snapshot(&path, 7).unwrap();
        let mut bytes = std::fs::read(&path).unwrap();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0x40;
        std::fs::write(&path, &bytes).unwrap();
        let err = Store::<Vec<u32>>::load_snapshot(&path, &Unversioned)
            .err()
            .unwrap();
        assert!(err.to_string().contains("checksum"), "{err}");
        std::fs::write(&path, &bytes[..bytes.len() - 9]).unwrap();
        assert!(Store::<Vec<u32>>::load_snapshot(&path, &Unversioned).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
