//! The figures that the phases, the report and its ratios share: how a
//! rate, a count and a latency percentile are written, and which of a
//! system's repeated throughput runs count (the successful ones, the
//! median one). Plain functions of numbers and of the report's JSON, so
//! that everything that writes or reads results can depend on them.

use serde_json::Value;

/// A rate for progress lines: "1.23M rec/s", "456.7k rec/s".
pub(crate) fn rate(n: f64, secs: f64) -> String {
    let r = n / secs.max(1e-9);
    if r >= 1e6 {
        format!("{:.2}M rec/s", r / 1e6)
    } else {
        format!("{:.1}k rec/s", r / 1e3)
    }
}

/// Thousands separated with commas.
pub(crate) fn count(x: f64) -> String {
    if !x.is_finite() {
        return "–".into();
    }
    let s = format!("{:.0}", x);
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A latency percentile in ms, or "> N s" where it is censored.
pub(crate) fn latency_ms(lat: &Value, name: &str) -> String {
    match (
        lat[format!("{name}_ms")].as_f64(),
        lat[format!("{name}_censored_above_ms")].as_f64(),
    ) {
        (Some(ms), _) => format!("{ms:.1}"),
        (None, Some(above)) => format!("> {:.1} s", above / 1e3),
        (None, None) => "–".into(),
    }
}

/// A system's successful throughput runs: those of `throughput_runs`
/// without an error, or else its one `throughput`.
pub(crate) fn successful_runs(r: &Value) -> Vec<&Value> {
    match r["throughput_runs"].as_array() {
        Some(runs) => runs.iter().filter(|t| t.get("error").is_none()).collect(),
        None => Some(&r["throughput"])
            .filter(|t| !t.is_null())
            .into_iter()
            .collect(),
    }
}

/// The index of the successful run (one without `"error"`) with the median
/// records/s; of the two middle ones, the slower. A whole run rather than a
/// median per figure, so that the CPU, memory and outputs reported with the
/// rate come from the run that had it.
pub(crate) fn median_run(runs: &[Value]) -> Option<usize> {
    let mut ok: Vec<usize> = (0..runs.len())
        .filter(|&i| runs[i].get("error").is_none())
        .collect();
    // A run without a rate (NaN is written as null) counts as the slowest.
    let rps = |i: usize| {
        runs[i]["records_per_s"]
            .as_f64()
            .unwrap_or(f64::NEG_INFINITY)
    };
    ok.sort_by(|&a, &b| rps(a).total_cmp(&rps(b)));
    ok.get(ok.len().checked_sub(1)? / 2).copied()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn counts_have_separators() {
        assert_eq!(count(1234567.0), "1,234,567");
        assert_eq!(count(999.0), "999");
    }

    #[test]
    fn the_median_run_is_the_middle_one_or_the_slower_middle_one() {
        let run = |rps: f64| json!({ "records_per_s": rps });
        let odd = [run(3.0), run(1.0), run(2.0)];
        assert_eq!(median_run(&odd), Some(2));
        let even = [run(4.0), run(1.0), run(3.0), run(2.0)];
        assert_eq!(median_run(&even), Some(3));
        assert_eq!(median_run(&[run(5.0)]), Some(0));
        assert_eq!(median_run(&[]), None);
    }

    #[test]
    fn failed_runs_are_left_out_of_the_median() {
        let failed = json!({ "error": "exited early with status 1" });
        let runs = [
            json!({ "records_per_s": 3.0 }),
            failed.clone(),
            json!({ "records_per_s": 1.0 }),
        ];
        // Of 1.0 and 3.0 the slower.
        assert_eq!(median_run(&runs), Some(2));
        assert_eq!(median_run(&[failed.clone(), failed]), None);
    }
}
