//! The steady-state window of the throughput phase.
//!
//! Timing a system from its start until it has finished its input would
//! charge it for start-up (a JVM, a Ray cluster) and, when its progress is
//! read from committed offsets, for however long it waits between commits
//! (Kafka Streams commits every 30 s under at-least-once). Instead the
//! driver samples a progress fraction f(t), from 0 to 1, while the system
//! runs, and the rate is taken over the window from f = 0.05 to f = 1:
//!
//! records/s = (1 - f_start) * target / (t(f >= 1) - t_start)
//!
//! where t_start is when f reaches 0.05, or when the system said it was
//! ready if that is later (f_start is then f at that moment). Crossing times
//! and CPU times are interpolated linearly between neighbouring samples, so
//! the result does not depend on the polling period as much as the period
//! itself.

/// One progress sample.
#[derive(Clone, Copy, Debug)]
pub struct Point {
    /// Seconds since the system was started.
    pub t: f64,
    /// Progress fraction.
    pub f: f64,
    /// CPU seconds of the system so far.
    pub cpu_s: f64,
}

/// The fraction of the work at which the window starts.
pub const START: f64 = 0.05;

/// The measured window.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Window {
    /// Seconds since start at the window's start and end.
    pub start_s: f64,
    pub end_s: f64,
    /// Records processed within the window.
    pub records: f64,
    pub records_per_s: f64,
    /// CPU seconds spent within the window.
    pub cpu_s: f64,
}

#[derive(Default)]
pub struct Progress {
    points: Vec<Point>,
}

impl Progress {
    pub fn push(&mut self, p: Point) {
        self.points.push(p);
    }

    /// The last progress fraction seen.
    pub fn last(&self) -> f64 {
        self.points.last().map_or(0.0, |p| p.f)
    }

    /// The first moment f reached `threshold`, interpolated.
    fn crossing(&self, threshold: f64) -> Option<f64> {
        let i = self.points.iter().position(|p| p.f >= threshold)?;
        let b = self.points[i];
        let Some(a) = i.checked_sub(1).map(|j| self.points[j]) else {
            return Some(b.t);
        };
        if b.f <= a.f {
            return Some(b.t);
        }
        Some(a.t + (threshold - a.f) / (b.f - a.f) * (b.t - a.t))
    }

    /// (f, cpu_s) at time `t`, interpolated between samples.
    fn at(&self, t: f64) -> Option<(f64, f64)> {
        let first = self.points.first()?;
        if t <= first.t {
            return Some((first.f, first.cpu_s));
        }
        let i = self.points.iter().position(|p| p.t >= t);
        let Some(i) = i else {
            let last = self.points.last()?;
            return Some((last.f, last.cpu_s));
        };
        let (a, b) = (self.points[i - 1], self.points[i]);
        let w = if b.t > a.t {
            (t - a.t) / (b.t - a.t)
        } else {
            1.0
        };
        Some((a.f + w * (b.f - a.f), a.cpu_s + w * (b.cpu_s - a.cpu_s)))
    }

    /// The window for `target` records; `ready_s` is when the system said it
    /// was ready, if it says so. None until f has reached 1, or if the
    /// window is too short to time.
    pub fn window(&self, target: u64, ready_s: Option<f64>) -> Option<Window> {
        let end_s = self.crossing(1.0)?;
        let start_s = self.crossing(START)?.max(ready_s.unwrap_or(0.0));
        let (f_start, cpu_start) = self.at(start_s)?;
        let (_, cpu_end) = self.at(end_s)?;
        let secs = end_s - start_s;
        if secs < 1e-3 || f_start >= 1.0 {
            return None;
        }
        let records = (1.0 - f_start) * target as f64;
        Some(Window {
            start_s,
            end_s,
            records,
            records_per_s: records / secs,
            cpu_s: cpu_end - cpu_start,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn progress(points: &[(f64, f64)]) -> Progress {
        let mut p = Progress::default();
        for &(t, f) in points {
            p.push(Point { t, f, cpu_s: t });
        }
        p
    }

    #[test]
    fn the_window_runs_from_five_percent_to_the_end() {
        // Start-up until 10 s, then 1% of 1,000,000 records per second.
        let p = progress(&[
            (0.0, 0.0),
            (10.0, 0.0),
            (20.0, 0.1),
            (110.0, 1.0),
            (111.0, 1.0),
        ]);
        let w = p.window(1_000_000, None).unwrap();
        assert!((w.start_s - 15.0).abs() < 1e-9, "{w:?}");
        assert!((w.end_s - 110.0).abs() < 1e-9);
        assert!((w.records_per_s - 10_000.0).abs() < 1e-6);
        assert!((w.cpu_s - 95.0).abs() < 1e-9);
    }

    #[test]
    fn the_window_starts_no_earlier_than_ready() {
        let p = progress(&[(0.0, 0.0), (10.0, 0.1), (20.0, 0.2), (100.0, 1.0)]);
        let w = p.window(1000, Some(20.0)).unwrap();
        assert_eq!(w.start_s, 20.0);
        assert!((w.records - 800.0).abs() < 1e-9);
        assert!((w.records_per_s - 10.0).abs() < 1e-9);
    }

    #[test]
    fn no_window_before_the_end() {
        let p = progress(&[(0.0, 0.0), (10.0, 0.5)]);
        assert_eq!(p.window(1000, None), None);
        assert_eq!(p.last(), 0.5);
    }
}
