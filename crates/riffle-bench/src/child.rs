//! A system under test as a child process, with its CPU time and peak RSS.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::kafka::Result;

pub struct Child {
    pid: i32,
    stdout: Option<std::process::ChildStdout>,
    reaped: bool,
}

/// How a child ended.
pub struct Exit {
    pub status: i32,
    /// User + system CPU seconds of the whole process.
    pub cpu_s: f64,
    pub stdout: String,
}

impl Child {
    pub fn spawn(argv: &[String], capture_stdout: bool) -> Result<Child> {
        let (program, args) = argv.split_first().ok_or("empty command line")?;
        let child = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(if capture_stdout {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("cannot start {program}: {e}"))?;
        let pid = child.id() as i32;
        let mut child = child;
        Ok(Child {
            pid,
            stdout: child.stdout.take(),
            reaped: false,
        })
    }

    /// Peak resident set size so far, bytes.
    pub fn peak_rss(&self) -> Option<u64> {
        peak_rss(self.pid)
    }

    /// User + system CPU seconds so far, from `/proc/PID/stat`.
    pub fn cpu_seconds(&self) -> Option<f64> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid)).ok()?;
        let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
        let utime: f64 = fields.get(11)?.parse().ok()?;
        let stime: f64 = fields.get(12)?.parse().ok()?;
        // SAFETY: sysconf has no preconditions.
        let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
        Some((utime + stime) / ticks)
    }

    fn wait4(&mut self, block: bool) -> Option<Exit> {
        if self.reaped {
            return None;
        }
        let mut status = 0;
        // SAFETY: wait4 fills the status and the rusage it is given.
        let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
        let flags = if block { 0 } else { libc::WNOHANG };
        let r = unsafe { libc::wait4(self.pid, &mut status, flags, &mut ru) };
        if r != self.pid {
            return None;
        }
        self.reaped = true;
        let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
        let mut stdout = String::new();
        if let Some(mut out) = self.stdout.take() {
            use std::io::Read;
            let _ = out.read_to_string(&mut stdout);
        }
        Some(Exit {
            status: if libc::WIFEXITED(status) {
                libc::WEXITSTATUS(status)
            } else {
                128 + libc::WTERMSIG(status)
            },
            cpu_s: tv(ru.ru_utime) + tv(ru.ru_stime),
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

    /// SIGTERM, then up to `grace` for a clean stop, then SIGKILL.
    pub fn stop(&mut self, grace: Duration) -> Exit {
        // SAFETY: signals our own, not yet reaped, child.
        unsafe { libc::kill(self.pid, libc::SIGTERM) };
        if let Ok(exit) = self.wait(grace) {
            return exit;
        }
        eprintln!("  (no clean stop within {} s: killed)", grace.as_secs());
        unsafe { libc::kill(self.pid, libc::SIGKILL) };
        self.wait4(true).expect("a killed child is reaped")
    }
}

/// Peak resident set size of a process, bytes: `VmHWM` of
/// `/proc/PID/status`. (The `ru_maxrss` that `wait4` reports would not do:
/// Linux carries it over from the parent's memory across `fork` and `exec`.)
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

impl Drop for Child {
    fn drop(&mut self) {
        if !self.reaped {
            // SAFETY: our own child, not yet reaped.
            unsafe { libc::kill(self.pid, libc::SIGKILL) };
            self.wait4(true);
        }
    }
}
