//! The serving certificate: read from a directory laid out like a cert-manager Secret volume
//! (`tls.crt`, `tls.key`, `ca.crt`) and reloaded when it changes.
//!
//! kubelet updates a Secret volume atomically: `tls.crt` is a symlink to `..data/tls.crt`,
//! and `..data` is a symlink to a timestamped directory that kubelet replaces with a rename.
//! Watching file names would watch the old targets, so the directory is polled instead: both
//! files are read through their symlinks and compared, byte for byte, with what was loaded.
//! `ca.crt` is not read: clients trust the CA through the webhook configuration's
//! `caBundle`, and serving the root adds bytes, not trust.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;

const CERT_FILE: &str = "tls.crt";
const KEY_FILE: &str = "tls.key";

/// Why a certificate pair could not be loaded. Messages name files, never key material.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: no PEM certificate found")]
    NoCertificate { path: PathBuf },
    #[error("{path}: not a PEM certificate chain ({reason})")]
    Certificate { path: PathBuf, reason: String },
    #[error("{path}: not a PEM private key ({reason})")]
    Key { path: PathBuf, reason: String },
    #[error("{key} does not belong to the certificate in {cert}: {reason}")]
    Mismatch {
        cert: PathBuf,
        key: PathBuf,
        reason: String,
    },
}

/// The contents of `tls.crt` and `tls.key` as last read.
#[derive(PartialEq, Eq)]
pub struct PairFiles {
    cert: Vec<u8>,
    key: Vec<u8>,
}

impl PairFiles {
    pub async fn read(dir: &Path) -> Result<PairFiles, CertError> {
        // Both files from one version: resolve `..data` once, so that a swap between the two
        // reads cannot pair the old certificate with the new key (or the reverse). Without
        // `..data` (plain files) the directory itself is read.
        let base = tokio::fs::canonicalize(dir.join("..data"))
            .await
            .unwrap_or_else(|_| dir.to_path_buf());
        let read = |name: &'static str| {
            let path = base.join(name);
            async move {
                tokio::fs::read(&path)
                    .await
                    .map_err(|source| CertError::Read { path, source })
            }
        };
        Ok(PairFiles {
            cert: read(CERT_FILE).await?,
            key: read(KEY_FILE).await?,
        })
    }

    /// The certificate chain and its key, checked to belong together.
    pub fn parse(&self, dir: &Path, provider: &CryptoProvider) -> Result<CertifiedKey, CertError> {
        let cert_path = dir.join(CERT_FILE);
        let key_path = dir.join(KEY_FILE);
        let chain = CertificateDer::pem_slice_iter(&self.cert)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| CertError::Certificate {
                path: cert_path.clone(),
                reason: e.to_string(),
            })?;
        if chain.is_empty() {
            return Err(CertError::NoCertificate { path: cert_path });
        }
        let key = PrivateKeyDer::from_pem_slice(&self.key).map_err(|e| CertError::Key {
            path: key_path.clone(),
            reason: e.to_string(),
        })?;
        CertifiedKey::from_der(chain, key, provider).map_err(|e| CertError::Mismatch {
            cert: cert_path,
            key: key_path,
            reason: e.to_string(),
        })
    }
}

/// The certificate new TLS connections are given. A reload swaps it atomically: a
/// handshake takes the old or the new one whole, and open connections keep theirs.
#[derive(Debug)]
pub struct ServingCert {
    current: ArcSwap<CertifiedKey>,
}

impl ServingCert {
    pub fn new(key: CertifiedKey) -> ServingCert {
        ServingCert {
            current: ArcSwap::from_pointee(key),
        }
    }

    pub fn replace(&self, key: CertifiedKey) {
        self.current.store(Arc::new(key));
    }
}

impl ResolvesServerCert for ServingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

/// Polls `dir` every `interval` until `shutdown`: a changed pair that loads is served from
/// the next handshake on; one that does not is logged once and the current one kept.
pub async fn reload(
    dir: PathBuf,
    cert: Arc<ServingCert>,
    mut seen: PairFiles,
    provider: Arc<CryptoProvider>,
    interval: Duration,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) {
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticks.tick() => {}
        }
        let files = match PairFiles::read(&dir).await {
            Ok(files) => files,
            // Mid-rotation or a passing hiccup: keep serving, look again next tick.
            Err(e) => {
                metrics.certificate_unreadable();
                tracing::debug!("certificate reload: {e}");
                continue;
            }
        };
        if files == seen {
            continue;
        }
        // Remembered even when broken, so a broken pair is reported once, not every tick.
        // Reading tls.crt and tls.key straddling a swap fails once and succeeds next tick.
        match files.parse(&dir, &provider) {
            Ok(key) => {
                cert.replace(key);
                metrics.certificate_reloaded(true);
                tracing::info!(dir = %dir.display(), "serving the new certificate");
            }
            Err(e) => {
                metrics.certificate_reloaded(false);
                tracing::error!(
                    "certificate changed but cannot be used, keeping the current one: {e}"
                );
            }
        }
        seen = files;
    }
}
