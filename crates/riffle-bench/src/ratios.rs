//! The "Ratios" section of the report: the comparisons the project's
//! performance goals are stated in, computed from one run's results, each
//! marked with whether its goal holds. Ratios only mean something within one
//! run: on a shared machine absolute figures move with the load, while
//! systems measured minutes apart on the same broker compare fairly.
//!
//! A missing figure (a system not run, or failed) gives "n/a", not a
//! failure; so does a comparison of latencies that censoring leaves open.
//!
//! Over repeated runs the rates are those of each system's median run (its
//! `throughput`).

use serde_json::Value;

use crate::figures::{count, latency_ms, successful_runs};

/// A latency percentile: known, or only known to exceed a bound.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Latency {
    Exact(f64),
    Above(f64),
}

/// Whether `a` is lower than `b`, where censoring allows an answer.
fn lower(a: Latency, b: Latency) -> Option<bool> {
    use Latency::*;
    match (a, b) {
        (Exact(x), Exact(y)) => Some(x < y),
        (Exact(x), Above(y)) if x <= y => Some(true),
        (Above(x), Exact(y)) if x >= y => Some(false),
        _ => None,
    }
}

struct Results<'a>(&'a [Value]);

impl Results<'_> {
    fn get(&self, name: &str) -> Option<&Value> {
        self.0.iter().find(|r| r["name"] == name)
    }

    fn rps(&self, name: &str) -> Option<f64> {
        self.get(name)?["throughput"]["records_per_s"]
            .as_f64()
            .filter(|x| x.is_finite() && *x > 0.0)
    }

    fn p99(&self, name: &str) -> Option<Latency> {
        let lat = &self.get(name)?["latency"];
        match (
            lat["p99_ms"].as_f64(),
            lat["p99_censored_above_ms"].as_f64(),
        ) {
            (Some(ms), _) => Some(Latency::Exact(ms)),
            (None, Some(above)) => Some(Latency::Above(above)),
            (None, None) => None,
        }
    }

    fn p99_text(&self, name: &str) -> String {
        match self.get(name) {
            Some(r) if !r["latency"].is_null() => {
                let t = latency_ms(&r["latency"], "p99");
                if t.starts_with('>') {
                    t
                } else {
                    format!("{t} ms")
                }
            }
            _ => "n/a".into(),
        }
    }
}

fn holds(h: Option<bool>) -> &'static str {
    match h {
        Some(true) => "yes",
        Some(false) => "**no**",
        None => "n/a",
    }
}

fn times(x: Option<f64>) -> String {
    x.map_or("n/a".into(), |x| format!("{x:.2}x"))
}

fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    Some(a? / b?)
}

/// The median (of an even number, the mean of the two middle values).
fn median(mut xs: Vec<f64>) -> Option<f64> {
    xs.sort_by(f64::total_cmp);
    match xs.len() {
        0 => None,
        n if n % 2 == 1 => Some(xs[n / 2]),
        n => Some((xs[n / 2 - 1] + xs[n / 2]) / 2.0),
    }
}

/// Records per CPU second: from the median CPU s per million records over
/// the successful runs (the median run by rate need not be the median by
/// CPU).
fn per_cpu_second(result: &Value) -> Option<f64> {
    let cpu = successful_runs(result)
        .iter()
        .filter_map(|t| t["cpu_s_per_million"].as_f64())
        .filter(|c| *c > 0.0)
        .collect();
    Some(1e6 / median(cpu)?)
}

