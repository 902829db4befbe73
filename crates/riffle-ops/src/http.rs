//! A minimal HTTP/1.1 server and client on `std::net`, for the operations
//! endpoints: a few small requests a second from a scraper, a dashboard or a
//! peer process. One thread per connection, one request per connection
//! (`Connection: close`), so there is nothing to tune and nothing to pool.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use riffle_base::error::{Error, Result};

/// How long a client may take to send its request.
const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// The largest request head accepted.
const MAX_HEAD: usize = 16 * 1024;

/// A parsed request: method, decoded path, query parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    /// The path, percent-decoded, without the query.
    pub path: String,
    pub query: Vec<(String, String)>,
}

impl Request {
    /// The first value of query parameter `name`.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// What a handler answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Vec<u8>,
}

impl Response {
    pub fn new(status: u16, content_type: &'static str, body: impl Into<Vec<u8>>) -> Self {
        Self {
            status,
            content_type,
            body: body.into(),
        }
    }

    pub fn text(status: u16, body: impl Into<String>) -> Self {
        Self::new(status, "text/plain; charset=utf-8", body.into())
    }

    pub fn json(status: u16, body: impl Into<String>) -> Self {
        Self::new(status, "application/json", body.into())
    }

    pub fn not_found() -> Self {
        Self::text(404, "not found\n")
    }
}

/// Answers requests; called on the connection's thread.
pub type Routes = Arc<dyn Fn(&Request) -> Response + Send + Sync>;

/// A running server; stops when dropped.
pub struct HttpServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl HttpServer {
    /// Listens on `bind` (`127.0.0.1:9464`; port 0 picks a free one) and
    /// answers every request with `routes`.
    pub fn start(bind: &str, routes: Routes) -> Result<Self> {
        let listener = TcpListener::bind(bind)
            .map_err(|e| Error::InvalidInput(format!("cannot listen on {bind}: {e}")))?;
        let addr = listener
            .local_addr()
            .map_err(|e| Error::io(format!("listening on {bind}"), &e))?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name(format!("http-{}", addr.port()))
            .spawn(move || {
                for conn in listener.incoming() {
                    if flag.load(Ordering::Acquire) {
                        break;
                    }
                    let Ok(conn) = conn else { continue };
                    let routes = routes.clone();
                    let _ = std::thread::Builder::new()
                        .name("http-conn".into())
                        .spawn(move || serve(conn, &*routes));
                }
            })
            .map_err(|e| Error::io("cannot start the HTTP thread", &e))?;
        Ok(Self {
            addr,
            stop,
            thread: Some(thread),
        })
    }

    /// Where it listens (with the port chosen, if 0 was asked).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        // Wakes the blocking accept.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve(mut conn: TcpStream, routes: &(dyn Fn(&Request) -> Response + Send + Sync)) {
    let _ = conn.set_read_timeout(Some(READ_TIMEOUT));
    let response = match read_request(&conn) {
        Ok(req) => routes(&req),
        Err(e) => Response::text(400, format!("{e}\n")),
    };
    let reason = match response.status {
        200 => "OK",
        204 => "No Content",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        _ => "Status",
    };
    let head = format!(
        "HTTP/1.1 {} {reason}\r\nContent-Type: {}\r\nContent-Length: {}\r\n\
         Cache-Control: no-store\r\nConnection: close\r\n\r\n",
        response.status,
        response.content_type,
        response.body.len()
    );
    let _ = conn
        .write_all(head.as_bytes())
        .and_then(|()| conn.write_all(&response.body));
}

fn read_request(conn: &TcpStream) -> Result<Request> {
    let mut reader = BufReader::new(conn.take(MAX_HEAD as u64));
    let mut line = String::new();
    reader
        .read_line(&mut line)
        .map_err(|e| Error::InvalidInput(format!("reading the request: {e}")))?;
    let mut parts = line.split_whitespace();
    let (Some(method), Some(target)) = (parts.next(), parts.next()) else {
        return Err(Error::InvalidInput("malformed request line".into()));
    };
    // The headers are read and ignored: every answer closes the connection.
    loop {
        let mut h = String::new();
        match reader.read_line(&mut h) {
            Ok(0) => break,
            Ok(_) if h == "\r\n" || h == "\n" => break,
            Ok(_) => {}
            Err(e) => return Err(Error::InvalidInput(format!("reading the headers: {e}"))),
        }
    }
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    Ok(Request {
        method: method.to_owned(),
        path: decode(path),
        query: query
            .split('&')
            .filter(|p| !p.is_empty())
            .map(|p| {
                let (k, v) = p.split_once('=').unwrap_or((p, ""));
                (decode(k), decode(&v.replace('+', " ")))
            })
            .collect(),
    })
}

/// Percent-decoding; malformed escapes are kept as they are.
pub fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        if b[i] == b'%' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Percent-encoding of a path segment.
pub fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `GET http://{addr}{path}`: the status and the body. For asking a peer
/// process; fails within `timeout` when it does not answer.
pub fn get(addr: &str, path: &str, timeout: Duration) -> Result<(u16, Vec<u8>)> {
    let unreachable = |e: std::io::Error| Error::Connect {
        server: addr.to_owned(),
        detail: e.to_string(),
    };
    let target = addr
        .to_socket_addrs()
        .map_err(unreachable)?
        .next()
        .ok_or_else(|| unreachable(std::io::ErrorKind::NotFound.into()))?;
    let mut conn = TcpStream::connect_timeout(&target, timeout).map_err(unreachable)?;
    conn.set_read_timeout(Some(timeout)).map_err(unreachable)?;
    conn.set_write_timeout(Some(timeout)).map_err(unreachable)?;
    write!(
        conn,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .map_err(unreachable)?;
    let mut raw = Vec::new();
    conn.read_to_end(&mut raw).map_err(unreachable)?;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| unreachable(std::io::ErrorKind::InvalidData.into()))?;
    let head = String::from_utf8_lossy(&raw[..split]);
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| unreachable(std::io::ErrorKind::InvalidData.into()))?;
    Ok((status, raw[split + 4..].to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serves_routes_and_decodes_paths_and_queries() {
        let routes: Routes = Arc::new(|r: &Request| match r.path.as_str() {
            "/echo" => Response::text(200, format!("{}|{:?}", r.method, r.param("k"))),
            p if p.starts_with("/key/") => Response::json(200, format!("\"{}\"", &p[5..])),
            _ => Response::not_found(),
        });
        let server = HttpServer::start("127.0.0.1:0", routes).unwrap();
        let addr = server.addr().to_string();
        let t = Duration::from_secs(5);
        let (s, body) = get(&addr, "/echo?k=a%20b+c&x=1", t).unwrap();
        assert_eq!((s, body.as_slice()), (200, &b"GET|Some(\"a b c\")"[..]));
        let (s, body) = get(&addr, &format!("/key/{}", encode("heater 7/é")), t).unwrap();
        assert_eq!(s, 200);
        assert_eq!(String::from_utf8(body).unwrap(), "\"heater 7/é\"");
        assert_eq!(get(&addr, "/nothing", t).unwrap().0, 404);
        drop(server);
        assert!(matches!(get(&addr, "/echo", t), Err(Error::Connect { .. })));
    }

    #[test]
    fn malformed_escapes_are_kept() {
        assert_eq!(decode("a%2"), "a%2");
        assert_eq!(decode("%zz%41"), "%zzA");
        assert_eq!(decode("%41"), "A");
    }
}
