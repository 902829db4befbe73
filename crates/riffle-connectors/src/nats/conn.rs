//! Connecting to NATS with async-nats on the shared runtime: the server
//! list, TLS, credentials, reconnection with jittered backoff, and errors
//! that name the server and the cause in one line.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_nats::{Client, ConnectErrorKind, ConnectOptions, Event, ServerAddr, Subscriber};
use futures_util::StreamExt;
use riffle::{Error, Result};

use crate::net::{Backoff, Url, CONNECT_TIMEOUT};
use crate::runtime;
use crate::tls::{self, Tls};

/// How the client proves who it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Auth {
    None,
    UserPassword(String, String),
    Token(String),
    /// An NKEY seed (`SU...`): the server sends a nonce, the client signs it.
    Nkey(String),
    /// A `.creds` file: a user JWT and the NKEY seed that signs the nonce
    /// (servers in operator mode).
    Credentials(PathBuf),
}

/// Where and how to connect; shared by sources and sinks.
#[derive(Debug, Clone)]
pub struct Conn {
    pub servers: Vec<Url>,
    pub tls: Option<Tls>,
    pub auth: Auth,
    /// How many times the connection was lost: what was written to a lost
    /// connection may not have reached the server, and the client does
    /// not know which.
    pub losses: Arc<AtomicU64>,
}

impl Conn {
    /// The servers, `host:port` separated by commas, for messages.
    pub fn addresses(&self) -> String {
        self.servers
            .iter()
            .map(Url::address)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// How many times the connection was lost so far.
    pub fn losses(&self) -> u64 {
        self.losses.load(Ordering::SeqCst)
    }

    /// "NATS server at ...", the subject of error messages.
    pub fn server(&self) -> String {
        format!("NATS server at {}", self.addresses())
    }

    /// Connects to one of the servers (in random order), within a few
    /// seconds per server. Once connected, the client reconnects by itself
    /// after a loss, to any server of the list or one the cluster
    /// announced, waiting a jittered backoff between attempts; publishes
    /// made meanwhile are buffered and sent on reconnection.
    pub fn connect(&self) -> Result<Client> {
        let server = self.server();
        let events = server.clone();
        let losses = self.losses.clone();
        let mut options = ConnectOptions::new()
            .name("riffle")
            .connection_timeout(CONNECT_TIMEOUT)
            .reconnect_delay_callback(reconnect_delay)
            .event_callback(move |event| {
                if matches!(event, Event::Disconnected) {
                    losses.fetch_add(1, Ordering::SeqCst);
                }
                let server = events.clone();
                async move { log_event(&server, event) }
            });
        options = match &self.auth {
            Auth::None => options,
            Auth::UserPassword(user, password) => {
                options.user_and_password(user.clone(), password.clone())
            }
            Auth::Token(token) => options.token(token.clone()),
            Auth::Nkey(seed) => options.nkey(seed.clone()),
            Auth::Credentials(path) => {
                runtime::block_on(options.credentials_file(path)).map_err(|e| {
                    Error::InvalidInput(format!(
                        "nats: credentials {}: {}",
                        path.display(),
                        chain(&e)
                    ))
                })?
            }
        };
        if let Some(tls) = &self.tls {
            let config = Arc::unwrap_or_clone(tls.client_config()?);
            options = options.tls_client_config(config).require_tls(true);
        }
        let scheme = if self.tls.is_some() { "tls" } else { "nats" };
        let addrs = self
            .servers
            .iter()
            .map(|u| {
                format!("{scheme}://{}", u.address())
                    .parse::<ServerAddr>()
                    .map_err(|e| Error::InvalidInput(format!("nats: url {}: {e}", u.address())))
            })
            .collect::<Result<Vec<_>>>()?;
        // Each server gets its connection timeout; the margin covers the
        // TLS handshake and the CONNECT/PONG exchange.
        let limit = CONNECT_TIMEOUT * self.servers.len() as u32 + Duration::from_secs(5);
        let tls_on = self.tls.is_some();
        runtime::within(&server, limit, async {
            options
                .connect(addrs)
                .await
                .map_err(|e| connect_error(&server, tls_on, &e))
        })
    }
}

/// Between reconnection attempts: the common backoff (100 ms doubling to
/// 5 s, jittered so that many clients do not come back at once).
fn reconnect_delay(attempts: usize) -> Duration {
    if attempts <= 1 {
        return Duration::ZERO;
    }
    let mut backoff = Backoff::default().jittered();
    for _ in 2..attempts.min(12) {
        backoff.next_delay();
    }
    backoff.next_delay()
}

fn log_event(server: &str, event: Event) {
    match event {
        Event::Disconnected => {
            tracing::warn!("lost the connection to {server}; reconnecting")
        }
        Event::Connected => tracing::info!("connected to {server}"),
        Event::LameDuckMode => {
            tracing::warn!("{server} is shutting down (lame duck mode); moving to another")
        }
        Event::SlowConsumer(sid) => {
            tracing::warn!("{server}: messages dropped for subscription {sid} (slow consumer)")
        }
        Event::ServerError(e) => tracing::warn!("{server}: {e}"),
        Event::ClientError(e) => tracing::warn!("{server}: {e}"),
        Event::Draining | Event::Closed => {}
    }
}

/// The whole chain of an error, in one line.
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let s_text = s.to_string();
        if !text.contains(&s_text) {
            text.push_str(": ");
            text.push_str(&s_text);
        }
        source = s.source();
    }
    text.replace('\n', " ")
}

