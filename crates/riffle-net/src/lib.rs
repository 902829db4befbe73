//! What Riffle's network clients and servers share, below the connectors
//! and the operations endpoint alike, so that a process has one of each.
//!
//! # Layout
//!
//! - [`runtime`]: the one async runtime of the process's network code,
//!   and waiting on it from ordinary threads.
//! - [`tls`]: TLS settings, the client and server configurations built
//!   from them, and failures explained in one line.
//! - [`secret`]: bearer tokens, compared in constant time.

pub mod runtime;
pub mod secret;
pub mod tls;
