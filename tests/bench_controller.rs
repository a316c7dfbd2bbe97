//! `make bench-controller`: the reconciler at scale on the real control plane. Creates 500
//! clusters and reports the time until every one is Reconciled, the operator's peak RSS,
//! and the write requests a full resync of the unchanged set sends (must be 0). Baseline
//! measured in the same run: server-side applying the same rendered objects directly, with
//! no operator, into another namespace: the floor the API server sets.

mod reconciler;

use std::time::{Duration, Instant};

use futures::StreamExt;
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use kube::discovery::{ApiResource, Discovery, Scope};
use pgpilot::api::PostgresCluster;
use pgpilot::config::Config;
use pgpilot::devcluster::block_on;
use reconciler::*;

const CLUSTERS: usize = 500;
const PARALLEL: usize = 16;

fn minimal(name: &str) -> PostgresCluster {
    let spec = serde_yaml::from_str("storage: {size: 1Gi}\ninstances: 2").unwrap();
    PostgresCluster::new(name, spec)
}

/// Peak resident memory of the operator, from the kernel's high-water mark.
fn operator_peak_rss_kib() -> Option<u64> {
    let pid = *operator_pids().first()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn reconciled(ns: &str) -> usize {
    let out = kubectl(&["get", "pgc", "-n", ns, "-o", "jsonpath={range .items[*]}{.status.conditions[?(@.type==\"Reconciled\")].status}{\"\\n\"}{end}"]).stdout;
    out.lines().filter(|l| *l == "True").count()
}

#[test]
#[ignore = "scale run: make bench-controller"]
fn five_hundred_clusters() {
    let ns = namespace("bench");
    let floor_ns = namespace("bench-floor");

    // Baseline: the same children, rendered here and applied directly.
    let config = Config::default();
    let floor = block_on(async {
        // A client lives on the runtime that made it: one per `block_on`.
        let client = ENV.cluster.client().await.unwrap();
        let discovery = Discovery::new(client.clone()).run().await.unwrap();
        let mut objects = Vec::new();
        for i in 0..CLUSTERS {
            let mut c = minimal(&format!("pg{i}"));
            c.spec = pgpilot::resolve::resolve(&c.spec, None, &config);
            c.metadata.namespace = Some(floor_ns.clone());
            objects.extend(pgpilot::render::render(&c).unwrap().objects().unwrap());
        }
        let count = objects.len();
        let start = Instant::now();
        futures::stream::iter(objects)
            .for_each_concurrent(PARALLEL, |o| {
                let client = client.clone();
                let discovery = &discovery;
                async move {
                    let obj: DynamicObject = serde_json::from_value(o).unwrap();
                    let gvk = obj
                        .types
                        .as_ref()
                        .map(|t| kube::api::GroupVersionKind::try_from(t).unwrap())
                        .unwrap();
                    let (ar, caps): (ApiResource, _) = discovery.resolve_gvk(&gvk).unwrap();
                    assert_eq!(caps.scope, Scope::Namespaced);
                    let api: Api<DynamicObject> = Api::namespaced_with(
                        client,
                        obj.metadata.namespace.as_deref().unwrap(),
                        &ar,
                    );
                    let name = obj.metadata.name.clone().unwrap();
                    api.patch(
                        &name,
                        &PatchParams::apply("bench").force(),
                        &Patch::Apply(&obj),
                    )
                    .await
                    .unwrap();
                }
            })
            .await;
        (start.elapsed(), count)
    });

    // The operator: create the clusters (through the webhook) and wait.
    let start = Instant::now();
    block_on(async {
        let client = ENV.cluster.client().await.unwrap();
        let api: Api<PostgresCluster> = Api::namespaced(client, &ns);
        futures::stream::iter(0..CLUSTERS)
            .for_each_concurrent(PARALLEL, |i| {
                let api = api.clone();
                async move {
                    api.create(&PostParams::default(), &minimal(&format!("pg{i}")))
                        .await
                        .unwrap();
                }
            })
            .await;
    });
    let created = start.elapsed();
    let mut peak_rss = 0;
    eventually(
        "every cluster Reconciled",
        Duration::from_secs(1800),
        || {
            peak_rss = peak_rss.max(operator_peak_rss_kib().unwrap_or(0));
            (reconciled(&ns) == CLUSTERS).then_some(())
        },
    );
    let all_reconciled = start.elapsed();

    // Quiet, then a window in which every cluster is re-checked at least once.
    eventually("a quiet API server", Duration::from_secs(600), || {
        let a = writes();
        std::thread::sleep(Duration::from_secs(5));
        (writes() == a).then_some(())
    });
    let before = writes();
    let window = Duration::from_secs(resync_seconds() + 5);
    std::thread::sleep(window);
    let resync_writes = writes() - before;
    peak_rss = peak_rss.max(operator_peak_rss_kib().unwrap_or(0));

    println!("\nclusters:                         {CLUSTERS}");
    println!(
        "baseline, SSA of the {} rendered objects directly: {:.1} s",
        floor.1,
        floor.0.as_secs_f64()
    );
    println!(
        "operator, create through the webhook:         {:.1} s",
        created.as_secs_f64()
    );
    println!(
        "operator, until all Reconciled:               {:.1} s ({:.2}x baseline)",
        all_reconciled.as_secs_f64(),
        all_reconciled.as_secs_f64() / floor.0.as_secs_f64()
    );
    println!(
        "operator peak RSS:                            {:.1} MiB",
        peak_rss as f64 / 1024.0
    );
    println!("write requests during a {window:?} resync window: {resync_writes}");
    assert_eq!(resync_writes, 0);
}
