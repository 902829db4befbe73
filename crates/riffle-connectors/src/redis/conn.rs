//! Connections to a Redis server, found directly, through Sentinels or as
//! a cluster's nodes: the URL's forms, logins, TLS and how the client's
//! errors read.

use std::sync::Mutex;
use std::time::Duration;

use ::redis::cluster::{ClusterClient, ClusterClientBuilder, ClusterConnection};
use ::redis::sentinel::{SentinelClient, SentinelClientBuilder, SentinelServerType};
use ::redis::{
    Client, Cmd, Connection, ConnectionAddr, ConnectionLike, ErrorKind, IntoConnectionInfo,
    ProtocolVersion, RedisError, RedisResult, TlsCertificates, TlsMode, Value,
};
use riffle::{Error, Result};

use super::REDIS;
use crate::connector::Role;
use crate::net::CONNECT_TIMEOUT;
use crate::options::Options;
use crate::tls::{self, Tls};

/// Where a Redis server is (or the Sentinels that know it), how to log
/// in to it and whether with TLS: opens connections on demand.
pub struct Target {
    servers: Servers,
    tls: bool,
    /// `host:port`, or the Sentinels and the master's name, for messages.
    address: String,
    /// The ACL user logged in as, for messages.
    user: String,
}

/// The user and password for the Sentinels, which have their own (the
/// URL's are the master's).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SentinelLogin {
    pub user: Option<String>,
    pub password: Option<String>,
}

enum Servers {
    Direct(Client),
    /// The master named in the URL, asked of the Sentinels at every
    /// connection, so that a reconnection after a failover finds the new
    /// master.
    Sentinel(Mutex<SentinelClient>),
    /// A cluster's nodes, found from those in the URL; each command goes
    /// to the node that holds its key's slot (following `MOVED` and `ASK`
    /// when slots move).
    Cluster(ClusterClient),
}

/// A connection to one server, or to the nodes of a cluster.
pub enum Conn {
    One(Connection),
    Cluster(Box<ClusterConnection>),
}

impl Conn {
    /// How long a reply may take (a blocking read's wait included).
    pub fn set_read_timeout(&self, timeout: Option<Duration>) -> RedisResult<()> {
        match self {
            Conn::One(c) => c.set_read_timeout(timeout),
            Conn::Cluster(c) => c.set_read_timeout(timeout),
        }
    }

    fn set_write_timeout(&self, timeout: Option<Duration>) -> RedisResult<()> {
        match self {
            Conn::One(c) => c.set_write_timeout(timeout),
            Conn::Cluster(c) => c.set_write_timeout(timeout),
        }
    }
}