pub fn markdown(results: &[Value]) -> String {
    let r = Results(results);
    let mut rows: Vec<[String; 4]> = Vec::new();

    // Each riffle system against the librdkafka ceiling.
    let goals = [
        ("riffle-stateless", 0.90),
        ("riffle-keyed-alo", 0.85),
        ("riffle-actors-alo", 0.70),
    ];
    for res in results {
        // The windowed workload reads another input: no ceiling for it.
        let Some(name) = res["name"]
            .as_str()
            .filter(|n| n.starts_with("riffle-") && !n.contains("-window-"))
        else {
            continue;
        };
        let x = ratio(r.rps(name), r.rps("ceiling"));
        let (goal, h) = match goals.iter().find(|g| g.0 == name) {
            Some(&(_, min)) => (format!(">= {min:.2}x"), holds(x.map(|x| x >= min))),
            None => ("–".into(), "–"),
        };
        rows.push([
            format!("{name} / ceiling, records/s"),
            times(x),
            goal,
            h.into(),
        ]);
    }

    // The key-based controller against the same controller written by hand
    // on librdkafka, at the same guarantee: the framework should cost
    // nothing.
    for (ours, theirs) in [
        ("riffle-keyed-alo", "bare-keyed-alo"),
        ("riffle-keyed-eos", "bare-keyed-eos"),
    ] {
        let x = ratio(r.rps(ours), r.rps(theirs));
        rows.push([
            format!("{ours} / {theirs}, records/s"),
            times(x),
            ">= 1.00x".into(),
            holds(x.map(|x| x >= 1.0)).into(),
        ]);
    }

    // What exactly-once costs against at-least-once; the goal is the
    // key-based style's, in every mode.
    for (what, alo, eos, goal) in [
        ("keyed", "riffle-keyed-alo", "riffle-keyed-eos", true),
        ("actors", "riffle-actors-alo", "riffle-actors-eos", true),
        ("bare", "bare-keyed-alo", "bare-keyed-eos", false),
        (
            "Kafka Streams",
            "kafka-streams-alo",
            "kafka-streams-eos",
            false,
        ),
        ("windows", "riffle-window-alo", "riffle-window-eos", false),
        (
            "Kafka Streams windows",
            "kafka-streams-window-alo",
            "kafka-streams-window-eos",
            false,
        ),
    ] {
        let cost = ratio(r.rps(eos), r.rps(alo)).map(|x| 1.0 - x);
        rows.push([
            format!("exactly-once cost, {what} (1 - {eos} / {alo})"),
            cost.map_or("n/a".into(), |c| format!("{:.0} %", c * 100.0)),
            if goal { "<= 20 %".into() } else { "–".into() },
            if goal {
                holds(cost.map(|c| c <= 0.20)).into()
            } else {
                "–".into()
            },
        ]);
    }

    // Riffle against the peers: faster by a factor, with a lower p99.
    for (ours, theirs, min) in [
        ("riffle-keyed-alo", "kafka-streams-alo", 2.0),
        ("riffle-keyed-eos", "kafka-streams-eos", 2.0),
        ("riffle-keyed-alo", "python-ray", 50.0),
        ("riffle-window-alo", "kafka-streams-window-alo", 3.0),
        ("riffle-window-eos", "kafka-streams-window-eos", 3.0),
        // The same rule in Python, on Riffle: both over the same prefix.
        ("python-riffle-alo", "python-ray", 5.0),
        ("python-riffle-eos", "python-ray", 5.0),
    ] {
        let x = ratio(r.rps(ours), r.rps(theirs));
        let lower_p99 = match (r.p99(ours), r.p99(theirs)) {
            (Some(a), Some(b)) => lower(a, b),
            _ => None,
        };
        let h = match (x, lower_p99) {
            (Some(x), Some(l)) => Some(x >= min && l),
            // Either part failing decides it even if the other is unknown.
            (Some(x), None) if x < min => Some(false),
            (None, Some(false)) => Some(false),
            _ => None,
        };
        rows.push([
            format!("{ours} / {theirs}: records/s; p99"),
            format!(
                "{}; {} vs {}",
                times(x),
                r.p99_text(ours),
                r.p99_text(theirs)
            ),
            format!(">= {min:.0}x, lower p99"),
            holds(h).into(),
        ]);
    }

    // The embedded log: records per CPU second.
    let per_cpu = r.get("riffle-embedded").and_then(per_cpu_second);
    rows.push([
        "riffle-embedded, records per CPU second".into(),
        per_cpu.map_or("n/a".into(), count),
        ">= 2,000,000".into(),
        holds(per_cpu.map(|x| x >= 2e6)).into(),
    ]);

    let mut s = String::from("## Ratios\n\n");
    s.push_str("| comparison | this run | goal | holds |\n|---|---:|---|---|\n");
    for [a, b, c, d] in rows {
        s.push_str(&format!("| {a} | {b} | {c} | {d} |\n"));
    }
    let prefixed: Vec<&str> = ["python-ray", "python-riffle-alo", "python-riffle-eos"]
        .into_iter()
        .filter(|n| {
            r.get(n)
                .and_then(|p| p["throughput"]["prefix"].as_f64())
                .is_some()
        })
        .collect();
    match prefixed.as_slice() {
        [] => {}
        [one] => s.push_str(&format!(
            "\n{one}'s records/s is over its prefix of the input (see above).\n"
        )),
        many => s.push_str(&format!(
            "\nThe records/s of {} are over their prefix of the input (see above).\n",
            many.join(", ")
        )),
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn censored_latencies_compare_where_they_can() {
        use Latency::*;
        assert_eq!(lower(Exact(10.0), Above(30_000.0)), Some(true));
        assert_eq!(lower(Exact(40_000.0), Above(30_000.0)), None);
        assert_eq!(lower(Above(30_000.0), Exact(10.0)), Some(false));
        assert_eq!(lower(Above(1.0), Above(2.0)), None);
    }

    #[test]
    fn missing_data_is_not_a_failure() {
        let results = vec![
            json!({"name": "ceiling", "throughput": {"records_per_s": 100.0}}),
            json!({"name": "riffle-keyed-alo", "throughput": {"records_per_s": 90.0},
                   "latency": {"p99_ms": 5.0}}),
            json!({"name": "python-ray", "throughput": {"records_per_s": 1.0, "prefix": 10},
                   "latency": {"p99_ms": null, "p99_censored_above_ms": 30000.0}}),
        ];
        let md = markdown(&results);
        assert!(
            md.contains("| riffle-keyed-alo / ceiling, records/s | 0.90x | >= 0.85x | yes |"),
            "{md}"
        );
        assert!(
            md.contains("90.00x; 5.0 ms vs > 30.0 s | >= 50x, lower p99 | yes |"),
            "{md}"
        );
        assert!(
            md.contains(
                "kafka-streams-alo: records/s; p99 | n/a; 5.0 ms vs n/a | >= 2x, lower p99 | n/a |"
            ),
            "{md}"
        );
        assert!(!md.contains("**no**"), "{md}");
    }

    #[test]
    fn python_on_riffle_is_held_to_the_python_peer() {
        let results = vec![
            json!({"name": "python-ray", "throughput": {"records_per_s": 60_000.0, "prefix": 10},
                   "latency": {"p99_ms": 6000.0}}),
            json!({"name": "python-riffle-alo", "throughput": {"records_per_s": 330_000.0, "prefix": 10},
                   "latency": {"p99_ms": 40.0}}),
            json!({"name": "python-riffle-eos", "throughput": {"records_per_s": 270_000.0, "prefix": 10},
                   "latency": {"p99_ms": 150.0}}),
        ];
        let md = markdown(&results);
        for row in [
            "| python-riffle-alo / python-ray: records/s; p99 | 5.50x; 40.0 ms vs 6000.0 ms | >= 5x, lower p99 | yes |",
            "| python-riffle-eos / python-ray: records/s; p99 | 4.50x; 150.0 ms vs 6000.0 ms | >= 5x, lower p99 | **no** |",
        ] {
            assert!(md.contains(row), "{row}\n{md}");
        }
        assert!(
            md.contains("The records/s of python-ray, python-riffle-alo, python-riffle-eos are over their prefix"),
            "{md}"
        );
    }

    #[test]
    fn riffle_is_held_to_the_bare_controller_and_the_ceiling() {
        let rps = |name: &str, x: f64| json!({"name": name, "throughput": {"records_per_s": x}});
        let results = vec![
            rps("ceiling", 100.0),
            rps("riffle-stateless", 89.0),
            rps("bare-keyed-alo", 200.0),
            rps("bare-keyed-eos", 150.0),
            rps("riffle-keyed-alo", 210.0),
            rps("riffle-keyed-eos", 120.0),
        ];
        let md = markdown(&results);
        for row in [
            "| riffle-stateless / ceiling, records/s | 0.89x | >= 0.90x | **no** |",
            "| riffle-keyed-alo / bare-keyed-alo, records/s | 1.05x | >= 1.00x | yes |",
            "| riffle-keyed-eos / bare-keyed-eos, records/s | 0.80x | >= 1.00x | **no** |",
            "| exactly-once cost, keyed (1 - riffle-keyed-eos / riffle-keyed-alo) | 43 % | <= 20 % | **no** |",
            "| exactly-once cost, bare (1 - bare-keyed-eos / bare-keyed-alo) | 25 % | – | – |",
        ] {
            assert!(md.contains(row), "{row}\n{md}");
        }
        // Without the bare controller, its comparisons are open.
        let md = markdown(&results[..2]);
        assert!(
            md.contains("| riffle-keyed-alo / bare-keyed-alo, records/s | n/a | >= 1.00x | n/a |"),
            "{md}"
        );
    }

    #[test]
    fn the_windowed_workload_is_held_to_kafka_streams_not_the_ceiling() {
        let sys = |name: &str, x: f64, p99: f64| json!({"name": name, "throughput": {"records_per_s": x}, "latency": {"p99_ms": p99}});
        let results = vec![
            sys("ceiling", 100.0, 1.0),
            sys("riffle-window-alo", 90.0, 20.0),
            sys("kafka-streams-window-alo", 30.0, 200.0),
            sys("riffle-window-eos", 80.0, 300.0),
            sys("kafka-streams-window-eos", 20.0, 250.0),
        ];
        let md = markdown(&results);
        assert!(!md.contains("riffle-window-alo / ceiling"), "{md}");
        for row in [
            "| riffle-window-alo / kafka-streams-window-alo: records/s; p99 | 3.00x; 20.0 ms vs 200.0 ms | >= 3x, lower p99 | yes |",
            "| riffle-window-eos / kafka-streams-window-eos: records/s; p99 | 4.00x; 300.0 ms vs 250.0 ms | >= 3x, lower p99 | **no** |",
        ] {
            assert!(md.contains(row), "{row}\n{md}");
        }
    }

    #[test]
    fn records_per_cpu_second_come_from_the_median_cpu() {
        let run = |cpu: f64| json!({"records_per_s": 1.0, "cpu_s_per_million": cpu});
        let e = json!({
            "name": "riffle-embedded",
            "throughput": run(0.4),
            "throughput_runs": [run(0.4), {"error": "timed out"}, run(0.5), run(0.8)],
        });
        assert_eq!(per_cpu_second(&e), Some(2e6));
        let md = markdown(&[e]);
        assert!(
            md.contains(
                "| riffle-embedded, records per CPU second | 2,000,000 | >= 2,000,000 | yes |"
            ),
            "{md}"
        );
        let even = json!({"throughput_runs": [run(0.4), run(0.6)]});
        assert_eq!(per_cpu_second(&even), Some(2e6));
        let single = json!({"throughput": run(0.25)});
        assert_eq!(per_cpu_second(&single), Some(4e6));
        let failed = json!({"throughput_error": "x", "throughput_runs": [{"error": "x"}]});
        assert_eq!(per_cpu_second(&failed), None);
    }
}
