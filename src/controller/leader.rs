//! Leader election on a `coordination.k8s.io` Lease, so that of several operator replicas
//! exactly one reconciles (every replica serves the webhook). The holder renews the Lease
//! every `RENEW`; another replica takes over once it has *seen* the Lease go unrenewed for
//! `DURATION` on its own monotonic clock (the holder's `renewTime` is never compared with
//! the local wall clock, so skew between nodes cannot shorten a lease). Updates carry the
//! Lease's resourceVersion, so two candidates can never both win. A holder that shuts down
//! releases the Lease, so a successor leads at once.

use std::sync::Mutex;
use std::time::{Duration, Instant};

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
    /// The other holder's Lease as last seen (its resourceVersion, which every renewal
    /// changes) and when this replica first saw that version.
    observed: Mutex<Option<(String, Instant)>>,
}

impl Elector {
    pub fn new(client: Client, namespace: &str, identity: String) -> Elector {
        Elector {
            api: Api::namespaced(client, namespace),
            identity,
            observed: Mutex::new(None),
        }
    }

    /// Whether another holder's Lease has gone unrenewed for its duration, as observed here.
    fn expired(&self, lease: &Lease, duration: Duration) -> bool {
        let version = lease.metadata.resource_version.clone().unwrap_or_default();
        let mut observed = self.observed.lock().unwrap_or_else(|p| p.into_inner());
        match observed.as_ref() {
            Some((seen, since)) if *seen == version => since.elapsed() > duration,
            _ => {
                *observed = Some((version, Instant::now()));
                false
            }
        }
    }

    /// Gives the Lease up (on shutdown): no holder, so another replica takes it at its next
    /// attempt instead of waiting out the duration. Best effort: a failure only means the
    /// successor waits.
    pub async fn release(&self) {
        let Ok(Some(mut lease)) = self.api.get_opt(LEASE_NAME).await else {
            return;
        };
        let spec = lease.spec.get_or_insert_default();
        if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
            return;
        }
        spec.holder_identity = None;
        spec.renew_time = Some(MicroTime(Timestamp::now()));
        match self
            .api
            .replace(LEASE_NAME, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => info!("released the lease"),
            Err(e) => warn!("releasing the lease: {e}"),
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
        let free = spec.holder_identity.as_deref().is_none_or(str::is_empty);
        let duration = spec
            .lease_duration_seconds
            .and_then(|s| u64::try_from(s).ok())
            .map_or(DURATION, Duration::from_secs);
        if !mine && !free && !self.expired(&lease, duration) {
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
    pub async fn lead(
        self: std::sync::Arc<Self>,
        shutdown: CancellationToken,
    ) -> Option<CancellationToken> {
        let acquired = loop {
            let sent = tokio::time::Instant::now();
            match tokio::time::timeout(RENEW, self.try_acquire()).await {
                Ok(Ok(true)) => break sent,
                Ok(Ok(false)) => {}
                Ok(Err(e)) => warn!("leader election: {e}"),
                Err(_) => warn!("leader election: no answer within {RENEW:?}"),
            }
            tokio::select! {
                _ = shutdown.cancelled() => return None,
                _ = tokio::time::sleep(RENEW) => {}
            }
        };
        info!(identity = %self.identity, "leading");
        let lost = shutdown.child_token();
        let token = lost.clone();
        tokio::spawn(async move {
            // When the last successful renewal was *sent*: the API server stored it later,
            // and another replica counts the duration from when it saw it, later still.
            let mut renewed = acquired;
            loop {
                tokio::select! {
                    _ = token.cancelled() => return,
                    _ = tokio::time::sleep(RENEW) => {}
                }
                // Leading ends at this deadline whatever the API server does: a request
                // that hangs (a partition, a frozen server) cannot stretch it. What is left
                // is a margin of one renewal interval before another replica may lead.
                let deadline = renewed + (DURATION - RENEW);
                let sent = tokio::time::Instant::now();
                match tokio::time::timeout_at(deadline, self.try_acquire()).await {
                    Ok(Ok(true)) => renewed = sent,
                    Ok(Ok(false)) => {
                        warn!("leadership lost to another replica");
                        token.cancel();
                        return;
                    }
                    Ok(Err(e)) if tokio::time::Instant::now() < deadline => {
                        warn!("renewing the lease: {e}")
                    }
                    Ok(Err(e)) => {
                        warn!("renewing the lease failed for too long: {e}; no longer leading");
                        token.cancel();
                        return;
                    }
                    Err(_) => {
                        warn!(
                            "the lease was not renewed within {:?}; no longer leading",
                            DURATION - RENEW
                        );
                        token.cancel();
                        return;
                    }
                }
            }
        });
        Some(lost)
    }
}
