//! The reconciler's life cycle, in tests that must have the control plane to themselves
//! (they stop the operator, remove the webhooks or count every write): Secrets never
//! change and a crash mid-reconcile converges; an unchanged cluster costs no writes; of two
//! operators only the leader acts, and a leader cut off from the API server stops before
//! the other takes over; the operator rides out an API server restart; an unresolved
//! object is sent back through admission.

mod reconciler;

use std::collections::BTreeSet;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use reconciler::*;

const LEADER: &str = "pgpilot_controller_leader";

/// One test at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

fn secrets(ns: &str) -> String {
    kubectl(&[
        "get",
        "secrets",
        "-n",
        ns,
        "-l",
        "pgpilot.io/cluster=minimal",
        "-o",
        "jsonpath={range .items[*]}{.metadata.name}={.data}{\"\\n\"}{end}",
    ])
    .success()
    .stdout
}

#[test]
fn secrets_never_change_and_a_crash_converges() {
    let _one = serial();
    let ns = namespace("secrets");
    apply_minimal(&ns);
    let before = secrets(&ns);
    assert_eq!(before.lines().count(), 4, "{before}");
    let password = jsonpath(&ns, "secret/minimal-superuser", "{.data.password}");
    assert!(password.len() >= 40, "a long generated password");

    // Kill the operator right after a change, then start it again.
    patch_minimal(&ns, r#"{"spec":{"users":[{"name":"app"}]}}"#);
    kill_operators();
    // Reap it (a no-op signal-wise: it is dead), so that starting again really starts.
    ENV.operator.stop();
    ENV.operator.start_again().expect("restarts");
    // The new process waits out the killed one's lease (15 s) before it reconciles.
    eventually("the new user's Secret", Duration::from_secs(90), || {
        (!jsonpath(&ns, "secret/minimal-user-app", "{.data.password}").is_empty()).then_some(())
    });
    wait_for_resyncs(&ENV.operator, 2);
    let after: String = secrets(&ns)
        .lines()
        .filter(|l| !l.starts_with("minimal-user-app="))
        .map(|l| format!("{l}\n"))
        .collect();
    assert_eq!(
        after, before,
        "Secrets are byte-identical across reconciles and restarts"
    );
}

#[test]
fn an_unchanged_cluster_costs_no_writes() {
    let _one = serial();
    let ns = namespace("quiet");
    apply_minimal(&ns);
    wait_reconciled(&ns);
    // Quantities as users write them and the API server would rewrite in the children
    // (`0.5` → `500m`, `1024Mi` → `1Gi`): stored canonical by admission, so the rendered
    // children equal what the API server keeps and a resync has nothing to write.
    kubectl_stdin(&["apply", "-n", &ns, "-f", "-"], NON_CANONICAL).success();
    kubectl(&[
        "wait",
        "-n",
        &ns,
        "--for=condition=Reconciled",
        "pgc/loose",
        "--timeout=60s",
    ])
    .success();
    assert_eq!(
        jsonpath(
            &ns,
            "pgc/loose",
            "{.spec.resources.requests.cpu} {.spec.resources.requests.memory} {.spec.storage.size}"
        ),
        "500m 1Gi 1Gi"
    );
    // Let the creation settle (the StatefulSet controller's own status updates): a round
    // of resyncs of every cluster with no write.
    eventually("a quiet API server", Duration::from_secs(120), || {
        let a = writes();
        wait_for_resyncs(&ENV.operator, 1);
        (writes() == a).then_some(())
    });
    let before = writes();
    wait_for_resyncs(&ENV.operator, 3);
    assert_eq!(
        writes(),
        before,
        "a resync of unchanged clusters must not write"
    );
}

#[test]
fn of_two_operators_only_the_leader_acts() {
    let _one = serial();
    let ns = namespace("leader");
    apply_minimal(&ns);
    let first = lease_holder();
    assert!(!first.is_empty());

    let second = operator(&ENV.cluster, "second.log", &[]);
    let second_log = ENV.cluster.work_dir().join("second.log");
    // The second tries for the lease when it starts and at each renewal interval after:
    // two renewals by the first while the second runs span at least one of its tries.
    wait_for_lease_renewals(2);
    assert_eq!(
        lease_holder(),
        first,
        "the lease stays with the first operator"
    );
    assert_eq!(second.metric("pgpilot_controller_leader").unwrap(), 0);
    assert_eq!(
        second.metric(Operator::RECONCILED).unwrap(),
        0,
        "the second reconciled"
    );
    assert_eq!(ENV.operator.metric("pgpilot_controller_leader").unwrap(), 1);
    let log = std::fs::read_to_string(&second_log).unwrap_or_default();
    assert!(
        !log.contains("leading") && !log.contains("Created"),
        "the second operator must not act:\n{log}"
    );

    // The leader goes away: the other takes over and heals drift.
    // A graceful stop releases the Lease (no holder once the process has exited): the
    // other takes it at its next attempt (every 5 s), not after the 15 s a dead holder's
    // Lease needs to expire.
    ENV.operator.stop();
    let released = std::time::Instant::now();
    let after_stop = lease_holder();
    assert!(
        after_stop.is_empty() || after_stop != first,
        "the stopped operator still holds the Lease: it was not released"
    );
    let taken = eventually("a new leader", Duration::from_secs(40), || {
        let h = lease_holder();
        (h != first && !h.is_empty()).then_some(h)
    });
    let took = released.elapsed();
    println!("the second operator led {took:?} after the first stopped");
    delete_and_wait_recreated(&ns, "the new leader", Duration::from_secs(20));
    // The operator logs a pass's changes once the pass has applied every child, which may
    // be after the Service is back.
    eventually(
        "the new leader's log of the re-creation",
        Duration::from_secs(30),
        || {
            let log = std::fs::read_to_string(&second_log).unwrap_or_default();
            (log.contains("leading") && log.contains("Created Service/minimal-replicas"))
                .then_some(())
        },
    );
    assert_ne!(taken, first);
    ENV.operator
        .start_again()
        .expect("the first operator starts again");
    drop(second);
}

#[test]
fn an_unresolved_object_goes_back_through_admission() {
    let _one = serial();
    let ns = namespace("unresolved");
    remove_webhooks();
    // Stored as written: nothing resolved it.
    kubectl(&["apply", "-n", &ns, "-f", "manifests/samples/minimal.yaml"]).success();
    assert_eq!(jsonpath(&ns, "pgc/minimal", "{.spec.instances}"), "");
    eventually("Resolved=False", Duration::from_secs(20), || {
        (jsonpath(
            &ns,
            "pgc/minimal",
            "{.status.conditions[?(@.type==\"Resolved\")].status}",
        ) == "False")
            .then_some(())
    });
    assert!(
        children(&ns, "minimal").is_empty(),
        "nothing is rendered from an unresolved spec"
    );

    ENV.cluster
        .install_webhooks(&ENV.configurations)
        .expect("webhooks back");
    eventually(
        "the spec resolved by the webhook",
        Duration::from_secs(40),
        || (jsonpath(&ns, "pgc/minimal", "{.spec.instances}") == "2").then_some(()),
    );
    eventually("children", Duration::from_secs(30), || {
        children(&ns, "minimal")
            .contains("statefulset.apps/minimal")
            .then_some(())
    });
    kubectl(&[
        "wait",
        "-n",
        &ns,
        "--for=condition=Resolved",
        "pgc/minimal",
        "--timeout=30s",
    ])
    .success();
}

#[test]
fn a_malformed_stored_object_does_not_stop_the_others() {
    let _one = serial();
    let ns = namespace("malformed");
    remove_webhooks();
    // The schema keeps any parameter value; only pgpilot's own parsing refuses a map.
    let bad = "apiVersion: pgpilot.io/v1\nkind: PostgresCluster\nmetadata: {name: broken}\nspec:\n  storage: {size: 1Gi}\n  postgresql: {parameters: {work_mem: {nested: 1}}}\n";
    kubectl_stdin(&["apply", "-n", &ns, "-f", "-"], bad).success();
    ENV.cluster
        .install_webhooks(&ENV.configurations)
        .expect("webhooks back");
    eventually(
        "the broken object reported",
        Duration::from_secs(30),
        || {
            let reason = jsonpath(
                &ns,
                "pgc/broken",
                "{.status.conditions[?(@.type==\"Resolved\")].reason}",
            );
            (reason == "InvalidObject").then_some(())
        },
    );
    let message = jsonpath(
        &ns,
        "pgc/broken",
        "{.status.conditions[?(@.type==\"Resolved\")].message}",
    );
    assert!(message.contains("work_mem"), "{message}");
    // Other clusters are still reconciled.
    apply_minimal(&ns);
}

const NON_CANONICAL: &str = "apiVersion: pgpilot.io/v1
kind: PostgresCluster
metadata:
  name: loose
spec:
  instances: 1
  storage:
    size: 1024Mi
  resources:
    requests:
      cpu: '0.5'
      memory: 1024Mi
    limits:
      memory: 2048Mi
  postgresql:
    parameters:
      log_connections: 'yes'
      log_disconnections: 'off'
";

/// `pgpilot resolve` prints what YAML 1.1 readers read back as it means: kubectl's own
/// parser (client-side dry run) and the API server (apply, then get) both return exactly
/// the resolved object, quantities canonical and `on`/`yes`/`off` strings still strings.
#[test]
fn resolve_output_is_read_back_unchanged_by_kubectl_and_the_api_server() {
    let _one = serial();
    let ns = namespace("roundtrip");
    let samples = [
        std::fs::read_to_string(format!("{REPO}/manifests/samples/minimal.yaml")).unwrap(),
        std::fs::read_to_string(format!("{REPO}/manifests/samples/ha-backup-pooler.yaml")).unwrap(),
        NON_CANONICAL.to_owned(),
    ];
    for sample in samples {
        let resolved = pgpilot_resolve(&sample);
        let expected: serde_json::Value = serde_yaml::from_str(&resolved).unwrap();
        let name = expected["metadata"]["name"].as_str().unwrap().to_owned();
        let local = read_by_kubectl(&ns, &resolved);
        assert_eq!(
            local["spec"], expected["spec"],
            "kubectl's YAML reader, {name}"
        );

        kubectl_stdin(&["apply", "-n", &ns, "-f", "-"], &resolved).success();
        let stored = kubectl(&["get", "pgc", &name, "-n", &ns, "-o", "json"]).success();
        let stored: serde_json::Value = serde_json::from_str(&stored.stdout).unwrap();
        assert_eq!(stored["spec"], expected["spec"], "stored, {name}");
        let stored_yaml = kubectl(&["get", "pgc", &name, "-n", &ns, "-o", "yaml"]).success();
        let again: serde_json::Value =
            serde_yaml::from_str(&pgpilot_resolve(&stored_yaml.stdout)).unwrap();
        assert_eq!(
            again["spec"], expected["spec"],
            "resolving the stored object changes nothing, {name}"
        );
    }
}

/// Every field of the API that holds free text, with every kind of string a YAML 1.1 reader
/// would take for something else: what `pgpilot resolve` and `render` print (their YAML
/// writer) is what kubectl's reader reads back.
#[test]
fn every_free_text_field_survives_kubectl_s_yaml_reader() {
    const TRICKY: [&str; 24] = [
        "on",
        "off",
        "yes",
        "no",
        "y",
        "n",
        "true",
        "False",
        "null",
        "~",
        "",
        "0755",
        "1e3",
        "0x1F",
        "1_000",
        "12:30",
        "2024-01-01",
        ".inf",
        "- x",
        "a: b",
        "#c",
        "*d",
        "line\nline",
        "tab\tx",
    ];
    let sample =
        std::fs::read_to_string(format!("{REPO}/manifests/samples/ha-backup-pooler.yaml")).unwrap();
    let mut object: serde_json::Value = serde_yaml::from_str(&pgpilot_resolve(&sample)).unwrap();
    let mut n = 0;
    replace_strings(&mut object["spec"], &mut || {
        n += 1;
        TRICKY[n % TRICKY.len()].to_owned()
    });
    let parameters = &mut object["spec"]["postgresql"]["parameters"];
    for (i, key) in TRICKY.iter().enumerate() {
        parameters[*key] = serde_json::Value::from(TRICKY[(i + 1) % TRICKY.len()]);
    }
    assert!(n > 20, "the sample has free-text fields: {n}");
    let written = pgpilot::yaml::to_string(&object).unwrap();
    let ns = namespace("freetext");
    let read = read_by_kubectl(&ns, &written);
    assert_eq!(read["spec"], object["spec"], "{written}");
}

fn replace_strings(value: &mut serde_json::Value, next: &mut impl FnMut() -> String) {
    match value {
        serde_json::Value::String(s) => *s = next(),
        serde_json::Value::Array(items) => items.iter_mut().for_each(|v| replace_strings(v, next)),
        serde_json::Value::Object(map) => map.values_mut().for_each(|v| replace_strings(v, next)),
        _ => {}
    }
}

fn pgpilot_resolve(yaml: &str) -> String {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_pgpilot"));
    command.args(["resolve", "-f", "-"]);
    run(command, "pgpilot resolve -f -", Some(yaml))
        .success()
        .stdout
}

/// `yaml` as kubectl's own YAML reader gives it back (a client-side dry run: no admission,
/// no storage).
fn read_by_kubectl(ns: &str, yaml: &str) -> serde_json::Value {
    let read = kubectl_stdin(
        &[
            "create",
            "--dry-run=client",
            "-o",
            "json",
            "-n",
            ns,
            "-f",
            "-",
        ],
        yaml,
    )
    .success();
    serde_json::from_str(&read.stdout).unwrap()
}

/// The operator runs in these suites with a token of its shipped ServiceAccount; what that
/// account may and may not do, asked of the API server's own authorizer.
#[test]
fn the_operator_s_account_holds_only_what_it_uses() {
    let (ns, name) = OPERATOR_SERVICE_ACCOUNT;
    let account = format!("system:serviceaccount:{ns}:{name}");
    let can = |args: &[&str]| {
        let mut full = vec!["auth", "can-i", "--as", &account];
        full.extend_from_slice(args);
        kubectl(&full).stdout.trim() == "yes"
    };
    for allowed in [
        &["patch", "statefulsets", "-n", "any"][..],
        &["patch", "networkpolicies.networking.k8s.io", "-n", "any"],
        &["create", "pods", "--subresource=eviction", "-n", "any"],
        &[
            "patch",
            "postgresclusters.pgpilot.io",
            "--subresource=status",
            "-n",
            "any",
        ],
        &["update", "leases/pgpilot-controller", "-n", ns],
        &["create", "leases", "-n", ns],
    ] {
        assert!(can(allowed), "may {allowed:?}");
    }
    for denied in [
        &["update", "statefulsets", "-n", "any"][..],
        &["update", "postgresclusters.pgpilot.io", "-n", "any"],
        &["update", "leases/pgpilot-controller", "-n", "default"],
        &["update", "leases/another", "-n", ns],
        &["delete", "leases/pgpilot-controller", "-n", ns],
        &["delete", "persistentvolumeclaims", "-n", "any"],
        &["delete", "pods", "-n", "any"],
        &["create", "pods", "--subresource=exec", "-n", "any"],
        &["list", "nodes"],
        &["escalate", "roles", "-n", "any"],
        &["bind", "roles", "-n", "any"],
        &["create", "clusterrolebindings"],
        &["delete", "customresourcedefinitions"],
    ] {
        assert!(!can(denied), "may not {denied:?}");
    }
}

/// A resolved spec that validation refuses, stored while the webhooks were absent, renders
/// nothing: `Resolved=False`, reason `Invalid`, with the field errors.
#[test]
fn an_invalid_stored_spec_renders_nothing() {
    let _one = serial();
    let ns = namespace("invalid");
    let resolved = pgpilot_resolve(
        &std::fs::read_to_string(format!("{REPO}/manifests/samples/minimal.yaml")).unwrap(),
    );
    let mut object: serde_json::Value = serde_yaml::from_str(&resolved).unwrap();
    object["spec"]["instances"] = serde_json::json!(0);
    remove_webhooks();
    kubectl_stdin(&["apply", "-n", &ns, "-f", "-"], &object.to_string()).success();
    ENV.cluster
        .install_webhooks(&ENV.configurations)
        .expect("webhooks back");
    let condition = |field: &str| {
        jsonpath(
            &ns,
            "pgc/minimal",
            &format!("{{.status.conditions[?(@.type==\"Resolved\")].{field}}}"),
        )
    };
    eventually("Resolved=False, Invalid", Duration::from_secs(30), || {
        (condition("reason") == "Invalid").then_some(())
    });
    assert!(
        condition("message").contains("spec.instances: Invalid value: 0"),
        "{}",
        condition("message")
    );
    assert!(children(&ns, "minimal").is_empty(), "nothing is rendered");
}

/// The Lease's holder, as the API server stores it.
fn lease_holder() -> String {
    jsonpath(
        OPERATOR_SERVICE_ACCOUNT.0,
        "lease/pgpilot-controller",
        "{.spec.holderIdentity}",
    )
}

/// Waits until the Lease has been renewed `n` more times (its `renewTime` moved).
fn wait_for_lease_renewals(n: usize) {
    let renewed = || {
        jsonpath(
            OPERATOR_SERVICE_ACCOUNT.0,
            "lease/pgpilot-controller",
            "{.spec.renewTime}",
        )
    };
    let mut renewals = vec![renewed()];
    let what = format!("{n} renewals of the lease");
    eventually(&what, Duration::from_secs(30 * n as u64), || {
        let now = renewed();
        if renewals.last() != Some(&now) {
            renewals.push(now);
        }
        (renewals.len() > n).then_some(())
    });
}

/// Deletes the Service `minimal-replicas` in `ns` and waits until `by` has re-created it;
/// returns how long that took.
fn delete_and_wait_recreated(ns: &str, by: &str, within: Duration) -> Duration {
    kubectl(&["delete", "service", "-n", ns, "minimal-replicas"]).success();
    let deleted = Instant::now();
    eventually(
        &format!("minimal-replicas recreated by {by}"),
        within,
        || (!jsonpath(ns, "service/minimal-replicas", "{.metadata.name}").is_empty()).then_some(()),
    );
    deleted.elapsed()
}

/// `kind/name manager operation time` of every write outside subresources to the
/// children of `minimal` in `ns`: any write by the operator moves one.
fn child_writes(ns: &str) -> BTreeSet<String> {
    let out = kubectl(&[
        "get",
        "statefulsets,services,configmaps,secrets,poddisruptionbudgets,serviceaccounts,roles,rolebindings",
        "-n",
        ns,
        "-l",
        "pgpilot.io/cluster=minimal",
        "-o",
        "json",
    ])
    .success()
    .stdout;
    let list: serde_json::Value = serde_json::from_str(&out).expect("kubectl's JSON");
    let mut writes = BTreeSet::new();
    for item in list["items"].as_array().into_iter().flatten() {
        let name = format!("{}/{}", item["kind"], item["metadata"]["name"]);
        for f in item["metadata"]["managedFields"]
            .as_array()
            .into_iter()
            .flatten()
        {
            if f["subresource"].is_null() {
                writes.insert(format!(
                    "{name} {} {} {}",
                    f["manager"], f["operation"], f["time"]
                ));
            }
        }
    }
    writes
}

/// The leader cut off from the API server (a partition that makes its requests hang, not
/// fail) stops acting on its own clock before its Lease can expire in the eyes of the other
/// replica, which then takes over; when the partition heals, the old leader stays a
/// follower and sends nothing.
#[test]
fn a_partitioned_leader_stops_before_another_takes_over() {
    use pgpilot::controller::leader::{DURATION, RENEW};
    let _one = serial();
    let ns = namespace("partition");
    apply_minimal(&ns);
    wait_reconciled(&ns);

    let api: std::net::SocketAddr = ENV
        .cluster
        .server()
        .trim_start_matches("https://")
        .parse()
        .expect("the API server's address");
    let link = link::Link::start(api);
    let cut_off = operator_via(&ENV.cluster, Some(&link.url()), "partitioned.log", &[]);
    // The direct operator steps down (releasing the Lease) so the linked one leads, then
    // starts again as the follower.
    ENV.operator.stop();
    eventually(
        "the linked operator leading",
        Duration::from_secs(60),
        || (cut_off.metric(LEADER).ok()? == 1).then_some(()),
    );
    let partitioned = lease_holder();
    ENV.operator
        .start_again()
        .expect("the operator starts again");
    eventually(
        "the linked operator reconciling",
        Duration::from_secs(60),
        || (cut_off.metric(Operator::RECONCILED).ok()? > 0).then_some(()),
    );

    link.cut();
    let cut = Instant::now();
    let (mut stopped, mut taken) = (None, None);
    while stopped.is_none() || taken.is_none() {
        assert!(
            cut.elapsed() < DURATION * 4,
            "after {:?}: stopped {stopped:?}, taken over {taken:?}",
            cut.elapsed()
        );
        if stopped.is_none() && cut_off.metric(LEADER).unwrap() == 0 {
            stopped = Some(cut.elapsed());
        }
        if taken.is_none() && ENV.operator.metric(LEADER).unwrap_or(0) == 1 {
            taken = Some(cut.elapsed());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let (stopped, taken) = (stopped.unwrap(), taken.unwrap());
    println!(
        "partition: the cut-off leader stopped {:.1} s after the cut, the other led {:.1} s after it",
        stopped.as_secs_f64(),
        taken.as_secs_f64()
    );
    assert!(
        stopped < taken,
        "the cut-off leader stopped at {stopped:?}, after the other took over at {taken:?}"
    );
    assert!(
        stopped <= DURATION - RENEW + RENEW,
        "stopped {stopped:?} after the cut: its last renewal was at most {RENEW:?} before"
    );
    let holder = lease_holder();
    assert!(!holder.is_empty() && holder != partitioned, "{holder}");
    let reconciled = cut_off.metric(Operator::RECONCILED).unwrap();

    // The new leader acts; the old one, once the partition heals, does not.
    delete_and_wait_recreated(&ns, "the new leader", Duration::from_secs(30));
    link.heal();
    // Two renewals by the leader while the healed one campaigns (every RENEW).
    wait_for_lease_renewals(2);
    assert_eq!(
        lease_holder(),
        holder,
        "the lease stays with the new leader"
    );
    assert_eq!(cut_off.metric(LEADER).unwrap(), 0);
    assert_eq!(
        cut_off.metric(Operator::RECONCILED).unwrap(),
        reconciled,
        "the healed operator reconciled after it stopped leading"
    );
    let log =
        std::fs::read_to_string(ENV.cluster.work_dir().join("partitioned.log")).unwrap_or_default();
    assert!(
        log.contains("no longer leading"),
        "the cut-off operator says why it stopped:\n{log}"
    );
    drop(cut_off);
}

/// kube-apiserver stopped and started again under a running operator: its watches
/// reconnect by themselves (an edit after the restart is acted on), it leads again (kept
/// or re-acquired), and the restart itself causes no write to any child.
#[test]
fn the_operator_rides_out_an_api_server_restart() {
    let _one = serial();
    let ns = namespace("restart");
    apply_minimal(&ns);
    wait_reconciled(&ns);
    wait_for_resyncs(&ENV.operator, 1);
    let pids = operator_pids();
    let transitions = || {
        jsonpath(
            OPERATOR_SERVICE_ACCOUNT.0,
            "lease/pgpilot-controller",
            "{.spec.leaseTransitions}",
        )
    };
    let (holder, transitions_before) = (lease_holder(), transitions());
    let writes_before = child_writes(&ns);

    let gone = ENV
        .cluster
        .restart_api_server(Duration::from_secs(120))
        .expect("kube-apiserver starts again");
    let back = Instant::now();
    eventually("the operator leading", Duration::from_secs(60), || {
        (ENV.operator.metric(LEADER).ok()? == 1).then_some(())
    });
    let leading = back.elapsed();
    // Watches resumed: a deleted child comes back without any other nudge.
    let recreated = delete_and_wait_recreated(&ns, "the operator", Duration::from_secs(90));
    wait_for_resyncs(&ENV.operator, 2);
    println!(
        "API server restart: gone {:.1} s; the operator led {:.1} s after it answered (holder kept: {}), re-created a deleted child {:.1} s after the delete",
        gone.as_secs_f64(),
        leading.as_secs_f64(),
        lease_holder() == holder && transitions() == transitions_before,
        recreated.as_secs_f64()
    );
    assert_eq!(operator_pids(), pids, "the operator did not restart");
    assert_eq!(lease_holder(), holder, "the same operator leads");
    let writes_after: BTreeSet<String> = child_writes(&ns)
        .into_iter()
        .filter(|w| !w.starts_with("\"Service\"/minimal-replicas "))
        .collect();
    let writes_before: BTreeSet<String> = writes_before
        .into_iter()
        .filter(|w| !w.starts_with("\"Service\"/minimal-replicas "))
        .collect();
    assert_eq!(
        writes_after, writes_before,
        "the restart caused writes to the children"
    );
}
