//! The webhook started in-process on 127.0.0.1:0, with a fresh CA and certificate directory.

use std::time::Duration;

use axum::Router;
use pgpilot::config::Config;
use pgpilot::webhook::{Settings, Webhook};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::client::Client;
use super::tls::{CertDir, ServingPair, TestCa};

pub struct TestServer {
    pub ca: TestCa,
    pub first: ServingPair,
    pub certs: CertDir,
    pub client: Client,
    shutdown: CancellationToken,
    task: JoinHandle<()>,
}

pub struct Options {
    pub routes: Option<Router>,
    pub reload_interval: Duration,
    pub request_timeout: Duration,
    pub max_connection_age: Duration,
}

impl Default for Options {
    fn default() -> Options {
        let defaults = Settings::new(
            "127.0.0.1:0".parse().unwrap(),
            Default::default(),
            Config::default(),
        );
        Options {
            routes: None,
            reload_interval: defaults.reload_interval,
            request_timeout: defaults.request_timeout,
            max_connection_age: defaults.max_connection_age,
        }
    }
}

impl TestServer {
    pub async fn start() -> TestServer {
        TestServer::start_with(Options::default()).await
    }

    pub async fn start_with(options: Options) -> TestServer {
        let ca = TestCa::new();
        let first = ca.issue(1);
        let certs = CertDir::new(&ca, &first);
        let mut settings = Settings::new(
            "127.0.0.1:0".parse().unwrap(),
            certs.path().to_owned(),
            Config::default(),
        );
        settings.reload_interval = options.reload_interval;
        settings.request_timeout = options.request_timeout;
        settings.max_connection_age = options.max_connection_age;
        let webhook = Webhook::bind(settings).await.expect("the webhook starts");
        let client = Client::new(webhook.local_addr(), ca.der());
        let shutdown = CancellationToken::new();
        let task = match options.routes {
            None => tokio::spawn(webhook.serve(shutdown.clone())),
            Some(routes) => tokio::spawn(webhook.serve_routes(routes, shutdown.clone())),
        };
        TestServer {
            ca,
            first,
            certs,
            client,
            shutdown,
            task,
        }
    }

    /// Begins a graceful shutdown; the returned task ends once open requests are answered.
    pub fn shut_down(self) -> JoinHandle<()> {
        self.shutdown.cancel();
        self.task
    }
}
