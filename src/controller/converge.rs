//! Keeps the running cluster equal to the stored spec, past bootstrap: Patroni's dynamic
//! configuration (parameters, pg_hba, timings, replication mode) gets the difference from
//! what `render` wants, and members Patroni flags for a restart are restarted in a safe
//! order (`restarts.rs`). A converged cluster costs one read (`GET /config` on the leader)
//! and no write.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Endpoints, Pod, Secret};
use kube::api::Api;
use kube::runtime::events::EventType;
use tracing::info;

use super::restarts::{self, Next};
use super::{Context, Scope, publish};
use crate::names;
use crate::patroni::{self, Credentials, Member, RestartRequest, dynamic};
use kube::api::DynamicObject;

/// Why the configuration is not applied: `(reason, message)` for the condition.
pub type NotApplied = (String, String);

fn not_applied(reason: &str, message: impl Into<String>) -> NotApplied {
    (reason.to_owned(), message.into())
}

const APPLYING: &str = "Applying";
const PENDING_RESTART: &str = "PendingRestart";
const RESTARTING: &str = "Restarting";

/// Whether the cluster is moving towards the spec (a change sent, a restart round under
/// way), so that it is worth looking again within seconds rather than at the next resync.
pub fn converging(state: &Result<(), NotApplied>) -> bool {
    let moving = [
        APPLYING,
        PENDING_RESTART,
        RESTARTING,
        super::certificates::CERTIFICATE_PENDING,
    ];
    matches!(state, Err((reason, _)) if moving.contains(&reason.as_str()))
}

/// One pass: at most one PATCH and one restart, then the caller looks again.
pub async fn converge(
    scope: &Scope<'_>,
    desired: &serde_json::Value,
    members: &[Member],
    sync: Option<&[String]>,
    restarts_allowed: bool,
) -> Result<(), NotApplied> {
    let Scope {
        ctx,
        obj,
        namespace,
        name,
        ..
    } = *scope;
    let key = format!("{namespace}/{name}");
    let Some((leader, at)) =
        patroni::member::leader(members).and_then(|l| l.api.clone().map(|at| (l, at)))
    else {
        return Err(not_applied(
            "NoLeader",
            "no running primary to compare the configuration with",
        ));
    };
    // Reads are open; the Secret is read only when there is something to write.
    let current = scope
        .patroni
        .config(&at)
        .await
        .map_err(|e| not_applied("PatroniUnreachable", e.to_string()))?;
    if let Some(patch) = dynamic::diff(&current, desired) {
        writer(scope)
            .await?
            .patch_config(&at, &patch)
            .await
            .map_err(|e| not_applied("PatchFailed", e.to_string()))?;
        let keys = changed_keys(&patch);
        info!(cluster = %key, leader = %leader.name, "sent Patroni's configuration: {keys}");
        publish(
            ctx,
            obj,
            EventType::Normal,
            "ConfigPatched",
            format!("PATCH /config on {}: {keys}", leader.name),
        )
        .await;
        ctx.mark_patched(&key);
        return Err(not_applied(
            APPLYING,
            format!("sent to Patroni: {keys}; every member applies it within one loop"),
        ));
    }
    // Members apply a new configuration on their next loop, and only then report whether
    // it needs a restart: until then "applied" would be a guess.
    let loop_wait = desired["loop_wait"].as_u64().unwrap_or(10);
    if ctx.patched_within(&key, Duration::from_secs(loop_wait + 5)) {
        return Err(not_applied(
            APPLYING,
            "waiting for every member to apply the configuration",
        ));
    }
    if !members.iter().any(Member::pending_restart) {
        return Ok(());
    }
    if !restarts_allowed {
        return Err(not_applied(
            PENDING_RESTART,
            "a rollout replaces the pods; the replacements start with the new configuration",
        ));
    }
    let client = writer(scope).await?;
    restart_next(ctx, obj, &client, &key, members, sync).await
}

/// The members Patroni names synchronous standbys in its `C-sync` key (none when the key
/// does not exist yet).
pub(super) async fn sync_standbys(
    ctx: &Context,
    namespace: &str,
    name: &str,
) -> Result<Vec<String>, kube::Error> {
    let key = names::patroni_sync(name);
    let api: Api<Endpoints> = Api::namespaced(ctx.client.clone(), namespace);
    let endpoints = api.get_opt(&key).await?;
    Ok(patroni::member::sync_standbys(
        endpoints
            .as_ref()
            .and_then(|e| e.metadata.annotations.as_ref())
            .and_then(|a| a.get(patroni::member::SYNC_STANDBY_ANNOTATION))
            .map(String::as_str),
    ))
}

/// The cluster's Patroni client with its `C-patroni-api` credentials, for writes.
pub(super) async fn writer(scope: &Scope<'_>) -> Result<patroni::Client, NotApplied> {
    let credentials = credentials(scope.ctx, scope.namespace, scope.name).await?;
    Ok(scope.patroni.with_credentials(Some(credentials)))
}

