//! Real servers for the connector tests: each test starts its own on a
//! free loopback port, in a directory of its own, and can restart it on the
//! same port to show that nothing is lost.
#![allow(dead_code)]

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A server process the test owns; killed when dropped.
pub struct Server {
    name: String,
    program: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
    pub port: u16,
    pub dir: PathBuf,
    child: Option<Child>,
    ready_timeout: Duration,
}

/// A port nothing listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A port held closed: bound to a socket that does not listen, so that a
/// connection to it is refused for as long as this lives, and no server
/// started meanwhile (by a test running alongside) can take it.
pub struct ClosedPort {
    fd: i32,
    pub port: u16,
}

impl ClosedPort {
    pub fn new() -> Self {
        // SAFETY: plain socket calls on a socket owned here, with a
        // zeroed sockaddr_in of the right size.
        unsafe {
            let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
            assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
            let mut addr: libc::sockaddr_in = std::mem::zeroed();
            addr.sin_family = libc::AF_INET as libc::sa_family_t;
            addr.sin_addr.s_addr = u32::from_ne_bytes([127, 0, 0, 1]);
            let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
            let bound = libc::bind(fd, &addr as *const _ as *const libc::sockaddr, len);
            assert_eq!(bound, 0, "bind: {}", std::io::Error::last_os_error());
            let mut len = len;
            libc::getsockname(fd, &mut addr as *mut _ as *mut libc::sockaddr, &mut len);
            Self {
                fd,
                port: u16::from_be(addr.sin_port),
            }
        }
    }
}

impl Drop for ClosedPort {
    fn drop(&mut self) {
        // SAFETY: the socket opened in `new`, closed once.
        unsafe { libc::close(self.fd) };
    }
}

/// A fresh directory under the target directory, named for the test.
pub fn scratch_dir(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "{name}-{}-{}",
        std::process::id(),
        fastrand_u32()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn fastrand_u32() -> u32 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    t.subsec_nanos()
}

/// Finds `program` on the PATH or in the sbin directories Debian uses;
/// panics with the package to install when it is missing (a missing
/// server fails the test rather than skipping it).
pub fn program(program: &str, package: &str) -> PathBuf {
    let path = std::env::var("PATH").unwrap_or_default();
    for dir in path.split(':').chain(["/usr/sbin", "/usr/bin", "/sbin"]) {
        let p = Path::new(dir).join(program);
        if p.is_file() {
            return p;
        }
    }
    panic!(
        "{program} not found: install the Debian package {package} (scripts/setup.sh --test does)"
    );
}

impl Server {
    /// A server to be started with `program args...`; `{port}` and `{dir}`
    /// in the arguments and environment are replaced by its port and
    /// directory.
    pub fn new(name: &str, program: PathBuf, args: &[&str], port: u16, dir: PathBuf) -> Self {
        Self {
            name: name.to_owned(),
            program,
            args: args.iter().map(|a| a.to_string()).collect(),
            env: Vec::new(),
            port,
            dir,
            child: None,
            ready_timeout: Duration::from_secs(30),
        }
    }

    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_owned(), value.to_owned()));
        self
    }

    /// How long start waits for the port to accept connections.
    pub fn ready_timeout(mut self, t: Duration) -> Self {
        self.ready_timeout = t;
        self
    }

    fn fill(&self, s: &str) -> String {
        s.replace("{port}", &self.port.to_string())
            .replace("{dir}", &self.dir.display().to_string())
    }

    /// Starts the server and waits until its port accepts connections.
    pub fn start(&mut self) -> &mut Self {
        assert!(self.child.is_none(), "{} is running already", self.name);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("server.log"))
            .unwrap();
        let mut cmd = Command::new(&self.program);
        cmd.args(self.args.iter().map(|a| self.fill(a)))
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        for (k, v) in &self.env {
            cmd.env(k, self.fill(v));
        }
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", self.name));
        self.child = Some(child);
        let deadline = Instant::now() + self.ready_timeout;
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!(
                    "{} exited with {status} before listening; its log:\n{}",
                    self.name,
                    self.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "{} not listening on {} after {:?}; its log:\n{}",
                self.name,
                self.port,
                self.ready_timeout,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        self
    }

    /// Kills the server (SIGKILL: no chance to flush anything it has not
    /// made durable already) and waits for it to exit.
    pub fn kill(&mut self) -> &mut Self {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        self
    }

    /// Stops the server with SIGTERM, as an orderly restart would.
    pub fn stop(&mut self) -> &mut Self {
        if let Some(mut c) = self.child.take() {
            unsafe_kill(c.id(), 15);
            let deadline = Instant::now() + Duration::from_secs(30);
            while c.try_wait().unwrap().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
        self
    }

    /// Stops and starts again on the same port and directory.
    pub fn restart(&mut self) -> &mut Self {
        self.stop();
        self.start()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
    }

    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

fn unsafe_kill(pid: u32, signal: i32) {
    let _ = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status();
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

#[path = "../../../riffle-net/tests/common/certs.rs"]
mod certs;
#[allow(unused_imports)]
pub use certs::Certs;
