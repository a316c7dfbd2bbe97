//! Secrets as templates. Rendering is pure, so it cannot make passwords: it says which
//! Secrets exist and for whom; the controller generates each password once (CSPRNG) and
//! never replaces it, then fills the remaining keys with `secret_data`.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::{Cluster, RenderError, Rendered, component};
use crate::names;

/// What a Secret is for, which decides the keys derived from its password.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SecretKind {
    /// A PostgreSQL login: `username`, `password`, `host`, `port`, `dbname`, `uri`.
    Login {
        username: String,
        host: String,
        dbname: String,
    },
    /// pgBouncer's auth user, plus its `userlist.txt`.
    Pooler { username: String },
    /// Credentials of Patroni's REST API: `username`, `password`.
    PatroniApi,
    /// A CA and a certificate (`ca.crt`, `tls.crt`, `tls.key`) for pgBackRest's mutual TLS,
    /// valid for these DNS names, with common name `names::PGBACKREST_CLIENT_CN`.
    PgBackRestTls { dns_names: Vec<String> },
}

#[derive(Clone, Debug, PartialEq)]
pub struct SecretTemplate {
    pub metadata: ObjectMeta,
    pub kind: SecretKind,
}

impl SecretTemplate {
    pub fn name(&self) -> &str {
        self.metadata.name.as_deref().unwrap_or_default()
    }
}

/// The keys of a Secret, given its password.
/// `s` with every byte outside RFC 3986's unreserved characters percent-encoded.
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

pub fn secret_data(kind: &SecretKind, password: &str) -> BTreeMap<String, String> {
    let mut d = BTreeMap::from([("password".to_owned(), password.to_owned())]);
    match kind {
        SecretKind::Login {
            username,
            host,
            dbname,
        } => {
            let port = names::POSTGRES_PORT.to_string();
            // Generated passwords are URL-safe, but one reused from an edited Secret may
            // hold anything: every part is percent-encoded.
            let uri = format!(
                "postgresql://{}:{}@{host}:{port}/{}",
                percent_encode(username),
                percent_encode(password),
                percent_encode(dbname)
            );
            d.extend([
                ("username".into(), username.clone()),
                ("host".into(), host.clone()),
                ("port".into(), port),
                ("dbname".into(), dbname.clone()),
                ("uri".into(), uri),
            ]);
        }
        SecretKind::Pooler { username } => {
            d.insert("username".into(), username.clone());
            // pgBouncer's userlist quotes each field and doubles a quote inside one.
            let quoted = |s: &str| format!("\"{}\"", s.replace('"', "\"\""));
            d.insert(
                "userlist.txt".into(),
                format!("{} {}\n", quoted(username), quoted(password)),
            );
        }
        SecretKind::PatroniApi => {
            d.insert("username".into(), "patroni".into());
        }
        // Not password-derived: the controller generates the key pair once.
        SecretKind::PgBackRestTls { .. } => {}
    }
    d
}

pub fn render(c: &Cluster, out: &mut Rendered) -> Result<(), RenderError> {
    let primary = c.service_host(&names::primary_service(c.name));
    let login = |name: String, username: &str, dbname: &str| SecretTemplate {
        metadata: c.meta(name, component::CREDENTIALS),
        kind: SecretKind::Login {
            username: username.into(),
            host: primary.clone(),
            dbname: dbname.into(),
        },
    };
    out.secrets.push(login(
        names::superuser_secret(c.name),
        names::SUPERUSER,
        "postgres",
    ));
    out.secrets.push(login(
        names::replication_secret(c.name),
        names::REPLICATION_USER,
        "postgres",
    ));
    out.secrets.push(SecretTemplate {
        metadata: c.meta(names::patroni_api_secret(c.name), component::PATRONI),
        kind: SecretKind::PatroniApi,
    });
    if exporter_enabled(c) {
        out.secrets.push(login(
            names::exporter_secret(c.name),
            names::MONITOR_USER,
            "postgres",
        ));
    }
    for user in c.spec.users.iter().flatten() {
        // A user's Secret points at its first database, else `postgres`.
        let db = user
            .databases
            .iter()
            .flatten()
            .next()
            .map_or("postgres", String::as_str);
        out.secrets.push(login(
            names::user_secret(c.name, &user.name),
            &user.name,
            db,
        ));
    }
    if !c.spec.backup_repos().is_empty() {
        let wildcard = |service: String| format!("*.{}", c.service_host(&service));
        out.secrets.push(SecretTemplate {
            metadata: c.meta(names::pgbackrest_tls_secret(c.name), component::BACKUP),
            kind: SecretKind::PgBackRestTls {
                dns_names: vec![
                    wildcard(names::pods_service(c.name)),
                    wildcard(names::repo_host(c.name)),
                ],
            },
        });
    }
    if pooler_enabled(c) {
        out.secrets.push(SecretTemplate {
            metadata: c.meta(names::pooler(c.name), component::POOLER),
            kind: SecretKind::Pooler {
                username: names::POOLER_USER.into(),
            },
        });
    }
    Ok(())
}

pub fn exporter_enabled(c: &Cluster) -> bool {
    c.spec
        .monitoring
        .as_ref()
        .and_then(|m| m.exporter.as_ref())
        .and_then(|e| e.enabled)
        == Some(true)
}

pub fn pooler_enabled(c: &Cluster) -> bool {
    c.spec.pooler.as_ref().and_then(|p| p.enabled) == Some(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reused_passwords_are_escaped_where_they_are_embedded() {
        let login = SecretKind::Login {
            username: "app".into(),
            host: "db-primary.ns.svc".into(),
            dbname: "app".into(),
        };
        let d = secret_data(&login, "p@ss:w/rd?#%\"");
        assert_eq!(
            d["uri"],
            "postgresql://app:p%40ss%3Aw%2Frd%3F%23%25%22@db-primary.ns.svc:5432/app"
        );
        assert_eq!(d["password"], "p@ss:w/rd?#%\"");
        let pooler = SecretKind::Pooler {
            username: "pgbouncer".into(),
        };
        let d = secret_data(&pooler, "a\"b");
        assert_eq!(d["userlist.txt"], "\"pgbouncer\" \"a\"\"b\"\n");
    }
}
