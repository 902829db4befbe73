//! Riffle's runtime: running processors over a log, with state, under a
//! delivery guarantee.
//!
//! # Layout
//!
//! Each module uses only the ones before it in this list, and the crates
//! below: `riffle-base` (errors, metrics), `riffle-log` (the log contract
//! and its backends) and `riffle-state` (stores, changelog, snapshots).
//!
//! - [`actor`]: the actor runtime every thread of the runtime runs on:
//!   bounded mailboxes, cloneable handles, and one supervision policy that
//!   restarts a panicking actor with backoff.
//! - [`stream`]: the producer and consumer actors and consumer groups.
//! - [`process`]: processors, stateless and keyed, in apps over topics: the
//!   two styles, the commit protocols of the two guarantees, dead letters,
//!   routing state queries to the key's owner, a group's lag and the
//!   autoscaler that changes an app's consumer count with it.
//! - [`testing`]: a driver that runs an app on the embedded log under a
//!   clock the test moves, with crashes and rebalances on demand.
//!
//! `docs/data-path.md` follows one record from the poll that fetches it to
//! the commit that makes it permanent, file by file.

pub mod actor;
pub mod process;
pub mod stream;
pub mod testing;

pub use riffle_base::error::{Error, Result};

use riffle_base::{error, metrics};
use riffle_log as log;
