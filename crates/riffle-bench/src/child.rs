//! A system under test as a child process: its stderr forwarded line by
//! line under its name, the moment it says it is ready, and the CPU time and
//! memory of its whole process tree ([`ProcTree`]).

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::kafka::Result;
use crate::proctree::{ProcTree, Sample};

pub struct Child {
    name: String,
    pid: i32,
    stdout: Option<std::process::ChildStdout>,
    reaped: bool,
    /// When the ready line appeared on stderr.
    ready_at: Arc<Mutex<Option<Instant>>>,
    tree: ProcTree,
}

/// How a child ended.
pub struct Exit {
    pub status: i32,
    pub stdout: String,
}

impl Child {
    /// Starts `argv`. Its stderr goes to ours, each line prefixed with
    /// `[name]`; `ready` is a substring of the line the system prints once
    /// it is ready (see [`Child::ready_at`]).
    pub fn spawn(
        name: &str,
        argv: &[String],
        capture_stdout: bool,
        ready: Option<&'static str>,
    ) -> Result<Child> {
        let (program, args) = argv.split_first().ok_or("empty command line")?;
        let mut child = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(if capture_stdout {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start {program}: {e}"))?;
        let pid = child.id() as i32;
        let ready_at = Arc::new(Mutex::new(None));
        let stderr = child.stderr.take().expect("stderr is piped");
        forward_stderr(name.to_string(), stderr, ready, ready_at.clone());
        Ok(Child {
            name: name.to_string(),
            pid,
            stdout: child.stdout.take(),
            reaped: false,
            ready_at,
            tree: ProcTree::new(pid),
        })
    }

    /// When the child printed its ready line, if it has.
    pub fn ready_at(&self) -> Option<Instant> {
        *self.ready_at.lock().unwrap()
    }

    /// Measures the process tree now.
    pub fn sample(&mut self) -> Sample {
        self.tree.sample()
    }

    /// The tree's peak resident size over all samples so far, bytes.
    pub fn peak_rss(&self) -> u64 {
        self.tree.peak_rss()
    }

    fn wait4(&mut self, block: bool) -> Option<Exit> {
        if self.reaped {
            return None;
        }
        let mut status = 0;
        let flags = if block { 0 } else { libc::WNOHANG };
        // SAFETY: waits for our own child; a null rusage is allowed.
        let r = unsafe { libc::wait4(self.pid, &mut status, flags, std::ptr::null_mut()) };
        if r != self.pid {
            return None;
        }
        self.reaped = true;
        let mut stdout = String::new();
        if let Some(mut out) = self.stdout.take() {
            let _ = out.read_to_string(&mut stdout);
        }
        Some(Exit {
            status: if libc::WIFEXITED(status) {
                libc::WEXITSTATUS(status)
            } else {
                128 + libc::WTERMSIG(status)
            },
            stdout,
        })
    }

    /// The exit, if the child has ended.
    pub fn try_exit(&mut self) -> Option<Exit> {
        self.wait4(false)
    }

    /// Waits up to `limit` for the child to end by itself.
    pub fn wait(&mut self, limit: Duration) -> Result<Exit> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Some(exit) = self.wait4(false) {
                return Ok(exit);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Err(format!("did not end within {} s", limit.as_secs()))
    }

    /// SIGTERM, then up to `grace` for a clean stop, then SIGKILL. Either
    /// way, descendants still alive afterwards are killed.
    pub fn stop(&mut self, grace: Duration) -> Exit {
        // Know the whole tree before the root goes, so that what it leaves
        // behind can be found.
        self.tree.sample();
        // SAFETY: signals our own, not yet reaped, child.
        unsafe { libc::kill(self.pid, libc::SIGTERM) };
        let exit = match self.wait(grace) {
            Ok(exit) => exit,
            Err(_) => {
                eprintln!(
                    "  [{}] no clean stop within {} s: killed",
                    self.name,
                    grace.as_secs()
                );
                // SAFETY: our own child, not yet reaped.
                unsafe { libc::kill(self.pid, libc::SIGKILL) };
                self.wait4(true).expect("a killed child is reaped")
            }
        };
        let left = self.kill_descendants();
        if left > 0 {
            eprintln!(
                "  [{}] {left} descendant processes outlived it: killed",
                self.name
            );
        }
        exit
    }

    /// SIGKILLs the tracked processes of the tree other than the root;
    /// returns how many there were.
    fn kill_descendants(&mut self) -> usize {
        self.tree.sample();
        let left: Vec<i32> = self
            .tree
            .pids()
            .into_iter()
            .filter(|&p| p != self.pid)
            .collect();
        for &pid in &left {
            // SAFETY: a process of the tree we started, seen alive (with the
            // same start time) just now.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        left.len()
    }
}

/// Copies the child's stderr to ours, a line at a time under its name, and
/// notes when a line containing `ready` first appears. The thread ends when
/// every holder of the pipe (descendants too) has closed it.
fn forward_stderr(
    name: String,
    stderr: std::process::ChildStderr,
    ready: Option<&'static str>,
    ready_at: Arc<Mutex<Option<Instant>>>,
) {
    std::thread::spawn(move || {
        let mut reader = BufReader::new(stderr);
        let mut line = Vec::new();
        loop {
            line.clear();
            match reader.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
            let text = String::from_utf8_lossy(&line);
            let text = text.trim_end();
            if let Some(r) = ready {
                let mut at = ready_at.lock().unwrap();
                if at.is_none() && text.contains(r) {
                    *at = Some(Instant::now());
                }
            }
            let _ = writeln!(std::io::stderr().lock(), "  [{name}] {text}");
        }
    });
}

impl Drop for Child {
    fn drop(&mut self) {
        if !self.reaped {
            self.tree.sample();
            // SAFETY: our own child, not yet reaped.
            unsafe { libc::kill(self.pid, libc::SIGKILL) };
            self.wait4(true);
            self.kill_descendants();
        }
    }
}

/// Peak resident set size of one process, bytes: `VmHWM` of
/// `/proc/PID/status`. Only for a single process measuring itself (the
/// in-process worker); a child's figure is its tree's, from [`ProcTree`].
/// (The `ru_maxrss` that `wait4` reports would not do: Linux carries it over
/// from the parent's memory across `fork` and `exec`.)
pub fn peak_rss(pid: i32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kb * 1024)
}
