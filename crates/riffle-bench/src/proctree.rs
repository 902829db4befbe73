//! CPU time and resident memory of a process and all its descendants, read
//! from `/proc`.
//!
//! A system under test is not always one process: Ray starts `gcs_server`,
//! `raylet` and worker processes under the Python driver, and those do the
//! work. Measuring only the child we spawned would leave them out, so the
//! figures here cover the whole tree.
//!
//! - Descendants are found by scanning `/proc/*/stat` for parent ids. A
//!   process once seen stays tracked (by pid and start time, so a reused pid
//!   is not mistaken for it) even if it is re-parented out of the tree.
//! - CPU: the sum over live tracked processes of `utime + stime + cutime +
//!   cstime`. A process that exits and is reaped by its parent moves its time
//!   into the parent's `cutime`/`cstime`, so the sum does not drop; a
//!   process reaped outside the tree would make it drop, which is why the
//!   largest sum seen is kept.
//! - Memory: the sum of resident set sizes (`/proc/PID/statm`, the same
//!   figure as `VmRSS`) over the tree at one sample; the peak is the largest
//!   sum over samples, so it is only as fine as the sampling.

use std::collections::HashMap;

/// One process's line of `/proc/PID/stat`, the fields used here.
struct Stat {
    ppid: i32,
    /// utime + stime + cutime + cstime, clock ticks.
    ticks: u64,
    /// Start time after boot, clock ticks: with the pid, identifies a process.
    start: u64,
}

fn read_stat(pid: i32) -> Option<Stat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name, in parentheses, may contain spaces: split after it.
    let fields: Vec<&str> = text.rsplit_once(')')?.1.split_whitespace().collect();
    // Field numbers of proc(5), minus 3 (pid, comm and the split).
    let at = |n: usize| -> Option<u64> { fields.get(n - 3)?.parse().ok() };
    Some(Stat {
        ppid: fields.get(1)?.parse().ok()?,
        ticks: at(14)? + at(15)? + at(16)? + at(17)?,
        start: at(22)?,
    })
}

fn rss_bytes(pid: i32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/statm")).ok()?;
    let pages: u64 = text.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * page_size())
}

fn page_size() -> u64 {
    // SAFETY: sysconf has no preconditions.
    unsafe { libc::sysconf(libc::_SC_PAGESIZE) as u64 }
}

fn ticks_per_second() -> f64 {
    // SAFETY: sysconf has no preconditions.
    unsafe { libc::sysconf(libc::_SC_CLK_TCK) as f64 }
}

/// One measurement of the tree.
#[derive(Clone, Copy, Debug, Default)]
pub struct Sample {
    /// CPU seconds of the tree so far (the largest sum seen).
    pub cpu_s: f64,
    /// Resident bytes of the tree now.
    pub rss_bytes: u64,
    /// Live processes in the tree now.
    pub processes: usize,
}

/// The process tree under one root, sampled on demand.
pub struct ProcTree {
    root: i32,
    /// Tracked processes: pid -> start time.
    members: HashMap<i32, u64>,
    max_ticks: u64,
    peak_rss: u64,
}

impl ProcTree {
    pub fn new(root: i32) -> Self {
        Self {
            root,
            members: HashMap::new(),
            max_ticks: 0,
            peak_rss: 0,
        }
    }

    /// Scans `/proc` for the tree's processes and measures them.
    pub fn sample(&mut self) -> Sample {
        let all: HashMap<i32, Stat> = std::fs::read_dir("/proc")
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
            .filter_map(|pid| Some((pid, read_stat(pid)?)))
            .collect();
        // Forget tracked processes that are gone (or whose pid was reused).
        self.members
            .retain(|pid, start| all.get(pid).is_some_and(|s| s.start == *start));
        if let Some(s) = all.get(&self.root) {
            self.members.insert(self.root, s.start);
        }
        // Add descendants until no process has a tracked parent left out.
        loop {
            let new: Vec<(i32, u64)> = all
                .iter()
                .filter(|(pid, s)| {
                    !self.members.contains_key(pid) && self.members.contains_key(&s.ppid)
                })
                .map(|(&pid, s)| (pid, s.start))
                .collect();
            if new.is_empty() {
                break;
            }
            self.members.extend(new);
        }
        let ticks: u64 = self.members.keys().map(|pid| all[pid].ticks).sum();
        let rss: u64 = self.members.keys().filter_map(|&pid| rss_bytes(pid)).sum();
        self.max_ticks = self.max_ticks.max(ticks);
        self.peak_rss = self.peak_rss.max(rss);
        Sample {
            cpu_s: self.max_ticks as f64 / ticks_per_second(),
            rss_bytes: rss,
            processes: self.members.len(),
        }
    }

    /// The largest resident size of the tree over all samples, bytes.
    pub fn peak_rss(&self) -> u64 {
        self.peak_rss
    }

    /// The pids tracked at the last sample (the root included, if alive).
    pub fn pids(&self) -> Vec<i32> {
        self.members.keys().copied().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shell_and_its_children_are_one_tree() {
        // A shell that starts two busy children and waits for them.
        let mut child = std::process::Command::new("sh")
            .args(["-c", "(while :; do :; done) & (while :; do :; done) & wait"])
            .spawn()
            .unwrap();
        let mut tree = ProcTree::new(child.id() as i32);
        std::thread::sleep(std::time::Duration::from_millis(300));
        let s = tree.sample();
        assert!(s.processes >= 3, "{s:?}");
        assert!(s.rss_bytes > 0);
        for pid in tree.pids() {
            // SAFETY: the processes of the tree started above.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        child.wait().unwrap();
        // CPU is never seen to go down.
        assert!(tree.sample().cpu_s >= s.cpu_s);
    }
}
