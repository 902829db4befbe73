//! The data directory: topic and group metadata, segment writers, recovery
//! helpers and the fsync policy.
//!
//! Everything here runs under the log's lock, like the in-memory updates it
//! accompanies, so the files change in the same order as the state. The one
//! exception is the background fsync of [`FsyncPolicy::Interval`], which only
//! calls fsync on files written earlier.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex, PoisonError};
use std::thread;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::frame::{encode_frame, frame_fits};
use super::group::Offsets;
use super::lock::DirLock;
use super::storage::PartitionLog;
use crate::error::{Error, Result};
use crate::log::{validate_topic_name, Headers, TopicSpec};

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

/// Version of the directory layout and frame format, kept in `topic.json`.
/// Format 2 added record headers after the value of a frame; format 1
/// frames are format 2 frames without headers (see `frame`), so a format-1
/// topic is read as is and its `topic.json` rewritten as format 2 on open,
/// before any record with headers can be appended: a version of Riffle
/// that reads only format 1 then refuses the topic rather than taking
/// frames with headers for damage and cutting them off.
const FORMAT: u32 = 2;

/// The oldest format this version reads.
const OLDEST_FORMAT: u32 = 1;

/// Segment files are named by their base offset in this many digits.
const OFFSET_DIGITS: usize = 20;

// ---------------------------------------------------------------------------
// Errors and small file helpers

pub(super) fn io_error(what: &str, path: &Path, e: io::Error) -> Error {
    Error::Backend(format!(
        "embedded log: cannot {what} {}: {e}",
        path.display()
    ))
}

