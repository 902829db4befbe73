//! `riffle-bench run`: fills the input, runs each system under test in a
//! child process (throughput phase, `throughput.rs`, repeated and
//! interleaved across the systems; then latency phase at a fixed offered
//! load, `latency.rs`) and writes the report (`report.rs`).

use std::path::{Path, PathBuf};
use std::time::Instant;

use riffle::log::kafka::KafkaLog;
use serde_json::{json, Value};

use crate::driver::{Driver, Mode, RunArgs, FULL_RECORDS, QUICK_RECORDS};
use crate::figures::median_run;
use crate::kafka::Result;
use crate::progress;
use crate::report;
use crate::systems::{self, Placement, System, Workload};
use crate::windowed;

pub fn run(args: RunArgs) -> Result<()> {
    let (records, repeat, latency_secs, warmup_secs) = match args.mode {
        Mode::Quick => (QUICK_RECORDS, 1, 10, 2),
        Mode::Full => (FULL_RECORDS, 3, 60, 10),
    };
    let systems: Vec<&'static System> = if args.only.is_empty() {
        systems::SYSTEMS.iter().collect()
    } else {
        args.only
            .iter()
            .map(|n| systems::find(n).ok_or(format!("no system named '{n}'")))
            .collect::<Result<_>>()?
    };
    let log = KafkaLog::connect(args.brokers.clone(), vec![]).map_err(|e| e.to_string())?;
    let d = Driver {
        repo: repo_root()?,
        records: args.records.unwrap_or(records),
        repeat: args.repeat.unwrap_or(repeat),
        latency_secs: args.latency_secs.unwrap_or(latency_secs),
        warmup_secs: args.warmup_secs.unwrap_or(warmup_secs),
        run_id: report::timestamp(),
        log,
        started: Instant::now(),
        args,
    };
    let machine = report::machine();
    let command = d
        .args
        .command
        .clone()
        .unwrap_or_else(|| std::env::args().collect::<Vec<_>>().join(" "));
    progress!(
        d,
        "riffle-bench {:?} mode on {}: {} records, {} heaters, {} partitions; throughput runs per system: {}; latency {} s at {} rec/s",
        d.args.mode,
        d.args.brokers,
        d.records,
        d.args.heaters,
        d.args.partitions,
        d.repeat,
        d.latency_secs,
        d.args.rate
    );

    // One input per workload that a selected system reads.
    let needs = |w: Workload| systems.iter().any(|s| s.workload() == w);
    let heater = match needs(Workload::Heater) {
        true => Some(d.fill(&format!("bench-input-{}", d.run_id), Workload::Heater)?),
        false => None,
    };
    let windows = match needs(Workload::Windows) {
        true => Some(d.fill(
            &format!("bench-windows-input-{}", d.run_id),
            Workload::Windows,
        )?),
        false => None,
    };
    let input_of = |sys: &System| match sys.workload() {
        Workload::Heater => heater.as_ref().expect("filled for its systems"),
        Workload::Windows => windows.as_ref().expect("filled for its systems"),
    };
    let out_dir = d.args.out_dir.clone();
    let mode = format!("{:?}", d.args.mode).to_lowercase();
    let base = out_dir.join(format!("{mode}-{}", d.run_id));
    let mut results: Vec<Value> = systems
        .iter()
        .map(|sys| {
            json!({
                "name": sys.name,
                "description": sys.description,
                "guarantee": sys.guarantee,
            })
        })
        .collect();
    let mut runs: Vec<Vec<Value>> = vec![Vec::new(); systems.len()];
    // Rewritten after each step, so that a partial run leaves a usable
    // report (of the systems run so far).
    let write = |results: &[Value], runs: &[Vec<Value>]| {
        let done: Vec<&Value> = results
            .iter()
            .zip(runs)
            .filter(|(_, runs)| !runs.is_empty())
            .map(|(r, _)| r)
            .collect();
        let doc = json!({
            "mode": mode,
            "command": command,
            "machine": machine,
            "kafka_version": d.args.kafka_version,
            "brokers": d.args.brokers,
            "input": {
                "records": d.records,
                "heaters": d.args.heaters,
                "partitions": d.args.partitions,
                "expected_commands": heater.as_ref().map(|f| f.outputs),
                "seed": d.args.seed,
                "windows": windows.as_ref().map(|f| json!({
                    "expected_results": f.outputs,
                    "window_ms": windowed::WINDOW_MS,
                    "out_of_orderness_ms": windowed::OUT_OF_ORDERNESS_MS,
                    "grace_ms": windowed::GRACE_MS,
                    "kafka_streams_grace_ms": windowed::KS_GRACE_MS,
                    "jitter_ms": windowed::JITTER_MS,
                })),
            },
            "repeat": d.repeat,
            "latency_load": {"rate": d.args.rate, "seconds": d.latency_secs, "warmup_seconds": d.warmup_secs},
            "results": done,
        });
        report::write(&base, &doc)
    };
    // Repetitions interleaved, so that a slow spell of the machine falls on
    // every system alike rather than on all the runs of one.
    for rep in 1..=d.repeat {
        for (i, sys) in systems.iter().enumerate() {
            let run = d.throughput(sys, input_of(sys), rep).unwrap_or_else(|e| {
                progress!(d, "{}: throughput phase failed: {e}", d.label(sys, rep));
                json!({ "error": e })
            });
            runs[i].push(run);
            set_throughput(&mut results[i], &runs[i], d.repeat);
            write(&results, &runs)?;
        }
    }
    for (i, sys) in systems.iter().enumerate() {
        if sys.placement == Placement::Kafka && !d.args.no_latency {
            let r = &mut results[i];
            match d.latency(sys) {
                Ok(l) => r["latency"] = l,
                Err(e) => {
                    progress!(d, "{}: latency phase failed: {e}", sys.name);
                    r["latency_error"] = json!(e);
                }
            }
            write(&results, &runs)?;
        }
    }
    progress!(
        d,
        "report: {}.json and {}.md",
        base.display(),
        base.display()
    );
    Ok(())
}

/// Sets a system's `throughput` to its run with the median records/s
/// (`figures::median_run`) and, when more than one run was asked for,
/// `throughput_runs` to all of them in order (a failed one as `{"error"}`);
/// `throughput_error` when every run so far failed.
fn set_throughput(r: &mut Value, runs: &[Value], repeat: u32) {
    let o = r.as_object_mut().expect("a result is an object");
    o.remove("throughput");
    o.remove("throughput_error");
    match median_run(runs) {
        Some(m) => {
            o.insert("throughput".into(), runs[m].clone());
        }
        None => {
            let errors: Vec<String> = runs
                .iter()
                .enumerate()
                .map(|(i, run)| {
                    let e = run["error"].as_str().unwrap_or("?");
                    if runs.len() > 1 {
                        format!("run {}: {e}", i + 1)
                    } else {
                        e.to_string()
                    }
                })
                .collect();
            o.insert("throughput_error".into(), json!(errors.join("; ")));
        }
    }
    if repeat > 1 {
        o.insert("throughput_runs".into(), json!(runs));
    }
}

/// The repository's root: the current directory when it is one (as under
/// `bench/run.sh`), else where this program was built from.
fn repo_root() -> Result<PathBuf> {
    let is_root = |p: &Path| p.join("bench").is_dir() && p.join("Cargo.toml").is_file();
    let cwd = std::env::current_dir().map_err(|e| e.to_string())?;
    if is_root(&cwd) {
        return Ok(cwd);
    }
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .ok()
        .filter(|p| is_root(p))
        .ok_or_else(|| "cannot find the repository's root (run from it)".into())
}
