//! A source's lag, measured now and then: asking a server for it costs a
//! round trip, and the pipeline asks after every batch.

use std::time::{Duration, Instant};

/// How often sources ask their server for their lag.
pub const LAG_EVERY: Duration = Duration::from_secs(5);

/// The last measurement of a value, kept for a while.
#[derive(Debug)]
pub struct Sampled {
    every: Duration,
    last: Option<(Instant, Option<u64>)>,
}

impl Sampled {
    /// Measures at most once per `every`.
    pub fn every(every: Duration) -> Self {
        Self { every, last: None }
    }

    /// The value measured within the period, else `measure()`'s (kept,
    /// failures too: a server that cannot say is not asked again at once).
    pub fn get(&mut self, measure: impl FnOnce() -> Option<u64>) -> Option<u64> {
        match self.last {
            Some((at, value)) if at.elapsed() < self.every => value,
            _ => {
                let value = measure();
                self.last = Some((Instant::now(), value));
                value
            }
        }
    }
}

impl Default for Sampled {
    /// Every [`LAG_EVERY`].
    fn default() -> Self {
        Self::every(LAG_EVERY)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn measures_once_per_period() {
        let mut s = Sampled::every(Duration::from_millis(50));
        let mut asked = 0;
        let mut ask = |v| {
            s.get(|| {
                asked += 1;
                v
            })
        };
        assert_eq!(ask(Some(3)), Some(3));
        assert_eq!(ask(Some(4)), Some(3), "kept within the period");
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(ask(None), None, "a failure is kept too");
        assert_eq!(ask(Some(5)), None);
        assert_eq!(asked, 2);
    }
}
