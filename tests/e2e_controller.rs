//! The reconciler against a real control plane, in tests that can share it: every child
//! materializes from a sample, drift is healed, scaling and the pooler follow the spec,
//! and deleting a cluster collects its children but keeps its volumes.

mod reconciler;

use std::time::Duration;

use reconciler::*;

#[test]
fn a_sample_materializes_and_reports_status() {
    let ns = namespace("materialize");
    apply_minimal(&ns);
    wait_reconciled(&ns);
    let got = children(&ns, "minimal");
    assert_eq!(
        got.iter()
            .filter(|c| c.starts_with("job.batch/minimal-roles-"))
            .count(),
        1,
        "{got:#?}"
    );
    assert_eq!(jsonpath(&ns, "pgc/minimal", "{.status.phase}"), "Creating");
    assert_eq!(
        jsonpath(&ns, "pgc/minimal", "{.status.instances.desired}"),
        "2"
    );
    assert_eq!(
        jsonpath(&ns, "pgc/minimal", "{.status.observedGeneration}"),
        "1"
    );
    let ready = jsonpath(
        &ns,
        "pgc/minimal",
        "{.status.conditions[?(@.type==\"Ready\")].reason}",
    );
    assert_eq!(ready, "NoPrimary", "no kubelet runs the pods here");
    // The pod carrying the primary label is what status reports.
    kubectl(&[
        "label",
        "pod",
        "-n",
        &ns,
        "minimal-0",
        "pgpilot.io/role=primary",
    ])
    .success();
    eventually("status.primary", Duration::from_secs(15), || {
        (jsonpath(&ns, "pgc/minimal", "{.status.primary}") == "minimal-0").then_some(())
    });
    let printed = kubectl(&["get", "pgc", "-n", &ns]).success().stdout;
    assert!(
        printed.contains("minimal-0") && printed.contains("Creating"),
        "{printed}"
    );
}

