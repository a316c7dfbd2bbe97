//! Secrets: generated once, never overwritten. A password already in a Secret pgpilot made
//! is read and reused; only the keys derived from it are kept up to date. A user's login
//! Secret (`C-user-NAME`) made before the cluster existed supplies its password and is left
//! exactly as it is; any other Secret of a child's name that pgpilot did not make is a
//! conflict.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use rand::Rng;
use rand::distr::Alphanumeric;

use super::Error;
use super::apply::{Change, apply_one, own};
use crate::names;
use crate::render::{SecretKind, SecretTemplate, secret_data};

/// Length of generated passwords: alphanumeric, so they need no quoting in URIs,
/// connection strings or pgBouncer's userlist; 40 characters carry about 238 bits.
pub const PASSWORD_LEN: usize = 40;

/// A fresh password from the operating system's CSPRNG (via `rand`'s ChaCha-based
/// thread RNG, reseeded from the OS).
pub fn password() -> String {
    rand::rng()
        .sample_iter(&Alphanumeric)
        .take(PASSWORD_LEN)
        .map(char::from)
        .collect()
}

/// A role's login Secret, `C-user-NAME` (not the superuser's, the replication or the
/// exporter's, which only pgpilot makes).
fn is_user_secret(t: &SecretTemplate) -> bool {
    let cluster = t
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(names::CLUSTER_LABEL));
    cluster.is_some_and(|c| {
        t.name()
            .strip_prefix(c.as_str())
            .is_some_and(|rest| rest.starts_with("-user-"))
    })
}

fn text(secret: &Secret, key: &str) -> Option<String> {
    let bytes = secret.data.as_ref()?.get(key)?;
    String::from_utf8(bytes.0.clone())
        .ok()
        .filter(|s| !s.is_empty())
}

/// Makes every templated Secret exist with its derived keys, writing only what is missing or
/// out of date.
pub async fn ensure(
    api: &Api<Secret>,
    templates: &[SecretTemplate],
    live: &[Secret],
    owner_uid: &str,
) -> Result<Vec<Change>, Error> {
    let mut changes = Vec::new();
    for t in templates {
        let name = t.name().to_owned();
        let current = match own(api, live, &name, owner_uid).await {
            Ok(current) => current,
            Err(Error::Conflict(what)) => {
                // The user's own login Secret, with a password: the role gets that password
                // (the roles Job reads it from this Secret), and the Secret is untouched.
                let theirs = match &t.kind {
                    SecretKind::Login { .. } if is_user_secret(t) => api
                        .get_opt(&name)
                        .await
                        .map_err(|e| Error::List(format!("Secret/{name}"), e))?
                        .and_then(|s| text(&s, "password")),
                    _ => None,
                };
                match theirs {
                    Some(_) => continue,
                    None => return Err(Error::Conflict(what)),
                }
            }
            Err(e) => return Err(e),
        };
        let data: BTreeMap<String, String> = match (&t.kind, current) {
            (SecretKind::PgBackRestTls { .. }, Some(s))
                if ["ca.crt", "tls.crt", "tls.key"]
                    .iter()
                    .all(|k| text(s, k).is_some()) =>
            {
                // Certificates are kept as they are; only labels and owner are reconciled.
                ["ca.crt", "tls.crt", "tls.key"]
                    .iter()
                    .map(|k| (k.to_string(), text(s, k).unwrap_or_default()))
                    .collect()
            }
            (SecretKind::PgBackRestTls { dns_names }, _) => {
                tls_pair(dns_names).map_err(|e| Error::Generate(name.clone(), e))?
            }
            (kind, current) => {
                let password = current
                    .and_then(|s| text(s, "password"))
                    .unwrap_or_else(password);
                secret_data(kind, &password)
            }
        };
        let desired = Secret {
            metadata: t.metadata.clone(),
            type_: Some("Opaque".into()),
            data: Some(
                data.into_iter()
                    .map(|(k, v)| (k, ByteString(v.into_bytes())))
                    .collect(),
            ),
            ..Default::default()
        };
        let want = serde_json::to_value(&desired)
            .map_err(|e| Error::Serialize(name.clone(), e.to_string()))?;
        let have = current
            .map(serde_json::to_value)
            .transpose()
            .map_err(|e| Error::Serialize(name.clone(), e.to_string()))?;
        let mut compare = want.clone();
        if let Some(meta) = compare.get_mut("metadata").and_then(|m| m.as_object_mut()) {
            meta.retain(|k, _| ["labels", "ownerReferences"].contains(&k.as_str()));
        }
        changes.extend(apply_one(api, "Secret", &name, &want, &compare, have.as_ref()).await?);
    }
    Ok(changes)
}

/// A CA and a certificate signed by it, for client and server use, as PEM.
fn tls_pair(dns_names: &[String]) -> Result<BTreeMap<String, String>, String> {
    use rcgen::{
        BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose,
        IsCa, KeyPair,
    };
    let err = |e: rcgen::Error| e.to_string();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(err)?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "pgpilot pgBackRest CA");
    let ca =
        CertifiedIssuer::self_signed(ca_params, KeyPair::generate().map_err(err)?).map_err(err)?;
    let mut params = CertificateParams::new(dns_names.to_vec()).map_err(err)?;
    params
        .distinguished_name
        .push(DnType::CommonName, names::PGBACKREST_CLIENT_CN);
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let key = KeyPair::generate().map_err(err)?;
    let cert = params.signed_by(&key, &ca).map_err(err)?;
    Ok(BTreeMap::from([
        ("ca.crt".to_owned(), ca.pem()),
        ("tls.crt".to_owned(), cert.pem()),
        ("tls.key".to_owned(), key.serialize_pem()),
    ]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_long_random_and_url_safe() {
        let a = password();
        let b = password();
        assert_eq!(a.len(), PASSWORD_LEN);
        assert_ne!(a, b);
        assert!(a.chars().all(|c| c.is_ascii_alphanumeric()));
    }

    #[test]
    fn tls_pair_is_pem() {
        let d = tls_pair(&["*.pg-pods.db.svc".into()]).unwrap();
        assert!(d["ca.crt"].starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(d["tls.crt"].starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(d["tls.key"].contains("PRIVATE KEY"));
    }
}
