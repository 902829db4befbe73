//! The HTTP/1.1 server and client of the operations endpoint, on hyper and
//! the process's one runtime (`riffle-net`): a few small requests a second
//! from a scraper, a dashboard or a peer process, plain or over TLS, and
//! behind a bearer token when one is set.
//!
//! Handlers ([`Routes`]) are plain functions: they read counters, ask the
//! log for offsets or a peer for a key's state, and may block while doing
//! so, so they run on the runtime's blocking pool, never on its workers.
//! At most [`MAX_CONNECTIONS`] connections are served at once; more are
//! answered 503.

use std::borrow::Cow;
use std::convert::Infallible;
use std::future::{poll_fn, Future};
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::header::{
    HeaderValue, AUTHORIZATION, CACHE_CONTROL, CONNECTION, CONTENT_TYPE, COOKIE, HOST, LOCATION,
    SET_COOKIE, WWW_AUTHENTICATE,
};
use hyper::service::service_fn;
use hyper::StatusCode;
use hyper_util::rt::{TokioIo, TokioTimer};
use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use riffle_base::error::{Error, Result};
use riffle_net::runtime::{self, unless_stopped, winding_down};
use riffle_net::secret;
use riffle_net::tls::Names;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;
use tokio_rustls::{TlsAcceptor, TlsConnector};

/// How long a client may take to send its request head (and to finish a
/// TLS handshake).
const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// The largest request head accepted (hyper's smallest buffer limit).
const MAX_HEAD: usize = 8 * 1024;
/// The most connections served at once: a scraper, a few dashboards and
/// the peers need a handful; the cap keeps a flood from taking threads.
pub const MAX_CONNECTIONS: usize = 256;
/// The largest answer a [`Client`] reads.
const MAX_ANSWER: usize = 16 << 20;
/// The cookie a browser keeps the token in, once it opened a page with
/// `?token=`.
const COOKIE_NAME: &str = "riffle_token";

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

/// Answers requests; called on a thread of the blocking pool.
pub type Routes = Arc<dyn Fn(&Request) -> Response + Send + Sync>;

/// Who may ask, and over what.
#[derive(Clone, Default)]
pub struct Access {
    /// Serve HTTPS with this configuration (else plain HTTP).
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// The bearer token every request must carry (`Authorization: Bearer`,
    /// or the cookie a browser got by opening any path with `?token=`),
    /// except those to `open` paths. Others are answered 401.
    pub token: Option<String>,
    /// Paths served without the token: health probes.
    pub open: Vec<String>,
}

/// A running server; stops when dropped.
pub struct HttpServer {
    addr: SocketAddr,
    tls: bool,
    stop: watch::Sender<bool>,
    /// Closed once the listener is, so that a drop returns with the port
    /// free.
    closed: Option<std::sync::mpsc::Receiver<()>>,
}

/// What every connection's handler shares.
struct Shared {
    routes: Routes,
    tls: bool,
    token: Option<String>,
    /// The token as the cookie carries it (percent-encoded: a token may
    /// hold characters a cookie may not).
    cookie: Option<String>,
    open: Vec<String>,
}

impl HttpServer {
    /// Listens on `bind` (`127.0.0.1:9464`; port 0 picks a free one) and
    /// answers every request with `routes`, in plain HTTP, to anyone.
    pub fn start(bind: &str, routes: Routes) -> Result<Self> {
        Self::start_with(bind, routes, Access::default())
    }

    /// Listens on `bind` and answers the requests `access` lets through
    /// with `routes`.
    pub fn start_with(bind: &str, routes: Routes, access: Access) -> Result<Self> {
        if access.token.as_deref().is_some_and(|t| !valid_token(t)) {
            return Err(Error::InvalidInput(
                "the bearer token must be printable ASCII without spaces".into(),
            ));
        }
        let listener = std::net::TcpListener::bind(bind)
            .map_err(|e| Error::InvalidInput(format!("cannot listen on {bind}: {e}")))?;
        let addr = listener
            .local_addr()
            .map_err(|e| Error::io(format!("listening on {bind}"), &e))?;
        listener
            .set_nonblocking(true)
            .map_err(|e| Error::io(format!("listening on {bind}"), &e))?;
        let listener = {
            let _entered = runtime::handle().enter();
            tokio::net::TcpListener::from_std(listener)
                .map_err(|e| Error::io(format!("listening on {bind}"), &e))?
        };
        let tls = access.tls.is_some();
        let shared = Arc::new(Shared {
            routes,
            tls,
            cookie: access.token.as_deref().map(cookie_value),
            token: access.token,
            open: access.open,
        });
        let acceptor = access.tls.map(TlsAcceptor::from);
        let (stop, stopped) = watch::channel(false);
        let (closed_tx, closed) = std::sync::mpsc::channel();
        runtime::handle().spawn(serve(listener, acceptor, shared, stopped, closed_tx));
        Ok(Self {
            addr,
            tls,
            stop,
            closed: Some(closed),
        })
    }