#[test]
fn the_full_sample_materializes_every_kind() {
    let ns = namespace("full");
    // Without cert-manager here, TLS comes from a named Secret instead of an issuer.
    let yaml = sample("ha-backup-pooler").replace(
        "    issuerRef:\n      name: internal-ca\n      kind: ClusterIssuer\n",
        "    secretName: orders-cert\n",
    );
    kubectl_stdin(&["apply", "-n", &ns, "-f", "-"], &yaml).success();
    let expected = [
        "configmap/orders-pgbackrest",
        "configmap/orders-pooler",
        "secret/orders-pgbackrest-tls",
        "secret/orders-pooler",
        "secret/orders-user-orders-app",
        "service/orders-repo-host",
        "service/orders-pooler",
        "statefulset.apps/orders-repo-host",
        "deployment.apps/orders-pooler",
        "poddisruptionbudget.policy/orders-pooler",
        "networkpolicy.networking.k8s.io/orders",
        "networkpolicy.networking.k8s.io/orders-repo-host",
        "cronjob.batch/orders-backup-repo1-full",
        "cronjob.batch/orders-backup-repo1-diff",
        "cronjob.batch/orders-backup-repo1-incr",
        "cronjob.batch/orders-backup-repo2-full",
    ];
    eventually("every child of orders", Duration::from_secs(30), || {
        let got = children(&ns, "orders");
        expected.iter().all(|c| got.contains(*c)).then_some(())
    });
    kubectl(&[
        "wait",
        "-n",
        &ns,
        "--for=condition=Reconciled",
        "pgc/orders",
        "--timeout=30s",
    ])
    .success();
    assert_eq!(
        jsonpath(
            &ns,
            "cronjob/orders-backup-repo1-incr",
            "{.spec.concurrencyPolicy}"
        ),
        "Forbid"
    );
    // The namespace enforces the `restricted` Pod Security Standard: the workload
    // controllers' pods (Pending here: no kubelet) exist only if PodSecurity admitted them.
    kubectl(&[
        "create",
        "job",
        "-n",
        &ns,
        "orders-backup-now",
        "--from=cronjob/orders-backup-repo1-full",
    ])
    .success();
    for component in ["database", "repo-host", "pooler", "backup"] {
        eventually(
            &format!("a {component} pod admitted"),
            Duration::from_secs(60),
            || {
                let pods = kubectl(&[
                    "get",
                    "pods",
                    "-n",
                    &ns,
                    "-l",
                    &format!("app.kubernetes.io/component={component}"),
                    "-o",
                    "name",
                ])
                .success()
                .stdout;
                (!pods.trim().is_empty()).then_some(())
            },
        );
    }
    let events = kubectl(&["get", "events", "-n", &ns, "-o", "json"])
        .success()
        .stdout;
    assert!(
        !events.contains("violates PodSecurity"),
        "a pod was refused by PodSecurity (restricted): {events}"
    );
    // The pass that created the children says so in one Event (naming them, or counting
    // them by kind when the names would not fit).
    let events: serde_json::Value = serde_json::from_str(&events).unwrap();
    let created: Vec<&str> = events["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["involvedObject"]["name"] == "orders" && e["reason"] == "Created")
        .filter_map(|e| e["message"].as_str())
        .collect();
    assert_eq!(created.len(), 1, "{created:?}");
    for kind in [
        "StatefulSet",
        "CronJob",
        "Deployment",
        "PodDisruptionBudget",
    ] {
        assert!(created[0].contains(kind), "{kind} in {}", created[0]);
    }
}

#[test]
fn drift_is_healed() {
    let ns = namespace("drift");
    apply_minimal(&ns);
    let uid = jsonpath(&ns, "service/minimal-primary", "{.metadata.uid}");
    kubectl(&["delete", "service", "-n", &ns, "minimal-primary"]).success();
    eventually(
        "a recreated minimal-primary",
        Duration::from_secs(15),
        || {
            let now = jsonpath(&ns, "service/minimal-primary", "{.metadata.uid}");
            (!now.is_empty() && now != uid).then_some(())
        },
    );
    kubectl(&[
        "patch",
        "statefulset",
        "-n",
        &ns,
        "minimal",
        "--type=merge",
        "-p",
        r#"{"spec":{"template":{"spec":{"terminationGracePeriodSeconds":1}}}}"#,
    ])
    .success();
    kubectl(&[
        "patch",
        "configmap",
        "-n",
        &ns,
        "minimal-patroni",
        "--type=merge",
        "-p",
        r#"{"data":{"patroni.yaml":"scope: hacked"}}"#,
    ])
    .success();
    eventually("restored fields", Duration::from_secs(15), || {
        let grace = jsonpath(
            &ns,
            "statefulset/minimal",
            "{.spec.template.spec.terminationGracePeriodSeconds}",
        );
        let config = jsonpath(&ns, "configmap/minimal-patroni", "{.data.patroni\\.yaml}");
        (grace == "60" && config.contains("scope: minimal")).then_some(())
    });
}

#[test]
fn scaling_and_the_pooler_follow_the_spec() {
    let ns = namespace("scale");
    apply_minimal(&ns);
    patch_minimal(&ns, r#"{"spec":{"instances":3}}"#);
    eventually("3 replicas", Duration::from_secs(15), || {
        (jsonpath(&ns, "statefulset/minimal", "{.spec.replicas}") == "3").then_some(())
    });
    // The webhook re-derived what depends on instances.
    assert_eq!(
        jsonpath(
            &ns,
            "pgc/minimal",
            "{.spec.postgresql.parameters.max_wal_senders}"
        ),
        "10"
    );
    patch_minimal(&ns, r#"{"spec":{"instances":1}}"#);
    eventually("no PDB for one instance", Duration::from_secs(15), || {
        (!children(&ns, "minimal").contains("poddisruptionbudget.policy/minimal")).then_some(())
    });

    patch_minimal(&ns, r#"{"spec":{"pooler":{"enabled":true}}}"#);
    let pooler = [
        "deployment.apps/minimal-pooler",
        "service/minimal-pooler",
        "configmap/minimal-pooler",
        "secret/minimal-pooler",
    ];
    eventually("pooler objects", Duration::from_secs(20), || {
        let got = children(&ns, "minimal");
        pooler.iter().all(|p| got.contains(*p)).then_some(())
    });
    let jobs_before: Vec<String> = children(&ns, "minimal")
        .into_iter()
        .filter(|c| c.starts_with("job.batch/"))
        .collect();
    patch_minimal(&ns, r#"{"spec":{"pooler":{"enabled":false}}}"#);
    eventually("pooler objects gone", Duration::from_secs(20), || {
        let got = children(&ns, "minimal");
        pooler.iter().all(|p| !got.contains(*p)).then_some(())
    });
    // The role spec changed twice: only the newest roles Job is left.
    let jobs: Vec<String> = children(&ns, "minimal")
        .into_iter()
        .filter(|c| c.starts_with("job.batch/"))
        .collect();
    assert_eq!(jobs.len(), 1, "{jobs:?}");
    assert!(jobs_before.len() == 1 && jobs != jobs_before);
}

#[test]
fn deleting_the_cluster_collects_children_and_keeps_volumes() {
    let ns = namespace("gc");
    apply_minimal(&ns);
    // The StatefulSet controller makes the claims from the template.
    eventually("pgdata claims", Duration::from_secs(20), || {
        (!jsonpath(&ns, "pvc/pgdata-minimal-0", "{.metadata.name}").is_empty()).then_some(())
    });
    kubectl(&[
        "delete",
        "pgc",
        "-n",
        &ns,
        "minimal",
        "--wait=true",
        "--timeout=30s",
    ])
    .success();
    let mut left = Default::default();
    // The garbage collector picks up a new CRD at its next discovery (every 30 s), so a
    // fresh control plane may take that long to notice the owner is gone.
    let collected = (0..200).any(|_| {
        left = children(&ns, "minimal");
        std::thread::sleep(Duration::from_millis(400));
        left.is_empty()
    });
    assert!(collected, "children left after deletion: {left:#?}");
    assert_eq!(
        jsonpath(&ns, "pvc/pgdata-minimal-0", "{.metadata.name}"),
        "pgdata-minimal-0",
        "volumes are kept"
    );
}

#[test]
fn growing_storage_keeps_the_statefulset_and_grows_the_claims() {
    let ns = namespace("grow");
    apply_minimal(&ns);
    eventually("pgdata claims", Duration::from_secs(20), || {
        (!jsonpath(&ns, "pvc/pgdata-minimal-0", "{.metadata.name}").is_empty()).then_some(())
    });
    let image = "ghcr.io/pgpilot/postgres:18.2";
    patch_minimal(
        &ns,
        &format!(r#"{{"spec":{{"storage":{{"size":"20Gi"}},"image":"{image}"}}}}"#),
    );
    // The StatefulSet's claim template is immutable: it keeps 10Gi, other changes land.
    eventually("the new image", Duration::from_secs(20), || {
        (jsonpath(
            &ns,
            "statefulset/minimal",
            "{.spec.template.spec.containers[0].image}",
        ) == image)
            .then_some(())
    });
    assert_eq!(
        jsonpath(
            &ns,
            "statefulset/minimal",
            "{.spec.volumeClaimTemplates[0].spec.resources.requests.storage}"
        ),
        "10Gi"
    );
    // No provisioner binds claims here, and an unbound claim cannot grow: said on the status.
    eventually(
        "the refused growth reported",
        Duration::from_secs(20),
        || {
            let message = jsonpath(
                &ns,
                "pgc/minimal",
                "{.status.conditions[?(@.type==\"Reconciled\")].message}",
            );
            message
                .contains("PersistentVolumeClaim/pgdata-minimal-0 (growing to 20Gi)")
                .then_some(())
        },
    );
    // Every other child still follows the spec.
    let got = children(&ns, "minimal");
    assert!(
        MINIMAL_CHILDREN.iter().all(|c| got.contains(*c)),
        "{got:#?}"
    );
}

/// pgpilot never takes over what it did not create: a Service already named like a child
/// stops the reconcile with `Reconciled=False` reason `Conflict`, untouched; a login Secret
/// the user made beforehand supplies its password and stays exactly as written.
#[test]
fn a_same_named_object_is_a_conflict_and_a_user_secret_is_kept() {
    let ns = namespace("conflict");
    kubectl_stdin(
        &["apply", "-n", &ns, "-f", "-"],
        "apiVersion: v1
kind: Service
metadata:
  name: taken-replicas
  labels:
    team: someone-else
spec:
  selector:
    app: theirs
  ports:
  - port: 8080
---
apiVersion: v1
kind: Secret
metadata:
  name: taken-user-app
stringData:
  password: chosen-by-the-user
",
    )
    .success();
    let before = |kind: &str| {
        jsonpath(
            &ns,
            kind,
            "{.metadata.resourceVersion} {.metadata.ownerReferences} {.data}",
        )
    };
    let (service, secret) = (
        before("service/taken-replicas"),
        before("secret/taken-user-app"),
    );
    kubectl_stdin(
        &["apply", "-n", &ns, "-f", "-"],
        "apiVersion: pgpilot.io/v1
kind: PostgresCluster
metadata:
  name: taken
spec:
  storage:
    size: 1Gi
  users:
  - name: app
",
    )
    .success();
    let reason = "{.status.conditions[?(@.type==\"Reconciled\")].reason}";
    let message = "{.status.conditions[?(@.type==\"Reconciled\")].message}";
    eventually(
        "Reconciled=False, Conflict",
        Duration::from_secs(60),
        || (jsonpath(&ns, "pgc/taken", reason) == "Conflict").then_some(()),
    );
    assert!(
        jsonpath(&ns, "pgc/taken", message).contains("Service/taken-replicas"),
        "{}",
        jsonpath(&ns, "pgc/taken", message)
    );
    assert_eq!(
        before("service/taken-replicas"),
        service,
        "the Service was changed"
    );
    assert_eq!(
        before("secret/taken-user-app"),
        secret,
        "the Secret was changed"
    );

    // Their Service gone, the cluster reconciles; the user's Secret is still theirs.
    kubectl(&["delete", "service", "-n", &ns, "taken-replicas"]).success();
    eventually("Reconciled=True", Duration::from_secs(60), || {
        (jsonpath(&ns, "pgc/taken", reason) == "Applied"
            || jsonpath(
                &ns,
                "pgc/taken",
                "{.status.conditions[?(@.type==\"Reconciled\")].status}",
            ) == "True")
            .then_some(())
    });
    assert!(!jsonpath(&ns, "service/taken-replicas", "{.metadata.ownerReferences}").is_empty());
    assert_eq!(
        before("secret/taken-user-app"),
        secret,
        "the Secret was changed"
    );
}
