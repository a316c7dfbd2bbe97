//! The offline CLI as a user runs it: exit codes 0 / 1 / 2 and what goes to each stream.

#[path = "structural/mod.rs"]
mod structural;

use std::io::Write;
use std::process::{Command, Output, Stdio};

fn pgpilot(args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_pgpilot"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    let data = stdin.unwrap_or_default().to_vec();
    let writer = std::thread::spawn(move || {
        // The CLI may stop reading early (oversized input); a broken pipe is expected then.
        let _ = input.write_all(&data);
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    out
}

fn resolve_stdin(yaml: &str) -> Output {
    pgpilot(&["resolve", "-f", "-"], Some(yaml.as_bytes()))
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

const HEADER: &str = "apiVersion: pgpilot.io/v1\nkind: PostgresCluster\n";

#[test]
fn each_sample_resolves() {
    for sample in ["minimal", "ha-backup-pooler"] {
        let out = pgpilot(
            &["resolve", "-f", &format!("manifests/samples/{sample}.yaml")],
            None,
        );
        assert_eq!(
            out.status.code(),
            Some(0),
            "{sample}: {}",
            text(&out.stderr)
        );
        let resolved: serde_yaml::Value = serde_yaml::from_str(&text(&out.stdout)).unwrap();
        assert!(
            resolved["spec"]["patroni"]["ttl"].as_i64().is_some(),
            "{sample} was not resolved"
        );
    }
}

#[test]
fn several_documents_from_stdin_and_warnings_on_stderr() {
    let doc = |name: &str| {
        format!(
            "{HEADER}metadata: {{name: {name}}}\nspec: {{instances: 1, storage: {{size: 1Gi}}}}\n"
        )
    };
    let out = resolve_stdin(&format!("{}---\n{}", doc("a"), doc("b")));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert_eq!(stdout.matches("kind: PostgresCluster").count(), 2);
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("Warning: a: spec.instances: a single instance has no failover"),
        "{stderr}"
    );
    assert!(stderr.contains("Warning: b: spec.tls: no TLS"), "{stderr}");
}

#[test]
fn invalid_specs_exit_1_with_every_error_and_no_output() {
    let good = format!("{HEADER}metadata: {{name: good}}\nspec: {{storage: {{size: 1Gi}}}}\n");
    let bad = format!(
        "{HEADER}metadata: {{name: bad}}\nspec:\n  instances: 0\n  storage: {{size: 1Mi}}\n  postgresql: {{parameters: {{port: 5433}}}}\n"
    );
    let out = resolve_stdin(&format!("{good}---\n{bad}"));
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stdout),
        "",
        "nothing is printed when any document is invalid"
    );
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("error: PostgresCluster \"bad\" (document 2) is invalid:"),
        "{stderr}"
    );
    for expected in [
        "  spec.instances: Invalid value: 0: must be between 1 and 16",
        "  spec.storage.size: Invalid value: \"1Mi\": must be at least 1Gi",
        "  spec.postgresql.parameters[port]: Forbidden: managed by the operator",
    ] {
        assert!(
            stderr.contains(expected),
            "{expected:?} missing from {stderr}"
        );
    }
}

#[test]
fn malformed_input_exits_2_with_one_line() {
    let cases: Vec<(String, &str)> = vec![
        ("a: [unclosed".into(), "document 1: not valid YAML"),
        (
            "apiVersion: apps/v1\nkind: Deployment\n".into(),
            "expected apiVersion pgpilot.io/v1 and kind PostgresCluster",
        ),
        ("- 1\n- 2\n".into(), "expected an object, found a list"),
        ("spec: {}\n".into(), "expected apiVersion pgpilot.io/v1"),
    ];
    for (input, expected) in cases {
        let out = resolve_stdin(&input);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{input:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(
            stderr.contains(expected),
            "{expected:?} missing from {stderr:?}"
        );
        assert_eq!(text(&out.stdout), "");
    }
}

#[test]
fn hostile_input_exits_2() {
    let out = resolve_stdin(&"a".repeat(9 << 20));
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("larger than"),
        "{}",
        text(&out.stderr)
    );
    let out = pgpilot(&["resolve", "-f", "-"], Some(&[0xff, 0xfe, 0x00]));
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("not UTF-8"));
    let out = pgpilot(&["resolve", "-f", "/nonexistent/cluster.yaml"], None);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("/nonexistent/cluster.yaml"));
    // Deep nesting must not overflow the stack.
    let deep = format!(
        "{HEADER}spec: {{storage: {{size: 1Gi}}, image: {}{}}}\n",
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    let out = resolve_stdin(&deep);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
}

