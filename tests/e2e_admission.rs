//! End to end through a real API server: `kubectl` as a user types it, the CRD, and the
//! operator (`pgpilot run`, a host process) behind the webhook configurations derived from
//! `manifests/webhooks.yaml`. One control plane for the binary; each test has a namespace.

mod e2e;
#[path = "structural/mod.rs"]
mod structural;

use std::sync::LazyLock;

use e2e::{Harness, Setup, cluster, resolved, sample, spec_json};
use pgpilot::api::PostgresCluster;
use pgpilot::validate::validate;

static E2E: LazyLock<Harness> = LazyLock::new(|| Harness::start(Setup::WithOperator));

/// The warnings `validate` gives for what `resolve` makes of `yaml`: what kubectl must print.
fn expected_warnings(yaml: &str) -> Vec<String> {
    let mut c = cluster(yaml);
    c.spec = resolved(&c.spec);
    validate(&c, None).warnings
}

#[test]
fn minimal_sample_is_stored_resolved() {
    let ns = E2E.namespace("minimal");
    let run = E2E
        .kubectl(&["apply", "-n", &ns, "-f", "manifests/samples/minimal.yaml"])
        .success();
    assert_eq!(
        run.stdout.trim(),
        "postgrescluster.pgpilot.io/minimal created"
    );
    assert_eq!(
        run.warnings(),
        expected_warnings(&sample("minimal")),
        "{run}"
    );

    let sample = cluster(&sample("minimal"));
    let shown = E2E
        .kubectl(&["get", "pgc", "minimal", "-n", &ns, "-o", "yaml"])
        .success();
    // As JSON, so explicit nulls (`storageClassName: null`) count too.
    let expected = serde_json::to_value(resolved(&sample.spec)).unwrap();
    assert_eq!(spec_json(&shown.stdout), expected, "{}", shown.stdout);
    let stored = E2E.stored(&ns, "minimal").expect("stored");
    assert_eq!(stored.spec, resolved(&sample.spec));
}

