//! The machine, and the report as JSON and as Markdown: the table of
//! results, then the ratios between systems that the project's goals are
//! stated in (`ratios`).

use std::path::Path;

use serde_json::{json, Value};

use crate::figures::{count, latency_ms, median_run, successful_runs};
use crate::kafka::Result;
use crate::ratios;

/// `YYYYMMDD-HHMMSS` (UTC) of now.
pub fn timestamp() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Days since 1970-01-01 to a civil date (proleptic Gregorian).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + (m <= 2) as i64;
    format!(
        "{y:04}{m:02}{d:02}-{:02}{:02}{:02}",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

pub fn machine() -> Value {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name")?.split_once(':').map(|x| x.1))
        .unwrap_or("unknown")
        .trim()
        .to_string();
    let mem_kb: u64 = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .unwrap_or_default()
        .trim()
        .to_string();
    json!({
        "nproc": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "cpu": cpu,
        "mem_total_kb": mem_kb,
        "kernel": kernel,
    })
}

pub(crate) fn num(v: &Value, digits: usize) -> String {
    match v.as_f64() {
        Some(x) if x.is_finite() => format!("{x:.digits$}"),
        _ => "–".into(),
    }
}

/// Two rates in the unit of the larger, to its three significant figures:
/// "1.10-1.26 M", "289-375 k", "60.2-71.0 k".
pub(crate) fn rate_range(lo: f64, hi: f64) -> String {
    let (div, unit) = match hi {
        x if x >= 1e6 => (1e6, " M"),
        x if x >= 1e3 => (1e3, " k"),
        _ => (1.0, ""),
    };
    let digits = match hi / div {
        x if x >= 100.0 => 0,
        x if x >= 10.0 => 1,
        _ => 2,
    };
    format!("{:.digits$}-{:.digits$}{unit}", lo / div, hi / div)
}

/// The records/s cell: the median run's rate, then the range over the
/// runs when there are several, and the prefix it was taken over.
fn rps_cell(r: &Value) -> String {
    let t = &r["throughput"];
    let mut text = t["records_per_s"].as_f64().map_or("–".into(), count);
    let mut notes = Vec::new();
    let rates: Vec<f64> = successful_runs(r)
        .iter()
        .filter_map(|t| t["records_per_s"].as_f64())
        .collect();
    if rates.len() > 1 {
        let lo = rates.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = rates.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        notes.push(format!("{} over {}", rate_range(lo, hi), rates.len()));
    }
    if let Some(prefix) = t["prefix"].as_f64() {
        notes.push(format!("{}, prefix", count(prefix)));
    }
    if !notes.is_empty() {
        text.push_str(&format!(" ({})", notes.join("; ")));
    }
    text
}

/// The outputs cell: the median run's outputs (expected); then every other
/// run whose outputs differ from what it should have written, or that
/// failed, so that no run's failure is hidden behind the median.
fn outputs_cell(r: &Value) -> String {
    let t = &r["throughput"];
    if t.is_null() {
        return format!("failed: {}", r["throughput_error"].as_str().unwrap_or("?"));
    }
    let n = |v: &Value| count(v.as_f64().unwrap_or(f64::NAN));
    let mut text = format!("{} ({})", n(&t["output_records"]), n(&t["expected_output"]));
    text.push_str(&window_check_note(&t["window_check"]));
    let runs = r["throughput_runs"]
        .as_array()
        .map_or(&[][..], Vec::as_slice);
    let median = median_run(runs);
    for (i, run) in runs.iter().enumerate() {
        if Some(i) == median {
            continue;
        }
        if let Some(e) = run.get("error") {
            text.push_str(&format!(
                "; run {} failed: {}",
                i + 1,
                e.as_str().unwrap_or("?")
            ));
        } else if run["output_records"] != run["expected_output"] {
            text.push_str(&format!("; run {}: {}", i + 1, n(&run["output_records"])));
            if run["expected_output"] != t["expected_output"] {
                text.push_str(&format!(" ({})", n(&run["expected_output"])));
            }
        }
    }
    text
}

/// For a run of the windowed workload: how its results differ from the
/// reference's, if they do ("" when every one is right).
fn window_check_note(c: &Value) -> String {
    if !c.is_object() {
        return String::new();
    }
    let problems: Vec<String> = ["wrong", "unexpected", "duplicates", "missing"]
        .iter()
        .filter_map(|k| {
            let n = c[*k].as_u64().unwrap_or(0);
            (n > 0).then(|| format!("{} {k}", count(n as f64)))
        })
        .collect();
    if problems.is_empty() {
        String::new()
    } else {
        format!(", **results: {}**", problems.join(", "))
    }
}

pub fn markdown(doc: &Value) -> String {
    let m = &doc["machine"];
    let mut s = String::new();
    s.push_str(&format!(
        "Mode: **{}**. Command: `{}`\n\n",
        doc["mode"].as_str().unwrap_or("?"),
        doc["command"].as_str().unwrap_or("?")
    ));
    s.push_str(&format!(
        "Machine: {} cores (nproc), {}, {:.1} GiB RAM, Linux {}; Apache Kafka {} (single node, same machine).\n\n",
        m["nproc"],
        m["cpu"].as_str().unwrap_or("?"),
        m["mem_total_kb"].as_f64().unwrap_or(0.0) / 1024.0 / 1024.0,
        m["kernel"].as_str().unwrap_or("?"),
        doc["kafka_version"].as_str().unwrap_or("?"),
    ));
    let i = &doc["input"];
    let l = &doc["latency_load"];
    // Runs of the windowed workload alone fill no heater input.
    let commands = match i["expected_commands"].as_f64() {
        Some(n) => format!(" ({} commands expected)", count(n)),
        None => String::new(),
    };
    s.push_str(&format!(
        "Input: {} records, {} heaters, {} partitions{commands}. Latency: {} rec/s offered to a fresh input for {} s after {} s of warm-up.\n\n",
        count(i["records"].as_f64().unwrap_or(f64::NAN)),
        i["heaters"],
        i["partitions"],
        count(l["rate"].as_f64().unwrap_or(f64::NAN)),
        l["seconds"],
        l["warmup_seconds"],
    ));
    if let Some(w) = i["windows"].as_object() {
        s.push_str(&format!(
            "Windowed workload (`riffle-window-*`, `kafka-streams-window-*`): its own input of {} measurements with event time, out of order by up to {} ms; tumbling windows of {} ms per heater, closed {} ms after their end by each partition's latest event time (Riffle: out-of-orderness {} ms + grace {} ms; Kafka Streams: grace {} ms); {} results expected, each checked against the reference. Its latency runs from sending the record that closed a window to receiving the window's result.\n\n",
            count(i["records"].as_f64().unwrap_or(f64::NAN)),
            w["jitter_ms"],
            w["window_ms"],
            w["kafka_streams_grace_ms"],
            w["out_of_orderness_ms"],
            w["grace_ms"],
            w["kafka_streams_grace_ms"],
            count(w["expected_results"].as_f64().unwrap_or(f64::NAN)),
        ));
    }
    s.push_str("| workload | guarantee | records/s | vs ceiling | start-up / wall s | CPU s / M records | RSS MB peak / at rest | outputs (expected) | latency p50 / p99 / p99.9 ms |\n");
    s.push_str("|---|---|---:|---:|---:|---:|---:|---:|---:|\n");
    let results = doc["results"].as_array().cloned().unwrap_or_default();
    let ceiling = results
        .iter()
        .find(|r| r["name"] == "ceiling")
        .and_then(|r| r["throughput"]["records_per_s"].as_f64());
    let mut notes = Vec::new();
    for r in &results {
        let t = &r["throughput"];
        let rps = t["records_per_s"].as_f64();
        if let Some(prefix) = t["prefix"].as_f64() {
            notes.push(format!(
                "{}: throughput over the first {} input records only (its prefix), not all {}.",
                r["name"].as_str().unwrap_or("?"),
                count(prefix),
                count(i["records"].as_f64().unwrap_or(f64::NAN))
            ));
        }
        let windows = t["window_check"].is_object()
            || r["name"].as_str().is_some_and(|n| n.contains("-window-"));
        let ratio = match (rps, ceiling) {
            (Some(a), Some(c)) if !windows => format!("{:.2}", a / c),
            _ => "–".into(),
        };
        let mb = |v: &Value| {
            v.as_f64()
                .map_or("–".into(), |b| format!("{:.0}", b / 1048576.0))
        };
        let rss = format!(
            "{} / {}",
            mb(&t["peak_rss_bytes"]),
            mb(&t["rest_rss_bytes"])
        );
        let lat = &r["latency"];
        let latency = if !lat.is_null() {
            format!(
                "{} / {} / {}",
                latency_ms(lat, "p50"),
                latency_ms(lat, "p99"),
                latency_ms(lat, "p999")
            )
        } else if let Some(e) = r["latency_error"].as_str() {
            format!("failed: {e}")
        } else {
            "–".into()
        };
        s.push_str(&format!(
            "| {} | {} | {} | {} | {} / {} | {} | {} | {} | {} |\n",
            r["name"].as_str().unwrap_or("?"),
            r["guarantee"].as_str().unwrap_or("?"),
            rps_cell(r),
            ratio,
            num(&t["startup_s"], 1),
            num(&t["wall_s"], 1),
            num(&t["cpu_s_per_million"], 2),
            rss,
            outputs_cell(r),
            latency,
        ));
    }
    s.push_str(concat!(
        "\nRecords/s: over the steady-state window, from 5 % of the work done (or the ready line, ",
        "if later) to all of it; start-up: from starting the process to its ready line; wall: ",
        "from starting it to the end of the window. CPU s / M records: the process tree's CPU ",
        "time within the window (whole run for riffle-embedded, which times itself). RSS: the ",
        "largest sum of the tree's resident sizes seen, and the sum 1 s after the input was done ",
        "(the state held, buffers drained). Latency \"> N s\": the percentile ",
        "falls among outputs that never arrived (counted as infinite); from how long they had ",
        "waited, it is known to exceed N s."
    ));
    if let Some(n) = doc["repeat"].as_u64().filter(|&n| n > 1) {
        s.push_str(&format!(
            concat!(
                " Records/s is the median of {} runs of each system, interleaved (every system's ",
                "first run, then every system's second, ...), with the range of the successful ",
                "runs in brackets; the other columns come from the median run (of two middle ",
                "ones, the slower), and the outputs name any other run that wrote other than it ",
                "should have, or failed."
            ),
            n
        ));
    }
    s.push('\n');
    for n in notes {
        s.push_str(&format!("\n{n}\n"));
    }
    s.push('\n');
    s.push_str(&ratios::markdown(&results));
    s
}

/// Writes `<base>.json` and `<base>.md`.
pub fn write(base: &Path, doc: &Value) -> Result<()> {
    if let Some(dir) = base.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    let json_path = base.with_extension("json");
    let md_path = base.with_extension("md");
    let text = serde_json::to_string_pretty(doc).map_err(|e| e.to_string())?;
    std::fs::write(&json_path, text + "\n")
        .map_err(|e| format!("cannot write {}: {e}", json_path.display()))?;
    std::fs::write(&md_path, markdown(doc))
        .map_err(|e| format!("cannot write {}: {e}", md_path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_have_date_and_time() {
        assert_eq!(timestamp().len(), 15);
    }

    #[test]
    fn ranges_are_in_the_unit_of_the_larger_end() {
        assert_eq!(rate_range(1_100_000.0, 1_261_405.0), "1.10-1.26 M");
        assert_eq!(rate_range(950_000.0, 1_020_000.0), "0.95-1.02 M");
        assert_eq!(rate_range(289_266.0, 375_000.0), "289-375 k");
        assert_eq!(rate_range(60_140.0, 70_960.0), "60.1-71.0 k");
        let r = json!({
            "throughput": {"records_per_s": 1_175_778.0},
            "throughput_runs": [
                {"records_per_s": 1_261_405.0},
                {"error": "exited early with status 1"},
                {"records_per_s": 1_175_778.0},
                {"records_per_s": 1_098_000.0},
            ],
        });
        assert_eq!(rps_cell(&r), "1,175,778 (1.10-1.26 M over 3)");
        let one = json!({"throughput": {"records_per_s": 66_440.0, "prefix": 2_000_000}});
        assert_eq!(rps_cell(&one), "66,440 (2,000,000, prefix)");
    }

    #[test]
    fn outputs_name_every_run_that_went_wrong() {
        let run = |rps: f64, out: u64, expected: u64| json!({"records_per_s": rps, "output_records": out, "expected_output": expected});
        let mut r = json!({
            "throughput_runs": [
                run(3.0, 78_811, 78_811),
                run(1.0, 78_700, 78_811),
                run(2.0, 78_811, 78_811),
                {"error": "exited early with status 1"},
            ],
        });
        r["throughput"] = r["throughput_runs"][2].clone();
        assert_eq!(
            outputs_cell(&r),
            "78,811 (78,811); run 2: 78,700; run 4 failed: exited early with status 1"
        );
        // The median run itself wrong, and a prefix run expecting another count.
        let mut r = json!({
            "throughput_runs": [run(1.0, 33_000, 33_373), run(2.0, 32_000, 33_373), run(3.0, 34_000, 34_001)],
        });
        r["throughput"] = r["throughput_runs"][1].clone();
        assert_eq!(
            outputs_cell(&r),
            "32,000 (33,373); run 1: 33,000; run 3: 34,000 (34,001)"
        );
        let single = json!({"throughput": run(1.0, 5, 5)});
        assert_eq!(outputs_cell(&single), "5 (5)");
        let mut windows = json!({"throughput": run(1.0, 5, 6)});
        windows["throughput"]["window_check"] =
            json!({"right": 4, "wrong": 1, "unexpected": 0, "duplicates": 0, "missing": 1});
        assert_eq!(
            outputs_cell(&windows),
            "5 (6), **results: 1 wrong, 1 missing**"
        );
        windows["throughput"]["window_check"] =
            json!({"right": 6, "wrong": 0, "unexpected": 0, "duplicates": 0, "missing": 0});
        assert_eq!(outputs_cell(&windows), "5 (6)");
    }
}
