//! Leader election on a `coordination.k8s.io` Lease, so that of several operator replicas
//! exactly one reconciles (every replica serves the webhook). The holder renews the Lease
//! every `RENEW`; another replica takes over once it has gone unrenewed for `DURATION`.
//! Updates carry the Lease's resourceVersion, so two candidates can never both win.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::api::{Api, PostParams};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

pub const LEASE_NAME: &str = "pgpilot-controller";
pub const DURATION: Duration = Duration::from_secs(15);
pub const RENEW: Duration = Duration::from_secs(5);

pub struct Elector {
    api: Api<Lease>,
    identity: String,
}

impl Elector {
    pub fn new(client: Client, namespace: &str, identity: String) -> Elector {
        Elector {
            api: Api::namespaced(client, namespace),
            identity,
        }
    }

    fn spec(&self, transitions: i32) -> LeaseSpec {
        let now = MicroTime(Timestamp::now());
        LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: Some(DURATION.as_secs() as i32),
            acquire_time: Some(now.clone()),
            renew_time: Some(now),
            lease_transitions: Some(transitions),
            ..Default::default()
        }
    }

    /// One attempt to take or keep the lease; true when this replica holds it afterwards.
    pub async fn try_acquire(&self) -> Result<bool, kube::Error> {
        let Some(mut lease) = self.api.get_opt(LEASE_NAME).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(LEASE_NAME.into()),
                    ..Default::default()
                },
                spec: Some(self.spec(0)),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
                Err(e) => Err(e),
            };
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let mine = spec.holder_identity.as_deref() == Some(self.identity.as_str());
        let renewed = spec
            .renew_time
            .map(|t| t.0)
            .unwrap_or(Timestamp::UNIX_EPOCH);
        let duration = i64::from(
            spec.lease_duration_seconds
                .unwrap_or(DURATION.as_secs() as i32),
        );
        let expired = Timestamp::now().as_second() - renewed.as_second() > duration;
        if !mine && !expired {
            return Ok(false);
        }
        let transitions = spec.lease_transitions.unwrap_or(0) + i32::from(!mine);
        let mut new_spec = self.spec(transitions);
        if mine {
            new_spec.acquire_time = spec.acquire_time;
        }
        lease.spec = Some(new_spec);
        // The resourceVersion in `lease` makes this a compare-and-swap.
        match self
            .api
            .replace(LEASE_NAME, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Waits until this replica leads (or `shutdown`), then keeps renewing; the returned
    /// token is cancelled when leadership is lost or on shutdown.
    pub async fn lead(self, shutdown: CancellationToken) -> Option<CancellationToken> {
        loop {
            match self.try_acquire().await {
                Ok(true) => break,
                Ok(false) => {}
                Err(e) => warn!("leader election: {e}"),
            }
            tokio::select! {
                _ = shutdown.cancelled() => return None,
                _ = tokio::time::sleep(RENEW) => {}
            }
        }
        info!(identity = %self.identity, "leading");
        let lost = shutdown.child_token();
        let token = lost.clone();
        tokio::spawn(async move {
            let mut last_renewal = tokio::time::Instant::now();
            loop {
                tokio::select! {
                    _ = token.cancelled() => return,
                    _ = tokio::time::sleep(RENEW) => {}
                }
                match self.try_acquire().await {
                    Ok(true) => last_renewal = tokio::time::Instant::now(),
                    Ok(false) => {
                        warn!("leadership lost to another replica");
                        token.cancel();
                        return;
                    }
                    // A transient error: keep leading only while the lease cannot have
                    // expired in the eyes of the others.
                    Err(e) if last_renewal.elapsed() < DURATION - RENEW => {
                        warn!("renewing the lease: {e}")
                    }
                    Err(e) => {
                        warn!("renewing the lease failed for too long: {e}");
                        token.cancel();
                        return;
                    }
                }
            }
        });
        Some(lost)
    }
}
