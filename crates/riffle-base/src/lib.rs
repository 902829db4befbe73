//! The bottom layer of Riffle: what every other layer uses and nothing
//! above it may be needed for. Kept in a crate of its own so that the log,
//! the state stores, the runtime and the operations layer can all depend on
//! it while it depends on none of them (the compiler refuses the reverse).
//!
//! # Layout
//!
//! - [`error`]: the one error type and its result alias, including the
//!   payload a sink reports when it could not confirm a flush.
//! - [`metrics`]: the process-wide registry every layer counts in.
//! - [`crc32`]: the checksum guarding segment files and state snapshots.
//! - [`duration`]: the one duration grammar of flags and pipeline files.
//! - [`backoff`]: the one backoff between attempts, for every retry loop.

pub mod backoff;
pub mod crc32;
pub mod duration;
pub mod error;
pub mod metrics;

pub use error::{Error, Result, Unconfirmed};
