//! A connection and its channel, opened with amqprs on the shared runtime:
//! the servers tried in turn, TLS and the login, and what the broker sends
//! on its own (confirms, returns, closes) gathered in one queue, in the
//! order it came.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use amqprs::callbacks::{ChannelCallback, ConnectionCallback};
use amqprs::channel::Channel;
use amqprs::connection::{Connection, OpenConnectionArguments};
use amqprs::security::SecurityCredentials;
use amqprs::tls::TlsAdaptor;
use amqprs::{Ack, BasicProperties, Cancel, Close, CloseChannel, Nack, Return};
use riffle::{Error, Result};
use tokio::sync::mpsc;

use crate::runtime;
use crate::tls;

/// How long reaching a server, the TLS handshake and the login may take.
const OPEN_TIMEOUT: Duration = Duration::from_secs(10);

/// How long the broker may take to answer a request (declare, bind, ...).
pub const RPC_TIMEOUT: Duration = Duration::from_secs(30);

/// One server of the `url` list, with the login and virtual host its URL
/// names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Server {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: String,
    pub vhost: String,
}

impl Server {
    /// `host:port`, for messages.
    pub fn address(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

/// How the client logs in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Auth {
    /// SASL PLAIN with the user and password.
    Plain,
    /// SASL EXTERNAL: the broker takes the user from the client
    /// certificate of the TLS connection.
    External,
}

/// TLS for every server of the list.
#[derive(Clone)]
pub struct TlsSetup {
    pub config: Arc<rustls::ClientConfig>,
    /// The name the certificates must carry, when not the URL's host.
    pub server_name: Option<String>,
    /// Whether a client certificate is presented.
    pub client_cert: bool,
}

/// How to reach the broker.
#[derive(Clone)]
pub struct Params {
    pub servers: Vec<Server>,
    pub auth: Auth,
    pub heartbeat: Duration,
    pub tls: Option<TlsSetup>,
}

impl Params {
    /// The servers' addresses, for messages: `h1:5672,h2:5672`.
    pub fn addresses(&self) -> String {
        let all: Vec<String> = self.servers.iter().map(Server::address).collect();
        all.join(",")
    }
}

/// What the broker sent on its own.
#[derive(Debug)]
pub enum Event {
    Ack {
        tag: u64,
        multiple: bool,
    },
    Nack {
        tag: u64,
        multiple: bool,
    },
    /// A mandatory message no queue took; its ack follows.
    Returned {
        code: u16,
        text: String,
        routing_key: String,
    },
    /// The broker closed the channel or the connection, or cancelled the
    /// consumer: `what` says which and why.
    Closed {
        code: u16,
        what: String,
    },
}

/// An open connection with one channel.
pub struct Link {
    /// The address of the server it reached.
    pub address: String,
    pub connection: Connection,
    pub channel: Channel,
    /// The broker's events; closed once the connection is gone.
    pub events: mpsc::UnboundedReceiver<Event>,
}

/// Forwards the broker's notices into the link's queue.
struct Notices(mpsc::UnboundedSender<Event>);

#[async_trait::async_trait]
impl ConnectionCallback for Notices {
    async fn close(
        &mut self,
        _: &Connection,
        close: Close,
    ) -> std::result::Result<(), amqprs::error::Error> {
        let _ = self.0.send(Event::Closed {
            code: close.reply_code(),
            what: format!(
                "closed the connection: {} {}",
                close.reply_code(),
                close.reply_text()
            ),
        });
        Ok(())
    }

    async fn blocked(&mut self, _: &Connection, reason: String) {
        tracing::warn!("AMQP server blocks publishing: {reason}");
    }

    async fn unblocked(&mut self, _: &Connection) {
        tracing::info!("AMQP server takes publishes again");
    }

    async fn secret_updated(&mut self, _: &Connection) {}
}

#[async_trait::async_trait]
impl ChannelCallback for Notices {
    async fn close(
        &mut self,
        _: &Channel,
        close: CloseChannel,
    ) -> std::result::Result<(), amqprs::error::Error> {
        let _ = self.0.send(Event::Closed {
            code: close.reply_code(),
            what: format!(
                "closed the channel: {} {}",
                close.reply_code(),
                close.reply_text()
            ),
        });
        Ok(())
    }

    async fn cancel(
        &mut self,
        _: &Channel,
        cancel: Cancel,
    ) -> std::result::Result<(), amqprs::error::Error> {
        let _ = self.0.send(Event::Closed {
            code: 0,
            what: format!(
                "cancelled the consumer {} (the queue was deleted?)",
                cancel.consumer_tag()
            ),
        });
        Ok(())
    }

