//! The operator as a process that can go away: admission fails closed while it is down
//! (`failurePolicy: Fail`), with an error that says which webhook could not be called,
//! and works again once it is back; what users must still be able to do meanwhile
//! (delete a cluster, delete its namespace) is never held by the webhook or a finalizer.
//! Its own control plane, as stopping the operator would disturb other suites' tests.

mod e2e;

use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant};

use e2e::{Harness, Setup, cluster, resolved, sample};

static E2E: LazyLock<Harness> = LazyLock::new(|| Harness::start(Setup::WithOperator));

/// Each test stops the one operator: one test at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn until(what: &str, within: Duration, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < within, "{what}: not within {within:?}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[test]
fn admission_fails_closed_while_the_operator_is_down() {
    let _one = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let ns = E2E.namespace("restart");
    let operator = E2E.operator.as_ref().expect("an operator");
    let apply = ["apply", "-n", &ns, "-f", "manifests/samples/minimal.yaml"];

    operator.stop();
    let run = E2E.kubectl(&apply).failure();
    eprintln!("while the operator is down:\n{run}");
    assert!(
        run.stderr.contains(
            r#"Internal error occurred: failed calling webhook "mutate.postgresclusters.pgpilot.io""#
        ),
        "{run}"
    );
    assert!(run.stderr.contains("connection refused"), "{run}");
    assert!(
        E2E.stored(&ns, "minimal").is_none(),
        "nothing may be stored"
    );

    operator.start_again().expect("the operator starts again");
    let run = E2E.kubectl(&apply).success();
    assert_eq!(
        run.stdout.trim(),
        "postgrescluster.pgpilot.io/minimal created"
    );
    let stored = E2E.stored(&ns, "minimal").expect("stored");
    assert_eq!(stored.spec, resolved(&cluster(&sample("minimal")).spec));
}

/// With both the webhook and the controller gone, a user can still delete a cluster and its
/// namespace: no webhook is called on DELETE, and no finalizer waits for the operator (the
/// garbage collector removes the children by their owner references). An edit fails closed.
#[test]
fn deletes_complete_while_the_operator_is_down() {
    let _one = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let ns = E2E.namespace("hostage");
    E2E.kubectl(&["apply", "-n", &ns, "-f", "manifests/samples/minimal.yaml"])
        .success();
    let exists = |args: &[&str]| E2E.kubectl(args).code == Some(0);
    until(
        "the StatefulSet made by the operator",
        Duration::from_secs(60),
        || exists(&["get", "statefulset", "minimal", "-n", &ns]),
    );
    let operator = E2E.operator.as_ref().expect("an operator");
    operator.stop();

    let edit = E2E
        .kubectl(&[
            "patch",
            "pgc",
            "minimal",
            "-n",
            &ns,
            "--type",
            "merge",
            "-p",
            r#"{"spec":{"instances":3}}"#,
        ])
        .failure();
    assert!(
        edit.stderr.contains("failed calling webhook"),
        "an edit while the operator is down: {edit}"
    );
    let stored = E2E.stored(&ns, "minimal").expect("still stored");
    assert_eq!(stored.spec.instances, Some(2), "the edit was stored");
    assert!(
        stored.metadata.finalizers.is_none(),
        "a finalizer would wait for the operator"
    );

    let t = Instant::now();
    E2E.kubectl(&["delete", "pgc", "minimal", "-n", &ns, "--timeout=30s"])
        .success();
    assert!(E2E.stored(&ns, "minimal").is_none());
    // The children go with their owner, collected by kube-controller-manager.
    until("the StatefulSet collected", Duration::from_secs(60), || {
        !exists(&["get", "statefulset", "minimal", "-n", &ns])
    });
    E2E.kubectl(&["delete", "namespace", &ns, "--timeout=120s"])
        .success();
    until("the namespace gone", Duration::from_secs(120), || {
        !exists(&["get", "namespace", &ns])
    });
    eprintln!(
        "with the operator down: cluster, children and namespace deleted in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    operator.start_again().expect("the operator starts again");
}
