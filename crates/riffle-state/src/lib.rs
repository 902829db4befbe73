//! Riffle's state layer: what a processor keeps per key, kept where it
//! survives the process.
//!
//! A partition's state is a [`Store`] of keys and their states, in memory.
//! It is made durable two ways, and moves with its partition:
//!
//! - [`key`]: keys, inline when short, so that a million small keys cost no
//!   million heap blocks.
//! - [`store`]: the store itself, which flags what changed so that only
//!   that is written, and its encoding (JSON per state).
//! - [`timers`]: per-key timers, in processing or event time, stored with
//!   their key's state and indexed in due order.
//! - [`version`]: the version each stored state carries, the upgrades from
//!   older versions, and the states that do not decode at all (set aside,
//!   their keys started afresh).
//! - [`changelog`]: writing changes to a compacted changelog topic through a
//!   [`ChangelogSink`] the runtime provides (its producer, inside its
//!   commit), and restoring a store from it ([`Durability`]), several
//!   partitions in parallel.
//! - [`snapshot`]: a store's whole content in a local file with the
//!   changelog offset it reflects, so a restart reads only the changelog's
//!   tail.
//! - [`handoff`]: handing a partition's store from one consumer of a
//!   process to the next when a rebalance moves it inside the process, so
//!   that it is not restored at all.
//! - [`layout`]: moving keys' state to the partitions they hash to when
//!   the input topic gains partitions, and the marks in the changelog
//!   that tell both sides how far the move got.
//! - [`standby`]: warm copies of the partitions a process does not own,
//!   followed from the changelog, so that a takeover reads only its tail.
//!
//! The layer knows the log contract ([`riffle_log`]) and nothing above it:
//! the runtime decides when changes are written, snapshots taken and
//! stores restored. What has state per key and partition (the processors'
//! states today; timers, windows and tables likewise) is a store here with
//! its own changelog topic.

pub mod changelog;
pub mod handoff;
pub mod key;
pub mod layout;
pub mod snapshot;
pub mod standby;
pub mod store;
pub mod timers;
pub mod version;

pub use changelog::{restore_point, send_changes, Changes, Durability, RestoreFrom, RestoreStats};
pub use handoff::Handoff;
pub use key::Key;
pub use layout::{Cut, Layout, Moving};
pub use snapshot::SnapshotWriter;
pub use standby::Standby;
pub use store::{read_stored, ChangelogSink, Encoded, Store};
pub use timers::{Domain, Fired, Time, Timer, TimerChange};
pub use version::{Damaged, StoredState, Unversioned, Upgrade};

/// Something per partition number, looked up once per record: hashed as
/// the stores' keys are (see [`store`]), not with the standard library's
/// slower default.
pub type ByPartition<V> = hashbrown::HashMap<i32, V>;

/// The stores of the partitions one consumer (or worker) owns.
pub type PartitionStores<S> = ByPartition<Store<S>>;
