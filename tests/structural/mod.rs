//! Specs with several structural mistakes at once (values outside an enum, missing required
//! fields, wrong types, undeclared fields) next to ordinary invalid values, and every error
//! each must produce, in order: shared by the CLI, webhook and end-to-end suites, so the
//! three report the same list.

#![allow(dead_code)] // each suite uses its own part

pub struct Case {
    pub name: &'static str,
    /// The whole object, as a user writes it.
    pub yaml: String,
    /// Every error, `path: message`, in the order reported.
    pub errors: &'static [&'static str],
}

fn object(name: &str, spec: &str) -> String {
    format!(
        "apiVersion: pgpilot.io/v1\nkind: PostgresCluster\nmetadata:\n  name: {name}\nspec:\n{spec}"
    )
}

pub fn cases() -> Vec<Case> {
    vec![
        Case {
            name: "enums",
            yaml: object(
                "enums",
                "  instances: -2
  storage:
    size: 1Gi
  pooler:
    mode: batch
  scheduling:
    antiAffinity: sometimes
  patroni:
    synchronousMode: quorum
  service:
    type: Internal
",
            ),
            errors: &[
                r#"spec.patroni.synchronousMode: Unsupported value: "quorum": supported values: "async", "sync", "strict""#,
                r#"spec.pooler.mode: Unsupported value: "batch": supported values: "session", "transaction", "statement""#,
                r#"spec.scheduling.antiAffinity: Unsupported value: "sometimes": supported values: "preferred", "required", "none""#,
                r#"spec.service.type: Unsupported value: "Internal": supported values: "ClusterIP", "NodePort", "LoadBalancer""#,
                "spec.instances: Invalid value: -2: must be between 1 and 16",
            ],
        },
        Case {
            name: "required",
            yaml: object(
                "required",
                "  postgresVersion: 99
  storage: {}
  users:
  - databases: [app]
  databases:
  - owner: app
  backup:
    pgbackrest:
      repos:
      - name: repo1
        s3:
          endpoint: s3.example.com
          region: eu-west-1
  tls:
    issuerRef:
      kind: ClusterIssuer
",
            ),
            errors: &[
                "spec.backup.pgbackrest.repos[0].s3.bucket: Required value",
                "spec.databases[0].name: Required value",
                "spec.storage.size: Required value",
                "spec.tls.issuerRef.name: Required value",
                "spec.users[0].name: Required value",
                r#"spec.postgresVersion: Unsupported value: "99": supported values: "14", "15", "16", "17", "18""#,
                r#"spec.users[0].databases[0]: Not found: "app""#,
                r#"spec.databases[0].owner: Not found: "app""#,
            ],
        },
        Case {
            name: "types",
            yaml: object(
                "types",
                "  instances: three
  instnces: 3
  storage:
    size: [1]
  paused: 3
  users: app
  postgresVersion: 12
",
            ),
            errors: &[
                r#"spec.instances: Invalid value: "string": spec.instances in body must be of type integer: "string""#,
                "spec.instnces: Forbidden: field not declared in schema",
                r#"spec.paused: Invalid value: "integer": spec.paused in body must be of type boolean: "integer""#,
                r#"spec.storage.size: Invalid value: "array": spec.storage.size in body must be of type integer or string: "array""#,
                r#"spec.users: Invalid value: "string": spec.users in body must be of type array: "string""#,
                r#"spec.postgresVersion: Unsupported value: "12": supported values: "14", "15", "16", "17", "18""#,
            ],
        },
        Case {
            name: "required-backup",
            yaml: object(
                "required-backup",
                "  storage:
    size: 1Gi
  backup:
    pgbackrest:
      repos:
      - gcs: {}
      - name: repo2
        azure: {}
      - name: repo3
        s3: {}
",
            ),
            errors: &[
                r#"spec.backup.pgbackrest.repos[0].gcs.bucket: Required value"#,
                r#"spec.backup.pgbackrest.repos[0].name: Required value"#,
                r#"spec.backup.pgbackrest.repos[1].azure.account: Required value"#,
                r#"spec.backup.pgbackrest.repos[1].azure.container: Required value"#,
                r#"spec.backup.pgbackrest.repos[1].azure.credentialsSecret: Required value"#,
                r#"spec.backup.pgbackrest.repos[2].s3.bucket: Required value"#,
                r#"spec.backup.pgbackrest.repos[2].s3.endpoint: Required value"#,
                r#"spec.backup.pgbackrest.repos[2].s3.region: Required value"#,
            ],
        },
        Case {
            name: "required-scheduling",
            yaml: object(
                "required-scheduling",
                "  storage:
    size: 1Gi
  resources:
    claims:
    - {}
  pooler:
    enabled: true
    resources:
      claims:
      - {}
  monitoring:
    exporter:
      resources:
        claims:
        - {}
  scheduling:
    topologySpreadConstraints:
    - labelSelector:
        matchExpressions:
        - {}
",
            ),
            errors: &[
                r#"spec.monitoring.exporter.resources.claims[0].name: Required value"#,
                r#"spec.pooler.resources.claims[0].name: Required value"#,
                r#"spec.resources.claims[0].name: Required value"#,
                r#"spec.scheduling.topologySpreadConstraints[0].labelSelector.matchExpressions[0].key: Required value"#,
                r#"spec.scheduling.topologySpreadConstraints[0].labelSelector.matchExpressions[0].operator: Required value"#,
                r#"spec.scheduling.topologySpreadConstraints[0].maxSkew: Required value"#,
                r#"spec.scheduling.topologySpreadConstraints[0].topologyKey: Required value"#,
                r#"spec.scheduling.topologySpreadConstraints[0].whenUnsatisfiable: Required value"#,
            ],
        },
        Case {
            name: "types-more",
            yaml: object(
                "types-more",
                "  image: 5
  storage:
    size: 1Gi
  pooler: 3
  service:
    annotations:
      a: 1
  postgresql:
    pgHba: host all all 0.0.0.0/0 md5
  patroni:
    ttl: 30.5
",
            ),
            errors: &[
                r#"spec.image: Invalid value: "integer": spec.image in body must be of type string: "integer""#,
                r#"spec.patroni.ttl: Invalid value: "number": spec.patroni.ttl in body must be of type integer: "number""#,
                r#"spec.pooler: Invalid value: "integer": spec.pooler in body must be of type object: "integer""#,
                r#"spec.postgresql.pgHba: Invalid value: "string": spec.postgresql.pgHba in body must be of type array: "string""#,
                r#"spec.service.annotations[a]: Invalid value: "integer": spec.service.annotations[a] in body must be of type string: "integer""#,
            ],
        },
    ]
}
