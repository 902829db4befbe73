//! Riffle's operations: a running process, seen and asked over HTTP.
//!
//! An [`Endpoint`] serves, on one port: `/metrics` (every counter of the
//! process, in the Prometheus text format), `/healthz`, `/state/{key}`
//! (the state of a key of an app, answered by the process that owns the
//! key's partition wherever the question arrives), and whatever routes the
//! caller adds, such as a dashboard.
//!
//! It can be kept to those who should see it ([`Security`]): HTTPS, with
//! client certificates required if asked (mutual TLS), and a bearer token
//! on every route but `/healthz`, which probes ask without credentials and
//! which tells nothing but "ok". Peers relaying a state query to the key's
//! owner send the token, over HTTPS when the endpoint serves it.
//!
//! # Layout
//!
//! - [`http`]: the HTTP/1.1 server (routes, the token check) and the
//!   client peers ask each other with, on hyper.
//! - `state`: the `/state/{key}` route over the runtime's state queries.
//! - [`Endpoint`] (here): the two together with `/metrics` and `/healthz`.
//!
//! The crate sits above the runtime (`riffle-runtime`), whose counters and
//! state queries it serves, and `riffle-net` (the async runtime, TLS);
//! nothing below knows it.

pub mod http;

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

pub use http::{Access, Client, HttpServer, Request, Response, Routes};
pub use riffle_net::tls::{Names, ServerTls, Tls};

mod state;

use riffle_base::error::Result;
use riffle_runtime::process::StateQueries;

/// The path served to anyone, token or not: what health probes ask.
pub const OPEN_PATH: &str = "/healthz";

/// Who may use an endpoint, and how peers reach each other's.
#[derive(Debug, Clone, Default)]
pub struct Security {
    /// The bearer token every request but `/healthz` must carry.
    pub token: Option<String>,
    /// Serve HTTPS with this certificate and key; with its `client_ca`,
    /// only to clients presenting a certificate that CA signed.
    pub tls: Option<ServerTls>,
    /// How this process checks its peers' endpoints when it relays a state
    /// query over HTTPS (with `tls`): their CA (`ca`, else the system's
    /// roots), and the certificate it presents to them when they require
    /// one (`cert`, `key`). `names` are what the user calls these, for
    /// errors.
    pub peers: Tls,
}

/// A process's operations endpoint; stops when dropped.
///
/// ```no_run
/// # use std::sync::Arc;
/// # use riffle_log::{embedded::EmbeddedLog, Log};
/// use riffle_runtime::process::{stateless, App};
/// use riffle_ops::Endpoint;
/// let log: Arc<dyn Log> = Arc::new(EmbeddedLog::new());
/// let endpoint = Endpoint::start("127.0.0.1:9464", None)?;
/// let app = App::new("shouter", &["words"], stateless::map("shout", |v| Ok(v.to_ascii_uppercase())))
///     .advertise(&endpoint.addr().to_string())
///     .start(log)?;
/// endpoint.serve_states(app.states());
/// # Ok::<(), riffle_runtime::Error>(())
/// ```
pub struct Endpoint {
    server: HttpServer,
    states: Arc<OnceLock<StateQueries>>,
}

impl Endpoint {
    /// Listens on `bind` (port 0 picks a free port), in plain HTTP and
    /// without a token; `more` answers the paths the endpoint does not know
    /// itself.
    pub fn start(bind: &str, more: Option<Routes>) -> Result<Self> {
        Self::start_secured(bind, more, &Security::default())
    }

    /// Like [`start`](Self::start), with TLS and a token as `security`
    /// asks. The certificates are read now: a missing or malformed one is
    /// an error before anything listens.
    pub fn start_secured(bind: &str, more: Option<Routes>, security: &Security) -> Result<Self> {
        let (server_tls, peers) = match &security.tls {
            Some(tls) => (
                Some(tls.server_config(&[b"http/1.1"])?),
                Client::new(
                    security.token.clone(),
                    Some(security.peers.client_config()?),
                    security.peers.names,
                ),
            ),
            None => (
                None,
                Client::new(security.token.clone(), None, security.peers.names),
            ),
        };
        let states: Arc<OnceLock<StateQueries>> = Arc::default();
        let known = states.clone();
        let routes: Routes = Arc::new(move |req: &Request| {
            if req.method != "GET" {
                return Response::text(405, "only GET is served\n");
            }
            match req.path.as_str() {
                "/metrics" => Response::new(
                    200,
                    "text/plain; version=0.0.4; charset=utf-8",
                    riffle_base::metrics::global().render(),
                ),
                OPEN_PATH => Response::text(200, "ok\n"),
                path => match (path.strip_prefix("/state/"), known.get(), &more) {
                    (Some(key), Some(states), _) if !key.is_empty() => {
                        state::answer(states, key, req.param("local").is_some(), &peers)
                    }
                    (Some(_), None, _) => Response::text(503, "no app is running yet\n"),
                    (_, _, Some(more)) => more(req),
                    _ => Response::not_found(),
                },
            }
        });
        let access = Access {
            tls: server_tls,
            token: security.token.clone(),
            open: vec![OPEN_PATH.to_owned()],
        };
        Ok(Self {
            server: HttpServer::start_with(bind, routes, access)?,
            states,
        })
    }

    /// Where it listens: what to [`advertise`](riffle_runtime::process::App::advertise).
    pub fn addr(&self) -> SocketAddr {
        self.server.addr()
    }

    /// `https` or `http`.
    pub fn scheme(&self) -> &'static str {
        self.server.scheme()
    }

    /// Answers `/state/{key}` for this app from now on (the first app
    /// given; an endpoint serves one).
    pub fn serve_states(&self, states: StateQueries) {
        let _ = self.states.set(states);
    }
}
