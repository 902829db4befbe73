//! Giving freed memory back to the system when a consumer falls idle after
//! a burst.
//!
//! glibc's allocator keeps what a thread frees in that thread's arena for
//! later use, and returns memory to the system only from the top of a heap.
//! After a burst, such as a million new keys whose state changes went
//! through the workers, the producer's queue and one transaction, a process
//! holds tens of megabytes it no longer uses (BENCHMARKS.md, "State
//! memory"). `malloc_trim` gives the free pages of every arena back. It
//! walks all the arenas, so it runs only when a consumer's poll comes back
//! empty after many records: at rest, never on the hot path.

/// Records a consumer handles between two releases, at least; also the
/// keys expired at once after which a handler gives memory back
/// ([`free_unused`]).
pub(crate) const BURST: u64 = 100_000;

/// When a consumer gives freed memory back.
#[derive(Debug, Default)]
pub(super) struct Release {
    /// Records handled since the last release.
    handled: u64,
}

impl Release {
    /// Called after every poll with the number of records it returned.
    pub(super) fn after_poll(&mut self, polled: usize) {
        self.handled += polled as u64;
        if polled == 0 && self.handled >= BURST {
            self.handled = 0;
            free_unused();
        }
    }
}

/// Gives the free pages of every allocator arena back to the system.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub(crate) fn free_unused() {
    // SAFETY: malloc_trim only reads and updates the allocator's own state,
    // under its locks; it is safe to call from any thread at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Other allocators return memory by their own rules.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub(crate) fn free_unused() {}

#[cfg(test)]
mod tests {
    use super::{Release, BURST};

    #[test]
    fn releases_only_when_idle_after_a_burst() {
        let mut r = Release::default();
        r.after_poll(0);
        assert_eq!(r.handled, 0, "idle without a burst: nothing to do");
        r.after_poll(BURST as usize - 1);
        r.after_poll(0);
        assert_eq!(r.handled, BURST - 1, "short of a burst: kept counting");
        r.after_poll(1);
        assert_eq!(r.handled, BURST, "busy: no release mid-burst");
        r.after_poll(0);
        assert_eq!(r.handled, 0, "idle after a burst: released");
    }
}
