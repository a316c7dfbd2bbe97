//! A renewed server certificate reaches PostgreSQL without a restart. The kubelet rewrites
//! the Secret volume's files some time after the Secret changes (cert-manager renews
//! `C-tls` in place), but PostgreSQL reads them only at start and on SIGHUP. So the
//! controller compares the certificate each member serves (`pgprobe`) with the Secret's,
//! and asks a member that differs to reload (Patroni's `POST /reload`, which SIGHUPs
//! PostgreSQL), at most once per `RELOAD_EVERY` while the kubelet catches up.
//!
//! The comparison costs a TLS handshake per member, so it runs only when the Secret
//! changed or a member is new since the last time every member served the Secret's
//! certificate; a converged cluster costs one read of the Secret.

use std::time::Duration;

use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::events::EventType;
use tracing::info;

use super::converge::{self, NotApplied};
use super::{Scope, publish};
use crate::names;
use crate::patroni::Member;
use crate::pgprobe;

/// The condition reason while a member serves an older certificate.
pub const CERTIFICATE_PENDING: &str = "CertificatePending";
/// The condition reason when the server certificate would be refused by those who check it.
pub const CERTIFICATE_REFUSED: &str = "CertificateRefused";

/// Whether a client that trusts only `ca_pem` accepts `cert_pem` (the certificate, then any
/// intermediates) for each of `names`: chain, names and validity period, as rustls checks
/// them (PostgreSQL's verify-full clients and Patroni check the same).
pub fn accepted(cert_pem: &[u8], ca_pem: &[u8], names: &[String]) -> Result<(), String> {
    use rustls::client::WebPkiServerVerifier;
    use rustls::client::danger::ServerCertVerifier;
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, ServerName, UnixTime};

    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("tls.crt is not readable: {e}"))?;
    let Some((leaf, intermediates)) = chain.split_first() else {
        return Err("tls.crt holds no certificate".into());
    };
    let roots = pgprobe::ca_roots(ca_pem).map_err(|e| format!("ca.crt: {e}"))?;
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let verifier = WebPkiServerVerifier::builder_with_provider(roots.into(), provider)
        .build()
        .map_err(|e| e.to_string())?;
    for name in names {
        let server = ServerName::try_from(name.clone()).map_err(|e| e.to_string())?;
        verifier
            .verify_server_cert(leaf, intermediates, &server, &[], UnixTime::now())
            .map_err(|e| format!("tls.crt is refused for {name} against ca.crt: {e}"))?;
    }
    Ok(())
}
/// How often a member that still serves an older certificate is asked to reload.
const RELOAD_EVERY: Duration = Duration::from_secs(20);
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// The server certificate's Secret as read once per pass: its name, and the Secret, `None`
/// when it does not exist, or why it could not be read.
pub struct ServerTls {
    pub name: String,
    pub secret: Result<Option<Secret>, String>,
}

/// Reads the Secret `secret_name` names (none when TLS is off).
pub async fn read(
    ctx: &super::Context,
    namespace: &str,
    secret_name: Option<String>,
) -> Option<ServerTls> {
    let name = secret_name?;
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), namespace);
    let secret = api
        .get_opt(&name)
        .await
        .map_err(|e| format!("reading Secret {name}: {e}"));
    Some(ServerTls { name, secret })
}

