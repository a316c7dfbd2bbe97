//! The control plane's own PKI, made fresh for every cluster: one CA signs the API server's
//! serving certificate, the client certificates (admin, kube-controller-manager) and the
//! webhook's serving certificate; a separate key pair signs service-account tokens.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};

/// A certificate and its key, both PEM.
pub struct Pair {
    pub cert_pem: String,
    pub key_pem: String,
}

/// Every certificate and key the control plane and the webhook need.
pub struct Pki {
    pub ca: Pair,
    pub apiserver: Pair,
    /// CN `admin`, O `system:masters`: the kubeconfig users (and tests) get.
    pub admin: Pair,
    /// CN `system:kube-controller-manager`: the bootstrap RBAC role covers what it does.
    pub controller_manager: Pair,
    /// The webhook's serving certificate (SANs `localhost`, `127.0.0.1`).
    pub webhook: Pair,
    /// Signs and verifies service-account tokens.
    pub service_account_key_pem: String,
    pub service_account_public_pem: String,
}

/// Where [`Pki::write`] put the files, as the control-plane flags name them.
pub struct PkiFiles {
    pub ca_cert: PathBuf,
    pub ca_key: PathBuf,
    pub apiserver_cert: PathBuf,
    pub apiserver_key: PathBuf,
    pub service_account_key: PathBuf,
    pub service_account_public: PathBuf,
    /// `tls.crt`, `tls.key` and `ca.crt`: the layout of a cert-manager Secret volume.
    pub webhook_dir: PathBuf,
}

const LOOPBACK_SANS: [&str; 2] = ["localhost", "127.0.0.1"];

impl Pki {
    pub fn generate() -> Result<Pki, rcgen::Error> {
        let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        set_subject(&mut ca_params, "pgpilot devcluster CA", None);
        let ca_key = KeyPair::generate()?;
        let ca_key_pem = ca_key.serialize_pem();
        let ca = CertifiedIssuer::self_signed(ca_params, ca_key)?;

        let issue =
            |cn: &str, org: Option<&str>, sans: &[&str], usage| -> Result<Pair, rcgen::Error> {
                let mut params =
                    CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>())?;
                set_subject(&mut params, cn, org);
                params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
                params.extended_key_usages = vec![usage];
                let key = KeyPair::generate()?;
                let cert = params.signed_by(&key, &ca)?;
                Ok(Pair {
                    cert_pem: cert.pem(),
                    key_pem: key.serialize_pem(),
                })
            };
        let server = ExtendedKeyUsagePurpose::ServerAuth;
        let client = ExtendedKeyUsagePurpose::ClientAuth;
        let apiserver = issue("kube-apiserver", None, &LOOPBACK_SANS, server.clone())?;
        let webhook = issue("pgpilot-webhook", None, &LOOPBACK_SANS, server)?;
        let admin = issue("admin", Some("system:masters"), &[], client.clone())?;
        let controller_manager = issue("system:kube-controller-manager", None, &[], client)?;

        let service_account = KeyPair::generate()?;
        Ok(Pki {
            ca: Pair {
                cert_pem: ca.pem(),
                key_pem: ca_key_pem,
            },
            apiserver,
            admin,
            controller_manager,
            webhook,
            service_account_key_pem: service_account.serialize_pem(),
            service_account_public_pem: service_account.public_key_pem(),
        })
    }

    /// Writes the files the processes read (keys readable by the owner only).
    pub fn write(&self, dir: &Path) -> std::io::Result<PkiFiles> {
        let files = PkiFiles {
            ca_cert: dir.join("ca.crt"),
            ca_key: dir.join("ca.key"),
            apiserver_cert: dir.join("apiserver.crt"),
            apiserver_key: dir.join("apiserver.key"),
            service_account_key: dir.join("sa.key"),
            service_account_public: dir.join("sa.pub"),
            webhook_dir: dir.join("webhook-certs"),
        };
        std::fs::create_dir_all(&files.webhook_dir)?;
        write_public(&files.ca_cert, &self.ca.cert_pem)?;
        write_secret(&files.ca_key, &self.ca.key_pem)?;
        write_public(&files.apiserver_cert, &self.apiserver.cert_pem)?;
        write_secret(&files.apiserver_key, &self.apiserver.key_pem)?;
        write_secret(&files.service_account_key, &self.service_account_key_pem)?;
        write_public(
            &files.service_account_public,
            &self.service_account_public_pem,
        )?;
        write_public(&files.webhook_dir.join("tls.crt"), &self.webhook.cert_pem)?;
        write_secret(&files.webhook_dir.join("tls.key"), &self.webhook.key_pem)?;
        write_public(&files.webhook_dir.join("ca.crt"), &self.ca.cert_pem)?;
        Ok(files)
    }
}

fn set_subject(params: &mut CertificateParams, cn: &str, org: Option<&str>) {
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, cn);
    if let Some(org) = org {
        params
            .distinguished_name
            .push(DnType::OrganizationName, org);
    }
}

fn write_public(path: &Path, text: &str) -> std::io::Result<()> {
    std::fs::write(path, text)
}

fn write_secret(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?
        .write_all(text.as_bytes())
}