    /// Where it listens (with the port chosen, if 0 was asked).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `https` or `http`.
    pub fn scheme(&self) -> &'static str {
        if self.tls {
            "https"
        } else {
            "http"
        }
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        if let Some(closed) = self.closed.take() {
            // The accept loop drops the listener and this channel's sender
            // together.
            let _ = closed.recv_timeout(Duration::from_secs(5));
        }
    }
}

/// The accept loop. On stop, the listener closes at once; open connections
/// finish the request they are answering, for a few seconds at most.
async fn serve(
    listener: tokio::net::TcpListener,
    acceptor: Option<TlsAcceptor>,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
    closed: std::sync::mpsc::Sender<()>,
) {
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut connections = JoinSet::new();
    while let Some(accepted) = unless_stopped(listener.accept(), &mut stop).await {
        while connections.try_join_next().is_some() {}
        let (tcp, peer) = match accepted {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!("operations endpoint: accept: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let permit = permits.clone().try_acquire_owned().ok();
        let (shared, acceptor, stop) = (shared.clone(), acceptor.clone(), stop.clone());
        connections.spawn(async move {
            let over = permit.is_none();
            match acceptor {
                None => connection(tcp, shared, over, stop).await,
                Some(acceptor) => {
                    match tokio::time::timeout(READ_TIMEOUT, acceptor.accept(tcp)).await {
                        Ok(Ok(tls)) => connection(tls, shared, over, stop).await,
                        Ok(Err(e)) => {
                            tracing::debug!("operations endpoint: TLS handshake with {peer}: {e}")
                        }
                        Err(_) => tracing::debug!(
                            "operations endpoint: TLS handshake with {peer} timed out"
                        ),
                    }
                }
            }
            drop(permit);
        });
    }
    drop(listener);
    drop(closed);
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        while connections.join_next().await.is_some() {}
    })
    .await;
}

