//! Handing partition state between the consumers of one process, so that a
//! rebalance inside the process need not restore it.

use std::collections::HashMap;
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

/// How long a consumer waits for the previous owner in this process to hand
/// over a partition's state before restoring it from the changelog.
const HANDOFF_WAIT: Duration = Duration::from_secs(10);

/// A partition's slot is `Held` while a consumer owns it and `Parked` once
/// it let go (`None` when its state could not be kept); a new owner whose
/// assignment arrives before the old owner has let go waits for it.
pub struct Handoff<T> {
    slots: Mutex<HashMap<i32, Slot<T>>>,
    parked: Condvar,
}

enum Slot<T> {
    Held,
    Parked(Option<T>),
}

impl<T> Default for Handoff<T> {
    fn default() -> Self {
        Self {
            slots: Mutex::new(HashMap::new()),
            parked: Condvar::new(),
        }
    }
}

impl<T> Handoff<T> {
    /// Takes partition `p`'s state, if this process has it.
    pub fn take(&self, p: i32) -> Option<T> {
        let deadline = Instant::now() + HANDOFF_WAIT;
        let mut slots = self.slots.lock().unwrap();
        while matches!(slots.get(&p), Some(Slot::Held)) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                tracing::warn!(
                    "partition {p}: previous owner did not hand over its state; restoring it"
                );
                break;
            }
            slots = self.parked.wait_timeout(slots, left).unwrap().0;
        }
        match slots.insert(p, Slot::Held) {
            Some(Slot::Parked(state)) => state,
            _ => None,
        }
    }

    /// Leaves partition `p`'s state for its next owner.
    pub fn park(&self, p: i32, state: Option<T>) {
        self.slots.lock().unwrap().insert(p, Slot::Parked(state));
        self.parked.notify_all();
    }
}
