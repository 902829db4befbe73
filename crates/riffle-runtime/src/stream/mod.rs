//! The stream runtime.
//!
//! - [`Producer`]: the producer actor of the chapter's example 6-1: a
//!   cloneable handle that sends JSON or bytes without waiting, counts
//!   delivery reports, and flushes within a bound on close.
//! - [`Consumer`]: the consumer actor of example 6-2: one group member on its
//!   own thread, a handler called per record, a `stop` that works while it
//!   polls, supervision that restarts it after a panic.
//! - [`ConsumerGroup`]: N consumer actors sharing one group id (example 6-4).

mod consumer;
mod group;
pub(crate) mod memory;
mod producer;

pub use consumer::{Consumer, ConsumerStats, Deferring, Handler, Stopper};
pub use group::ConsumerGroup;
pub use producer::{DeliveryStats, Producer};