/// Serves one connection, its requests one after the other (keep-alive).
/// `over` marks a connection beyond [`MAX_CONNECTIONS`]: all it gets is 503.
async fn connection<S>(io: S, shared: Arc<Shared>, over: bool, mut stop: watch::Receiver<bool>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(move |request| {
        let shared = shared.clone();
        async move {
            let response = if over {
                let mut r = plain(StatusCode::SERVICE_UNAVAILABLE, "too many connections\n");
                r.headers_mut()
                    .insert("retry-after", HeaderValue::from_static("1"));
                r
            } else {
                handle(request, &shared).await
            };
            Ok::<_, Infallible>(response)
        }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(READ_TIMEOUT)
        .max_buf_size(MAX_HEAD)
        .serve_connection(TokioIo::new(io), service);
    let result = winding_down(conn, &mut stop, |c| c.graceful_shutdown()).await;
    if let Err(e) = result {
        tracing::debug!("operations endpoint: connection: {e}");
    }
}

type Answer = hyper::Response<Full<Bytes>>;

/// A short text answer; anything but a 2xx closes the connection.
fn plain(status: StatusCode, body: &str) -> Answer {
    let mut response = hyper::Response::new(Full::new(Bytes::from(body.to_owned())));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if !status.is_success() {
        headers.insert(CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

fn unauthorized(why: &str) -> Answer {
    let mut response = plain(
        StatusCode::UNAUTHORIZED,
        &format!(
            "{why}: send Authorization: Bearer <token>, or in a browser open this page once \
             with ?token=<token>\n"
        ),
    );
    response.headers_mut().insert(
        WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"riffle\""),
    );
    response
}

/// How a request proved it may be answered.
enum Proof<'a> {
    Header(&'a [u8]),
    Cookie(&'a [u8]),
    None,
}

async fn handle(request: hyper::Request<Incoming>, shared: &Shared) -> Answer {
    let uri = request.uri();
    let req = Request {
        method: request.method().as_str().to_owned(),
        path: percent_decode_str(uri.path())
            .decode_utf8_lossy()
            .into_owned(),
        query: form_urlencoded::parse(uri.query().unwrap_or("").as_bytes())
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect(),
    };
    if let (Some(token), Some(cookie)) = (&shared.token, &shared.cookie) {
        if !shared.open.contains(&req.path) {
            // A browser's first visit: the token in the query, exchanged
            // for a cookie, and the address bar cleared of it.
            if let Some(given) = req.param("token") {
                if !secret::same(given.as_bytes(), token.as_bytes()) {
                    return unauthorized("wrong token");
                }
                return sign_in(uri.path(), &req, cookie, shared.tls);
            }
            let headers = request.headers();
            let proof = match headers.get(AUTHORIZATION) {
                Some(v) => Proof::Header(secret::bearer(v.as_bytes()).unwrap_or(b"")),
                None => match headers
                    .get_all(COOKIE)
                    .iter()
                    .find_map(|v| cookie_in(v.as_bytes()))
                {
                    Some(c) => Proof::Cookie(c),
                    None => Proof::None,
                },
            };
            let valid = match proof {
                Proof::Header(given) => secret::same(given, token.as_bytes()),
                Proof::Cookie(given) => secret::same(given, cookie.as_bytes()),
                Proof::None => return unauthorized("a bearer token is required"),
            };
            if !valid {
                return unauthorized("wrong bearer token");
            }
        }
    }
    let routes = shared.routes.clone();
    let answer = match tokio::task::spawn_blocking(move || routes(&req)).await {
        Ok(answer) => answer,
        Err(e) => Response::text(500, format!("the handler failed: {e}\n")),
    };
    let status = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = hyper::Response::new(Full::new(Bytes::from(answer.body)));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(answer.content_type));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// `303 See Other` to the same path without the token, setting the cookie
/// that stands for it: HttpOnly (no script reads it), SameSite=Strict (no
/// other site's page sends it), Secure over TLS.
fn sign_in(raw_path: &str, req: &Request, cookie: &str, tls: bool) -> Answer {
    let rest: Vec<(&str, &str)> = req
        .query
        .iter()
        .filter(|(k, _)| k != "token")
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let mut location = raw_path.to_owned();
    if !rest.is_empty() {
        location.push('?');
        location.push_str(
            &form_urlencoded::Serializer::new(String::new())
                .extend_pairs(rest)
                .finish(),
        );
    }
    let secure = if tls { "; Secure" } else { "" };
    let set = format!("{COOKIE_NAME}={cookie}; Path=/; HttpOnly; SameSite=Strict{secure}");
    let mut response = plain(StatusCode::SEE_OTHER, "signed in\n");
    let headers = response.headers_mut();
    headers.remove(CONNECTION);
    if let (Ok(location), Ok(set)) = (
        HeaderValue::from_str(&location),
        HeaderValue::from_str(&set),
    ) {
        headers.insert(LOCATION, location);
        headers.insert(SET_COOKIE, set);
    }
    response
}

/// Whether `token` can be a bearer token: printable ASCII without spaces,
/// as an HTTP header carries it.
pub fn valid_token(token: &str) -> bool {
    !token.is_empty() && token.bytes().all(|b| b.is_ascii_graphic())
}

/// The token as its cookie holds it: only letters and digits kept as
/// they are.
fn cookie_value(token: &str) -> String {
    utf8_percent_encode(token, NON_ALPHANUMERIC).to_string()
}

/// The value of the token's cookie in a `Cookie` header, if there.
fn cookie_in(header: &[u8]) -> Option<&[u8]> {
    header.split(|&b| b == b';').find_map(|pair| {
        let pair = pair.trim_ascii();
        let value = pair.strip_prefix(COOKIE_NAME.as_bytes())?;
        value.strip_prefix(b"=")
    })
}

/// The characters a path segment keeps as they are (RFC 3986 unreserved).
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Percent-encoding of a path segment.
pub fn encode(s: &str) -> String {
    utf8_percent_encode(s, SEGMENT).to_string()
}

/// Asks other processes' endpoints, with the token and over TLS when they
/// are set: how peers relay a state query to the key's owner.
#[derive(Clone, Default)]
pub struct Client {
    token: Option<String>,
    tls: Option<Arc<rustls::ClientConfig>>,
    /// What the user calls the TLS settings, for explaining a failure.
    names: Names,
}

impl Client {
    /// A client that sends `token` (as `Authorization: Bearer`) and, given
    /// a TLS configuration, speaks only HTTPS.
    pub fn new(
        token: Option<String>,
        tls: Option<Arc<rustls::ClientConfig>>,
        names: Names,
    ) -> Self {
        Self { token, tls, names }
    }

    /// `GET {path}` from the endpoint at `addr` (`host:port`): the status
    /// and the body. Fails within `timeout` when it does not answer; a
    /// failed TLS handshake says what to change.
    pub fn get(&self, addr: &str, path: &str, timeout: Duration) -> Result<(u16, Vec<u8>)> {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let what = format!("{scheme}://{addr}");
        runtime::within(&what, timeout, self.fetch(addr, path, &what))
    }

    async fn fetch(&self, addr: &str, path: &str, what: &str) -> Result<(u16, Vec<u8>)> {
        let unreachable = |detail: String| Error::Connect {
            server: what.to_owned(),
            detail,
        };
        let tcp = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        let _ = tcp.set_nodelay(true);
        let Some(config) = &self.tls else {
            return self.exchange(tcp, addr, path, what).await;
        };
        let host = addr
            .rsplit_once(':')
            .map_or(addr, |(host, _)| host)
            .trim_start_matches('[')
            .trim_end_matches(']');
        let name = ServerName::try_from(host.to_owned())
            .map_err(|e| Error::InvalidInput(format!("{what}: not a TLS server name: {e}")))?;
        let stream = TlsConnector::from(config.clone())
            .connect(name, tcp)
            .await
            .map_err(|e| {
                let text = e.to_string();
                let detail = match riffle_net::tls::explain(&text, &self.names) {
                    Some(hint) => format!("{text}: {hint}"),
                    None => text,
                };
                Error::Tls {
                    broker: what.to_owned(),
                    detail,
                }
            })?;
        self.exchange(stream, addr, path, what).await
    }

    async fn exchange<S>(&self, io: S, addr: &str, path: &str, what: &str) -> Result<(u16, Vec<u8>)>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let failed = |e: &(dyn std::error::Error + 'static)| {
            let text = chain(e);
            match riffle_net::tls::explain(&text, &self.names).filter(|_| self.tls.is_some()) {
                Some(hint) => Error::Tls {
                    broker: what.to_owned(),
                    detail: format!("{text}: {hint}"),
                },
                None => Error::Protocol {
                    server: what.to_owned(),
                    message: format!("{what}: {text}"),
                },
            }
        };
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
            .await
            .map_err(|e| failed(&e))?;
        let mut request = hyper::Request::builder()
            .uri(path)
            .header(HOST, addr)
            .header(CONNECTION, "close");
        if let Some(token) = &self.token {
            request = request.header(AUTHORIZATION, format!("Bearer {token}"));
        }
        let request = request
            .body(Full::<Bytes>::default())
            .map_err(|e| failed(&e))?;
        let exchange = async {
            let response = sender.send_request(request).await?;
            let status = response.status().as_u16();
            let body = Limited::new(response.into_body(), MAX_ANSWER)
                .collect()
                .await
                .map_err(|e| RequestError::Body(e.to_string()))?;
            Ok::<_, RequestError>((status, body.to_bytes().to_vec()))
        };
        // The connection is driven here rather than on a task of its own,
        // so that when it fails (a server refusing the client's certificate
        // after the handshake) its error, the cause, is the one reported.
        let mut conn = pin!(conn);
        let mut exchange = pin!(exchange);
        let mut conn_over = false;
        poll_fn(|cx| {
            if !conn_over {
                if let Poll::Ready(result) = conn.as_mut().poll(cx) {
                    if let Err(e) = result {
                        return Poll::Ready(Err(failed(&e)));
                    }
                    conn_over = true;
                }
            }
            exchange.as_mut().poll(cx).map_err(|e| match e {
                RequestError::Http(e) => failed(&e),
                RequestError::Body(text) => Error::Protocol {
                    server: what.to_owned(),
                    message: format!("{what}: {text}"),
                },
            })
        })
        .await
    }
}

/// How an exchange failed.
enum RequestError {
    Http(hyper::Error),
    Body(String),
}

impl From<hyper::Error> for RequestError {
    fn from(e: hyper::Error) -> Self {
        Self::Http(e)
    }
}

/// An error and its causes on one line.
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let s_text = s.to_string();
        if !text.contains(&s_text) {
            text = format!("{text}: {s_text}");
        }
        source = s.source();
    }
    text
}

/// `GET http://{addr}{path}`: the status and the body, from an endpoint
/// without a token or TLS; fails within `timeout` when it does not answer.
pub fn get(addr: &str, path: &str, timeout: Duration) -> Result<(u16, Vec<u8>)> {
    Client::default().get(addr, path, timeout)
}

/// A path's percent-decoding, as the server does it; malformed escapes are
/// kept as they are.
pub fn decode(s: &str) -> Cow<'_, str> {
    percent_decode_str(s).decode_utf8_lossy()
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

    #[test]
    fn the_token_cookie_is_found_among_others() {
        assert_eq!(
            cookie_in(b"a=1; riffle_token=x%2By; b=2"),
            Some(&b"x%2By"[..])
        );
        assert_eq!(cookie_in(b"riffle_tokens=1"), None);
        assert_eq!(cookie_value("x+y z"), "x%2By%20z");
    }
}
