//! Golden snapshots of every child for both samples, and the rules rendering follows.

use std::collections::{BTreeMap, BTreeSet};

use super::*;
use crate::config::Config;
use crate::manifest;
use crate::resolve::resolve;

fn sample(name: &str) -> PostgresCluster {
    let path = format!(
        "{}/manifests/samples/{name}.yaml",
        env!("CARGO_MANIFEST_DIR")
    );
    let mut c = manifest::from_yaml_stream(&std::fs::read_to_string(path).unwrap())
        .unwrap()
        .remove(0);
    c.spec = resolve(&c.spec, None, &Config::default());
    c.metadata.namespace = Some("db".into());
    c.metadata.uid = Some("0f0e0d0c-0000-4000-8000-000000000001".into());
    c
}

fn objects(c: &PostgresCluster) -> Vec<serde_json::Value> {
    render(c).unwrap().objects().unwrap()
}

fn named(objs: &[serde_json::Value]) -> BTreeSet<String> {
    objs.iter()
        .map(|o| {
            format!(
                "{}/{}",
                o["kind"].as_str().unwrap(),
                o["metadata"]["name"].as_str().unwrap()
            )
        })
        .collect()
}

#[test]
fn minimal_children() {
    let objs = objects(&sample("minimal"));
    insta::assert_yaml_snapshot!("render-minimal", objs);
    let expected: BTreeSet<String> = [
        "ServiceAccount/minimal-patroni",
        "Role/minimal-patroni",
        "RoleBinding/minimal-patroni",
        "ConfigMap/minimal-patroni",
        "Secret/minimal-superuser",
        "Secret/minimal-replication",
        "Secret/minimal-patroni-api",
        "Secret/minimal-exporter",
        "Service/minimal-primary",
        "Service/minimal-replicas",
        "Service/minimal-pods",
        "NetworkPolicy/minimal",
        "StatefulSet/minimal",
        "PodDisruptionBudget/minimal",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    let got = named(&objs);
    let roles_job: Vec<&String> = got
        .iter()
        .filter(|n| n.starts_with("Job/minimal-roles-"))
        .collect();
    assert_eq!(roles_job.len(), 1);
    assert_eq!(
        got.iter()
            .filter(|n| !n.starts_with("Job/"))
            .cloned()
            .collect::<BTreeSet<_>>(),
        expected
    );
}

#[test]
fn full_sample_children() {
    let objs = objects(&sample("ha-backup-pooler"));
    insta::assert_yaml_snapshot!("render-ha-backup-pooler", objs);
    let got = named(&objs);
    for n in [
        "ConfigMap/orders-pgbackrest",
        "Secret/orders-pgbackrest-tls",
        "Secret/orders-user-orders-app",
        "Secret/orders-user-orders-readonly",
        "Secret/orders-pooler",
        "ConfigMap/orders-pooler",
        "Service/orders-pooler",
        "Deployment/orders-pooler",
        "StatefulSet/orders-repo-host",
        "Service/orders-repo-host",
        "CronJob/orders-backup-repo1-full",
        "CronJob/orders-backup-repo1-diff",
        "CronJob/orders-backup-repo1-incr",
        "CronJob/orders-backup-repo2-full",
        "Certificate/orders-tls",
        "NetworkPolicy/orders",
        "NetworkPolicy/orders-repo-host",
    ] {
        assert!(got.contains(n), "{n} missing from {got:#?}");
    }
    assert!(
        !got.contains("CronJob/orders-backup-repo2-diff"),
        "repo2 has no differential schedule"
    );
}

#[test]
fn network_policies_close_the_ports_only_pgpilot_uses() {
    let c = sample("ha-backup-pooler");
    let r = render(&c).unwrap();
    let policy = |name: &str| {
        let p = r
            .network_policies
            .iter()
            .find(|p| p.metadata.name.as_deref() == Some(name))
            .unwrap_or_else(|| panic!("NetworkPolicy {name}"));
        serde_json::to_value(p.spec.as_ref().unwrap()).unwrap()
    };
    let ports = |rule: &serde_json::Value| -> Vec<i64> {
        rule["ports"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["port"].as_i64().unwrap())
            .collect()
    };
    let db = policy("orders");
    assert_eq!(
        db["podSelector"]["matchLabels"]["app.kubernetes.io/component"],
        "database"
    );
    assert_eq!(db["policyTypes"], serde_json::json!(["Ingress"]));
    let rules = db["ingress"].as_array().unwrap();
    // PostgreSQL and the exporter: from anywhere (no `from`).
    assert_eq!(ports(&rules[0]), [5432, 9187]);
    assert!(rules[0].get("from").is_none());
    // Patroni's API: the instances and the operator's pods in its namespace only.
    assert_eq!(ports(&rules[1]), [8008]);
    let from = rules[1]["from"].as_array().unwrap();
    assert_eq!(from.len(), 2);
    assert_eq!(
        from[1]["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"],
        "pgpilot-system"
    );
    assert_eq!(
        from[1]["podSelector"]["matchLabels"]["app.kubernetes.io/name"],
        "pgpilot"
    );
    // pgBackRest: the cluster's own pods.
    assert_eq!(ports(&rules[2]), [8432]);
    assert_eq!(
        rules[2]["from"][0]["podSelector"]["matchLabels"]["pgpilot.io/cluster"],
        "orders"
    );
    let repo = policy("orders-repo-host");
    assert_eq!(ports(&repo["ingress"][0]), [8432]);
    assert_eq!(repo["ingress"][0]["from"].as_array().unwrap().len(), 2);

    let mut off = c.clone();
    off.spec.network_policy.as_mut().unwrap().enabled = Some(false);
    assert!(render(&off).unwrap().network_policies.is_empty());
}

#[test]
fn every_child_is_labelled_and_owned() {
    for name in ["minimal", "ha-backup-pooler"] {
        let c = sample(name);
        let cluster = c.metadata.name.clone().unwrap();
        for o in objects(&c) {
            let labels = &o["metadata"]["labels"];
            assert_eq!(labels["pgpilot.io/cluster"], cluster.as_str(), "{o}");
            assert_eq!(labels["app.kubernetes.io/managed-by"], "pgpilot");
            assert_eq!(labels["app.kubernetes.io/name"], "postgres");
            assert_eq!(labels["app.kubernetes.io/instance"], cluster.as_str());
            assert!(labels["app.kubernetes.io/component"].is_string());
            let owner = &o["metadata"]["ownerReferences"][0];
            assert_eq!(owner["kind"], "PostgresCluster");
            assert_eq!(owner["controller"], true);
            assert_eq!(o["metadata"]["namespace"], "db");
        }
    }
}

#[test]
fn rendering_is_deterministic() {
    let c = sample("ha-backup-pooler");
    assert_eq!(objects(&c), objects(&c));
}

#[test]
fn unresolved_specs_are_refused_not_defaulted() {
    let mut c = sample("minimal");
    c.spec.patroni = None;
    assert_eq!(
        render(&c).unwrap_err(),
        RenderError::NotResolved("spec.patroni")
    );
    let mut c = sample("minimal");
    c.spec.image = None;
    assert_eq!(
        render(&c).unwrap_err(),
        RenderError::NotResolved("spec.image")
    );
    let mut c = sample("minimal");
    c.metadata.namespace = None;
    assert_eq!(
        render(&c).unwrap_err(),
        RenderError::MissingMetadata("namespace")
    );
}

#[test]
fn patroni_config_follows_the_spec() {
    let c = sample("ha-backup-pooler");
    let r = render(&c).unwrap();
    let text = r
        .config_maps
        .iter()
        .find(|m| m.metadata.name.as_deref() == Some("orders-patroni"))
        .unwrap()
        .data
        .as_ref()
        .unwrap()["patroni.yaml"]
        .clone();
    let cfg: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
    let k = &cfg["kubernetes"];
    assert_eq!(k["role_label"], "pgpilot.io/role");
    assert_eq!(k["leader_label_value"], "primary");
    assert_eq!(k["follower_label_value"], "replica");
    assert_eq!(k["use_endpoints"], true);
    let dcs = &cfg["bootstrap"]["dcs"];
    assert_eq!(dcs["ttl"], 30);
    assert_eq!(dcs["synchronous_mode"], true);
    assert_eq!(dcs["synchronous_mode_strict"], false);
    assert_eq!(dcs["postgresql"]["parameters"]["shared_buffers"], "2048MB");
    assert_eq!(
        dcs["postgresql"]["parameters"]["archive_command"],
        "sh /etc/pgbackrest/archive-push.sh \"%p\" %f"
    );
    assert_eq!(cfg["postgresql"]["create_replica_methods"][0], "pgbackrest");
    assert_eq!(cfg["postgresql"]["parameters"]["ssl"], "on");
    assert_eq!(cfg["postgresql"]["data_dir"], "/pgdata/pg17");
}

#[test]
fn statefulset_is_restricted_and_keeps_volumes() {
    let r = render(&sample("minimal")).unwrap();
    let sts = serde_json::to_value(&r.stateful_sets[0]).unwrap();
    let spec = &sts["spec"];
    assert_eq!(
        spec["persistentVolumeClaimRetentionPolicy"],
        serde_json::json!({"whenDeleted": "Retain", "whenScaled": "Retain"})
    );
    assert_eq!(
        spec["volumeClaimTemplates"][0]["metadata"]["name"],
        "pgdata"
    );
    let pod = &spec["template"]["spec"];
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(
        pod["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );
    for c in pod["containers"].as_array().unwrap() {
        assert_eq!(
            c["securityContext"]["capabilities"]["drop"][0], "ALL",
            "{}",
            c["name"]
        );
        assert_eq!(c["securityContext"]["allowPrivilegeEscalation"], false);
    }
    let pg = &pod["containers"][0];
    assert_eq!(
        pg["command"],
        serde_json::json!(["patroni", "/etc/patroni/patroni.yaml"])
    );
    assert_eq!(pg["readinessProbe"]["httpGet"]["path"], "/readiness");
    assert_eq!(pg["readinessProbe"]["httpGet"]["port"], 8008);
    assert_eq!(pg["livenessProbe"]["httpGet"]["path"], "/liveness");
    assert_eq!(
        pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"][0]["podAffinityTerm"]
            ["topologyKey"],
        "kubernetes.io/hostname"
    );
    assert!(
        spec["volumeClaimTemplates"][0]["spec"]
            .get("storageClassName")
            .is_none(),
        "null class means the cluster default"
    );
}

#[test]
fn one_instance_has_no_disruption_budget() {
    let mut c = sample("minimal");
    c.spec.instances = Some(1);
    assert!(render(&c).unwrap().pod_disruption_budgets.is_empty());
}

#[test]
fn roles_job_hash_follows_the_job_template_only() {
    let a = sample("ha-backup-pooler");
    let job = |c: &PostgresCluster| render(c).unwrap().jobs[0].metadata.name.clone().unwrap();
    let mut b = a.clone();
    b.spec.instances = Some(5);
    assert_eq!(job(&a), job(&b));
    b.spec.users.as_mut().unwrap()[0].options = Some(vec!["LOGIN".into(), "CREATEDB".into()]);
    assert_ne!(job(&a), job(&b));
    // A Job's template is immutable: a new image needs a new Job.
    let mut c = a.clone();
    c.spec.image = Some("example.com/pg:17.9".into());
    assert_ne!(job(&a), job(&c));
    assert_eq!(job(&a).len(), "orders-roles-".len() + names::ROLES_HASH_LEN);
}

#[test]
fn patroni_serves_https_under_a_name_its_certificate_carries_when_tls_is_on() {
    let c = sample("ha-backup-pooler");
    let r = render(&c).unwrap();
    let pod = &r.stateful_sets[0].spec.as_ref().unwrap().template;
    let pg = &pod.spec.as_ref().unwrap().containers[0];
    for probe in [&pg.readiness_probe, &pg.liveness_probe] {
        let get = probe.as_ref().unwrap().http_get.as_ref().unwrap();
        assert_eq!(get.scheme.as_deref(), Some("HTTPS"));
    }
    let address = pg
        .env
        .iter()
        .flatten()
        .find(|e| e.name == "PATRONI_RESTAPI_CONNECT_ADDRESS")
        .and_then(|e| e.value.clone())
        .unwrap();
    assert_eq!(address, "$(PATRONI_NAME).orders-pods.db.svc:8008");
    // The address, with the pod's name in place, is covered by the certificate's wildcard.
    let dns = &r.certificates[0].data["spec"]["dnsNames"];
    assert!(
        dns.as_array()
            .unwrap()
            .iter()
            .any(|n| n == "*.orders-pods.db.svc"),
        "{dns}"
    );
    let config: serde_json::Value = serde_yaml::from_str(
        &r.config_maps
            .iter()
            .find_map(|m| m.data.as_ref()?.get("patroni.yaml").cloned())
            .unwrap(),
    )
    .unwrap();
    assert_eq!(config["restapi"]["certfile"], "/etc/pgpilot/tls/tls.crt");
    assert_eq!(config["restapi"]["keyfile"], "/etc/pgpilot/tls/tls.key");
    assert_eq!(config["restapi"]["cafile"], "/etc/pgpilot/tls/ca.crt");

    let mut plain = c.clone();
    plain.spec.tls = None;
    let r = render(&plain).unwrap();
    let pod = &r.stateful_sets[0].spec.as_ref().unwrap().template;
    let pg = &pod.spec.as_ref().unwrap().containers[0];
    let get = pg
        .readiness_probe
        .as_ref()
        .unwrap()
        .http_get
        .as_ref()
        .unwrap();
    assert_eq!(get.scheme.as_deref(), Some("HTTP"));
}

#[test]
fn roles_job_checks_the_primarys_certificate_when_tls_is_on() {
    let c = sample("ha-backup-pooler");
    assert!(c.spec.tls_enabled());
    let r = render(&c).unwrap();
    let pod = r.jobs[0]
        .spec
        .as_ref()
        .unwrap()
        .template
        .spec
        .clone()
        .unwrap();
    let container = &pod.containers[0];
    let env: BTreeMap<String, String> = container
        .env
        .iter()
        .flatten()
        .filter_map(|e| Some((e.name.clone(), e.value.clone()?)))
        .collect();
    assert_eq!(env["PGSSLMODE"], "verify-full");
    assert_eq!(env["PGSSLROOTCERT"], "/etc/pgpilot/tls/ca.crt");
    assert_eq!(env["PGHOST"], "orders-primary.db.svc");
    let volume = pod
        .volumes
        .iter()
        .flatten()
        .find(|v| v.name == "server-ca")
        .unwrap();
    let secret = volume.secret.as_ref().unwrap();
    assert_eq!(secret.secret_name.as_deref(), Some("orders-tls"));
    // Only the CA: the Job never holds the server's key.
    assert_eq!(secret.items.as_ref().unwrap().len(), 1);
    assert_eq!(secret.items.as_ref().unwrap()[0].key, "ca.crt");
    assert!(
        container
            .volume_mounts
            .iter()
            .flatten()
            .any(|m| m.name == "server-ca" && m.mount_path == "/etc/pgpilot/tls")
    );

    let mut plain = c.clone();
    plain.spec.tls = None;
    let (env, _) = roles_job(&plain);
    let mode = env.iter().find(|e| e.name == "PGSSLMODE").unwrap();
    assert_eq!(mode.value.as_deref(), Some("disable"));
    assert!(!env.iter().any(|e| e.name == "PGSSLROOTCERT"));
}

/// The roles Job's environment, and its SQL as the Job spec carries it.
fn roles_job(c: &PostgresCluster) -> (Vec<k8s_openapi::api::core::v1::EnvVar>, String) {
    let r = render(c).unwrap();
    let env = r.jobs[0]
        .spec
        .as_ref()
        .unwrap()
        .template
        .spec
        .as_ref()
        .unwrap()
        .containers[0]
        .env
        .clone()
        .unwrap_or_default();
    let sql = env
        .iter()
        .find(|e| e.name == "PGPILOT_SQL")
        .and_then(|e| e.value.clone())
        .unwrap();
    (env, sql)
}

#[test]
fn roles_script_is_idempotent_sql_without_passwords() {
    let (env, sql) = roles_job(&sample("ha-backup-pooler"));
    assert!(
        sql.contains(
            "WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'orders_app') \\gexec"
        )
    );
    assert!(
        sql.contains(
            "ALTER ROLE \"orders_readonly\" WITH LOGIN CONNECTION LIMIT 20 PASSWORD :'pw';"
        )
    );
    assert!(sql.contains("CREATE DATABASE %I OWNER %I', 'orders', 'orders_app'"));
    assert!(sql.contains("GRANT ALL ON DATABASE \"orders\" TO \"orders_app\";"));
    assert!(sql.contains("GRANT pg_monitor TO \"pgpilot_monitor\";"));
    assert!(sql.contains("pgpilot.pooler_auth"));
    assert!(sql.contains("SET log_statement = 'none';"));
    assert!(sql.contains("SET pg_stat_statements.track_utility = off;"));
    assert!(sql.contains("ALTER ROLE %I NOLOGIN"));
    // A SCRAM verifier computed in the Job goes to the server, never the password; one
    // that could not be computed stops the Job before the ALTER ROLE.
    assert!(
        sql.replace("$$", "$").contains(
            "\\set pw `python3 -c \"$PGPILOT_SCRAM\" PGPILOT_USER_1_PASSWORD :'stored_verifier'`"
        ),
        "{sql}"
    );
    assert!(!sql.contains("printenv"), "{sql}");
    let check = sql.find("\\if :verifier").unwrap();
    let alter = sql.find("ALTER ROLE \"orders_readonly\"").unwrap();
    assert!(check < alter);
    let scram = env.iter().find(|e| e.name == "PGPILOT_SCRAM").unwrap();
    assert_eq!(
        scram.value.as_deref().unwrap().replace("$$", "$"),
        include_str!("scripts/scram.py"),
        "the program arrives intact through the kubelet's expansion"
    );
    // Passwords come from Secrets through the environment, never the script.
    for e in &env {
        if e.name.ends_with("PASSWORD") {
            let from_secret = e
                .value_from
                .as_ref()
                .and_then(|v| v.secret_key_ref.as_ref());
            assert!(from_secret.is_some(), "{e:?}");
        }
    }
}

/// Defence in depth behind validation: a stored spec that bypassed admission (names with
/// quotes, options carrying SQL) still yields SQL with every identifier quoted and only
/// the known option keywords.
#[test]
fn roles_script_quotes_identifiers_and_sends_only_known_options() {
    let mut c = sample("ha-backup-pooler");
    let users = c.spec.users.as_mut().unwrap();
    users[0].name = "app\"; DROP ROLE x; --".into();
    users[0].options = Some(vec![
        "login".into(),
        "LOGIN; ALTER ROLE postgres NOLOGIN".into(),
        "connection   limit +7".into(),
    ]);
    users[0].databases = Some(vec!["d\"b".into()]);
    let (_, sql) = roles_job(&c);
    assert!(
        sql.contains(
            "ALTER ROLE \"app\"\"; DROP ROLE x; --\" WITH LOGIN CONNECTION LIMIT 7 PASSWORD :'pw';"
        ),
        "{sql}"
    );
    assert!(sql.contains("GRANT ALL ON DATABASE \"d\"\"b\" TO \"app\"\"; DROP ROLE x; --\";"));
    assert!(!sql.contains("ALTER ROLE postgres NOLOGIN"), "{sql}");
}

/// Found by the data-plane suite: the kubelet turns `$$` in an env value into `$`, which
/// broke the dollar-quoted body of `pgpilot.pooler_auth` ("syntax error at or near $").
#[test]
fn roles_script_survives_the_kubelets_env_expansion() {
    let (_, value) = roles_job(&sample("ha-backup-pooler"));
    // What the container sees: every `$$` reduced to `$` (no `$(VAR)` in the script).
    let seen = value.replace("$$", "$");
    assert!(
        seen.contains("AS\n$$ SELECT usename, passwd FROM pg_shadow"),
        "{seen}"
    );
    assert!(seen.contains("NOT userepl $$;"), "{seen}");
    assert!(!seen.contains("$("), "no accidental $(VAR) reference");
}

#[test]
fn pooler_disabled_renders_no_pooler() {
    let mut c = sample("ha-backup-pooler");
    c.spec.pooler.as_mut().unwrap().enabled = Some(false);
    let got = named(&objects(&c));
    assert!(!got.iter().any(|n| n.contains("pooler")), "{got:#?}");
}

#[test]
fn secret_keys() {
    let d = secret_data(
        &SecretKind::Login {
            username: "app".into(),
            host: "pg-primary.db.svc".into(),
            dbname: "shop".into(),
        },
        "s3cret",
    );
    assert_eq!(
        d["uri"],
        "postgresql://app:s3cret@pg-primary.db.svc:5432/shop"
    );
    assert_eq!(
        d.keys().cloned().collect::<Vec<_>>(),
        ["dbname", "host", "password", "port", "uri", "username"]
    );
    let d = secret_data(
        &SecretKind::Pooler {
            username: "pgpilot_pooler".into(),
        },
        "pw",
    );
    assert_eq!(d["userlist.txt"], "\"pgpilot_pooler\" \"pw\"\n");
}

/// What changes on a running cluster, and how it reaches the processes: a setting of the
/// dynamic configuration changes only what the controller sends Patroni, never a pod
/// template (no pod is replaced for it); a changed pgbouncer.ini changes the pooler's pod
/// template (pgBouncer reads it at start), so its pods roll.
#[test]
fn dynamic_settings_change_no_pod_template_and_pooler_files_roll_the_pooler() {
    let base = sample("ha-backup-pooler");
    let before = render(&base).unwrap();
    let mut edited = base.clone();
    let spec = &mut edited.spec;
    let pg = spec.postgresql.as_mut().unwrap();
    pg.parameters
        .as_mut()
        .unwrap()
        .insert("work_mem".into(), "64MB".into());
    pg.pg_hba
        .as_mut()
        .unwrap()
        .insert(0, "host all app 10.0.0.0/8 reject".into());
    let pt = spec.patroni.as_mut().unwrap();
    pt.synchronous_mode = Some(crate::api::SynchronousMode::Async);
    pt.ttl = Some(45);
    let after = render(&edited).unwrap();
    assert_eq!(
        after.stateful_sets, before.stateful_sets,
        "a dynamic setting changed the StatefulSet"
    );
    let dcs = &after.patroni_dynamic_config;
    assert_eq!(dcs["postgresql"]["parameters"]["work_mem"], "64MB");
    assert_eq!(
        dcs["postgresql"]["pg_hba"][0],
        "host all app 10.0.0.0/8 reject"
    );
    assert_eq!(
        (dcs["synchronous_mode"].clone(), dcs["ttl"].clone()),
        (false.into(), 45.into())
    );
    assert!(crate::patroni::dynamic::diff(&before.patroni_dynamic_config, dcs).is_some());

    let template_hash = |r: &Rendered| {
        r.deployments[0]
            .spec
            .as_ref()
            .unwrap()
            .template
            .metadata
            .as_ref()
            .unwrap()
            .annotations
            .as_ref()
            .unwrap()[CONFIG_HASH_ANNOTATION]
            .clone()
    };
    assert_eq!(template_hash(&after), template_hash(&before));
    let mut pooled = base.clone();
    pooled.spec.pooler.as_mut().unwrap().default_pool_size = Some(55);
    assert_ne!(
        template_hash(&render(&pooled).unwrap()),
        template_hash(&before),
        "a changed pgbouncer.ini must roll the pooler"
    );
}

/// `bootstrap.dcs` in patroni.yaml and what the controller converges to are one value.
#[test]
fn the_bootstrap_configuration_is_the_dynamic_configuration() {
    let c = sample("ha-backup-pooler");
    let r = render(&c).unwrap();
    let cm = r
        .config_maps
        .iter()
        .find(|m| m.metadata.name.as_deref() == Some("orders-patroni"))
        .unwrap();
    let file: serde_json::Value =
        serde_yaml::from_str(&cm.data.as_ref().unwrap()[patroni::CONFIG_KEY]).unwrap();
    assert_eq!(
        crate::patroni::dynamic::diff(&file["bootstrap"]["dcs"], &r.patroni_dynamic_config),
        None
    );
    assert_eq!(
        file["bootstrap"]["dcs"]["ttl"],
        r.patroni_dynamic_config["ttl"]
    );
}

#[test]
fn a_control_character_never_reaches_an_ini_file() {
    let mut c = sample("ha-backup-pooler");
    let repos = c
        .spec
        .backup
        .as_mut()
        .and_then(|b| b.pgbackrest.as_mut())
        .and_then(|p| p.repos.as_mut())
        .unwrap();
    let s3 = repos.iter_mut().find_map(|r| r.s3.as_mut()).unwrap();
    s3.bucket = "acme\nrepo1-path=/".into();
    let err = render(&c).unwrap_err().to_string();
    assert!(err.contains("s3.bucket holds a control character"), "{err}");
    // Validation refuses the same spec, so the controller never renders it.
    assert!(
        !crate::validate::validate(&c, None).is_valid(),
        "validate must refuse the bucket"
    );
}

/// Patroni needs the ServiceAccount's token (it edits Endpoints and Pods); the exporter
/// and pgBackRest's server must not hold it: no automount, one projected volume mounted
/// into the Patroni container alone.
#[test]
fn only_patroni_holds_the_service_account_token() {
    for name in ["minimal", "ha-backup-pooler"] {
        let c = sample(name);
        let objs = objects(&c);
        let sts = objs
            .iter()
            .find(|o| o["kind"] == "StatefulSet" && o["metadata"]["name"] == name_of(&c))
            .unwrap();
        let pod = &sts["spec"]["template"]["spec"];
        assert_eq!(pod["automountServiceAccountToken"], false, "{name}");
        let token_volumes: Vec<&str> = pod["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|v| v["projected"]["sources"][0]["serviceAccountToken"].is_object())
            .map(|v| v["name"].as_str().unwrap())
            .collect();
        assert_eq!(token_volumes, ["patroni-token"], "{name}");
        let containers = pod["containers"].as_array().unwrap();
        assert!(
            containers.len() >= 2,
            "{name}: the exporter runs beside Patroni"
        );
        for container in containers {
            let holds = container["volumeMounts"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|m| m["name"] == "patroni-token");
            assert_eq!(
                holds,
                container["name"] == "postgres",
                "{name}: {}",
                container["name"]
            );
        }
    }
}

fn name_of(c: &PostgresCluster) -> String {
    c.metadata.name.clone().unwrap()
}

#[test]
fn an_on_demand_backup_is_the_scheduled_backups_job_named_after_its_request() {
    let c = sample("ha-backup-pooler");
    let rendered = render(&c).unwrap();
    let scheduled = rendered
        .cron_jobs
        .iter()
        .find(|j| j.metadata.name.as_deref() == Some("orders-backup-repo1-full"))
        .expect("a full backup CronJob for repo1");
    let scheduled = serde_json::to_value(scheduled).unwrap();
    let job = backup_request_job(&c, "repo1:full@before-upgrade")
        .unwrap()
        .expect("repo1 is a repository of the sample");
    let job = serde_json::to_value(&job).unwrap();
    assert_eq!(job["metadata"]["name"], "orders-backup-a81e965967");
    assert_eq!(
        job["metadata"]["annotations"][names::BACKUP_REQUEST_LABEL],
        "repo1:full@before-upgrade"
    );
    let labels = &job["metadata"]["labels"];
    assert_eq!(labels[names::REPO_LABEL], "repo1");
    assert_eq!(labels[names::BACKUP_TYPE_LABEL], "full");
    assert_eq!(
        job["metadata"]["ownerReferences"][0]["uid"],
        "0f0e0d0c-0000-4000-8000-000000000001"
    );
    // Same container, volumes, security context: only the request's label differs.
    let mut template = job["spec"]["template"].clone();
    template["metadata"]["labels"]
        .as_object_mut()
        .unwrap()
        .remove(names::BACKUP_REQUEST_LABEL)
        .expect("the pods carry the request label");
    assert_eq!(
        template,
        scheduled["spec"]["jobTemplate"]["spec"]["template"]
    );
    // Not a repository of the spec: nothing to run.
    assert!(backup_request_job(&c, "repo4:full").unwrap().is_none());
}

#[test]
fn archiving_goes_through_pgbackrest_and_reports_on_the_pod() {
    let c = sample("ha-backup-pooler");
    let r = render(&c).unwrap();
    let conf = r
        .config_maps
        .iter()
        .find(|m| m.metadata.name.as_deref() == Some("orders-pgbackrest"))
        .expect("the pgBackRest ConfigMap");
    let data = conf.data.as_ref().unwrap();
    let push = &data[super::pgbackrest::ARCHIVE_PUSH];
    // pgBackRest's exit code is the archive's outcome; the report cannot change it.
    assert!(push.contains(&format!(
        "pgbackrest --stanza={} archive-push \"$1\"\nrc=$?",
        super::patroni::STANZA
    )));
    assert!(push.contains("|| true") && push.trim_end().ends_with("exit \"$rc\""));
    let report = &data[super::pgbackrest::REPORT];
    for (constant, value) in [
        ("ARCHIVE", super::pgbackrest::ARCHIVE_ANNOTATION),
        ("INVENTORY", super::pgbackrest::INVENTORY_ANNOTATION),
        ("STANZA", super::patroni::STANZA),
    ] {
        assert!(
            report.contains(&format!("\n{constant} = \"{value}\"\n")),
            "{constant}"
        );
    }
    // The instances mount both scripts next to pgbackrest.conf, and the postgres container
    // has what the report needs under names Patroni passes on to PostgreSQL.
    let sts = serde_json::to_value(&r.stateful_sets[0]).unwrap();
    let pod = &sts["spec"]["template"]["spec"];
    let volume = pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "pgbackrest-config")
        .unwrap();
    let paths: Vec<&str> = volume["configMap"]["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["path"].as_str().unwrap())
        .collect();
    assert_eq!(paths, ["pgbackrest.conf", "archive-push.sh", "report.py"]);
    // Patroni reports the inventory on reload and when the role changes.
    let patroni: serde_json::Value = serde_yaml::from_str(
        &r.config_maps
            .iter()
            .find(|m| m.metadata.name.as_deref() == Some("orders-patroni"))
            .unwrap()
            .data
            .as_ref()
            .unwrap()["patroni.yaml"],
    )
    .unwrap();
    let callbacks = &patroni["postgresql"]["callbacks"];
    for action in ["on_reload", "on_role_change"] {
        assert_eq!(
            callbacks[action],
            "python3 /etc/pgbackrest/report.py inventory"
        );
    }
    let env = &pod["containers"][0]["env"];
    let names: Vec<&str> = env
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    for name in ["PGPILOT_POD_NAME", "PGPILOT_API_HOST", "PGPILOT_API_PORT"] {
        assert!(names.contains(&name), "{name} in {names:?}");
    }
    // Without repositories, none of it.
    let minimal = serde_json::to_value(&render(&sample("minimal")).unwrap().stateful_sets[0])
        .unwrap()
        .to_string();
    assert!(!minimal.contains("PGPILOT_API_HOST") && !minimal.contains("archive-push"));
}

/// `ha-backup-pooler` created from cluster `src`'s `repo1`, to the given target.
fn restored(target: &str) -> PostgresCluster {
    let mut c = sample("ha-backup-pooler");
    c.spec.bootstrap = Some(crate::api::BootstrapSpec {
        restore: Some(
            serde_yaml::from_str(&format!("{{cluster: src, repo: repo1, target: {target}}}"))
                .unwrap(),
        ),
    });
    c.spec = resolve(&c.spec, None, &Config::default());
    c
}

#[test]
fn a_restore_reads_a_volume_repository_through_the_sources_repository_host() {
    let c = restored("{type: time, value: '2026-12-01T10:00:00Z', exclusive: true}");
    let volume = crate::api::BackupRepo {
        name: "repo1".into(),
        volume: Some(Default::default()),
        ..Default::default()
    };
    let r = restore(
        &c,
        &RestoreSource {
            cluster: "src",
            repo: &volume,
        },
    )
    .unwrap();
    let data = r.config_map.data.as_ref().unwrap();
    let conf = &data["pgbackrest.conf"];
    assert!(
        conf.contains("repo1-host=src-repo-host-0.src-repo-host.db.svc\nrepo1-host-type=tls\n"),
        "{conf}"
    );
    let major = c.spec.postgres_version.unwrap();
    assert!(
        conf.contains(&format!("pg1-path=/pgdata/pg{major}\n")),
        "{conf}"
    );
    let own = format!("{}-repo-host", name_of(&c));
    assert!(
        !conf.contains(&own),
        "the new cluster's own repository is not in it: {conf}"
    );
    assert_eq!(conf.matches("-host=").count(), 1, "{conf}");
    // This cluster's dynamic configuration seeds Patroni, not the source's cache.
    let dynamic: serde_json::Value = serde_json::from_str(&data["patroni.dynamic.json"]).unwrap();
    assert_eq!(dynamic, render(&c).unwrap().patroni_dynamic_config);
    assert!(data["restore.sql"].contains("ALTER SYSTEM RESET ALL"));
    assert!(
        !data["restore.sql"].contains("GENERATED"),
        "no password in the script"
    );
    // The restored roles get this cluster's passwords as SCRAM verifiers.
    assert!(
        data["restore.sql"].contains("python3 -c \"$PGPILOT_SCRAM\" PGPILOT_REPLICATION_PASSWORD")
            && data["restore.sql"].contains("ALTER ROLE \"postgres\" WITH  PASSWORD :'pw';")
            && !data["restore.sql"].contains("printenv"),
        "{}",
        data["restore.sql"]
    );

    let job = serde_json::to_value(&r.job).unwrap();
    let container = &job["spec"]["template"]["spec"]["containers"][0];
    let command: Vec<&str> = container["command"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    let (data_dir, bin_dir, major) = (
        format!("/pgdata/pg{major}"),
        format!("/usr/lib/postgresql/{major}/bin"),
        major.to_string(),
    );
    assert_eq!(
        command,
        [
            "sh",
            "/etc/pgbackrest/restore.sh",
            "bootstrap",
            &data_dir,
            &bin_dir,
            &major,
            "--repo=1",
            "--target=2026-12-01 10:00:00+00",
            "--target-action=promote",
            "--target-exclusive",
            "--type=time"
        ]
    );
    let volumes = job["spec"]["template"]["spec"]["volumes"].to_string();
    assert!(
        volumes.contains("\"secretName\":\"src-pgbackrest-tls\""),
        "{volumes}"
    );
    assert!(
        volumes.contains(&format!("\"claimName\":\"pgdata-{}-0\"", name_of(&c))),
        "{volumes}"
    );
    assert_eq!(
        r.claim.metadata.name.as_deref(),
        Some(format!("pgdata-{}-0", name_of(&c)).as_str())
    );
    assert!(
        r.claim.metadata.owner_references.is_none(),
        "data claims outlive the cluster"
    );
    assert_eq!(
        job["metadata"]["labels"][crate::names::RESTORE_LABEL],
        name_of(&c).as_str()
    );
    assert_eq!(
        job["metadata"]["ownerReferences"][0]["kind"],
        "PostgresCluster"
    );
}

#[test]
fn a_restore_reads_an_object_store_under_the_sources_path_with_its_keys() {
    let c = restored("{type: latest}");
    let s3 = crate::api::BackupRepo {
        name: "repo2".into(),
        s3: Some(crate::api::S3Repo {
            bucket: "backups".into(),
            endpoint: "s3.example.com".into(),
            region: "eu-west-1".into(),
            uri_style: Some(crate::api::S3UriStyle::Path),
            credentials_secret: Some("s3-keys".into()),
            ca_secret: Some("store-ca".into()),
        }),
        ..Default::default()
    };
    let r = restore(
        &c,
        &RestoreSource {
            cluster: "src",
            repo: &s3,
        },
    )
    .unwrap();
    let conf = &r.config_map.data.as_ref().unwrap()["pgbackrest.conf"];
    assert!(
        conf.contains("repo2-type=s3\nrepo2-path=/pgbackrest/db/src/repo2\n"),
        "{conf}"
    );
    let job = serde_json::to_value(&r.job).unwrap();
    let env = job["spec"]["template"]["spec"]["containers"][0]["env"].to_string();
    assert!(
        env.contains("PGBACKREST_REPO2_S3_KEY_SECRET") && env.contains("s3-keys"),
        "{env}"
    );
    let command = job["spec"]["template"]["spec"]["containers"][0]["command"].to_string();
    assert!(
        command.ends_with("\"--repo=2\",\"--type=default\"]"),
        "{command}"
    );
    assert!(
        conf.contains("repo2-s3-uri-style=path\n")
            && conf.contains("repo2-storage-ca-file=/etc/pgbackrest/repo2/ca.crt\n"),
        "{conf}"
    );
    let pod = &job["spec"]["template"]["spec"];
    assert!(
        pod["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|v| v["secret"]["secretName"] == "store-ca"
                && v["name"]
                    == pod["containers"][0]["volumeMounts"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .find(|m| m["mountPath"] == "/etc/pgbackrest/repo2")
                        .unwrap()["name"]),
        "{pod}"
    );
    // An object-store key never rides along in the file.
    assert!(!conf.contains("key="), "{conf}");
}

#[test]
fn an_in_place_restore_reads_the_clusters_own_repository_and_is_named_after_its_id() {
    let mut c = sample("ha-backup-pooler");
    c.spec.restore = Some(serde_yaml::from_str("{id: before-migration, repo: repo1}").unwrap());
    c.spec = resolve(&c.spec, None, &Config::default());
    let name = name_of(&c);
    let r = in_place_restore(&c).unwrap();
    let job_name = crate::names::in_place_restore_job(&name, "before-migration");
    assert_eq!(r.job.metadata.name.as_deref(), Some(job_name.as_str()));
    let job = serde_json::to_value(&r.job).unwrap();
    let command = job["spec"]["template"]["spec"]["containers"][0]["command"].to_string();
    assert!(
        command.contains("\"in-place\"") && command.contains("\"--repo=1\""),
        "{command}"
    );
    let volumes = job["spec"]["template"]["spec"]["volumes"].to_string();
    assert!(
        volumes.contains(&format!("\"claimName\":\"pgdata-{name}-0\"")),
        "{volumes}"
    );
    // Its own object store, under its own path, with its own keys.
    let conf = &r.config_map.data.as_ref().unwrap()["pgbackrest.conf"];
    assert!(
        conf.contains(&format!("repo1-path=/pgbackrest/db/{name}/repo1\n")),
        "{conf}"
    );
    let env = job["spec"]["template"]["spec"]["containers"][0]["env"].to_string();
    assert!(env.contains("orders-s3-credentials"), "{env}");

    // The backup that follows: the scheduled backups' Job, counted as the restore's.
    let backup = restore_backup_job(&c).unwrap().expect("a backup Job");
    assert_eq!(
        backup.metadata.name.as_deref(),
        Some(format!("{job_name}-backup").as_str())
    );
    let labels = backup.metadata.labels.clone().unwrap();
    assert_eq!(labels[crate::names::RESTORE_LABEL], name);
    assert!(!labels.contains_key(crate::names::BACKUP_REQUEST_LABEL));
    assert!(backup.metadata.annotations.is_none());
    // Only the restored first instance is in its configuration: the others do not exist
    // yet, and pgBackRest would wait its io-timeout on each.
    let command = serde_json::to_value(&backup).unwrap()["spec"]["template"]["spec"]["containers"]
        [0]["command"][2]
        .as_str()
        .unwrap()
        .to_owned();
    let instances = c.spec.instances.unwrap();
    assert!(instances >= 2);
    for n in 2..=instances {
        for o in ["host", "path", "user", "host-key-file"] {
            assert_eq!(
                command.matches(&format!(" --reset-pg{n}-{o} ")).count(),
                2,
                "stanza-create and backup: {command}"
            );
        }
    }
    assert!(!command.contains("--reset-pg1-"), "{command}");
    let scheduled = render(&c).unwrap();
    assert!(
        !serde_json::to_string(&scheduled.cron_jobs)
            .unwrap()
            .contains("--reset-"),
        "scheduled backups keep every instance"
    );

    // The roles Job runs again after each restore (the restored roles are the target's).
    let roles = |c: &PostgresCluster| render(c).unwrap().jobs[0].metadata.name.clone();
    let mut other = c.clone();
    other.spec.restore.as_mut().unwrap().id = "another".into();
    assert_ne!(roles(&c), roles(&other));
}