/// A connection error, by cause: refused credentials and TLS failures are
/// configuration (reported at once, not retried), anything else is an
/// unreachable server.
fn connect_error(server: &str, tls_on: bool, e: &async_nats::ConnectError) -> Error {
    let text = chain(e);
    match e.kind() {
        ConnectErrorKind::AuthorizationViolation | ConnectErrorKind::Authentication => {
            Error::Authentication {
                broker: server.to_owned(),
                detail: format!("{text} (the server did not accept the credentials: check user, password, token, nkey or credentials)"),
            }
        }
        _ => match tls::explain(&text).filter(|_| tls_on) {
            Some(hint) => Error::Tls {
                broker: server.to_owned(),
                detail: format!("{text}; {hint}"),
            },
            None => Error::Connect {
                server: server.to_owned(),
                detail: text,
            },
        },
    }
}

/// Proves that the server has processed everything this client sent
/// before: a message to an inbox of its own comes back only after the
/// server has read every earlier publish, subscription and
/// acknowledgement of the connection. (async-nats' `flush` only empties
/// the local write buffer.)
pub struct Echo {
    server: String,
    subject: String,
    subscriber: Subscriber,
    count: u64,
}

impl Echo {
    pub async fn new(server: &str, client: &Client) -> Result<Self> {
        let subject = client.new_inbox();
        let subscriber = client
            .subscribe(subject.clone())
            .await
            .map_err(|e| lost(server, &chain(&e)))?;
        Ok(Self {
            server: server.to_owned(),
            subject,
            subscriber,
            count: 0,
        })
    }

    /// The round trip; the caller bounds it with a deadline.
    pub async fn round_trip(&mut self, client: &Client) -> Result<()> {
        self.count += 1;
        let mark = self.count.to_string();
        client
            .publish(self.subject.clone(), mark.clone().into())
            .await
            .map_err(|e| lost(&self.server, &chain(&e)))?;
        client
            .flush()
            .await
            .map_err(|e| lost(&self.server, &chain(&e)))?;
        // Earlier marks, from round trips that timed out, are skipped.
        while let Some(msg) = self.subscriber.next().await {
            if msg.payload.as_ref() == mark.as_bytes() {
                return Ok(());
            }
        }
        Err(lost(&self.server, "the connection was closed"))
    }
}

fn lost(server: &str, detail: &str) -> Error {
    Error::Protocol {
        server: server.to_owned(),
        message: format!("{server}: {detail}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reconnection_waits_grow_to_a_cap() {
        assert_eq!(reconnect_delay(1), Duration::ZERO);
        let first = reconnect_delay(2);
        assert!(first >= Duration::from_millis(50) && first <= Duration::from_millis(100));
        let late = reconnect_delay(50);
        assert!(late >= Duration::from_millis(2500) && late <= Duration::from_secs(5));
    }
}
