//! `<dir>/LOCK`: one opener of a data directory at a time.
//!
//! The lock file is created exclusively and holds the opener's pid. A lock
//! whose process is gone is stale and taken over. There is a window in which
//! two processes that both find the same stale lock could both take it over;
//! opening a data directory is rare enough, and a crash that leaves a stale
//! lock rarer still, to accept that.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use super::segment::io_error;
use crate::error::{Error, Result};

/// Data directories opened by this process, so that a lock file holding this
/// process's pid can be told from a stale one left by an earlier process that
/// had the same pid (common in containers).
static OPEN_DIRS: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

/// `<dir>/LOCK`, held while the log is open.
pub(super) struct DirLock {
    path: PathBuf,
    canonical: PathBuf,
}

impl DirLock {
    pub(super) fn acquire(dir: &Path) -> Result<Self> {
        let canonical = fs::canonicalize(dir).map_err(|e| io_error("resolve", dir, e))?;
        let path = dir.join("LOCK");
        let in_use = || Error::Locked {
            dir: dir.to_path_buf(),
        };
        let mut open_dirs = OPEN_DIRS.lock().unwrap_or_else(PoisonError::into_inner);
        if open_dirs.contains(&canonical) {
            return Err(in_use());
        }
        for _ in 0..3 {
            match OpenOptions::new().write(true).create_new(true).open(&path) {
                Ok(mut f) => {
                    if let Err(e) = f.write_all(format!("{}\n", std::process::id()).as_bytes()) {
                        let _ = fs::remove_file(&path);
                        return Err(io_error("write", &path, e));
                    }
                    open_dirs.push(canonical.clone());
                    return Ok(Self { path, canonical });
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(io_error("create", &path, e)),
            }
            let holder = match fs::read_to_string(&path) {
                Ok(s) => s,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io_error("read", &path, e)),
            };
            if !lock_is_stale(&path, holder.trim()) {
                return Err(in_use());
            }
            tracing::warn!(lock = %path.display(), holder = %holder.trim(),
                "embedded log: removing a stale lock left by a process that is gone");
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_error("remove", &path, e)),
            }
        }
        Err(in_use())
    }
}

/// Whether the lock's holder is gone. This process holds no lock it has not
/// registered in `OPEN_DIRS` (checked before), so its own pid is stale. A lock
/// without a readable pid is stale once it is a few seconds old (its creator
/// writes the pid right after creating it).
fn lock_is_stale(path: &Path, holder: &str) -> bool {
    match holder.parse::<u32>() {
        Ok(pid) if pid == std::process::id() => true,
        Ok(pid) => {
            // Without /proc we cannot tell, and must assume it is alive.
            Path::new("/proc/self").exists() && !Path::new(&format!("/proc/{pid}")).exists()
        }
        Err(_) => fs::metadata(path)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| SystemTime::now().duration_since(t).ok())
            .is_some_and(|age| age > Duration::from_secs(5)),
    }
}

impl Drop for DirLock {
    fn drop(&mut self) {
        if let Err(e) = fs::remove_file(&self.path) {
            tracing::warn!(lock = %self.path.display(), error = %e, "embedded log: cannot remove lock");
        }
        let mut open_dirs = OPEN_DIRS.lock().unwrap_or_else(PoisonError::into_inner);
        open_dirs.retain(|d| *d != self.canonical);
    }
}
