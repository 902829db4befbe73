//! Segment files and how they reach the disk: their names, the writer that
//! appends frames to the current one, the fsync policy and the thread that
//! applies it, and cutting off a damaged tail. Below both the directory
//! ([`persist`](super::persist)) and the partitions
//! ([`storage`](super::storage)), which use it and nothing of each other's.

use std::collections::BTreeSet;
use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use super::frame::{encode_frame, frame_fits};
use crate::error::{Error, Result};
use crate::Headers;

/// When appended records and committed offsets are forced to stable storage.
///
/// Whatever the policy, every append is written to the operating system (one
/// `write(2)` to the partition's current segment file) before `send` returns,
/// and every commit replaces the group's offsets file before it returns. So a
/// process that is killed (even with `SIGKILL`) or panics loses nothing that
/// was acknowledged: the kernel holds the data and writes it out on its own.
/// The policy only decides what survives a crash of the machine (power
/// failure, kernel panic), by when `fsync` is called:
///
/// - [`Always`](FsyncPolicy::Always): each append is fsynced before `send`
///   returns, and each offsets file before the commit returns. Nothing
///   acknowledged is lost on power failure; every append pays for a disk
///   flush (typically 0.1-10 ms) while holding the log's lock.
/// - [`Interval(d)`](FsyncPolicy::Interval): a background thread fsyncs the
///   segment and offsets files written since its last round, every `d`. So a
///   write is on stable storage at most `d` (plus the time the flush takes)
///   after it was made, and a power failure loses at most the last `d` of
///   appends and commits. The append path never waits for the disk.
///   `Interval(Duration::ZERO)` is the same as `Always`.
/// - [`Never`](FsyncPolicy::Never): no fsync at all; the kernel writes dirty
///   pages back when it chooses (on Linux within about 30 s by default). A
///   power failure may lose any amount of recent data, and may leave a
///   damaged segment that is not the last of its partition, which then
///   refuses to load.
///
/// Whatever the policy, a segment is fsynced when it is closed (when the next
/// one is started), except under `Never`, and topic creation and deletion
/// fsync the files and directories they change. A clean shutdown (the last
/// clone of the log and the last of its producers and consumers dropped)
/// fsyncs what the `Interval` thread has not yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsyncPolicy {
    Always,
    Interval(Duration),
    Never,
}

impl Default for FsyncPolicy {
    /// `Interval(1 s)`.
    fn default() -> Self {
        FsyncPolicy::Interval(Duration::from_secs(1))
    }
}

/// Segment files are named by their base offset in this many digits.
pub(super) const OFFSET_DIGITS: usize = 20;

// ---------------------------------------------------------------------------
// Errors and small file helpers

pub(super) fn io_error(what: &str, path: &Path, e: io::Error) -> Error {
    Error::io(
        format!("embedded log: cannot {what} {}", path.display()),
        &e,
    )
}

/// fsyncs a file or directory by path.
pub(super) fn fsync_path(path: &Path) -> io::Result<()> {
    File::open(path)?.sync_all()
}

pub(super) fn segment_path(dir: &Path, base: i64) -> PathBuf {
    dir.join(format!("{base:0width$}.log", width = OFFSET_DIGITS))
}

