//! resolve + validate on the full sample, against a baseline measured in the same run:
//! deserializing the same object from JSON, which every admission request pays anyway.
//! Prints the ratio after criterion's own report.

use std::hint::black_box;
use std::time::SystemTime;

use criterion::Criterion;
use pgpilot::api::PostgresCluster;
use pgpilot::config::Config;
use pgpilot::{manifest, resolve, validate};

fn sample() -> (PostgresCluster, serde_json::Value) {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/manifests/samples/ha-backup-pooler.yaml"
    ))
    .unwrap();
    let cluster = manifest::from_yaml_stream(&text).unwrap().remove(0);
    let json = serde_json::to_value(&cluster).unwrap();
    (cluster, json)
}

fn bench(c: &mut Criterion) {
    let (cluster, json) = sample();
    let config = Config::default();
    let mut group = c.benchmark_group("admission");
    group.bench_function("baseline_deserialize", |b| {
        b.iter(|| manifest::from_value(black_box(json.clone())).unwrap())
    });
    group.bench_function("resolve_validate", |b| {
        b.iter(|| {
            let mut c = black_box(&cluster).clone();
            c.spec = resolve::resolve(&c.spec, None, &config);
            validate::validate(&c, None)
        })
    });
    let stored = resolve::resolve(&cluster.spec, None, &config);
    let stored = PostgresCluster::new("orders", stored);
    group.bench_function("resolve_validate_update", |b| {
        b.iter(|| {
            let mut c = black_box(&stored).clone();
            c.spec = resolve::resolve(&c.spec, Some(&stored.spec), &config);
            validate::validate(&c, Some(&stored))
        })
    });
    group.finish();
}

/// Mean time of a criterion benchmark measured by this run (`since` its start), in
/// nanoseconds. None when this run did not measure it: under `cargo test` each benchmark
/// runs once, unmeasured, and the estimates on disk are an earlier run's.
fn mean_ns(id: &str, since: SystemTime) -> Option<f64> {
    let dir = std::env::var("CARGO_TARGET_DIR")
        .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/target").into());
    let path = format!("{dir}/criterion/admission/{id}/new/estimates.json");
    let written = std::fs::metadata(&path).and_then(|m| m.modified()).ok()?;
    if written < since {
        return None;
    }
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()?;
    v["mean"]["point_estimate"].as_f64()
}

fn main() {
    let started = SystemTime::now();
    let mut c = Criterion::default().configure_from_args();
    bench(&mut c);
    c.final_summary();
    if let (Some(base), Some(create), Some(update)) = (
        mean_ns("baseline_deserialize", started),
        mean_ns("resolve_validate", started),
        mean_ns("resolve_validate_update", started),
    ) {
        println!(
            "\nbaseline (deserialize the sample): {:.1} µs",
            base / 1000.0
        );
        println!(
            "resolve + validate, CREATE:        {:.1} µs ({:.2}x baseline)",
            create / 1000.0,
            create / base
        );
        println!(
            "resolve + validate, UPDATE:        {:.1} µs ({:.2}x baseline)",
            update / 1000.0,
            update / base
        );
    }
}