    async fn flow(
        &mut self,
        _: &Channel,
        active: bool,
    ) -> std::result::Result<bool, amqprs::error::Error> {
        Ok(active)
    }

    async fn publish_ack(&mut self, _: &Channel, ack: Ack) {
        let _ = self.0.send(Event::Ack {
            tag: ack.delivery_tag(),
            multiple: ack.mutiple(),
        });
    }

    async fn publish_nack(&mut self, _: &Channel, nack: Nack) {
        let _ = self.0.send(Event::Nack {
            tag: nack.delivery_tag(),
            multiple: nack.multiple(),
        });
    }

    async fn publish_return(&mut self, _: &Channel, ret: Return, _: BasicProperties, _: Vec<u8>) {
        let _ = self.0.send(Event::Returned {
            code: ret.reply_code(),
            text: ret.reply_text().clone(),
            routing_key: ret.routing_key().clone(),
        });
    }
}

/// Opens a connection to the first server of the list that takes it,
/// from the one at `first` on; returns the link and that server's index.
/// When none does, the error is the most telling: a refusal (login,
/// certificate) before an unreachable server.
pub fn open(params: &Params, first: usize) -> Result<(Link, usize)> {
    let n = params.servers.len();
    let mut worst: Option<Error> = None;
    for i in (0..n).map(|k| (first + k) % n) {
        match open_one(params, &params.servers[i]) {
            Ok(link) => return Ok((link, i)),
            Err(e) => {
                if n > 1 {
                    tracing::warn!("{e}");
                }
                let keep = match &worst {
                    None => true,
                    Some(w) => w.is_transient() && !e.is_transient(),
                };
                if keep {
                    worst = Some(e);
                }
            }
        }
    }
    Err(worst.unwrap_or_else(|| Error::InvalidInput("amqp: no server in url".into())))
}

fn open_one(params: &Params, server: &Server) -> Result<Link> {
    let address = server.address();
    let mut args =
        OpenConnectionArguments::new(&server.host, server.port, &server.user, &server.password);
    args.virtual_host(&server.vhost)
        .heartbeat(params.heartbeat.as_secs().min(u16::MAX as u64) as u16)
        .connection_name(&format!("riffle {}", std::process::id()));
    if params.auth == Auth::External {
        args.credentials(SecurityCredentials::new_external());
    }
    if let Some(t) = &params.tls {
        let name = t.server_name.clone().unwrap_or_else(|| server.host.clone());
        let connector = tokio_rustls::TlsConnector::from(t.config.clone());
        args.tls_adaptor(TlsAdaptor::new(connector, name));
    }
    let args = args.finish();
    let at = format!("AMQP server at {address}");
    let (tx, events) = mpsc::unbounded_channel();
    let opened = runtime::block_on(async {
        let connection = tokio::time::timeout(OPEN_TIMEOUT, Connection::open(&args))
            .await
            .map_err(|_| Error::Connect {
                server: at.clone(),
                detail: format!("no answer within {OPEN_TIMEOUT:?}"),
            })?
            .map_err(|e| open_error(&at, params, e))?;
        let setup = async {
            connection.register_callback(Notices(tx.clone())).await?;
            let channel = connection.open_channel(None).await?;
            channel.register_callback(Notices(tx)).await?;
            Ok::<_, amqprs::error::Error>(channel)
        };
        match tokio::time::timeout(RPC_TIMEOUT, setup).await {
            Ok(Ok(channel)) => Ok((connection, channel)),
            Ok(Err(e)) => Err(Error::Protocol {
                server: at.clone(),
                message: format!("{at}: cannot open a channel: {e}"),
            }),
            Err(_) => Err(Error::Protocol {
                server: at.clone(),
                message: format!("{at} did not open a channel within {RPC_TIMEOUT:?}"),
            }),
        }
    });
    let (connection, channel) = opened?;
    Ok(Link {
        address,
        connection,
        channel,
        events,
    })
}

/// The error of a failed connection attempt, naming the server and, for
/// TLS failures, what to change.
fn open_error(at: &str, params: &Params, e: amqprs::error::Error) -> Error {
    use amqprs::error::Error as E;
    let text = match &e {
        E::NetworkError(m) | E::ConnectionOpenError(m) | E::UriError(m) => m.clone(),
        other => other.to_string(),
    };
    let text = text.replace('\n', " ");
    if let Some(hint) = tls::explain(&text) {
        return Error::Tls {
            broker: at.to_owned(),
            detail: format!("{text}: {hint}"),
        };
    }
    match e {
        // Without the authentication_failure_close capability (which this
        // client does not announce) the broker answers a refused login by
        // closing the connection (over TLS, often by resetting it).
        E::NetworkError(m)
            if ["peer shutdown", "close_notify", "reset by peer"]
                .iter()
                .any(|s| m.contains(s)) =>
        {
            let how = match params.auth {
                Auth::Plain => "wrong user or password",
                Auth::External => {
                    "no user of the client certificate's name, or EXTERNAL not enabled"
                }
            };
            // A broker that requires a client certificate it was not
            // given closes the connection the same way, once the TLS 1.3
            // handshake is over on this side.
            let plain_to_tls = match &params.tls {
                None => "; or the port expects TLS (amqps://)",
                Some(t) if !t.client_cert => {
                    "; or the broker requires a client certificate (tls_cert and tls_key)"
                }
                Some(_) => "",
            };
            Error::Refused {
                server: at.to_owned(),
                message: format!(
                    "{at} closed the connection: 403 ACCESS_REFUSED: authentication failed ({how}{plain_to_tls})"
                ),
            }
        }
        E::NetworkError(m) => Error::Connect {
            server: at.to_owned(),
            detail: m,
        },
        E::ConnectionOpenError(m) => Error::Refused {
            server: at.to_owned(),
            message: format!("{at} refused the connection: {m}"),
        },
        other => Error::Refused {
            server: at.to_owned(),
            message: format!("{at}: {other}"),
        },
    }
}

impl Link {
    /// Runs a request on the channel within [`RPC_TIMEOUT`]; a failure
    /// carries the broker's reason when it closed the channel or the
    /// connection over it.
    pub fn call<T, F>(&mut self, what: &str, request: impl FnOnce(Channel) -> F) -> Result<T>
    where
        F: Future<Output = std::result::Result<T, amqprs::error::Error>> + Send,
        T: Send,
    {
        let future = request(self.channel.clone());
        let result = runtime::block_on(async { tokio::time::timeout(RPC_TIMEOUT, future).await });
        let at = format!("AMQP server at {}", self.address);
        match result {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(self.failure(&format!("{what}: {e}"))),
            Err(_) => Err(Error::Protocol {
                message: format!("{at} did not answer {what} within {RPC_TIMEOUT:?}"),
                server: at,
            }),
        }
    }

