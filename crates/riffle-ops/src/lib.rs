//! Riffle's operations: a running process, seen and asked over HTTP.
//!
//! An [`Endpoint`] serves, on one port: `/metrics` (every counter of the
//! process, in the Prometheus text format), `/healthz`, `/state/{key}`
//! (the state of a key of an app, answered by the process that owns the
//! key's partition wherever the question arrives), and whatever routes the
//! caller adds, such as a dashboard.
//!
//! # Layout
//!
//! - `http`: a small HTTP/1.1 server with routes, enough for scrapes and
//!   queries (see its docs for why it is not a framework).
//! - `state`: the `/state/{key}` route over the runtime's state queries.
//! - [`Endpoint`] (here): the two together with `/metrics` and `/healthz`.
//!
//! The crate sits above the runtime (`riffle-runtime`), whose counters and
//! state queries it serves; nothing below knows it.

pub mod http;

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

pub use http::{HttpServer, Request, Response, Routes};

mod state;

use riffle_base::error::Result;
use riffle_runtime::process::StateQueries;

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
    /// Listens on `bind` (port 0 picks a free port); `more` answers the
    /// paths the endpoint does not know itself.
    pub fn start(bind: &str, more: Option<Routes>) -> Result<Self> {
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
                "/healthz" => Response::text(200, "ok\n"),
                path => match (path.strip_prefix("/state/"), known.get(), &more) {
                    (Some(key), Some(states), _) if !key.is_empty() => {
                        state::answer(states, key, req.param("local").is_some())
                    }
                    (Some(_), None, _) => Response::text(503, "no app is running yet\n"),
                    (_, _, Some(more)) => more(req),
                    _ => Response::not_found(),
                },
            }
        });
        Ok(Self {
            server: HttpServer::start(bind, routes)?,
            states,
        })
    }

    /// Where it listens: what to [`advertise`](riffle_runtime::process::App::advertise).
    pub fn addr(&self) -> SocketAddr {
        self.server.addr()
    }

    /// Answers `/state/{key}` for this app from now on (the first app
    /// given; an endpoint serves one).
    pub fn serve_states(&self, states: StateQueries) {
        let _ = self.states.set(states);
    }
}