#[test]
fn configuration_file_changes_defaults() {
    let dir = std::env::temp_dir().join(format!("pgpilot-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("config.yaml");
    std::fs::write(&config, "postgres:\n  instances: 3\n").unwrap();
    let out = pgpilot(
        &[
            "resolve",
            "-f",
            "manifests/samples/minimal.yaml",
            "--config",
            config.to_str().unwrap(),
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("instances: 3"));
    std::fs::write(&config, "postgres:\n  instancez: 3\n").unwrap();
    let out = pgpilot(
        &[
            "resolve",
            "-f",
            "manifests/samples/minimal.yaml",
            "--config",
            config.to_str().unwrap(),
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("unknown field `instancez`"),
        "{}",
        text(&out.stderr)
    );
    // The policy: the catalog passes, an image the spec names outside it does not.
    std::fs::write(
        &config,
        "policy:\n  allowedImages: [ghcr.io/pgpilot/, quay.io/prometheuscommunity/postgres-exporter]\n",
    )
    .unwrap();
    let resolve = |yaml: &str| {
        pgpilot(
            &["resolve", "-f", "-", "--config", config.to_str().unwrap()],
            Some(yaml.as_bytes()),
        )
    };
    let minimal = std::fs::read_to_string("manifests/samples/minimal.yaml").unwrap();
    let out = resolve(&minimal);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let elsewhere = minimal.replace(
        "spec:\n",
        "spec:\n  image: docker.io/someone/postgres:18.1\n",
    );
    assert_ne!(elsewhere, minimal);
    let out = resolve(&elsewhere);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("spec.image: Forbidden: \"docker.io/someone/postgres:18.1\" is not allowed by the operator's policy"),
        "{}",
        text(&out.stderr)
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn crd_prints_the_checked_in_definition() {
    let out = pgpilot(&["crd"], None);
    assert_eq!(out.status.code(), Some(0));
    let on_disk =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/manifests/crd.yaml"))
            .unwrap();
    assert_eq!(text(&out.stdout), on_disk);
}

#[test]
fn render_prints_every_child() {
    let out = pgpilot(
        &[
            "render",
            "-f",
            "manifests/samples/ha-backup-pooler.yaml",
            "-n",
            "shop",
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let docs: Vec<serde_yaml::Value> = serde_yaml::Deserializer::from_str(&stdout)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .collect();
    let kinds: Vec<&str> = docs.iter().map(|d| d["kind"].as_str().unwrap()).collect();
    // Apply order: RBAC, then configuration, then Services, workloads, budgets, CronJobs.
    let first = |k: &str| kinds.iter().position(|x| *x == k).unwrap();
    assert!(
        first("Role") < first("ConfigMap")
            && first("ConfigMap") < first("Secret")
            && first("Secret") < first("Service")
    );
    assert!(
        first("Service") < first("StatefulSet")
            && first("StatefulSet") < first("PodDisruptionBudget")
    );
    assert!(
        first("PodDisruptionBudget") < first("CronJob") && first("CronJob") < first("Deployment")
    );
    assert!(docs.iter().all(|d| d["metadata"]["namespace"] == "shop"));
    assert!(stdout.contains("password: GENERATED-ONCE"));
    let out = pgpilot(
        &["render", "-f", "-"],
        Some(
            format!(
                "{HEADER}metadata: {{name: x}}\nspec: {{instances: 0, storage: {{size: 1Gi}}}}\n"
            )
            .as_bytes(),
        ),
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("spec.instances: Invalid value: 0"));
}

/// Structural mistakes are field errors like any other: exit 1, every error listed, in
/// order, with those of the rest of the spec.
#[test]
fn structural_mistakes_exit_1_with_every_error() {
    for case in structural::cases() {
        let out = resolve_stdin(&case.yaml);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{}: {stderr}", case.name);
        let listed: Vec<&str> = stderr
            .lines()
            .filter_map(|l| l.strip_prefix("  "))
            .collect();
        assert_eq!(listed, case.errors, "{}: {stderr}", case.name);
        assert_eq!(text(&out.stdout), "");
    }
    // A value the schema allows but the type does not: an integer beyond int32, and a
    // parameter that is a list.
    let out = resolve_stdin(&format!(
        "{HEADER}spec: {{instances: 99999999999, storage: {{size: 1Gi}}, postgresql: {{parameters: {{work_mem: [1]}}}}}}\n"
    ));
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    for expected in [
        "  spec.instances: Invalid value: 99999999999: invalid value: integer `99999999999`, expected i32",
        "  spec.postgresql.parameters.work_mem: Invalid value: [1]:",
    ] {
        assert!(stderr.contains(expected), "{expected:?} in {stderr}");
    }
}
