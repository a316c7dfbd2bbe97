//! A test CA made at test time, serving certificates signed by it, and a certificate
//! directory updated exactly the way kubelet updates a Secret volume.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, SerialNumber};
use rustls::pki_types::CertificateDer;

pub struct TestCa {
    issuer: Issuer<'static, KeyPair>,
    der: CertificateDer<'static>,
    pem: String,
}

/// A serving certificate and its key, as PEM and as the DER a client sees.
pub struct ServingPair {
    pub cert_pem: String,
    pub key_pem: String,
    pub der: CertificateDer<'static>,
}

impl TestCa {
    pub fn new() -> TestCa {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "pgpilot test CA");
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        TestCa {
            der: cert.der().clone(),
            pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    pub fn der(&self) -> CertificateDer<'static> {
        self.der.clone()
    }

    pub fn pem(&self) -> &str {
        &self.pem
    }

    /// A serving certificate for `localhost` and `127.0.0.1` with the given serial.
    pub fn issue(&self, serial: u64) -> ServingPair {
        let mut params =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
        params.serial_number = Some(SerialNumber::from(serial));
        params
            .distinguished_name
            .push(DnType::CommonName, "pgpilot-webhook");
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        ServingPair {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().clone(),
        }
    }
}

/// A directory laid out like a Secret volume: `tls.crt` → `..data/tls.crt`, `..data` →
/// a timestamped directory, swapped by renaming a `..data_tmp` symlink over it.
pub struct CertDir {
    root: tempfile::TempDir,
    generation: AtomicU64,
}

impl CertDir {
    pub fn new(ca: &TestCa, pair: &ServingPair) -> CertDir {
        let dir = CertDir {
            root: tempfile::tempdir().unwrap(),
            generation: AtomicU64::new(0),
        };
        dir.publish(ca, pair);
        dir
    }

    pub fn path(&self) -> &Path {
        self.root.path()
    }

    pub fn publish(&self, ca: &TestCa, pair: &ServingPair) {
        self.publish_files(&[
            ("ca.crt", ca.pem().as_bytes()),
            ("tls.crt", pair.cert_pem.as_bytes()),
            ("tls.key", pair.key_pem.as_bytes()),
        ]);
    }

    /// kubelet's AtomicWriter: write the new files into a fresh timestamped directory, point
    /// `..data_tmp` at it, rename that over `..data`, then remove the old directory.
    pub fn publish_files(&self, files: &[(&str, &[u8])]) {
        let root = self.path();
        let n = self.generation.fetch_add(1, Ordering::SeqCst);
        let timestamped = format!("..2026_01_01_00_00_00.{n:09}");
        std::fs::create_dir(root.join(&timestamped)).unwrap();
        for (name, content) in files {
            std::fs::write(root.join(&timestamped).join(name), content).unwrap();
        }
        let old = std::fs::read_link(root.join("..data")).ok();
        std::os::unix::fs::symlink(&timestamped, root.join("..data_tmp")).unwrap();
        std::fs::rename(root.join("..data_tmp"), root.join("..data")).unwrap();
        for (name, _) in files {
            let link = root.join(name);
            if std::fs::symlink_metadata(&link).is_err() {
                std::os::unix::fs::symlink(PathBuf::from("..data").join(name), link).unwrap();
            }
        }
        if let Some(old) = old {
            std::fs::remove_dir_all(root.join(old)).unwrap();
        }
    }
}