    /// The error for a failed request or a lost connection: the broker's
    /// own reason when it sent one, else `detail`.
    pub fn failure(&mut self, detail: &str) -> Error {
        while let Ok(event) = self.events.try_recv() {
            if let Event::Closed { code, what } = event {
                return closed(&self.address, code, &what);
            }
        }
        let at = format!("AMQP server at {}", self.address);
        Error::Protocol {
            message: format!("{at}: {detail}"),
            server: at,
        }
    }

    /// The next event, waiting until `deadline`; None when none came. An
    /// error when the connection is gone or the broker closed it.
    pub fn next_event(&mut self, deadline: Instant) -> Result<Option<Event>> {
        let left = deadline.saturating_duration_since(Instant::now());
        let events = &mut self.events;
        let got = runtime::block_on(async { tokio::time::timeout(left, events.recv()).await });
        match got {
            Err(_) => Ok(None),
            Ok(None) => Err(self.failure("the connection was lost")),
            Ok(Some(Event::Closed { code, what })) => Err(closed(&self.address, code, &what)),
            Ok(Some(event)) => Ok(Some(event)),
        }
    }

    /// Closes the channel and the connection, not waiting long for a
    /// broker that does not answer.
    pub fn close(self) {
        let Link {
            connection,
            channel,
            ..
        } = self;
        let _ = runtime::block_on(async {
            tokio::time::timeout(Duration::from_secs(5), async {
                let _ = channel.close().await;
                let _ = connection.close().await;
            })
            .await
        });
    }
}

/// The error for a close by the broker: a refusal (an unknown queue, a
/// denied permission) unless the broker is going away (320) or broke
/// (5xx), which are for reconnecting.
fn closed(address: &str, code: u16, what: &str) -> Error {
    let server = format!("AMQP server at {address}");
    let message = format!("{server} {what}");
    if code == 320 || code >= 500 || code == 0 {
        Error::Protocol { server, message }
    } else {
        Error::Refused { server, message }
    }
}
