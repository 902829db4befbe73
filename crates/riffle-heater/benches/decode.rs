//! Sensor decoding benchmark: the controller's decoder against a generic
//! JSON deserializer (`serde_json` into a derived struct, as the decoder
//! was first written) on the benchmark suite's record bodies.
//!
//! ```text
//! cargo bench -p riffle-heater --bench decode [-- --records 2000000]
//! ```
//!
//! Prints nanoseconds per record for each, best of five passes.

use std::hint::black_box;
use std::time::Instant;

use riffle_heater::messages::{decode_sensor, SensorMessage};
use serde::Deserialize;

/// The baseline: one pass of a generic deserializer, numbers checked after.
fn generic(key: &[u8], value: &[u8]) -> Result<(String, SensorMessage), String> {
    #[derive(Deserialize)]
    struct Body {
        measurement: Option<serde_json::Value>,
        temperature: Option<serde_json::Value>,
        up_delta: Option<serde_json::Value>,
        down_delta: Option<serde_json::Value>,
    }
    let b: Body = serde_json::from_slice(value).map_err(|e| e.to_string())?;
    let id = std::str::from_utf8(key)
        .map_err(|e| e.to_string())?
        .to_owned();
    let num = |v: &Option<serde_json::Value>| v.as_ref().and_then(|v| v.as_f64()).ok_or("number");
    Ok(match b.measurement {
        Some(_) => (id, SensorMessage::Measurement(num(&b.measurement)?)),
        None => {
            let _ = (num(&b.temperature)?, num(&b.up_delta)?, num(&b.down_delta)?);
            return Err("setting".into());
        }
    })
}

fn main() {
    let mut records = 2_000_000usize;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--records" => {
                records = args
                    .next()
                    .and_then(|n| n.parse().ok())
                    .expect("--records N")
            }
            "--bench" => {}
            other => panic!("unknown argument {other}"),
        }
    }
    // The suite's measurement bodies (crates/riffle-bench/src/data.rs).
    let mut rng = fastrand::Rng::with_seed(1);
    let bodies: Vec<(String, Vec<u8>)> = (0..records)
        .map(|i| {
            let key = format!("heater-{:05}", i % 1000);
            let value = format!(
                r#"{{"measurement": {:.12}, "unit": "C", "id": "{key}", "ts": {:.6}}}"#,
                40.0 + rng.f64() * 10.0,
                1_700_000_000.0 + i as f64 * 0.001
            );
            (key, value.into_bytes())
        })
        .collect();
    let time = |f: &dyn Fn(&[u8], &[u8]) -> bool| -> f64 {
        (0..5)
            .map(|_| {
                let t = Instant::now();
                let ok = bodies.iter().filter(|(k, v)| f(k.as_bytes(), v)).count();
                assert_eq!(ok, records);
                t.elapsed().as_nanos() as f64 / records as f64
            })
            .fold(f64::INFINITY, f64::min)
    };
    let ours = time(&|k, v| black_box(decode_sensor(Some(k), v)).is_ok());
    let theirs = time(&|k, v| black_box(generic(k, v)).is_ok());
    println!("{records} measurement records, best of 5 passes:");
    println!("  decode_sensor:            {ours:6.1} ns/record");
    println!("  serde_json (derived):     {theirs:6.1} ns/record");
    println!("  ratio:                    {:6.2}x", theirs / ours);
}
