//! What every network connector needs: addresses from URLs, connecting
//! within a deadline that names the server on failure, and backoff between
//! reconnection attempts.

use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use riffle::{Error, Result};

/// How long connecting to a server may take before it is reported
/// unreachable.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The parts of `scheme://[user[:password]@]host[:port][/path]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Url {
    pub scheme: String,
    pub user: Option<String>,
    pub password: Option<String>,
    pub host: String,
    pub port: u16,
    /// From the first `/` after the authority, `/` when absent.
    pub path: String,
}

impl Url {
    /// Parses `text`, with `default_port` when it has none. Schemes are
    /// the caller's to check.
    pub fn parse(text: &str, default_port: u16) -> Result<Self> {
        let bad = |why: &str| Error::InvalidInput(format!("URL '{text}': {why}"));
        let (scheme, rest) = text
            .split_once("://")
            .ok_or_else(|| bad("expected scheme://host[:port]"))?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let (userinfo, hostport) = match authority.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, authority),
        };
        let (user, password) = match userinfo {
            None => (None, None),
            Some(u) => match u.split_once(':') {
                Some((u, p)) => (Some(u.to_owned()), Some(p.to_owned())),
                None => (Some(u.to_owned()), None),
            },
        };
        let (host, port) = match hostport.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || hostport.starts_with('[') => (
                h,
                p.parse::<u16>()
                    .map_err(|_| bad("the port is not a number"))?,
            ),
            _ => (hostport, default_port),
        };
        if host.is_empty() {
            return Err(bad("no host"));
        }
        Ok(Self {
            scheme: scheme.to_ascii_lowercase(),
            user,
            password,
            host: host.to_owned(),
            port,
            path: path.to_owned(),
        })
    }

    /// `host:port`, for connecting and for messages.
    pub fn address(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

/// Connects to `address` (`host:port`) within [`CONNECT_TIMEOUT`], trying
/// every address the name resolves to. `server` names the kind of server
/// for the error, e.g. `MQTT broker`: "cannot reach MQTT broker at
/// 127.0.0.1:1884: connection refused".
pub fn connect(server: &str, address: &str) -> Result<TcpStream> {
    let unreachable = |detail: String| Error::Connect {
        server: format!("{server} at {address}"),
        detail,
    };
    let deadline = Instant::now() + CONNECT_TIMEOUT;
    let addrs = address
        .to_socket_addrs()
        .map_err(|e| unreachable(format!("cannot resolve: {e}")))?;
    let mut last = "no address".to_owned();
    for addr in addrs {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        match TcpStream::connect_timeout(&addr, left) {
            Ok(s) => {
                s.set_nodelay(true).ok();
                return Ok(s);
            }
            Err(e) => last = e.to_string(),
        }
    }
    Err(unreachable(last))
}

/// Reconnects wait as every retry loop of Riffle does.
pub use riffle::backoff::Backoff;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse() {
        let u = Url::parse("mqtt://u:p@broker:1884/x/y", 1883).unwrap();
        assert_eq!(
            (u.scheme.as_str(), u.user.as_deref(), u.password.as_deref()),
            ("mqtt", Some("u"), Some("p"))
        );
        assert_eq!(
            (u.address().as_str(), u.path.as_str()),
            ("broker:1884", "/x/y")
        );
        let u = Url::parse("NATS://127.0.0.1", 4222).unwrap();
        assert_eq!(
            (u.scheme.as_str(), u.address().as_str(), u.path.as_str()),
            ("nats", "127.0.0.1:4222", "/")
        );
        assert!(Url::parse("127.0.0.1:80", 80).is_err());
        assert!(Url::parse("http://h:port", 80).is_err());
        assert!(Url::parse("http://:80", 80).is_err());
    }

    #[test]
    fn unreachable_servers_are_named_within_seconds() {
        // A port nothing listens on: bind one, then free it.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let started = Instant::now();
        let e = connect("MQTT broker", &format!("127.0.0.1:{port}")).unwrap_err();
        assert!(started.elapsed() < CONNECT_TIMEOUT + Duration::from_secs(1));
        let text = e.to_string();
        assert!(
            text.starts_with(&format!("cannot reach MQTT broker at 127.0.0.1:{port}")),
            "{text}"
        );
    }
}
