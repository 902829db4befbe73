use std::collections::VecDeque;

/// Which records of one partition are finished, when they finish out of
/// order: the committable offset is the lowest one not yet finished.
///
/// Records are registered in offset order as they are dispatched; finishing
/// is O(1) and the window only holds records between the lowest unfinished
/// one and the newest.
#[derive(Debug, Default, Clone)]
pub struct OffsetTracker {
    /// Offset of `done[0]`.
    base: i64,
    done: VecDeque<bool>,
}

impl OffsetTracker {
    /// Registers a dispatched record. Offsets skipped since the previous one
    /// (compacted records, transaction markers) count as finished.
    pub fn dispatched(&mut self, offset: i64) {
        if self.done.is_empty() {
            self.base = offset;
        }
        let end = self.base + self.done.len() as i64;
        debug_assert!(offset >= end, "offsets must be registered in order");
        for _ in end..offset {
            self.done.push_back(true);
        }
        self.done.push_back(false);
    }

    /// Marks a record finished.
    pub fn finished(&mut self, offset: i64) {
        let Ok(i) = usize::try_from(offset - self.base) else {
            return;
        };
        if let Some(slot) = self.done.get_mut(i) {
            *slot = true;
        }
        while self.done.front() == Some(&true) {
            self.done.pop_front();
            self.base += 1;
        }
    }

    /// The offset to commit: every record below it is finished.
    pub fn committable(&self) -> i64 {
        self.base
    }

    /// Records dispatched and not finished.
    pub fn pending(&self) -> usize {
        self.done.iter().filter(|d| !**d).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commits_only_below_the_lowest_unfinished_record() {
        let mut t = OffsetTracker::default();
        for o in 10..15 {
            t.dispatched(o);
        }
        assert_eq!(t.committable(), 10);
        t.finished(12);
        t.finished(11);
        assert_eq!(t.committable(), 10, "10 is still running");
        t.finished(10);
        assert_eq!(t.committable(), 13);
        t.finished(14);
        assert_eq!(t.committable(), 13);
        t.finished(13);
        assert_eq!(t.committable(), 15);
        assert_eq!(t.pending(), 0);
    }

    #[test]
    fn gaps_count_as_finished() {
        let mut t = OffsetTracker::default();
        t.dispatched(0);
        t.dispatched(5);
        t.finished(0);
        assert_eq!(t.committable(), 5);
        t.finished(5);
        assert_eq!(t.committable(), 6);
    }

    #[test]
    fn unknown_offsets_are_ignored() {
        let mut t = OffsetTracker::default();
        t.dispatched(3);
        t.finished(2);
        t.finished(99);
        assert_eq!(t.committable(), 3);
    }
}
