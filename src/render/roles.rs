//! Job `C-roles-HASH`: creates and updates, idempotently, every user with its Secret's
//! password and options, every database with its owner, the pooler's auth role and function,
//! and the exporter's monitoring role. HASH covers exactly what the script depends on, so a
//! change makes a new Job and an unchanged spec never reruns it.
//!
//! A role removed from the spec is not dropped (objects and data may depend on it): it loses
//! LOGIN, and the Job's log lists it. Roles the Job manages carry the comment `MANAGED`.

use std::fmt::Write;

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::pod::{container_security, pod_security, secret_env, tmp_volume};
use super::pooler::AUTH_FUNCTION;
use super::secrets::{exporter_enabled, pooler_enabled};
use super::statefulset::server_tls_secret;
use super::{Cluster, RenderError, Rendered, build, component, need};
use crate::names;
use crate::validate::roles::normalized_option;

const MANAGED: &str = "managed by pgpilot";

/// The first `ROLES_HASH_LEN` hex digits of SHA-256 over the Job's spec. A Job's pod
/// template is immutable, so whatever changes it (the role spec, the image, TLS) must make
/// a new Job; anything else (instances, resources) leaves the finished Job alone.
fn hash(spec: &Value) -> String {
    let digest = Sha256::digest(spec.to_string().as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    hex[..names::ROLES_HASH_LEN].to_owned()
}

/// A SQL string literal. Names are validated identifiers, but quoting stays correct anyway.
fn literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// A quoted SQL identifier (`"` doubled inside), correct whatever the name holds.
fn ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// Creates a role if missing, then sets its options and password (see [`set_password`]).
fn upsert_role(sql: &mut String, role: &str, options: &str, env: &str) {
    let r = literal(role);
    let _ = writeln!(
        sql,
        "SELECT format('CREATE ROLE %I', {r}) WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = {r}) \\gexec"
    );
    set_password(sql, role, options, env);
    let _ = writeln!(
        sql,
        "COMMENT ON ROLE {} IS {};",
        ident(role),
        literal(MANAGED)
    );
}

/// psql lines that give existing role `role` options `options` and the password in the
/// environment variable `env` (so it never appears in a script or the process list). The
/// password never reaches the server either: the script computes its SCRAM verifier
/// (`scripts/scram.py`, in `PGPILOT_SCRAM`: see [`scram_env`]), reusing the stored
/// verifier's salt so that an unchanged password changes nothing, and sends that. A
/// verifier that could not be computed stops the script rather than clear a password.
pub(super) fn set_password(sql: &mut String, role: &str, options: &str, env: &str) {
    let _ = writeln!(
        sql,
        "SELECT coalesce((SELECT rolpassword FROM pg_authid WHERE rolname = {}), '') AS stored_verifier \\gset",
        literal(role)
    );
    let _ = writeln!(
        sql,
        "\\set pw `python3 -c \"$PGPILOT_SCRAM\" {env} :'stored_verifier'`"
    );
    let _ = writeln!(
        sql,
        "SELECT :'pw' ~ '^SCRAM-SHA-256\\$' AS verifier \\gset\n\\if :verifier\n\\else\nDO $$ BEGIN RAISE EXCEPTION '%', {}; END $$;\n\\endif",
        literal(&format!(
            "no SCRAM verifier could be computed for role {role}"
        ))
    );
    let _ = writeln!(
        sql,
        "ALTER ROLE {} WITH {options} PASSWORD :'pw';",
        ident(role)
    );
}

/// Settings for a session whose statements carry SCRAM verifiers: out of the server log
/// and out of pg_stat_statements (a placeholder setting where it is not loaded).
pub(super) const QUIET_SESSION: &str = "SET log_statement = 'none';\nSET log_min_duration_statement = -1;\nSET pg_stat_statements.track_utility = off;\n";

/// `PGPILOT_SCRAM`, the verifier program [`set_password`]'s lines run, for a container's
/// env (its `$` doubled: the kubelet reduces `$$` to `$`).
pub(super) fn scram_env() -> Value {
    json!({ "name": "PGPILOT_SCRAM", "value": include_str!("scripts/scram.py").replace('$', "$$") })
}

/// Environment variable carrying user `i`'s password.
fn user_env(i: usize) -> String {
    format!("PGPILOT_USER_{i}_PASSWORD")
}

pub fn script(c: &Cluster) -> String {
    let mut sql = String::from("\\set ON_ERROR_STOP on\n\\set QUIET on\n");
    sql.push_str(QUIET_SESSION);
    let users = c.spec.users.as_deref().unwrap_or_default();
    for (i, u) in users.iter().enumerate() {
        // Rebuilt from the known keywords: validation refuses anything else, and a stored
        // spec that bypassed it still sends no text of its own.
        let options = u
            .options
            .as_deref()
            .unwrap_or_default()
            .iter()
            .filter_map(|o| normalized_option(o))
            .collect::<Vec<_>>()
            .join(" ");
        upsert_role(
            &mut sql,
            &u.name,
            if options.is_empty() {
                "NOLOGIN"
            } else {
                &options
            },
            &user_env(i),
        );
    }
    for db in c.spec.databases.iter().flatten() {
        let owner = db.owner.as_deref().unwrap_or(names::SUPERUSER);
        let _ = writeln!(
            sql,
            "SELECT format('CREATE DATABASE %I OWNER %I', {d}, {o}) WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = {d}) \\gexec",
            d = literal(&db.name),
            o = literal(owner)
        );
        let _ = writeln!(
            sql,
            "ALTER DATABASE {} OWNER TO {};",
            ident(&db.name),
            ident(owner)
        );
    }
    for u in users {
        for db in u.databases.iter().flatten() {
            let _ = writeln!(
                sql,
                "GRANT ALL ON DATABASE {} TO {};",
                ident(db),
                ident(&u.name)
            );
        }
    }
    let mut managed: Vec<&str> = users.iter().map(|u| u.name.as_str()).collect();
    if exporter_enabled(c) {
        upsert_role(
            &mut sql,
            names::MONITOR_USER,
            "LOGIN NOSUPERUSER",
            "PGPILOT_MONITOR_PASSWORD",
        );
        let _ = writeln!(sql, "GRANT pg_monitor TO {};", ident(names::MONITOR_USER));
        managed.push(names::MONITOR_USER);
    }
    if pooler_enabled(c) {
        let pooler = names::POOLER_USER;
        upsert_role(
            &mut sql,
            pooler,
            "LOGIN NOSUPERUSER",
            "PGPILOT_POOLER_PASSWORD",
        );
        let (schema, _) = AUTH_FUNCTION.split_once('.').unwrap_or(("pgpilot", ""));
        // Looks up any ordinary role's SCRAM secret for pgBouncer, never the superuser's or
        // the replication user's, so the pooler cannot be used to log in as them.
        let _ = writeln!(
            sql,
            "CREATE SCHEMA IF NOT EXISTS {schema};\n\
CREATE OR REPLACE FUNCTION {AUTH_FUNCTION}(p_usename text) RETURNS TABLE (usename name, passwd text)\n\
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog AS\n\
$$ SELECT usename, passwd FROM pg_shadow WHERE usename = p_usename AND NOT usesuper AND NOT userepl $$;\n\
REVOKE ALL ON FUNCTION {AUTH_FUNCTION}(text) FROM PUBLIC;\n\
GRANT USAGE ON SCHEMA {schema} TO {pooler_id};\n\
GRANT EXECUTE ON FUNCTION {AUTH_FUNCTION}(text) TO {pooler_id};",
            pooler_id = ident(pooler)
        );
        managed.push(pooler);
    }
    let keep = managed
        .iter()
        .map(|r| literal(r))
        .collect::<Vec<_>>()
        .join(", ");
    let keep = if keep.is_empty() {
        "''".to_owned()
    } else {
        keep
    };
    let _ = writeln!(
        sql,
        "\\set QUIET off\n\\echo 'roles no longer in the spec (kept, LOGIN removed):'\n\
SELECT r.rolname FROM pg_roles r JOIN pg_shdescription d ON d.objoid = r.oid AND d.classoid = 'pg_authid'::regclass\n\
WHERE d.description = {m} AND r.rolcanlogin AND r.rolname NOT IN ({keep});\n\
SELECT format('ALTER ROLE %I NOLOGIN', r.rolname) FROM pg_roles r JOIN pg_shdescription d ON d.objoid = r.oid AND d.classoid = 'pg_authid'::regclass\n\
WHERE d.description = {m} AND r.rolcanlogin AND r.rolname NOT IN ({keep}) \\gexec\n\\echo 'roles and databases are up to date'",
        m = literal(MANAGED)
    );
    sql
}

pub fn render(c: &Cluster, out: &mut Rendered) -> Result<(), RenderError> {
    let image = need(&c.spec.image, "spec.image")?;
    let host = c.service_host(&names::primary_service(c.name));
    let mut env = vec![
        json!({ "name": "PGHOST", "value": host }),
        json!({ "name": "PGPORT", "value": names::POSTGRES_PORT.to_string() }),
        json!({ "name": "PGUSER", "value": names::SUPERUSER }),
        json!({ "name": "PGDATABASE", "value": "postgres" }),
        // With TLS, the primary's certificate is checked against the cluster's CA and its
        // Service name (the names pgpilot's certificates carry).
        json!({ "name": "PGSSLMODE", "value": if c.spec.tls_enabled() { "verify-full" } else { "disable" } }),
        json!({ "name": "PGCONNECT_TIMEOUT", "value": "5" }),
        secret_env("PGPASSWORD", &names::superuser_secret(c.name), "password"),
        // The kubelet reduces `$$` in env values to `$`; the script's dollar quotes need
        // theirs doubled to arrive intact.
        json!({ "name": "PGPILOT_SQL", "value": script(c).replace('$', "$$") }),
        scram_env(),
    ];
    let mut volumes = vec![tmp_volume()];
    let mut mounts = vec![json!({ "name": "tmp", "mountPath": "/tmp" })];
    if c.spec.tls_enabled() {
        let dir = super::SERVER_TLS_DIR;
        env.push(json!({ "name": "PGSSLROOTCERT", "value": format!("{dir}/ca.crt") }));
        volumes.push(json!({ "name": "server-ca", "secret": { "secretName": server_tls_secret(c)?, "items": [{ "key": "ca.crt", "path": "ca.crt" }] } }));
        mounts.push(json!({ "name": "server-ca", "mountPath": dir, "readOnly": true }));
    }
    for (i, u) in c.spec.users.iter().flatten().enumerate() {
        env.push(secret_env(
            &user_env(i),
            &names::user_secret(c.name, &u.name),
            "password",
        ));
    }
    if exporter_enabled(c) {
        env.push(secret_env(
            "PGPILOT_MONITOR_PASSWORD",
            &names::exporter_secret(c.name),
            "password",
        ));
    }
    if pooler_enabled(c) {
        env.push(secret_env(
            "PGPILOT_POOLER_PASSWORD",
            &names::pooler(c.name),
            "password",
        ));
    }
    // Wait until the primary accepts writes, then apply the script in one psql session.
    let command = "until [ \"$(psql -XtAc 'SELECT pg_is_in_recovery()' 2>/dev/null)\" = f ]; do echo 'waiting for the primary'; sleep 5; done\n\
printf '%s\\n' \"$PGPILOT_SQL\" | psql -X -f -";
    // An in-place restore brings back the roles of its target: the Job runs again after
    // each one (its id is part of the template, and so of the Job's name).
    let mut template_meta = json!({ "labels": c.labels(component::ROLES) });
    if let Some(r) = &c.spec.restore {
        template_meta["annotations"] = json!({ names::RESTORE_ID_ANNOTATION: r.id });
    }
    let spec: Value = json!({
            "backoffLimit": 6,
            "template": {
                "metadata": template_meta,
                "spec": {
                    "restartPolicy": "OnFailure",
                    "automountServiceAccountToken": false,
                    "enableServiceLinks": false,
                    "securityContext": pod_security(),
                    "containers": [{
                        "name": "roles",
                        "image": image,
                        "command": ["sh", "-c", command],
                        "env": env,
                        "volumeMounts": mounts,
                        "resources": { "requests": { "cpu": "10m", "memory": "32Mi" }, "limits": { "memory": "128Mi" } },
                        "securityContext": container_security()
                    }],
                    "volumes": volumes
                }
            }
    });
    let name = names::roles_job(c.name, &hash(&spec));
    out.jobs.push(build(
        "Job",
        json!({ "metadata": c.meta(name, component::ROLES), "spec": spec }),
    )?);
    Ok(())
}