impl ConnectionLike for Conn {
    fn req_packed_command(&mut self, cmd: &[u8]) -> RedisResult<Value> {
        match self {
            Conn::One(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands(
        &mut self,
        cmd: &[u8],
        offset: usize,
        count: usize,
    ) -> RedisResult<Vec<Value>> {
        match self {
            Conn::One(c) => c.req_packed_commands(cmd, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    /// The cluster routes a command by its key, which it finds in the
    /// command rather than in its bytes.
    fn req_command(&mut self, cmd: &Cmd) -> RedisResult<Value> {
        match self {
            Conn::One(c) => c.req_command(cmd),
            Conn::Cluster(c) => c.req_command(cmd),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::One(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }

    fn supports_pipelining(&self) -> bool {
        match self {
            Conn::One(c) => c.supports_pipelining(),
            Conn::Cluster(c) => c.supports_pipelining(),
        }
    }

    fn check_connection(&mut self) -> bool {
        match self {
            Conn::One(c) => c.check_connection(),
            Conn::Cluster(c) => c.check_connection(),
        }
    }

    fn is_open(&self) -> bool {
        match self {
            Conn::One(c) => c.is_open(),
            Conn::Cluster(c) => c.is_open(),
        }
    }
}

fn scheme_tls(url: &str) -> bool {
    let url = url.trim_start().to_ascii_lowercase();
    ["rediss://", "rediss+sentinel://", "rediss+cluster://"]
        .iter()
        .any(|s| url.starts_with(s))
}

impl Target {
    /// From `url` and the common TLS options.
    pub fn from_options(o: &mut Options) -> Result<Self> {
        let url = REDIS.text(o, Role::Both, "url")?;
        let tls = tls::from_options(o, scheme_tls(&url))?;
        let login = SentinelLogin {
            user: o.string("sentinel_user"),
            password: o.string("sentinel_password"),
        };
        Self::new(&url, tls.as_ref(), login)
    }

    /// From a URL, without TLS unless its scheme says so.
    pub fn parse(url: &str) -> Result<Self> {
        Self::new(
            url,
            scheme_tls(url).then(Tls::default).as_ref(),
            SentinelLogin::default(),
        )
    }

    /// `url` with the TLS settings `tls` (None: a plain connection) and,
    /// for a Sentinel URL, how to log in to the Sentinels.
    pub fn new(url: &str, tls: Option<&Tls>, sentinel_login: SentinelLogin) -> Result<Self> {
        let shown = redacted(url);
        let bad = |why: String| {
            Error::InvalidInput(format!(
                "redis: URL '{shown}': {why} (expected redis://[[user]:password@]host[:port][/db], \
                 rediss://..., redis+sentinel://[[user]:password@]host[:port][,host[:port]...]/master[/db] \
                 or redis+cluster://[[user]:password@]host[:port][,host[:port]...])"
            ))
        };
        let (scheme, rest) = url
            .trim()
            .split_once("://")
            .ok_or_else(|| bad("no scheme".into()))?;
        let scheme = scheme.to_ascii_lowercase();
        if scheme_tls(url) && tls.is_none() {
            return Err(bad(format!("{scheme}:// with tls=false")));
        }
        let certificates = tls.map(certificates).transpose()?;
        if matches!(scheme.as_str(), "redis+sentinel" | "rediss+sentinel") {
            return Self::sentinel(rest, tls, certificates, sentinel_login, bad);
        }
        if matches!(scheme.as_str(), "redis+cluster" | "rediss+cluster") {
            if sentinel_login != SentinelLogin::default() {
                return Err(bad(
                    "sentinel_user and sentinel_password go with redis+sentinel:// URLs".into(),
                ));
            }
            return Self::cluster(rest, tls, certificates, bad);
        }
        if sentinel_login != SentinelLogin::default() {
            return Err(bad(
                "sentinel_user and sentinel_password go with redis+sentinel:// URLs".into(),
            ));
        }
        let info = url.into_connection_info().map_err(|e| bad(e.to_string()))?;
        // Replies are read as RESP2's (arrays, not RESP3's maps), whatever
        // the URL's `?protocol=`.
        let settings = info.redis_settings().clone();
        let info = info.set_redis_settings(settings.set_protocol(ProtocolVersion::RESP2));
        let (host, port) = match info.addr() {
            ConnectionAddr::Tcp(host, port) | ConnectionAddr::TcpTls { host, port, .. } => {
                (host.clone(), *port)
            }
            _ => return Err(bad("not a TCP address".into())),
        };
        let user = user_of(&info);
        let client = match (tls, certificates) {
            (Some(tls), Some(certificates)) => {
                check_server_name(tls, &host)?;
                let info = info.set_addr(ConnectionAddr::TcpTls {
                    host: host.clone(),
                    port,
                    insecure: tls.insecure,
                    tls_params: None,
                });
                Client::build_with_tls(info, certificates)
            }
            _ => Client::open(info),
        }
        .map_err(|e| bad(e.to_string()))?;
        Ok(Self {
            servers: Servers::Direct(client),
            tls: tls.is_some(),
            address: format!("{host}:{port}"),
            user,
        })
    }

    /// `rest`: what follows `redis+sentinel://`.
    fn sentinel(
        rest: &str,
        tls: Option<&Tls>,
        certificates: Option<TlsCertificates>,
        login: SentinelLogin,
        bad: impl Fn(String) -> Error,
    ) -> Result<Self> {
        let (userinfo, hosts, path) = split_hosts(rest);
        let (master, db) = match path.trim_end_matches('/').split_once('/') {
            Some((m, db)) => (m, Some(db)),
            None => (path.trim_end_matches('/'), None),
        };
        if master.is_empty() {
            return Err(bad("no master name after the Sentinels".into()));
        }
        // The credentials and database are the master's, parsed (and
        // percent-decoded) as those of a plain URL.
        let info = format!(
            "redis://{}localhost/{}",
            userinfo.map(|u| format!("{u}@")).unwrap_or_default(),
            db.unwrap_or("0")
        )
        .into_connection_info()
        .map_err(|e| bad(e.to_string()))?;
        let mut sentinels = Vec::new();
        for (host, port) in host_list(hosts, 26379, "a Sentinel", tls, &bad)? {
            let host = host.as_str();
            sentinels.push(match tls {
                Some(tls) => ConnectionAddr::TcpTls {
                    host: host.to_owned(),
                    port,
                    insecure: tls.insecure,
                    tls_params: None,
                },
                None => ConnectionAddr::Tcp(host.to_owned(), port),
            });
        }
        let address = format!(
            "Sentinels {} master '{master}'",
            sentinels
                .iter()
                .map(|a| a.to_string())
                .collect::<Vec<_>>()
                .join(",")
        );
        let settings = info.redis_settings();
        let mut builder = SentinelClientBuilder::new(sentinels, master, SentinelServerType::Master)
            .map_err(|e| bad(e.to_string()))?
            .set_client_to_redis_db(settings.db())
            .set_client_to_redis_protocol(ProtocolVersion::RESP2);
        if let Some(u) = settings.username() {
            builder = builder.set_client_to_redis_username(u);
        }
        if let Some(p) = settings.password() {
            builder = builder.set_client_to_redis_password(p);
        }
        if let Some(u) = &login.user {
            builder = builder.set_client_to_sentinel_username(u);
        }
        if let Some(p) = &login.password {
            builder = builder.set_client_to_sentinel_password(p);
        }
        if let (Some(tls), Some(certificates)) = (tls, certificates) {
            let mode = if tls.insecure {
                TlsMode::Insecure
            } else {
                TlsMode::Secure
            };
            builder = builder
                .set_client_to_redis_tls_mode(mode)
                .set_client_to_redis_certificates(certificates.clone())
                .set_client_to_sentinel_tls_mode(mode)
                .set_client_to_sentinel_certificates(certificates);
        }
        let client = builder.build().map_err(|e| bad(e.to_string()))?;
        Ok(Self {
            servers: Servers::Sentinel(Mutex::new(client)),
            tls: tls.is_some(),
            address,
            user: user_of(&info),
        })
    }

    /// `rest`: what follows `redis+cluster://`. Every node listed is
    /// asked for the cluster's slots until one answers; the others are
    /// found from its answer.
    fn cluster(
        rest: &str,
        tls: Option<&Tls>,
        certificates: Option<TlsCertificates>,
        bad: impl Fn(String) -> Error,
    ) -> Result<Self> {
        let (userinfo, hosts, path) = split_hosts(rest);
        if !matches!(path.trim_end_matches('/'), "" | "0") {
            return Err(bad("a cluster has database 0 only".into()));
        }
        let mut nodes = Vec::new();
        let mut addresses = Vec::new();
        for (host, port) in host_list(hosts, 6379, "a node", tls, &bad)? {
            // The credentials are parsed (and percent-decoded) as those of
            // a plain URL.
            let info = format!(
                "redis://{}{host}:{port}",
                userinfo.map(|u| format!("{u}@")).unwrap_or_default()
            )
            .into_connection_info()
            .map_err(|e| bad(e.to_string()))?;
            let info = match tls {
                Some(tls) => info.set_addr(ConnectionAddr::TcpTls {
                    host: host.to_owned(),
                    port,
                    insecure: tls.insecure,
                    tls_params: None,
                }),
                None => info,
            };
            addresses.push(format!("{host}:{port}"));
            nodes.push(info);
        }
        let user = nodes.first().map(user_of).unwrap_or_default();
        let mut builder = ClusterClientBuilder::new(nodes)
            .use_protocol(ProtocolVersion::RESP2)
            .connection_timeout(CONNECT_TIMEOUT)
            .retries(3);
        if let (Some(tls), Some(certificates)) = (tls, certificates) {
            builder = builder
                .tls(if tls.insecure {
                    TlsMode::Insecure
                } else {
                    TlsMode::Secure
                })
                .certs(certificates);
        }
        let client = builder.build().map_err(|e| bad(e.to_string()))?;
        Ok(Self {
            servers: Servers::Cluster(client),
            tls: tls.is_some(),
            address: format!("cluster {}", addresses.join(",")),
            user,
        })
    }

    /// The server for messages: "Redis server at host:port", "Redis
    /// Sentinels host:port,... master 'name'", or "Redis cluster
    /// host:port,...".
    fn server(&self) -> String {
        match self.servers {
            Servers::Direct(_) => format!("Redis server at {}", self.address),
            Servers::Sentinel(_) | Servers::Cluster(_) => format!("Redis {}", self.address),
        }
    }

    /// `host:port` (or the Sentinels and the master's name), for messages.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// A new connection, logged in and on the URL's database. An
    /// unreachable server, a failed handshake or refused credentials are
    /// reported within seconds.
    pub fn connect(&self) -> Result<Conn> {
        let client = match &self.servers {
            Servers::Direct(client) => client.clone(),
            Servers::Cluster(cluster) => {
                let conn = cluster.get_connection().map_err(|e| {
                    // The client reports the nodes' refusals inside an
                    // I/O error of its own: a refused login is still not
                    // transient.
                    let text = e.to_string();
                    if text.contains("AuthenticationFailed") || text.contains("WRONGPASS") {
                        return Error::Authentication {
                            broker: self.server(),
                            detail: format!(
                                "wrong password for user '{}', or no such user, or it is disabled ({text})",
                                self.user
                            ),
                        };
                    }
                    self.error(e)
                })?;
                return self.checked(Conn::Cluster(Box::new(conn)));
            }
            Servers::Sentinel(sentinels) => {
                let found = sentinels
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner())
                    .get_client();
                // No Sentinel answered, or none knows the master: try
                // again later, as with an unreachable server. A refused
                // login is not transient.
                found.map_err(|e| {
                    let login_refused = e.kind() == ErrorKind::AuthenticationFailed
                        || matches!(e.code(), Some("WRONGPASS" | "NOAUTH"));
                    let text = e.to_string();
                    match self.error(e) {
                        _ if login_refused => Error::Authentication {
                            broker: self.server(),
                            // The Sentinels log in with sentinel_user and
                            // sentinel_password, the master (checked
                            // for its role here) with the URL's.
                            detail: format!(
                                "a Sentinel or the master refused the login: check \
                                 sentinel_password (and sentinel_user), and the URL's user \
                                 and password ({text})"
                            ),
                        },
                        Error::Connect { detail, .. }
                        | Error::Refused {
                            message: detail, ..
                        }
                        | Error::Protocol {
                            message: detail, ..
                        } => Error::Connect {
                            server: format!("Redis master via {}", self.address),
                            detail,
                        },
                        e => e,
                    }
                })?
            }
        };
        let conn = match client.get_connection_with_timeout(CONNECT_TIMEOUT) {
            Ok(conn) => Conn::One(conn),
            // A plain-text Redis port takes the TLS hello for a command
            // and waits for the rest of its line: no answer, no alert.
            Err(e) if self.tls && e.is_timeout() => {
                return Err(Error::Connect {
                    server: self.server(),
                    detail: format!(
                        "no answer within {CONNECT_TIMEOUT:?} ({e}); \
                         if the port is reachable, it may be a plain-text listener: \
                         TLS wants the server's tls-port"
                    ),
                })
            }
            Err(e) => return Err(self.error(e)),
        };
        self.checked(conn)
    }

    /// `conn` with a write timeout, once it has answered a `PING`: without
    /// a password a connection is set up without a word from the server
    /// about one, so a missing password is an error here rather than a
    /// refusal of every record.
    fn checked(&self, mut conn: Conn) -> Result<Conn> {
        conn.set_write_timeout(Some(Duration::from_secs(10)))
            .map_err(|e| self.error(e))?;
        ::redis::cmd("PING")
            .query::<Value>(&mut conn)
            .map_err(|e| self.error(e))?;
        Ok(conn)
    }

    /// A client error as Riffle's: a lost or unreachable connection is
    /// [`Error::Connect`] (transient), a failed handshake [`Error::Tls`]
    /// with its likely cause, refused credentials
    /// [`Error::Authentication`], the server's error reply to a command
    /// [`Error::Refused`] with its text (`WRONGTYPE ...`).
    pub fn error(&self, e: RedisError) -> Error {
        let text = e.to_string();
        let server = self.server();
        if let Some(hint) = tls::explain(&text) {
            return Error::Tls {
                broker: server,
                detail: format!("{text}: {hint}"),
            };
        }
        if e.kind() == ErrorKind::AuthenticationFailed || e.code() == Some("WRONGPASS") {
            return Error::Authentication {
                broker: server,
                detail: format!(
                    "wrong password for user '{}', or no such user, or it is disabled ({text})",
                    self.user
                ),
            };
        }
        if e.code() == Some("NOAUTH") {
            return Error::Authentication {
                broker: server,
                detail: format!("the server wants a password: give one in the URL ({text})"),
            };
        }
        // A server still loading its data after a restart, or busy with a
        // script, answers again soon: transient like a lost connection.
        if e.is_io_error()
            || matches!(
                e.code(),
                Some("LOADING" | "BUSY" | "TRYAGAIN" | "MASTERDOWN")
            )
            || e.is_connection_dropped()
            || e.is_connection_refusal()
            || e.is_timeout()
            || e.is_unrecoverable_error()
        {
            return Error::Connect {
                server,
                detail: text,
            };
        }
        match e.code() {
            Some(code) => Error::Refused {
                server: format!("redis {}", self.address),
                message: match e.detail() {
                    Some(detail) => format!("{code} {detail}"),
                    None => code.to_owned(),
                },
            },
            None => Error::Protocol {
                server: format!("redis {}", self.address),
                message: format!("redis {}: {text}", self.address),
            },
        }
    }
}

/// The client certificate and CA of `tls`, read (and checked) now, so
/// that a missing or malformed file is reported before connecting.
fn certificates(tls: &Tls) -> Result<TlsCertificates> {
    tls.client_config()?;
    let read = |path: &std::path::Path| {
        std::fs::read(path).map_err(|e| Error::io(format!("TLS: {}", path.display()), &e))
    };
    // The client builds its configuration on the process's default
    // provider: make it ring, as everywhere else.
    #[allow(deprecated)]
    let _ = ::rustls::crypto::ring::default_provider().install_default();
    Ok(TlsCertificates {
        client_tls: match (&tls.cert, &tls.key) {
            (Some(cert), Some(key)) => Some(::redis::ClientTlsConfig {
                client_cert: read(cert)?,
                client_key: read(key)?,
            }),
            _ => None,
        },
        root_cert: tls.ca.as_deref().map(read).transpose()?,
    })
}

/// The client checks the certificate against the host it connects to
/// and no other name.
fn check_server_name(tls: &Tls, host: &str) -> Result<()> {
    match &tls.server_name {
        Some(name) if name != host => Err(Error::InvalidInput(format!(
            "redis: tls_server_name '{name}' differs from the URL's host '{host}': \
             the certificate is checked against the host, so connect by the name it carries"
        ))),
        _ => Ok(()),
    }
}

/// What follows the scheme of a URL naming several hosts: its user
/// information (before an `@`), its hosts and its path.
fn split_hosts(rest: &str) -> (Option<&str>, &str, &str) {
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    match authority.rsplit_once('@') {
        Some((u, h)) => (Some(u), h, path),
        None => (None, authority, path),
    }
}

/// The hosts and ports of a comma-separated list (`default` when a port
/// is not given), their names checked against `tls`; `what` names one of
/// them in messages.
fn host_list(
    list: &str,
    default: u16,
    what: &str,
    tls: Option<&Tls>,
    bad: &impl Fn(String) -> Error,
) -> Result<Vec<(String, u16)>> {
    let mut out = Vec::new();
    for h in list.split(',').map(str::trim) {
        let (host, port) = match h.rsplit_once(':') {
            Some((host, port)) => (
                host,
                port.parse::<u16>()
                    .map_err(|_| bad(format!("port of '{h}' is not a number")))?,
            ),
            None => (h, default),
        };
        if host.is_empty() {
            return Err(bad(format!("{what} without a host")));
        }
        if let Some(tls) = tls {
            check_server_name(tls, host)?;
        }
        out.push((host.to_owned(), port));
    }
    Ok(out)
}

fn user_of(info: &::redis::ConnectionInfo) -> String {
    info.redis_settings()
        .username()
        .unwrap_or("default")
        .to_owned()
}

/// `e` with its message rewritten by `say` (which puts what was being done
/// before it), when it is the server's refusal or breach of protocol; other
/// errors as they are, their kind being what a caller decides on.
pub(crate) fn in_context(e: Error, say: impl FnOnce(&str) -> String) -> Error {
    match e {
        Error::Refused { server, message } => Error::Refused {
            message: say(&message),
            server,
        },
        Error::Protocol { server, message } => Error::Protocol {
            message: say(&message),
            server,
        },
        other => other,
    }
}

/// `url` without its password, for messages.
fn redacted(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => match url[s + 3..at].split_once(':') {
            Some((user, _)) => format!("{}{user}:***{}", &url[..s + 3], &url[at..]),
            None => url.to_owned(),
        },
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::super::DEFAULT_URL;
    use super::*;

    #[test]
    fn urls_name_the_server_or_the_sentinels_and_hide_passwords() {
        assert_eq!(
            Target::parse(DEFAULT_URL).unwrap().address(),
            "127.0.0.1:6379"
        );
        let t = Target::parse("redis://reader:p%40ss@h:7000/2").unwrap();
        assert_eq!((t.address(), t.user.as_str()), ("h:7000", "reader"));
        let t = Target::parse("redis+sentinel://:pw@s1:1,s2/main/3").unwrap();
        assert_eq!(t.address(), "Sentinels s1:1,s2:26379 master 'main'");
        let t = Target::parse("redis+cluster://u:pw@n1:7000,n2").unwrap();
        assert_eq!(
            (t.address(), t.user.as_str()),
            ("cluster n1:7000,n2:6379", "u")
        );
        for bad in [
            "http://h",
            "redis://h/x",
            "redis+sentinel://s1",
            "redis+sentinel://s1:x/main",
            "redis+sentinel://:secret@s1,/main",
            "redis+cluster://:secret@n1/2",
            "redis+cluster://:secret@n1,:7000",
        ] {
            let e = Target::parse(bad).err().unwrap().to_string();
            assert!(e.contains("redis: URL"), "{bad}: {e}");
            assert!(!e.contains("secret"), "{e}");
        }
        assert_eq!(redacted("rediss://u:pw@h:1/0"), "rediss://u:***@h:1/0");
        assert_eq!(redacted("redis://h"), "redis://h");
    }

    #[test]
    fn tls_comes_from_the_scheme_or_the_options_and_checks_the_hosts_name() {
        let options = |pairs: &[(&str, &str)]| Options::from_pairs("redis", pairs.to_vec());
        let refused = |pairs: &[(&str, &str)]| {
            Target::from_options(&mut options(pairs))
                .err()
                .unwrap()
                .to_string()
        };
        let t = Target::from_options(&mut options(&[("url", "rediss://h")])).unwrap();
        assert!(t.tls);
        let t = Target::from_options(&mut options(&[("url", "redis://h"), ("tls", "true")]));
        assert!(t.unwrap().tls);
        let e = refused(&[("url", "rediss://h"), ("tls", "false")]);
        assert!(e.contains("tls=false"), "{e}");
        let e = refused(&[
            ("url", "rediss://127.0.0.1"),
            ("tls_server_name", "redis.example"),
        ]);
        assert!(e.contains("tls_server_name 'redis.example'"), "{e}");
        let e = refused(&[("url", "rediss://h"), ("tls_ca", "/nonexistent/ca.pem")]);
        assert!(e.contains("/nonexistent/ca.pem"), "{e}");
        for url in ["redis://h", "redis+cluster://h"] {
            let e = refused(&[("url", url), ("sentinel_password", "x")]);
            assert!(e.contains("go with redis+sentinel://"), "{e}");
        }
        let t = Target::from_options(&mut options(&[("url", "rediss+cluster://a,b:7001")]));
        assert!(t.unwrap().tls);
    }
}
