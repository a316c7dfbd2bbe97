//! The operator as a process that can go away: admission fails closed while it is down
//! (`failurePolicy: Fail`), with an error that says which webhook could not be called,
//! and works again once it is back. Its own control plane, as stopping the operator would
//! disturb other suites' tests.

mod e2e;

use std::sync::LazyLock;

use e2e::{Harness, Setup, cluster, resolved, sample};

static E2E: LazyLock<Harness> = LazyLock::new(|| Harness::start(Setup::WithOperator));

#[test]
fn admission_fails_closed_while_the_operator_is_down() {
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
