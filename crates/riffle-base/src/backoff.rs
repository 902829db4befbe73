//! The one backoff: how long to wait before trying again after a failure,
//! for supervised actors restarting, consumers rejoining, pipelines
//! retrying a sink and connectors reconnecting.
//!
//! Waits double from a first step up to a cap. With jitter, up to half of
//! each wait is taken off at random, so that clients that failed together
//! (every pipeline of a server that went away) do not come back together.

use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Backoff {
    first: Duration,
    max: Duration,
    jitter: bool,
    next: Duration,
}

impl Backoff {
    /// Waits from `first`, doubling up to `max`, without jitter.
    pub const fn new(first: Duration, max: Duration) -> Self {
        Self {
            first,
            max,
            jitter: false,
            next: first,
        }
    }

    /// The same, with up to half of each wait taken off at random.
    pub const fn jittered(mut self) -> Self {
        self.jitter = true;
        self
    }

    /// The wait before the next attempt; each call doubles the one after.
    pub fn next_delay(&mut self) -> Duration {
        let step = self.next;
        self.next = self.next.saturating_mul(2).min(self.max);
        if self.jitter {
            step.mul_f64(1.0 - fastrand::f64() / 2.0)
        } else {
            step
        }
    }

    /// After a success: the next failure waits the first step again.
    pub fn reset(&mut self) {
        self.next = self.first;
    }
}

/// 100 ms doubling to 5 s: a reconnect soon after a blip, and no more than
/// one attempt every few seconds while a server stays away.
impl Default for Backoff {
    fn default() -> Self {
        Self::new(Duration::from_millis(100), Duration::from_secs(5))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_to_the_cap_and_resets() {
        let mut b = Backoff::default();
        let d: Vec<_> = (0..8).map(|_| b.next_delay().as_millis()).collect();
        assert_eq!(d, [100, 200, 400, 800, 1600, 3200, 5000, 5000]);
        b.reset();
        assert_eq!(b.next_delay().as_millis(), 100);
    }

    #[test]
    fn jitter_takes_off_up_to_half() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1)).jittered();
        for step in [100, 200, 400, 800, 1000, 1000] {
            let d = b.next_delay().as_millis();
            assert!(d <= step && d >= step / 2, "{d} for a step of {step}");
        }
    }
}