/// `Ok` when every running member serves the certificate of the server Secret (or TLS is
/// off).
pub async fn step(
    scope: &Scope<'_>,
    tls: Option<&ServerTls>,
    pods: &[Pod],
    members: &[Member],
) -> Result<(), NotApplied> {
    let Scope {
        ctx,
        obj,
        namespace,
        name,
        ..
    } = *scope;
    let Some(tls) = tls else {
        return Ok(());
    };
    let secret_name = &tls.name;
    let key = format!("{namespace}/{name}");
    let pending = |m: String| (CERTIFICATE_PENDING.to_owned(), m);
    let secret = match &tls.secret {
        Ok(Some(s)) => s,
        // Missing or unreadable: nothing to compare with; the pods cannot start either.
        Ok(None) => return Err(pending(format!("Secret {secret_name} does not exist"))),
        Err(e) => return Err(pending(e.clone())),
    };
    let Some(want) = secret
        .data
        .as_ref()
        .and_then(|d| d.get("tls.crt"))
        .and_then(|c| pgprobe::first_certificate(&c.0))
    else {
        return Err(pending(format!(
            "Secret {secret_name} has no certificate in tls.crt"
        )));
    };
    // Clients check the primary Service's name, and Patroni's members each other's pod name
    // (their API address): a certificate that fails either stops failovers' checks and
    // verify-full clients, so it is reported, not served silently.
    let data = secret.data.as_ref();
    let key_of = |k: &str| data.and_then(|d| d.get(k)).map(|b| b.0.as_slice());
    let trusted = [
        format!("{}.{namespace}.svc", names::primary_service(name)),
        format!("{name}-0.{}.{namespace}.svc", names::pods_service(name)),
    ];
    if let Err(why) = accepted(
        key_of("tls.crt").unwrap_or_default(),
        key_of("ca.crt").unwrap_or_default(),
        &trusted,
    ) {
        return Err((
            CERTIFICATE_REFUSED.to_owned(),
            format!("Secret {secret_name}: {why}"),
        ));
    }
    // What was verified last: the Secret's version and the pods (by UID) that served it.
    let version = secret.resource_version().unwrap_or_default();
    let running: Vec<(&Pod, &Member)> = pods
        .iter()
        .filter_map(|p| {
            let m = members.iter().find(|m| m.name == p.name_any())?;
            let up = m.status.as_ref().is_some_and(|s| s.is_running()) && m.ip.is_some();
            up.then_some((p, m))
        })
        .collect();
    let fingerprint = |uids: Vec<String>| format!("{version}|{}", uids.join(","));
    let now = fingerprint(running.iter().filter_map(|(p, _)| p.uid()).collect());
    if ctx.certificates_verified(&key) == Some(now.clone()) {
        return Ok(());
    }
    let mut behind = Vec::new();
    for (_, m) in &running {
        let Some(ip) = m.ip else { continue };
        let addr = (ip, names::POSTGRES_PORT as u16).into();
        match pgprobe::served_certificate(addr, PROBE_TIMEOUT).await {
            Ok(served) if served == want => {}
            Ok(_) => behind.push(m.name.clone()),
            Err(e) => return Err(pending(format!("{}: {e}", m.name))),
        }
    }
    if behind.is_empty() {
        ctx.certificates_ok(&key, now);
        return Ok(());
    }
    let mut reloaded = Vec::new();
    let mut client = None;
    for m in members.iter().filter(|m| behind.contains(&m.name)) {
        let Some(at) = &m.api else { continue };
        if !ctx.may_reload(&format!("{key}/{}", m.name), RELOAD_EVERY) {
            continue;
        }
        // The credentials are read once per pass, and only when a reload is due.
        if client.is_none() {
            client = Some(converge::writer(scope).await?);
        }
        let Some(client) = &client else { continue };
        client
            .reload(at)
            .await
            .map_err(|e| pending(format!("reloading {}: {e}", m.name)))?;
        reloaded.push(m.name.clone());
    }
    if !reloaded.is_empty() {
        let list = reloaded.join(", ");
        info!(cluster = %key, members = %list, "reloaded: serving an older certificate than Secret {secret_name}");
        publish(
            ctx,
            obj,
            EventType::Normal,
            "CertificateReload",
            format!("{list} served an older certificate than Secret {secret_name}: reloaded"),
        )
        .await;
    }
    Err(pending(format!(
        "{} {} an older certificate than Secret {secret_name}; reloading until the kubelet has updated the files",
        behind.join(", "),
        if behind.len() == 1 { "serves" } else { "serve" }
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};

    /// A CA's PEM and a function issuing leaf PEMs for DNS names from it.
    fn authority() -> (String, impl Fn(&[&str]) -> String) {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let pem = params.self_signed(&key).unwrap().pem();
        let issuer = Issuer::new(params, key);
        let issue = move |names: &[&str]| {
            let key = KeyPair::generate().unwrap();
            let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
            CertificateParams::new(names)
                .unwrap()
                .signed_by(&key, &issuer)
                .unwrap()
                .pem()
        };
        (pem, issue)
    }

    #[test]
    fn the_certificate_must_carry_the_names_clients_and_members_check() {
        let (ca, issue) = authority();
        let names = [
            "orders-primary.db.svc".to_owned(),
            "orders-0.orders-pods.db.svc".to_owned(),
        ];
        let good = issue(&["orders-primary.db.svc", "*.orders-pods.db.svc"]);
        assert_eq!(accepted(good.as_bytes(), ca.as_bytes(), &names), Ok(()));

        // Issued for the Service only: Patroni's members could not check each other.
        let service_only = issue(&["orders-primary.db.svc"]);
        let why = accepted(service_only.as_bytes(), ca.as_bytes(), &names).unwrap_err();
        assert!(why.contains("orders-0.orders-pods.db.svc"), "{why}");

        // Signed by another CA than the Secret's ca.crt.
        let (_, stranger) = authority();
        let foreign = stranger(&["orders-primary.db.svc", "*.orders-pods.db.svc"]);
        assert!(accepted(foreign.as_bytes(), ca.as_bytes(), &names).is_err());

        assert!(accepted(b"", ca.as_bytes(), &names).is_err());
        assert!(accepted(good.as_bytes(), b"", &names).is_err());
    }
}
