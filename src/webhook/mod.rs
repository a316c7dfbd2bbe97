//! The admission webhook server: `/mutate` and `/validate` over HTTPS only, with the serving
//! certificate reloaded from a cert-manager Secret volume and a graceful shutdown.
//!
//! [`Webhook::bind`] does everything that can fail for a reason an operator must fix (read
//! the certificate, build the TLS configuration, bind the port) and says which;
//! [`Webhook::serve`] then runs until the shutdown token is cancelled.

mod certs;
mod routes;
mod server;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use rustls::crypto::CryptoProvider;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::Config;

pub use certs::CertError;

use crate::metrics::Metrics;
use certs::ServingCert;

/// How the webhook is served.
pub struct Settings {
    pub listen: SocketAddr,
    /// `tls.crt` and `tls.key`, as cert-manager's Secret lays them out.
    pub cert_dir: PathBuf,
    pub config: Config,
    /// How often the certificate directory is checked for a new pair.
    pub reload_interval: Duration,
    /// The longest a request may take, from its first byte to its answer.
    pub request_timeout: Duration,
    /// Connections are closed gracefully at this age, so clients (the API server keeps its
    /// own open) meet a renewed certificate within it.
    pub max_connection_age: Duration,
    /// Where the webhook counts, and what `/metrics` serves (shared with the controller
    /// when both run in one process).
    pub metrics: Arc<Metrics>,
    /// The operator's API client, when the webhook runs inside it: admission then reads
    /// the source cluster of a new cluster's restore.
    pub clusters: Option<kube::Client>,
}

/// The default of [`Settings::max_connection_age`] (and of `--max-connection-age-seconds`).
pub const MAX_CONNECTION_AGE: Duration = Duration::from_secs(300);

impl Settings {
    pub fn new(listen: SocketAddr, cert_dir: PathBuf, config: Config) -> Settings {
        Settings {
            listen,
            cert_dir,
            config,
            reload_interval: Duration::from_secs(1),
            // The API server gives up after the configuration's timeoutSeconds (5); this
            // only stops a client that stalls.
            request_timeout: Duration::from_secs(10),
            max_connection_age: MAX_CONNECTION_AGE,
            metrics: Arc::default(),
            clusters: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error("loading the serving certificate: {0}")]
    Certificate(#[from] CertError),
    #[error("configuring TLS: {0}")]
    Tls(#[from] rustls::Error),
    #[error("listening on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// The routes with every layer, as served but without TLS: for driving the webhook
/// in-process (the randomized robustness run).
pub fn app(config: Config, request_timeout: Duration) -> Router {
    let metrics = Arc::new(Metrics::default());
    let state = routes::AppState {
        config: Arc::new(config),
        metrics: metrics.clone(),
        shutdown: CancellationToken::new(),
        clusters: None,
    };
    routes::harden(routes::routes(state), metrics, request_timeout)
}

/// A webhook with its certificate loaded and its port bound, ready to serve.
pub struct Webhook {
    settings: Settings,
    listener: TcpListener,
    local_addr: SocketAddr,
    tls: Arc<rustls::ServerConfig>,
    cert: Arc<ServingCert>,
    seen: certs::PairFiles,
    provider: Arc<CryptoProvider>,
    metrics: Arc<Metrics>,
}

impl Webhook {
    pub async fn bind(settings: Settings) -> Result<Webhook, WebhookError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let seen = certs::PairFiles::read(&settings.cert_dir).await?;
        let cert = Arc::new(ServingCert::new(seen.parse(&settings.cert_dir, &provider)?));
        let tls = server::tls_config(provider.clone(), cert.clone())?;
        let addr = settings.listen;
        let listen_error = |source| WebhookError::Listen { addr, source };
        let listener = TcpListener::bind(addr).await.map_err(listen_error)?;
        let local_addr = listener.local_addr().map_err(listen_error)?;
        Ok(Webhook {
            listener,
            local_addr,
            tls,
            cert,
            seen,
            provider,
            metrics: settings.metrics.clone(),
            settings,
        })
    }

    /// Lets admission read the source cluster of a new cluster's restore through
    /// `client` (the operator's, when the webhook runs inside it).
    pub fn read_clusters_with(&mut self, client: kube::Client) {
        self.settings.clusters = Some(client);
    }

    /// The bound address (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Serves `/mutate`, `/validate`, `/healthz`, `/readyz` and `/metrics` until `shutdown`.
    pub async fn serve(self, shutdown: CancellationToken) {
        let state = routes::AppState {
            config: Arc::new(self.settings.config.clone()),
            metrics: self.metrics.clone(),
            shutdown: shutdown.clone(),
            clusters: self.settings.clusters.clone(),
        };
        self.serve_routes(routes::routes(state), shutdown).await
    }

    /// Serves other routes behind the same TLS, certificate reload, limits and metrics: the
    /// load test's baseline server and the robustness tests use it.
    pub async fn serve_routes(self, routes: Router, shutdown: CancellationToken) {
        let app = routes::harden(routes, self.metrics.clone(), self.settings.request_timeout);
        tokio::spawn(certs::reload(
            self.settings.cert_dir.clone(),
            self.cert,
            self.seen,
            self.provider,
            self.settings.reload_interval,
            self.metrics,
            shutdown.clone(),
        ));
        tracing::info!(addr = %self.local_addr, "admission webhook serving HTTPS");
        let max_age = self.settings.max_connection_age;
        server::serve(self.listener, self.tls, app, max_age, shutdown).await;
    }
}