/// The base offset of a segment file name, if it is one.
pub(super) fn segment_base(name: &str) -> Option<i64> {
    let digits = name.strip_suffix(".log")?;
    if digits.len() != OFFSET_DIGITS || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

// ---------------------------------------------------------------------------
// fsync bookkeeping

/// What the `Interval` thread has yet to fsync.
#[derive(Default)]
struct Pending {
    files: Vec<Arc<SegmentFile>>,
    paths: BTreeSet<PathBuf>,
}

/// Applies the fsync policy; shared by the writers and the `Interval` thread.
pub(super) struct Syncer {
    policy: FsyncPolicy,
    pending: Mutex<Pending>,
    /// fsync calls made, for tests and curiosity.
    syncs: AtomicU64,
}

impl Syncer {
    pub(super) fn new(policy: FsyncPolicy) -> Self {
        Self {
            policy,
            pending: Mutex::new(Pending::default()),
            syncs: AtomicU64::new(0),
        }
    }

    #[cfg(test)]
    pub(super) fn syncs(&self) -> u64 {
        self.syncs.load(Ordering::Relaxed)
    }

    fn pending(&self) -> std::sync::MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn counted<T>(&self, r: io::Result<T>) -> io::Result<T> {
        self.syncs.fetch_add(1, Ordering::Relaxed);
        r
    }

    /// After a record was written to `file`.
    pub(super) fn written(&self, file: &Arc<SegmentFile>) -> io::Result<()> {
        match self.policy {
            FsyncPolicy::Always => self.counted(file.file.sync_data()),
            FsyncPolicy::Interval(_) => {
                if !file.dirty.swap(true, Ordering::AcqRel) {
                    self.pending().files.push(Arc::clone(file));
                }
                Ok(())
            }
            FsyncPolicy::Never => Ok(()),
        }
    }

    /// Before a temporary file is renamed over its target.
    pub(super) fn before_rename(&self, file: &File) -> io::Result<()> {
        match self.policy {
            FsyncPolicy::Always => self.counted(file.sync_data()),
            _ => Ok(()),
        }
    }

    /// After `path` was renamed into `dir`.
    pub(super) fn after_rename(&self, path: &Path, dir: &Path) -> io::Result<()> {
        match self.policy {
            FsyncPolicy::Always => self.counted(fsync_path(dir)),
            FsyncPolicy::Interval(_) => {
                let mut pending = self.pending();
                pending.paths.insert(path.to_owned());
                pending.paths.insert(dir.to_owned());
                Ok(())
            }
            FsyncPolicy::Never => Ok(()),
        }
    }

    /// For rare changes (topics created or deleted, segments closed or
    /// truncated): fsync at once unless the policy is `Never`.
    pub(super) fn now(&self, path: &Path) -> io::Result<()> {
        match self.policy {
            FsyncPolicy::Never => Ok(()),
            _ => self.counted(fsync_path(path)),
        }
    }

    pub(super) fn now_file(&self, file: &File) -> io::Result<()> {
        match self.policy {
            FsyncPolicy::Never => Ok(()),
            _ => self.counted(file.sync_data()),
        }
    }

    /// fsyncs everything written since the last call (the `Interval` round).
    /// Failures are logged: nobody is waiting for this to report them.
    pub(super) fn flush(&self) {
        let Pending { files, paths } = std::mem::take(&mut *self.pending());
        for f in files {
            // Cleared first, so that a write racing with this fsync queues the
            // file again for the next round.
            f.dirty.store(false, Ordering::Release);
            if let Err(e) = self.counted(f.file.sync_data()) {
                tracing::error!(file = %f.path.display(), error = %e, "embedded log: fsync failed");
            }
        }
        for path in paths {
            match self.counted(fsync_path(&path)) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => {
                    tracing::error!(file = %path.display(), error = %e, "embedded log: fsync failed")
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Segment writer

/// An open segment file.
pub(super) struct SegmentFile {
    file: File,
    path: PathBuf,
    /// Written since the `Interval` thread last fsynced it.
    dirty: AtomicBool,
}

/// Writes a partition's appends through to its current segment file.
pub(super) struct SegmentWriter {
    dir: PathBuf,
    sync: Arc<Syncer>,
    current: Option<Arc<SegmentFile>>,
    /// Bytes of whole frames in the current file.
    len: u64,
    /// The frame being written, reused across appends.
    frame: Vec<u8>,
    /// Set when the file may no longer match the log in memory.
    broken: Option<Error>,
}

impl fmt::Debug for SegmentWriter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SegmentWriter")
            .field("dir", &self.dir)
            .field("len", &self.len)
            .finish_non_exhaustive()
    }
}

/// A frame buffer larger than this is not kept between appends.
const KEEP_FRAME_BUFFER: usize = 1 << 20;

impl SegmentWriter {
    /// A writer for a partition without segment files yet.
    pub(super) fn new(dir: PathBuf, sync: Arc<Syncer>) -> Self {
        Self {
            dir,
            sync,
            current: None,
            len: 0,
            frame: Vec::new(),
            broken: None,
        }
    }

    /// A writer continuing the segment file `path`, whose whole frames end at
    /// `len`.
    pub(super) fn resume(dir: PathBuf, sync: Arc<Syncer>, path: PathBuf, len: u64) -> Result<Self> {
        let file = OpenOptions::new()
            .append(true)
            .open(&path)
            .map_err(|e| io_error("open", &path, e))?;
        let mut writer = Self::new(dir, sync);
        writer.current = Some(Arc::new(SegmentFile {
            file,
            path,
            dirty: AtomicBool::new(false),
        }));
        writer.len = len;
        Ok(writer)
    }

    fn check(&self) -> Result<()> {
        match &self.broken {
            Some(why) => Err(why.clone()),
            None => Ok(()),
        }
    }

    /// Closes the current segment file (fsynced unless the policy is `Never`)
    /// and starts the file of the segment beginning at `base`.
    /// A failed fsync leaves the partition refusing appends, as in `append`.
    pub(super) fn roll(&mut self, base: i64) -> Result<()> {
        self.check()?;
        if let Some(cur) = &self.current {
            if let Err(e) = self.sync.now_file(&cur.file) {
                return Err(self.fail(&cur.path.clone(), "fsync", e));
            }
        }
        let path = segment_path(&self.dir, base);
        let file = OpenOptions::new()
            .append(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| io_error("create", &path, e))?;
        if let Err(e) = self.sync.now(&self.dir) {
            return Err(self.fail(&self.dir.clone(), "fsync", e));
        }
        self.current = Some(Arc::new(SegmentFile {
            file,
            path,
            dirty: AtomicBool::new(false),
        }));
        self.len = 0;
        Ok(())
    }

    /// Refuses further appends after an error that leaves the files in doubt.
    fn fail(&mut self, path: &Path, what: &str, e: io::Error) -> Error {
        self.broken = Some(Error::Corrupt {
            path: path.to_path_buf(),
            message: format!(
                "embedded log: cannot {what} {} ({e}); its partition accepts no more records until the log is reopened",
                path.display()
            ),
        });
        io_error(what, path, e)
    }

    /// Writes one record's frame with a single write, then applies the fsync
    /// policy. On failure the file is cut back to its last whole frame; if
    /// that fails too, or fsync failed, the partition refuses further appends
    /// (its file can no longer be trusted to match what is in memory).
    pub(super) fn append(
        &mut self,
        key: Option<&[u8]>,
        value: &[u8],
        headers: Headers<'_>,
        timestamp: i64,
    ) -> Result<()> {
        self.check()?;
        if !frame_fits(key, value, headers) {
            return Err(Error::InvalidInput(
                "record key, value and headers together are 4 GiB or larger".into(),
            ));
        }
        let cur = self
            .current
            .as_ref()
            .expect("a segment file is open before the first append");
        self.frame.clear();
        encode_frame(&mut self.frame, key, value, headers, timestamp);
        let outcome = match (&cur.file).write_all(&self.frame) {
            Ok(()) => self.sync.written(cur).map_err(|e| (e, true)),
            Err(e) => Err((e, false)),
        };
        let result = match outcome {
            Ok(()) => {
                self.len += self.frame.len() as u64;
                Ok(())
            }
            Err((e, fsync_failed)) => {
                let undone = cur.file.set_len(self.len);
                let what = if fsync_failed { "fsync" } else { "write" };
                if fsync_failed || undone.is_err() {
                    let path = cur.path.clone();
                    Err(self.fail(&path, what, e))
                } else {
                    Err(io_error(what, &cur.path, e))
                }
            }
        };
        if self.frame.capacity() > KEEP_FRAME_BUFFER {
            self.frame = Vec::new();
        }
        result
    }
}

// ---------------------------------------------------------------------------
// Recovery

/// Cuts a damaged tail off the last segment of a partition.
pub(super) fn truncate_segment(sync: &Syncer, path: &Path, len: u64) -> Result<()> {
    let file = OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(|e| io_error("open", path, e))?;
    file.set_len(len)
        .map_err(|e| io_error("truncate", path, e))?;
    sync.now_file(&file).map_err(|e| io_error("fsync", path, e))
}