#[test]
fn server_dry_run_shows_the_resolved_spec_and_stores_nothing() {
    let ns = E2E.namespace("dry-run");
    let run = E2E
        .kubectl(&[
            "apply",
            "--dry-run=server",
            "-o",
            "yaml",
            "-n",
            &ns,
            "-f",
            "manifests/samples/minimal.yaml",
        ])
        .success();
    let sample = cluster(&sample("minimal"));
    let expected = serde_json::to_value(resolved(&sample.spec)).unwrap();
    assert_eq!(spec_json(&run.stdout), expected, "{}", run.stdout);

    assert!(
        E2E.stored(&ns, "minimal").is_none(),
        "nothing may be stored"
    );
    let get = E2E.kubectl(&["get", "pgc", "minimal", "-n", &ns]).failure();
    assert!(
        get.stderr
            .contains(r#"postgresclusters.pgpilot.io "minimal" not found"#),
        "{get}"
    );
}

#[test]
fn invalid_spec_is_rejected_naming_every_field() {
    let ns = E2E.namespace("invalid");
    let yaml = "apiVersion: pgpilot.io/v1
kind: PostgresCluster
metadata:
  name: broken
spec:
  postgresVersion: 13
  instances: 0
  storage:
    size: 10Gi
  postgresql:
    parameters:
      port: '5433'
      archive_command: /bin/true
  patroni:
    ttl: 20
    loopWait: 10
    retryTimeout: 10
  users:
  - name: postgres
";
    let mut broken = cluster(yaml);
    broken.spec = resolved(&broken.spec);
    let errors = validate(&broken, None).errors;
    assert!(
        errors.len() >= 5,
        "the spec should break several rules: {errors:#?}"
    );

    let run = E2E
        .kubectl_stdin(&["apply", "-n", &ns, "-f", "-"], yaml)
        .failure();
    // kubectl lists the causes of an Invalid status one per line.
    assert!(
        run.stderr
            .contains("The PostgresCluster \"broken\" is invalid: \n"),
        "{run}"
    );
    for error in &errors {
        assert!(
            run.stderr.contains(&format!("\n* {error}\n")),
            "no {error} in\n{run}"
        );
    }
    assert!(E2E.stored(&ns, "broken").is_none(), "nothing may be stored");
}

/// `kubectl apply` of each spec with structural mistakes lists every error, structural and
/// not, and stores nothing. An undeclared field is the API server's own refusal under
/// kubectl's default strict field validation (before any webhook); with `--validate=false`
/// the API server drops it and the webhook reports the rest.
#[test]
fn structural_mistakes_are_rejected_with_every_error() {
    let ns = E2E.namespace("structural");
    for case in structural::cases() {
        let undeclared: Vec<&str> = case
            .errors
            .iter()
            .filter_map(|e| e.strip_suffix(": Forbidden: field not declared in schema"))
            .collect();
        let run = E2E
            .kubectl_stdin(&["apply", "-n", &ns, "-f", "-"], &case.yaml)
            .failure();
        if let Some(field) = undeclared.first() {
            assert!(
                run.stderr.contains(&format!("unknown field \"{field}\"")),
                "{}: {run}",
                case.name
            );
            let run = E2E
                .kubectl_stdin(
                    &["apply", "--validate=false", "-n", &ns, "-f", "-"],
                    &case.yaml,
                )
                .failure();
            for error in case.errors.iter().filter(|e| !e.contains("not declared")) {
                assert!(
                    run.stderr.contains(&format!("\n* {error}\n")),
                    "{}: no {error} in\n{run}",
                    case.name
                );
            }
        } else {
            // kubectl lists the causes of an Invalid status one per line.
            for error in case.errors {
                assert!(
                    run.stderr.contains(&format!("\n* {error}\n")),
                    "{}: no {error} in\n{run}",
                    case.name
                );
            }
        }
        assert!(
            E2E.stored(&ns, case.name).is_none(),
            "nothing may be stored"
        );
    }
}

/// Applies `before`, then `after`; `after` must be rejected with `message` and leave the
/// stored object as it was.
#[track_caller]
fn update_is_rejected(ns: &str, before: &str, after: &str, messages: &[&str]) {
    E2E.namespace(ns);
    E2E.kubectl_stdin(&["apply", "-n", ns, "-f", "-"], before)
        .success();
    let stored = E2E.stored(ns, "db").expect("stored");
    let run = E2E
        .kubectl_stdin(&["apply", "-n", ns, "-f", "-"], after)
        .failure();
    assert!(
        run.stderr
            .contains("The PostgresCluster \"db\" is invalid: "),
        "kubectl should relay the API server's refusal:\n{run}"
    );
    for message in messages {
        assert!(run.stderr.contains(message), "no {message:?} in\n{run}");
    }
    let now = E2E.stored(ns, "db").expect("still stored");
    assert_eq!(now.spec, stored.spec, "the stored spec changed");
    assert_eq!(now.metadata.generation, stored.metadata.generation);
}

fn db(spec: &str) -> String {
    format!(
        "apiVersion: pgpilot.io/v1\nkind: PostgresCluster\nmetadata:\n  name: db\nspec:\n{spec}"
    )
}

#[test]
fn shrinking_storage_is_rejected() {
    update_is_rejected(
        "shrink",
        &db("  storage:\n    size: 10Gi\n"),
        &db("  storage:\n    size: 5Gi\n"),
        // The CRD's CEL rule answers before the validating webhook is asked.
        &["spec.storage", "storage.size may not shrink"],
    );
}

#[test]
fn changing_the_storage_class_is_rejected() {
    update_is_rejected(
        "storage-class",
        &db("  storage:\n    size: 10Gi\n    storageClassName: standard\n"),
        &db("  storage:\n    size: 10Gi\n    storageClassName: fast\n"),
        &["spec.storage", "storage.storageClassName is immutable"],
    );
}

#[test]
fn setting_a_storage_class_on_the_default_one_is_rejected() {
    // Stored as `storageClassName: null`, which CEL's has() does not see: the CRD's rule
    // lets this through and the validating webhook's update rule refuses it.
    update_is_rejected(
        "storage-class-null",
        &db("  storage:\n    size: 10Gi\n"),
        &db("  storage:\n    size: 10Gi\n    storageClassName: fast\n"),
        &["storageClassName", "immutable"],
    );
}

#[test]
fn changing_the_major_version_is_rejected() {
    update_is_rejected(
        "major-version",
        &db("  postgresVersion: 17\n  storage:\n    size: 10Gi\n"),
        &db("  postgresVersion: 18\n  storage:\n    size: 10Gi\n"),
        &["spec.postgresVersion", "postgresVersion is immutable"],
    );
}

fn shared_buffers(c: &PostgresCluster) -> String {
    let parameters = c
        .spec
        .postgresql
        .as_ref()
        .and_then(|p| p.parameters.as_ref());
    let value = parameters
        .and_then(|p| p.get("shared_buffers"))
        .expect("shared_buffers");
    serde_json::to_value(value)
        .unwrap()
        .as_str()
        .unwrap()
        .to_owned()
}

#[test]
fn raising_the_memory_request_retunes_derived_parameters() {
    let ns = E2E.namespace("retune");
    let memory = |m: &str| {
        db(&format!(
            "  storage:\n    size: 10Gi\n  resources:\n    requests:\n      memory: {m}\n"
        ))
    };
    E2E.kubectl_stdin(&["apply", "-n", &ns, "-f", "-"], &memory("1Gi"))
        .success();
    assert_eq!(shared_buffers(&E2E.stored(&ns, "db").unwrap()), "256MB");

    E2E.kubectl_stdin(&["apply", "-n", &ns, "-f", "-"], &memory("4Gi"))
        .success();
    let shown = E2E
        .kubectl(&["get", "pgc", "db", "-n", &ns, "-o", "yaml"])
        .success();
    let retuned: PostgresCluster = serde_yaml::from_str(&shown.stdout).unwrap();
    assert_eq!(shared_buffers(&retuned), "1024MB", "{}", shown.stdout);
    // Every derived default followed: the object is what a fresh 4Gi cluster resolves to.
    assert_eq!(retuned.spec, resolved(&cluster(&memory("4Gi")).spec));
}

#[test]
fn an_explicit_shared_buffers_survives_a_memory_change() {
    let ns = E2E.namespace("explicit");
    let memory = |m: &str| {
        db(&format!(
            "  storage:\n    size: 10Gi\n  resources:\n    requests:\n      memory: {m}\n  postgresql:\n    parameters:\n      shared_buffers: 300MB\n"
        ))
    };
    E2E.kubectl_stdin(&["apply", "-n", &ns, "-f", "-"], &memory("1Gi"))
        .success();
    E2E.kubectl_stdin(&["apply", "-n", &ns, "-f", "-"], &memory("4Gi"))
        .success();
    let stored = E2E.stored(&ns, "db").unwrap();
    assert_eq!(shared_buffers(&stored), "300MB");
    assert_eq!(stored.spec, resolved(&cluster(&memory("4Gi")).spec));
}

#[test]
fn a_one_instance_cluster_is_admitted_with_warnings() {
    let ns = E2E.namespace("single");
    let yaml = db("  instances: 1\n  storage:\n    size: 10Gi\n");
    let run = E2E
        .kubectl_stdin(&["apply", "-n", &ns, "-f", "-"], &yaml)
        .success();
    assert_eq!(run.stdout.trim(), "postgrescluster.pgpilot.io/db created");
    let expected = expected_warnings(&yaml);
    assert!(
        expected.iter().any(|w| w.starts_with("spec.instances: ")),
        "validate should warn about one instance: {expected:?}"
    );
    assert_eq!(run.warnings(), expected, "{run}");
    assert_eq!(E2E.stored(&ns, "db").unwrap().spec.instances, Some(1));
}

#[test]
fn get_shows_the_printer_columns() {
    let ns = E2E.namespace("columns");
    E2E.kubectl(&["apply", "-n", &ns, "-f", "manifests/samples/minimal.yaml"])
        .success();
    let run = E2E.kubectl(&["get", "pgc", "-n", &ns]).success();
    let mut lines = run.stdout.lines();
    let header: Vec<&str> = lines
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(
        header,
        [
            "NAME",
            "VERSION",
            "INSTANCES",
            "READY",
            "PRIMARY",
            "PHASE",
            "AGE"
        ],
        "{run}"
    );
    let row: Vec<&str> = lines
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(row[..3], ["minimal", "18", "2"], "{run}");
}

#[test]
fn backup_requests_are_checked_before_they_are_stored() {
    let ns = E2E.namespace("backup-request");
    let yaml = db(
        "  storage:\n    size: 10Gi\n  backup:\n    pgbackrest:\n      repos:\n        - name: repo1\n          volume:\n            size: 1Gi\n",
    );
    E2E.kubectl_stdin(&["apply", "-n", &ns, "-f", "-"], &yaml)
        .success();
    let stored = E2E.stored(&ns, "db").expect("stored");
    let path = "metadata.annotations[pgpilot.io/backup]: Invalid value";
    for (value, message) in [
        (
            "repo9:full",
            "repo9 is not a repository of this cluster (repo1)",
        ),
        (
            "repo1:weekly",
            "must be REPO:TYPE with TYPE full, diff or incr",
        ),
        // No primary yet: there is nothing to back up.
        (
            "repo1:full",
            "a backup needs a running cluster with an elected primary",
        ),
    ] {
        let run = E2E
            .kubectl(&[
                "annotate",
                "-n",
                &ns,
                "postgrescluster",
                "db",
                &format!("pgpilot.io/backup={value}"),
            ])
            .failure();
        assert!(
            run.stderr.contains(path) && run.stderr.contains(message),
            "{value}: {run}"
        );
    }
    let now = E2E.stored(&ns, "db").expect("still stored");
    // (Status writes by the controller may move the resourceVersion; the request did not.)
    assert_eq!(now.metadata.annotations, stored.metadata.annotations);
    assert_eq!(now.spec, stored.spec);
}

/// `spec.bootstrap.restore` of a cluster named `db`, with `restore` as its YAML body.
fn restoring(restore: &str) -> String {
    db(&format!(
        "  storage:\n    size: 10Gi\n  bootstrap:\n    restore:\n{restore}"
    ))
}

#[test]
fn restores_are_checked_before_anything_is_stored() {
    let ns = E2E.namespace("restore-rules");
    for (restore, messages) in [
        (
            "      cluster: src\n      repo: repo1\n      target:\n        type: time\n        value: \"2026-12-01 10:00:00\"\n",
            vec![
                "spec.bootstrap.restore.target.value: Invalid value: \"2026-12-01 10:00:00\"",
                "with an offset",
            ],
        ),
        (
            "      cluster: src\n      repo: repo1\n      target:\n        type: xid\n",
            vec!["spec.bootstrap.restore.target.value: Required value"],
        ),
        (
            "      cluster: src\n      repo: repo1\n      target:\n        value: 0/3000060\n",
            vec![
                "spec.bootstrap.restore.target.value: Invalid value",
                "takes no value",
            ],
        ),
        (
            "      cluster: src\n      repo: repo1\n      target:\n        type: time\n        value: \"2026-12-01T10:00:00Z\"\n        set: 20261201-090000F\n",
            vec![
                "spec.bootstrap.restore.target.set: Forbidden",
                "type immediate only",
            ],
        ),
        (
            "      cluster: src\n      repo: repo7\n",
            vec!["spec.bootstrap.restore.repo: Unsupported value: \"repo7\""],
        ),
        (
            "      cluster: src\n      repo: repo1\n      repository:\n        volume:\n          size: 1Gi\n",
            vec!["spec.bootstrap.restore.repository.volume"],
        ),
        (
            "      cluster: src\n      repo: repo1\n      options:\n        stanza: other\n        repo1-path: /elsewhere\n",
            vec![
                "spec.bootstrap.restore.options[stanza]: Forbidden",
                "spec.bootstrap.restore.options[repo1-path]: Forbidden",
            ],
        ),
    ] {
        let run = E2E
            .kubectl_stdin(&["apply", "-n", &ns, "-f", "-"], &restoring(restore))
            .failure();
        for message in messages {
            assert!(run.stderr.contains(message), "no {message:?} in\n{run}");
        }
        assert!(
            E2E.stored(&ns, "db").is_none(),
            "nothing stored for\n{restore}"
        );
    }

    // Accepted: the stored spec shows the restore pgBackRest will run, and kubectl says
    // what will happen.
    let run = E2E
        .kubectl_stdin(
            &["apply", "-n", &ns, "-f", "-"],
            &restoring("      cluster: src\n      repo: repo1\n      target:\n        type: time\n        value: \"2026-12-01T11:30:00+01:00\"\n"),
        )
        .success();
    assert!(run.stderr.contains("Job db-restore restores it"), "{run}");
    // The webhook looked for the source: not there (yet), said, not refused.
    assert!(
        run.stderr.contains(
            "spec.bootstrap.restore.cluster: no PostgresCluster \"src\" in this namespace (yet)"
        ),
        "{run}"
    );
    let stored = E2E.stored(&ns, "db").expect("stored");
    let r = stored.spec.bootstrap.unwrap().restore.unwrap();
    let options = r.options.unwrap();
    assert_eq!(options["type"], "time");
    assert_eq!(options["target"], "2026-12-01 10:30:00+00");
    assert_eq!(options["target-action"], "promote");
    assert_eq!(options["target-exclusive"], "n");

    // Acting once, it cannot change afterwards.
    update_is_rejected(
        "restore-immutable",
        &restoring(
            "      cluster: src\n      repo: repo1\n      target:\n        type: time\n        value: \"2026-12-01T11:30:00+01:00\"\n",
        ),
        &restoring("      cluster: src\n      repo: repo1\n      target:\n        type: latest\n"),
        &["spec.bootstrap: Forbidden: field is immutable"],
    );
}

#[test]
fn a_restore_from_an_existing_cluster_is_checked_against_it() {
    let ns = E2E.namespace("restore-source");
    let source = "apiVersion: pgpilot.io/v1\nkind: PostgresCluster\nmetadata:\n  name: src\nspec:\n  postgresVersion: 16\n  storage:\n    size: 1Gi\n  backup:\n    pgbackrest:\n      repos:\n        - name: repo1\n          volume:\n            size: 1Gi\n";
    E2E.kubectl_stdin(&["apply", "-n", &ns, "-f", "-"], source)
        .success();
    // A repository the source lacks and another major: both refused, nothing stored.
    let run = E2E
        .kubectl_stdin(
            &["apply", "-n", &ns, "-f", "-"],
            &db("  postgresVersion: 17\n  storage:\n    size: 1Gi\n  bootstrap:\n    restore:\n      cluster: src\n      repo: repo2\n"),
        )
        .failure();
    for message in [
        "spec.bootstrap.restore.repo: Invalid value: \"repo2\": is not a repository of cluster \"src\" (repo1)",
        "spec.postgresVersion: Invalid value: 17: must be 16, the major version of cluster \"src\"",
    ] {
        assert!(run.stderr.contains(message), "no {message:?} in\n{run}");
    }
    assert!(E2E.stored(&ns, "db").is_none());
    // The same major and an existing repository: admitted, with no word about the source.
    let run = E2E
        .kubectl_stdin(
            &["apply", "-n", &ns, "-f", "-"],
            &db("  postgresVersion: 16\n  storage:\n    size: 1Gi\n  bootstrap:\n    restore:\n      cluster: src\n      repo: repo1\n"),
        )
        .success();
    assert!(!run.stderr.contains("no PostgresCluster"), "{run}");
    assert!(E2E.stored(&ns, "db").is_some());
}

#[test]
fn in_place_restores_are_checked_before_anything_is_stored() {
    let ns = E2E.namespace("restore-in-place");
    let base = "  storage:\n    size: 10Gi\n  backup:\n    pgbackrest:\n      repos:\n        - name: repo1\n          volume:\n            size: 1Gi\n";
    // Not on a create: a new cluster has nothing to restore in place.
    let create = db(&format!("{base}  restore:\n    id: one\n    repo: repo1\n"));
    let run = E2E
        .kubectl_stdin(&["apply", "-n", &ns, "-f", "-"], &create)
        .failure();
    assert!(
        run.stderr.contains("spec.restore: Forbidden")
            && run.stderr.contains("spec.bootstrap.restore"),
        "{run}"
    );
    assert!(E2E.stored(&ns, "db").is_none());
    E2E.kubectl_stdin(&["apply", "-n", &ns, "-f", "-"], &db(base))
        .success();
    let patch = |restore: &str| {
        E2E.kubectl(&[
            "patch",
            "-n",
            &ns,
            "postgrescluster",
            "db",
            "--type=merge",
            "-p",
            &format!("{{\"spec\":{{\"restore\":{restore}}}}}"),
        ])
    };
    for (restore, message) in [
        (
            r#"{"id":"one","repo":"repo2"}"#,
            "spec.restore.repo: Invalid value: \"repo2\": is not a repository of this cluster (repo1)",
        ),
        (
            r#"{"id":"one","repo":"repo1","target":{"type":"time","value":"2026-12-01 10:00"}}"#,
            "spec.restore.target.value: Invalid value",
        ),
        (
            r#"{"id":"has space","repo":"repo1"}"#,
            "spec.restore.id: Invalid value",
        ),
    ] {
        let run = patch(restore).failure();
        assert!(run.stderr.contains(message), "{restore}: {run}");
        assert!(
            E2E.stored(&ns, "db")
                .expect("stored")
                .spec
                .restore
                .is_none(),
            "nothing stored for {restore}"
        );
    }
    // Accepted with a warning that says what is replaced; the stored spec shows the
    // restore's options.
    let run =
        patch(r#"{"id":"one","repo":"repo1","target":{"type":"xid","value":"1234"}}"#).success();
    assert!(
        run.stderr.contains("replaces the data of every instance"),
        "{run}"
    );
    let stored = E2E
        .stored(&ns, "db")
        .expect("stored")
        .spec
        .restore
        .expect("restore");
    let options = stored.options.expect("options");
    assert_eq!(options["type"], "xid");
    assert_eq!(options["target"], "1234");
    assert_eq!(options["target-action"], "promote");
    // The same id for another target is refused.
    let run =
        patch(r#"{"id":"one","repo":"repo1","target":{"type":"xid","value":"99999"}}"#).failure();
    assert!(
        run.stderr.contains("spec.restore.id: Forbidden")
            && run.stderr.contains("a different restore needs a new id"),
        "{run}"
    );
}