/// The Patroni client for the members of cluster `name` running in `pods`: members that
/// serve HTTPS are checked against the `ca.crt` of the Secret they mount as their server
/// certificate (`known`, the spec's, already read this pass; another only while a rollout
/// changes it), for their own name or the primary Service's (see `Client::with_ca`). A
/// Secret that cannot be read leaves a client that refuses those members, with the reason.
pub(super) async fn client_for(
    ctx: &Context,
    namespace: &str,
    name: &str,
    pods: &[Pod],
    known: Option<&super::certificates::ServerTls>,
) -> patroni::Client {
    let secrets: BTreeSet<&str> = pods
        .iter()
        .filter(|p| super::members::serves_https(p))
        .filter_map(super::members::server_tls_secret)
        .collect();
    if secrets.is_empty() {
        return ctx.patroni.clone();
    }
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), namespace);
    let mut pem = Vec::new();
    for name in secrets {
        let read = match known.filter(|k| k.name == name) {
            Some(k) => k.secret.clone(),
            None => api
                .get_opt(name)
                .await
                .map_err(|e| format!("reading Secret {name}: {e}")),
        };
        let ca = match read {
            Ok(Some(secret)) => secret.data.and_then(|mut d| d.remove("ca.crt")),
            Ok(None) => {
                return ctx
                    .patroni
                    .without_ca(format!("Secret {name} does not exist"));
            }
            Err(why) => return ctx.patroni.without_ca(why),
        };
        match ca {
            Some(ca) => pem.extend_from_slice(&ca.0),
            None => {
                return ctx
                    .patroni
                    .without_ca(format!("Secret {name} has no ca.crt"));
            }
        }
    }
    let cluster = format!("{}.{namespace}.svc", names::primary_service(name));
    ctx.patroni
        .with_ca(&pem, &cluster)
        .unwrap_or_else(|why| ctx.patroni.without_ca(format!("ca.crt: {why}")))
}

/// `parameters.work_mem, pg_hba, synchronous_mode`: what a patch changes, without values.
fn changed_keys(patch: &serde_json::Value) -> String {
    let mut keys = Vec::new();
    for (k, v) in patch.as_object().into_iter().flatten() {
        match (k.as_str(), v.as_object()) {
            ("postgresql", Some(pg)) => {
                for (k, v) in pg {
                    match (k.as_str(), v.as_object()) {
                        ("parameters", Some(params)) => {
                            keys.extend(params.keys().map(|p| format!("parameters.{p}")))
                        }
                        _ => keys.push(k.clone()),
                    }
                }
            }
            _ => keys.push(k.clone()),
        }
    }
    keys.sort();
    keys.join(", ")
}

async fn credentials(
    ctx: &Context,
    namespace: &str,
    name: &str,
) -> Result<Credentials, NotApplied> {
    let secret_name = names::patroni_api_secret(name);
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), namespace);
    let secret = api
        .get_opt(&secret_name)
        .await
        .map_err(|e| {
            not_applied(
                "NoCredentials",
                format!("reading Secret {secret_name}: {e}"),
            )
        })?
        .ok_or_else(|| not_applied("NoCredentials", format!("Secret {secret_name} is missing")))?;
    let field = |k: &str| {
        secret
            .data
            .as_ref()
            .and_then(|d| d.get(k))
            .and_then(|b| String::from_utf8(b.0.clone()).ok())
            .filter(|s| !s.is_empty())
            .ok_or_else(|| {
                not_applied(
                    "NoCredentials",
                    format!("Secret {secret_name} has no key {k:?}"),
                )
            })
    };
    Ok(Credentials {
        username: field("username")?,
        password: field("password")?,
    })
}

/// Restarts the next member that waits for it, asking each member for its live state
/// first (what a pod's annotation says may be a loop behind).
async fn restart_next(
    ctx: &Context,
    obj: &DynamicObject,
    client: &patroni::Client,
    key: &str,
    members: &[Member],
    sync: Option<&[String]>,
) -> Result<(), NotApplied> {
    let mut live = Vec::new();
    for m in members {
        let Some(at) = &m.api else {
            return Err(not_applied(
                PENDING_RESTART,
                format!("{} has no address yet", m.name),
            ));
        };
        let state = client
            .member(at)
            .await
            .map_err(|e| not_applied(PENDING_RESTART, format!("{}: {e}", m.name)))?;
        live.push((m.name.clone(), state));
    }
    match restarts::plan(&live, sync) {
        Next::Done => Ok(()),
        Next::Wait(why) => Err(not_applied(PENDING_RESTART, why)),
        Next::Restart { member, why } => {
            let at = members
                .iter()
                .find(|m| m.name == member)
                .and_then(|m| m.api.clone())
                .ok_or_else(|| not_applied(PENDING_RESTART, format!("{member} has no address")))?;
            info!(cluster = %key, %member, "restarting: {why}");
            let started = Instant::now();
            let request = RestartRequest {
                restart_pending: true,
            };
            let result = client.restart(&at, &request).await;
            let took = started.elapsed().as_secs_f64();
            match result {
                Ok(()) => {
                    publish(
                        ctx,
                        obj,
                        EventType::Normal,
                        "Restarted",
                        format!("restarted {member} in {took:.1} s: {why}"),
                    )
                    .await;
                    Err(not_applied(
                        RESTARTING,
                        format!("restarted {member} ({why}); waiting for it to stream"),
                    ))
                }
                Err(e) => {
                    publish(
                        ctx,
                        obj,
                        EventType::Warning,
                        "RestartFailed",
                        format!("restarting {member}: {e}"),
                    )
                    .await;
                    Err(not_applied(
                        PENDING_RESTART,
                        format!("restarting {member}: {e}"),
                    ))
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn events_name_the_keys_not_the_values() {
        let patch = json!({
            "synchronous_mode": true,
            "postgresql": { "pg_hba": ["host all all all reject"], "parameters": { "work_mem": "8MB", "old": null } }
        });
        assert_eq!(
            changed_keys(&patch),
            "parameters.old, parameters.work_mem, pg_hba, synchronous_mode"
        );
    }
}