/// fsyncs a file or directory by path.
fn fsync_path(path: &Path) -> io::Result<()> {
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
    fn new(policy: FsyncPolicy) -> Self {
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
    fn written(&self, file: &Arc<SegmentFile>) -> io::Result<()> {
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
    fn before_rename(&self, file: &File) -> io::Result<()> {
        match self.policy {
            FsyncPolicy::Always => self.counted(file.sync_data()),
            _ => Ok(()),
        }
    }

    /// After `path` was renamed into `dir`.
    fn after_rename(&self, path: &Path, dir: &Path) -> io::Result<()> {
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
    fn now(&self, path: &Path) -> io::Result<()> {
        match self.policy {
            FsyncPolicy::Never => Ok(()),
            _ => self.counted(fsync_path(path)),
        }
    }

    fn now_file(&self, file: &File) -> io::Result<()> {
        match self.policy {
            FsyncPolicy::Never => Ok(()),
            _ => self.counted(file.sync_data()),
        }
    }

    /// fsyncs everything written since the last call (the `Interval` round).
    /// Failures are logged: nobody is waiting for this to report them.
    fn flush(&self) {
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
    broken: Option<String>,
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
            Some(why) => Err(Error::Backend(why.clone())),
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
        self.broken = Some(format!(
            "embedded log: cannot {what} {} ({e}); its partition accepts no more records until the log is reopened",
            path.display()
        ));
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
// Metadata files

#[derive(Serialize, Deserialize)]
struct TopicMeta {
    format: u32,
    /// Tells a topic from an earlier one of the same name, so that offsets
    /// committed for a deleted topic never apply to its successor.
    id: u64,
    partitions: i32,
    #[serde(default)]
    configs: BTreeMap<String, String>,
}

#[derive(Serialize, Deserialize)]
struct GroupMeta {
    group: String,
    topics: BTreeMap<String, GroupTopic>,
}

#[derive(Serialize, Deserialize)]
struct GroupTopic {
    /// The `id` of the topic the offsets were committed in.
    topic_id: u64,
    /// Partition -> next offset to consume.
    offsets: BTreeMap<i32, i64>,
}

/// A file name for a group: any string is a valid group id, so bytes other
/// than ASCII letters, digits, `-`, `_` and (not leading) `.` are written as
/// `%XX`. Over-long names keep a prefix and a hash of the whole name; the
/// file itself holds the name.
fn group_file_name(group: &str) -> String {
    let mut name = String::with_capacity(group.len() + 5);
    for (i, b) in group.bytes().enumerate() {
        if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || (b == b'.' && i > 0) {
            name.push(b as char);
        } else {
            name.push_str(&format!("%{b:02X}"));
        }
    }
    if name.len() > 200 {
        let hash = group.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
        let mut cut = 150;
        while !name.is_char_boundary(cut) {
            cut -= 1;
        }
        name = format!("{}~{hash:016x}", &name[..cut]);
    }
    name.push_str(".json");
    name
}

/// A topic as found on disk.
pub(super) struct LoadedTopic {
    pub(super) name: String,
    pub(super) id: u64,
    pub(super) partitions: Vec<PartitionLog>,
    pub(super) configs: Vec<(String, String)>,
}

/// What a data directory holds.
pub(super) struct Loaded {
    pub(super) topics: Vec<LoadedTopic>,
    /// Group -> topic -> partition -> committed offset, for topics that exist.
    pub(super) groups: Vec<(String, Offsets)>,
}

// ---------------------------------------------------------------------------
// The data directory

/// The background thread of `FsyncPolicy::Interval`.
struct Flusher {
    stop: mpsc::Sender<()>,
    thread: thread::JoinHandle<()>,
}

/// An open data directory. Dropping it fsyncs what is pending and releases
/// the lock; the log drops it after its partitions.
pub(super) struct Disk {
    root: PathBuf,
    sync: Arc<Syncer>,
    flusher: Option<Flusher>,
    _lock: DirLock,
}

impl Disk {
    /// Creates or opens `root`, takes its lock and loads what it holds.
    pub(super) fn open(root: &Path, policy: FsyncPolicy) -> Result<(Self, Loaded)> {
        let policy = match policy {
            FsyncPolicy::Interval(d) if d.is_zero() => FsyncPolicy::Always,
            p => p,
        };
        fs::create_dir_all(root).map_err(|e| io_error("create", root, e))?;
        let lock = DirLock::acquire(root)?;
        let sync = Arc::new(Syncer::new(policy));
        let mut disk = Self {
            root: root.to_owned(),
            sync,
            flusher: None,
            _lock: lock,
        };
        for dir in [disk.topics_dir(), disk.groups_dir()] {
            fs::create_dir_all(&dir).map_err(|e| io_error("create", &dir, e))?;
        }
        let topics = disk.load_topics()?;
        let ids: HashMap<&str, u64> = topics.iter().map(|t| (t.name.as_str(), t.id)).collect();
        let groups = disk.load_groups(&ids)?;
        if let FsyncPolicy::Interval(every) = policy {
            let (stop, stopped) = mpsc::channel::<()>();
            let sync = Arc::clone(&disk.sync);
            let thread = thread::Builder::new()
                .name("riffle-fsync".into())
                .spawn(move || {
                    while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(every) {
                        sync.flush();
                    }
                })
                .map_err(|e| Error::Backend(format!("cannot start the fsync thread: {e}")))?;
            disk.flusher = Some(Flusher { stop, thread });
        }
        Ok((disk, Loaded { topics, groups }))
    }

    pub(super) fn root(&self) -> &Path {
        &self.root
    }

    pub(super) fn syncer(&self) -> &Arc<Syncer> {
        &self.sync
    }

    fn topics_dir(&self) -> PathBuf {
        self.root.join("topics")
    }

    fn groups_dir(&self) -> PathBuf {
        self.root.join("groups")
    }

    fn topic_dir(&self, topic: &str) -> PathBuf {
        self.topics_dir().join(topic)
    }

    pub(super) fn partition_dir(&self, topic: &str, partition: usize) -> PathBuf {
        self.topic_dir(topic).join(partition.to_string())
    }

    /// Creates the directory of a new topic, atomically: it is built under a
    /// name no topic can have (`~` is not allowed in topic names) and renamed
    /// into place. Returns the topic's id.
    pub(super) fn create_topic(&self, spec: &TopicSpec) -> Result<u64> {
        let id = fastrand::u64(1..);
        let topics = self.topics_dir();
        let staging = topics.join(format!("{}~new", spec.name));
        let fail = |what: &str, path: &Path, e: io::Error| {
            let _ = fs::remove_dir_all(&staging);
            io_error(what, path, e)
        };
        match fs::remove_dir_all(&staging) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_error("remove", &staging, e)),
        }
        fs::create_dir(&staging).map_err(|e| fail("create", &staging, e))?;
        for p in 0..spec.partitions {
            let dir = staging.join(p.to_string());
            fs::create_dir(&dir).map_err(|e| fail("create", &dir, e))?;
        }
        let meta = TopicMeta {
            format: FORMAT,
            id,
            partitions: spec.partitions,
            configs: spec.configs.iter().cloned().collect(),
        };
        let json = serde_json::to_vec_pretty(&meta).expect("topic metadata serializes");
        let meta_path = staging.join("topic.json");
        let written = File::create(&meta_path)
            .and_then(|mut f| {
                f.write_all(&json)?;
                self.sync.now_file(&f)
            })
            .and_then(|()| self.sync.now(&staging));
        written.map_err(|e| fail("write", &meta_path, e))?;
        let target = self.topic_dir(&spec.name);
        fs::rename(&staging, &target).map_err(|e| fail("create", &target, e))?;
        self.sync
            .now(&topics)
            .map_err(|e| io_error("fsync", &topics, e))?;
        Ok(id)
    }

    /// Removes a topic's directory: renamed away atomically first, so that a
    /// crash part way leaves either the whole topic or none of it.
    pub(super) fn delete_topic(&self, name: &str, id: u64) -> Result<()> {
        let topics = self.topics_dir();
        let dir = self.topic_dir(name);
        let doomed = topics.join(format!("{name}~deleted-{id:016x}"));
        fs::rename(&dir, &doomed).map_err(|e| io_error("delete", &dir, e))?;
        self.sync
            .now(&topics)
            .map_err(|e| io_error("fsync", &topics, e))?;
        if let Err(e) = fs::remove_dir_all(&doomed) {
            // Harmless: it no longer counts, and the next open removes it.
            tracing::warn!(dir = %doomed.display(), error = %e, "embedded log: cannot remove a deleted topic's files");
        }
        Ok(())
    }

    /// Adds the directories of partitions `from..to` to a topic and then
    /// rewrites its `topic.json` with the new count (to a temporary file
    /// renamed over the old one). A crash before the rename leaves empty
    /// directories that the old count ignores and a later call reuses.
    pub(super) fn add_partitions(
        &self,
        name: &str,
        id: u64,
        from: usize,
        to: usize,
        configs: &[(String, String)],
    ) -> Result<()> {
        for p in from..to {
            let dir = self.partition_dir(name, p);
            fs::create_dir_all(&dir).map_err(|e| io_error("create", &dir, e))?;
        }
        let meta = TopicMeta {
            format: FORMAT,
            id,
            partitions: to as i32,
            configs: configs.iter().cloned().collect(),
        };
        let json = serde_json::to_vec_pretty(&meta).expect("topic metadata serializes");
        let dir = self.topic_dir(name);
        let path = dir.join("topic.json");
        let tmp = dir.join("topic.json.tmp");
        File::create(&tmp)
            .and_then(|mut f| {
                f.write_all(&json)?;
                self.sync.now_file(&f)
            })
            .map_err(|e| io_error("write", &tmp, e))?;
        fs::rename(&tmp, &path).map_err(|e| io_error("write", &path, e))?;
        self.sync.now(&dir).map_err(|e| io_error("fsync", &dir, e))
    }

    /// Removes a group's offsets file, if it has one.
    pub(super) fn delete_group(&self, group: &str) -> Result<()> {
        let dir = self.groups_dir();
        let path = dir.join(group_file_name(group));
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(io_error("remove", &path, e)),
        }
        self.sync.now(&dir).map_err(|e| io_error("fsync", &dir, e))
    }

    /// Replaces a group's offsets file: written to a temporary file, fsynced
    /// per policy, renamed over the old one. `topic_id` gives the id of each
    /// topic with offsets.
    pub(super) fn save_group(
        &self,
        group: &str,
        offsets: &Offsets,
        topic_id: impl Fn(&str) -> Option<u64>,
    ) -> Result<()> {
        let meta = GroupMeta {
            group: group.to_owned(),
            topics: offsets
                .iter()
                .filter_map(|(topic, offsets)| {
                    let entry = GroupTopic {
                        topic_id: topic_id(topic)?,
                        offsets: offsets.clone(),
                    };
                    Some((topic.clone(), entry))
                })
                .collect(),
        };
        let json = serde_json::to_vec_pretty(&meta).expect("group offsets serialize");
        let dir = self.groups_dir();
        let name = group_file_name(group);
        let path = dir.join(&name);
        let tmp = dir.join(format!("{name}.tmp"));
        File::create(&tmp)
            .and_then(|mut f| {
                f.write_all(&json)?;
                self.sync.before_rename(&f)
            })
            .map_err(|e| io_error("write", &tmp, e))?;
        fs::rename(&tmp, &path).map_err(|e| io_error("write", &path, e))?;
        self.sync
            .after_rename(&path, &dir)
            .map_err(|e| io_error("fsync", &dir, e))
    }

    /// Rewrites the `topic.json` of an older format as the current one
    /// (atomically: a temporary file renamed over it).
    fn upgrade_topic(&self, dir: &Path, old: &TopicMeta) -> Result<()> {
        let from = old.format;
        let meta = TopicMeta {
            format: FORMAT,
            id: old.id,
            partitions: old.partitions,
            configs: old.configs.clone(),
        };
        let json = serde_json::to_vec_pretty(&meta).expect("topic metadata serializes");
        let path = dir.join("topic.json");
        let tmp = dir.join("topic.json.tmp");
        File::create(&tmp)
            .and_then(|mut f| {
                f.write_all(&json)?;
                self.sync.now_file(&f)
            })
            .map_err(|e| io_error("write", &tmp, e))?;
        fs::rename(&tmp, &path).map_err(|e| io_error("write", &path, e))?;
        self.sync.now(dir).map_err(|e| io_error("fsync", dir, e))?;
        tracing::info!(dir = %dir.display(), from, to = FORMAT, "embedded log: topic upgraded to the current format");
        Ok(())
    }

    fn load_topics(&self) -> Result<Vec<LoadedTopic>> {
        let topics_dir = self.topics_dir();
        let mut topics = Vec::new();
        for entry in fs::read_dir(&topics_dir).map_err(|e| io_error("read", &topics_dir, e))? {
            let entry = entry.map_err(|e| io_error("read", &topics_dir, e))?;
            let path = entry.path();
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                tracing::warn!(path = %path.display(), "embedded log: ignoring an unexpected entry");
                continue;
            };
            if !path.is_dir() {
                continue;
            }
            if name.contains('~') {
                // Left by a creation or deletion that was interrupted.
                tracing::info!(dir = %path.display(), "embedded log: removing an unfinished topic directory");
                fs::remove_dir_all(&path).map_err(|e| io_error("remove", &path, e))?;
                continue;
            }
            if validate_topic_name(&name).is_err() {
                tracing::warn!(path = %path.display(), "embedded log: ignoring a directory that is not a topic");
                continue;
            }
            let meta_path = path.join("topic.json");
            let bytes = fs::read(&meta_path).map_err(|e| io_error("read", &meta_path, e))?;
            let meta: TopicMeta = serde_json::from_slice(&bytes).map_err(|e| {
                Error::Backend(format!(
                    "embedded log: {} is not valid topic metadata: {e}",
                    meta_path.display()
                ))
            })?;
            if !(OLDEST_FORMAT..=FORMAT).contains(&meta.format) || meta.partitions < 1 {
                return Err(Error::Backend(format!(
                    "embedded log: {} has format {} and {} partitions; this version reads formats {OLDEST_FORMAT} to {FORMAT}",
                    meta_path.display(),
                    meta.format,
                    meta.partitions
                )));
            }
            if meta.format < FORMAT {
                self.upgrade_topic(&path, &meta)?;
            }
            let partitions = (0..meta.partitions as usize)
                .map(|p| {
                    PartitionLog::recover(self.partition_dir(&name, p), Arc::clone(&self.sync))
                })
                .collect::<Result<Vec<_>>>()?;
            topics.push(LoadedTopic {
                name,
                id: meta.id,
                partitions,
                configs: meta.configs.into_iter().collect(),
            });
        }
        Ok(topics)
    }

    fn load_groups(&self, topic_ids: &HashMap<&str, u64>) -> Result<Vec<(String, Offsets)>> {
        let dir = self.groups_dir();
        let mut groups = Vec::new();
        for entry in fs::read_dir(&dir).map_err(|e| io_error("read", &dir, e))? {
            let entry = entry.map_err(|e| io_error("read", &dir, e))?;
            let path = entry.path();
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.ends_with(".json.tmp") {
                // A commit interrupted before its rename; the old file stands.
                fs::remove_file(&path).map_err(|e| io_error("remove", &path, e))?;
                continue;
            }
            if !name.ends_with(".json") {
                continue;
            }
            let bytes = fs::read(&path).map_err(|e| io_error("read", &path, e))?;
            let meta: GroupMeta = serde_json::from_slice(&bytes).map_err(|e| {
                Error::Backend(format!(
                    "embedded log: {} is not valid group offsets ({e}); delete it to forget the group's offsets",
                    path.display()
                ))
            })?;
            let offsets = meta
                .topics
                .into_iter()
                .filter(|(topic, t)| topic_ids.get(topic.as_str()) == Some(&t.topic_id))
                .map(|(topic, t)| (topic, t.offsets))
                .collect();
            groups.push((meta.group, offsets));
        }
        Ok(groups)
    }
}

impl Drop for Disk {
    fn drop(&mut self) {
        if let Some(flusher) = self.flusher.take() {
            drop(flusher.stop);
            let _ = flusher.thread.join();
        }
        self.sync.flush();
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_file_names_are_safe_and_distinct() {
        assert_eq!(group_file_name("orders-v1.2"), "orders-v1.2.json");
        assert_eq!(group_file_name(".."), "%2E..json");
        assert_eq!(group_file_name("a/b c"), "a%2Fb%20c.json");
        assert_ne!(group_file_name("a%2F"), group_file_name("a/"));
        let long = group_file_name(&"é".repeat(300));
        assert!(long.len() < 200 && long.ends_with(".json"), "{long}");
        assert_ne!(long, group_file_name(&"é".repeat(301)));
    }
}
