//! The data directory: topic and group metadata, and the partitions
//! recovered from it (segment files themselves are in `segment`).
//!
//! Everything here runs under the log's lock, like the in-memory updates it
//! accompanies, so the files change in the same order as the state. The one
//! exception is the background fsync of [`FsyncPolicy::Interval`](super::FsyncPolicy::Interval), which only
//! calls fsync on files written earlier.

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc};
use std::thread;

use serde::{Deserialize, Serialize};

use super::group::Offsets;
use super::lock::DirLock;
use super::segment::{io_error, FsyncPolicy, Syncer};
use super::storage::PartitionLog;
use crate::error::{Error, Result};
use crate::{validate_topic_name, TopicSpec};

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
                .map_err(|e| Error::io("cannot start the fsync thread", &e))?;
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
            let meta: TopicMeta = serde_json::from_slice(&bytes).map_err(|e| Error::Corrupt {
                message: format!(
                    "embedded log: {} is not valid topic metadata: {e}",
                    meta_path.display()
                ),
                path: meta_path.clone(),
            })?;
            if !(OLDEST_FORMAT..=FORMAT).contains(&meta.format) || meta.partitions < 1 {
                return Err(Error::Corrupt {
                    message: format!(
                        "embedded log: {} has format {} and {} partitions; this version reads formats {OLDEST_FORMAT} to {FORMAT}",
                        meta_path.display(),
                        meta.format,
                        meta.partitions
                    ),
                    path: meta_path,
                });
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
                Error::Corrupt {
                    message: format!(
                        "embedded log: {} is not valid group offsets ({e}); delete it to forget the group's offsets",
                        path.display()
                    ),
                    path: path.clone(),
                }
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
