//! The slim reconciler. For each PostgresCluster it reads (the object and its children),
//! checks the spec is resolved, renders (pure), applies what differs in a fixed order,
//! prunes what is no longer wanted, and writes status only when it changed. It decides
//! nothing: every value comes from `render`.

mod apply;
mod archiving;
mod backup;
mod certificates;
mod converge;
mod events;
mod inventory;
pub mod leader;
mod members;
mod restarts;
mod restore;
mod rollout;
mod secrets;
mod status;
mod switchover;
mod volumes;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use events::{EventType, Events};
use futures::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams};
use kube::core::PartialObjectMeta;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::api::{PostgresCluster, PostgresClusterStatus, SynchronousMode};
use crate::config::Config;
use crate::names;
use crate::render::{self, Rendered};
use crate::resolve;
use restore::Bootstrap;
use status::Observation;

pub use apply::contains;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("listing {0}: {1}")]
    List(String, #[source] kube::Error),
    #[error("applying {0}: {1}")]
    Apply(String, #[source] kube::Error),
    #[error("deleting {0}: {1}")]
    Delete(String, #[source] kube::Error),
    #[error("serializing {0}: {1}")]
    Serialize(String, String),
    #[error("generating {0}: {1}")]
    Generate(String, String),
    #[error("writing status: {0}")]
    Status(#[source] kube::Error),
    #[error("re-submitting the unresolved spec for admission: {0}")]
    Resubmit(#[source] kube::Error),
    #[error("{0} is not served by this cluster: install cert-manager, or use spec.tls.secretName")]
    MissingApi(&'static str),
    #[error(
        "{0} exists and was not created by pgpilot for this cluster: nothing was changed; rename the cluster or remove the object"
    )]
    Conflict(String),
    #[error("stopped: this replica no longer leads")]
    NotLeading,
}

impl Error {
    /// Short PascalCase reason for conditions and events.
    fn reason(&self) -> &'static str {
        match self {
            Error::List(..) => "ListFailed",
            Error::Apply(..) => "ApplyFailed",
            Error::Delete(..) => "DeleteFailed",
            Error::Serialize(..) => "SerializeFailed",
            Error::Generate(..) => "GenerateFailed",
            Error::Status(..) => "StatusFailed",
            Error::Resubmit(..) => "ResubmitFailed",
            Error::MissingApi(..) => "MissingApi",
            Error::Conflict(..) => "Conflict",
            Error::NotLeading => "NotLeading",
        }
    }
}

/// How the controller runs.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Namespace of the leader-election Lease.
    pub lease_namespace: String,
    /// How often an unchanged cluster is looked at again.
    pub resync: Duration,
    /// The one namespace whose clusters this operator manages (`--watch-namespace`), or
    /// `None` for every namespace. Every watch is then made in that namespace only, so a
    /// RoleBinding there is all the access the operator needs beside its Lease.
    pub namespace: Option<String>,
    /// Where reconciles and leadership are counted (served by the webhook's `/metrics`).
    pub metrics: Arc<crate::metrics::Metrics>,
}

/// Shared state of the reconciler.
pub struct Context {
    pub client: Client,
    pub config: Config,
    pub resync: Duration,
    /// See [`Settings::namespace`].
    pub namespace: Option<String>,
    pub events: Events,
    /// Consecutive failures per cluster, for the retry backoff.
    failures: Mutex<HashMap<String, u32>>,
    /// Patroni's REST API (one connection pool for every cluster).
    pub patroni: crate::patroni::Client,
    /// When each cluster's Patroni configuration was last patched.
    patched: Mutex<HashMap<String, Instant>>,
    /// Per cluster, the pod a rollout evicted last and when, until it is back.
    replacing: Mutex<HashMap<String, (String, Instant)>>,
    /// Per cluster, the server certificate's Secret version and the pods last found
    /// serving it.
    certificates: Mutex<HashMap<String, String>>,
    /// Per member, when it was last asked to reload for a certificate.
    reloads: Mutex<HashMap<String, Instant>>,
    /// Per cluster, the newest backup (Unix seconds) a listing of the inventory was last
    /// asked for after, and when.
    listings: Mutex<HashMap<String, (Option<i64>, Instant)>>,
    /// Members asked to re-create themselves after an in-place restore, as
    /// `namespace/cluster/id/member` (asking again after a restart only copies again).
    reinitialized: Mutex<std::collections::HashSet<String>>,
    metrics: Arc<crate::metrics::Metrics>,
    /// Cancelled when this replica stops leading: every reconcile still running is dropped
    /// at its next await, so nothing is sent after the lease may have passed to another.
    leading: CancellationToken,
}

impl Context {
    pub fn new(
        client: Client,
        config: Config,
        settings: &Settings,
        instance: String,
        leading: CancellationToken,
    ) -> Arc<Context> {
        Arc::new(Context {
            events: Events::new(client.clone(), "pgpilot", instance),
            client,
            config,
            resync: settings.resync,
            namespace: settings.namespace.clone(),
            failures: Mutex::default(),
            patroni: crate::patroni::Client::new(),
            patched: Mutex::default(),
            replacing: Mutex::default(),
            certificates: Mutex::default(),
            reloads: Mutex::default(),
            listings: Mutex::default(),
            reinitialized: Mutex::default(),
            metrics: settings.metrics.clone(),
            leading,
        })
    }

    /// Forgets a member marked by `reinitialize_once` (the ask failed: ask again).
    fn forget_reinitialize(&self, key: &str) {
        let mut r = self.reinitialized.lock().unwrap_or_else(|p| p.into_inner());
        r.remove(key);
    }

    /// Whether `key` was already asked to re-create itself; marks it.
    fn reinitialize_once(&self, key: String) -> bool {
        let mut r = self.reinitialized.lock().unwrap_or_else(|p| p.into_inner());
        !r.insert(key)
    }

    fn mark_patched(&self, cluster: &str) {
        let mut p = self.patched.lock().unwrap_or_else(|p| p.into_inner());
        p.insert(cluster.to_owned(), Instant::now());
    }

    fn replacing(&self, cluster: &str, pod: &str) {
        let mut r = self.replacing.lock().unwrap_or_else(|p| p.into_inner());
        r.insert(cluster.to_owned(), (pod.to_owned(), Instant::now()));
    }

    /// The pod evicted last for `cluster`, forgotten once asked for.
    fn replaced(&self, cluster: &str) -> Option<(String, Instant)> {
        let mut r = self.replacing.lock().unwrap_or_else(|p| p.into_inner());
        r.remove(cluster)
    }

    fn certificates_verified(&self, cluster: &str) -> Option<String> {
        let c = self.certificates.lock().unwrap_or_else(|p| p.into_inner());
        c.get(cluster).cloned()
    }

    fn certificates_ok(&self, cluster: &str, fingerprint: String) {
        let mut c = self.certificates.lock().unwrap_or_else(|p| p.into_inner());
        c.insert(cluster.to_owned(), fingerprint);
    }

    /// True (and remembered) when `member` was not asked to reload within `every`.
    /// Whether to ask for a listing of `cluster`'s backups now: at once for a backup newer
    /// than the one last asked about, else at most once per `every`.
    fn may_ask_listing(&self, cluster: &str, newest: Option<i64>, every: Duration) -> bool {
        let mut l = self.listings.lock().unwrap_or_else(|p| p.into_inner());
        if l.get(cluster)
            .is_some_and(|(asked, t)| *asked == newest && t.elapsed() < every)
        {
            return false;
        }
        l.insert(cluster.to_owned(), (newest, Instant::now()));
        true
    }

    fn may_reload(&self, member: &str, every: Duration) -> bool {
        let mut r = self.reloads.lock().unwrap_or_else(|p| p.into_inner());
        if r.get(member).is_some_and(|t| t.elapsed() < every) {
            return false;
        }
        r.insert(member.to_owned(), Instant::now());
        true
    }

    fn patched_within(&self, cluster: &str, window: Duration) -> bool {
        let p = self.patched.lock().unwrap_or_else(|p| p.into_inner());
        p.get(cluster).is_some_and(|t| t.elapsed() < window)
    }
}

/// The cluster one reconcile works on, as each day-2 step needs it: the context to act
/// with and the object to report Events on.
#[derive(Clone, Copy)]
pub(crate) struct Scope<'a> {
    pub ctx: &'a Context,
    pub obj: &'a DynamicObject,
    pub namespace: &'a str,
    pub name: &'a str,
    /// Patroni's REST API as this cluster's members serve it (with its CA under TLS).
    pub patroni: &'a crate::patroni::Client,
}

/// How soon to look again while a change is being applied (Patroni settles within a loop).
const CONVERGING_REQUEUE: Duration = Duration::from_secs(3);

/// The API resource of PostgresCluster. The controller watches it untyped, so that one
/// malformed stored object (written while the webhook was bypassed) cannot stall the watch
/// of every other cluster: each object is parsed in `reconcile`, and a bad one is reported
/// on its own status.
pub fn cluster_resource() -> ApiResource {
    ApiResource::erase::<PostgresCluster>(&())
}

/// Runs the controller until `shutdown` is cancelled.
pub async fn run(ctx: Arc<Context>, shutdown: CancellationToken) {
    let client = ctx.client.clone();
    let namespace = ctx.namespace.as_deref();
    let clusters: Api<DynamicObject> = match namespace {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &cluster_resource()),
        None => Api::all_with(client.clone(), &cluster_resource()),
    };
    let owned = || watcher::Config::default().labels("app.kubernetes.io/managed-by=pgpilot");
    // Creating a cluster's children fires a burst of watch events for it; waiting a moment
    // turns the burst into one reconcile instead of one per child.
    let config = kube::runtime::controller::Config::default().debounce(Duration::from_millis(500));
    Controller::new_with(clusters, watcher::Config::default(), cluster_resource())
        .with_config(config)
        .owns(watched::<StatefulSet>(&client, namespace), owned())
        .owns(watched::<Service>(&client, namespace), owned())
        .owns(watched::<NetworkPolicy>(&client, namespace), owned())
        .owns(watched::<ConfigMap>(&client, namespace), owned())
        .owns(watched::<Secret>(&client, namespace), owned())
        .owns(watched::<PodDisruptionBudget>(&client, namespace), owned())
        .owns(watched::<CronJob>(&client, namespace), owned())
        .owns(watched::<Deployment>(&client, namespace), owned())
        .owns(watched::<Job>(&client, namespace), owned())
        .owns(watched::<ServiceAccount>(&client, namespace), owned())
        .owns(watched::<Role>(&client, namespace), owned())
        .owns(watched::<RoleBinding>(&client, namespace), owned())
        .watches_stream(archive_reports(&client, namespace), |pod| {
            let cluster = pod.labels().get(names::CLUSTER_LABEL)?;
            let namespace = pod.namespace()?;
            Some(ObjectRef::new_with(cluster, cluster_resource()).within(&namespace))
        })
        .graceful_shutdown_on(async move { shutdown.cancelled().await })
        .run(timed_reconcile, error_policy, ctx)
        .for_each(|result| async move {
            match result {
                Ok((obj, _)) => tracing::debug!(cluster = %obj.name, "reconciled"),
                Err(e) => warn!("reconcile: {e}"),
            }
        })
        .await;
}

/// The objects of kind `K` in `namespace`, or in every namespace.
fn watched<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// The database pods' metadata, passed on only when a pod's archive report (annotation
/// `pgpilot.io/archive`, see `archiving`) changed: a failing push reaches the cluster's
/// `ContinuousArchiving` at once, while Patroni's own updates of the pods (its member
/// annotation changes with every WAL position) wake nothing.
fn archive_reports(
    client: &Client,
    namespace: Option<&str>,
) -> impl futures::Stream<Item = Result<PartialObjectMeta<Pod>, watcher::Error>> + Send + 'static {
    let selector = format!(
        "app.kubernetes.io/managed-by=pgpilot,app.kubernetes.io/component={}",
        render::component::DATABASE
    );
    let report = |pod: &PartialObjectMeta<Pod>| {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        pod.annotations()
            .get(render::ARCHIVE_ANNOTATION)
            .hash(&mut h);
        Some(h.finish())
    };
    // An `Api` of `PartialObjectMeta` asks for metadata only.
    watcher(
        watched::<PartialObjectMeta<Pod>>(client, namespace),
        watcher::Config::default().labels(&selector),
    )
    .default_backoff()
    .applied_objects()
    .predicate_filter(report, Default::default())
}

/// An error message short enough for a condition or an event: the API server's answers
/// quote whole objects, which nobody reads in `kubectl describe`.
fn brief(message: String) -> String {
    const MAX: usize = 512;
    if message.len() <= MAX {
        return message;
    }
    let mut end = MAX;
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &message[..end])
}

fn key(obj: &DynamicObject) -> String {
    format!("{}/{}", obj.namespace().unwrap_or_default(), obj.name_any())
}

fn error_policy(obj: Arc<DynamicObject>, error: &Error, ctx: Arc<Context>) -> Action {
    if matches!(error, Error::NotLeading) {
        return Action::await_change();
    }
    let n = {
        let mut f = ctx.failures.lock().unwrap_or_else(|p| p.into_inner());
        let n = f.entry(key(&obj)).or_default();
        *n = n.saturating_add(1);
        *n
    };
    // 2 s, 4 s, 8 s ... at most 5 minutes.
    let delay = Duration::from_secs(2u64.saturating_pow(n.min(9)).min(300));
    warn!(cluster = %key(&obj), attempt = n, "{error}; retrying in {delay:?}");
    Action::requeue(delay)
}

pub(crate) async fn publish(
    ctx: &Context,
    obj: &DynamicObject,
    type_: EventType,
    reason: &str,
    note: String,
) {
    publish_about(ctx, obj, type_, reason, note, None).await;
}

/// [`publish`] with a related object (the backup Job a backup Event is about).
pub(crate) async fn publish_about(
    ctx: &Context,
    obj: &DynamicObject,
    type_: EventType,
    reason: &str,
    note: String,
    related: Option<k8s_openapi::api::core::v1::ObjectReference>,
) {
    let reference = obj.object_ref(&cluster_resource());
    if let Err(e) = ctx
        .events
        .publish(&reference, type_, reason, note, related)
        .await
    {
        warn!("publishing event: {e}");
    }
}

/// [`reconcile`], counted and timed in the metrics.
async fn timed_reconcile(obj: Arc<DynamicObject>, ctx: Arc<Context>) -> Result<Action, Error> {
    let start = Instant::now();
    let result = tokio::select! {
        biased;
        _ = ctx.leading.cancelled() => return Err(Error::NotLeading),
        result = reconcile(obj, ctx.clone()) => result,
    };
    ctx.metrics.reconciled(result.is_ok(), start.elapsed());
    result
}

async fn reconcile(obj: Arc<DynamicObject>, ctx: Arc<Context>) -> Result<Action, Error> {
    if obj.meta().deletion_timestamp.is_some() {
        let namespace = obj.namespace().unwrap_or_default();
        ctx.metrics.set_backups(&namespace, &obj.name_any(), None);
        // Children carry owner references: the garbage collector removes them.
        return Ok(Action::await_change());
    }
    let namespace = obj.namespace().unwrap_or_default();
    let api: Api<PostgresCluster> = Api::namespaced(ctx.client.clone(), &namespace);
    let status_api: Api<DynamicObject> =
        Api::namespaced_with(ctx.client.clone(), &namespace, &cluster_resource());

    let value = serde_json::to_value(obj.as_ref())
        .map_err(|e| Error::Serialize(obj.name_any(), e.to_string()))?;
    let cluster: PostgresCluster = match crate::manifest::from_value(value) {
        Ok(c) => c,
        Err(e) => {
            // Not something retrying can fix: say so on the object and wait for an edit.
            let message = format!("the stored object cannot be read: {e}");
            publish(
                &ctx,
                &obj,
                EventType::Warning,
                "InvalidObject",
                message.clone(),
            )
            .await;
            let observation = Observation {
                generation: obj.metadata.generation,
                resolved: Err(("InvalidObject".into(), message)),
                reconciled: Err(("InvalidObject".into(), "not rendered".into())),
                ..Default::default()
            };
            let old = obj
                .data
                .get("status")
                .and_then(|s| serde_json::from_value::<PostgresClusterStatus>(s.clone()).ok());
            write_status(&status_api, &obj.name_any(), &observation, old.as_ref()).await?;
            return Ok(Action::await_change());
        }
    };
    let name = cluster.name_any();

    let mut observation = Observation {
        generation: cluster.metadata.generation,
        desired: cluster.spec.instances.unwrap_or(0),
        ..Default::default()
    };
    if !resolve::is_resolved(&cluster.spec, &ctx.config) {
        // Stored while the webhook was bypassed, or before a newer field existed. Render
        // nothing and send the object through admission again: an empty patch is an UPDATE
        // that the mutating webhook resolves.
        observation.resolved = Err((
            "NotResolved".into(),
            "the spec lacks defaults; re-submitted to the admission webhook".into(),
        ));
        observation.reconciled = Err((
            "NotResolved".into(),
            "nothing is rendered from an unresolved spec".into(),
        ));
        write_status(&status_api, &name, &observation, cluster.status.as_ref()).await?;
        api.patch(
            &name,
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({})),
        )
        .await
        .map_err(Error::Resubmit)?;
        publish(
            &ctx,
            &obj,
            EventType::Normal,
            "Resubmitted",
            "the unresolved spec was sent through admission".into(),
        )
        .await;
        return Ok(Action::requeue(Duration::from_secs(10)));
    }

    // Defence in depth: a spec stored while the validating webhook was absent renders
    // nothing until it is fixed. Checked as an update to itself: the rules about the stored
    // object as it stands, not those about a request (an operation annotation that was
    // carried out stays valid).
    let outcome = crate::validate::validate_with(&cluster, Some(&cluster), &ctx.config);
    if !outcome.is_valid() {
        let errors: Vec<String> = outcome.errors.iter().map(ToString::to_string).collect();
        let message = brief(format!("the stored spec is invalid: {}", errors.join("; ")));
        observation.resolved = Err(("Invalid".into(), message.clone()));
        observation.reconciled = Err((
            "Invalid".into(),
            "nothing is rendered from an invalid spec".into(),
        ));
        write_status(&status_api, &name, &observation, cluster.status.as_ref()).await?;
        publish(&ctx, &obj, EventType::Warning, "Invalid", message).await;
        return Ok(Action::await_change());
    }

    let paused = cluster.spec.paused == Some(true);
    observation.paused = paused;
    let scope = Scope {
        ctx: &ctx,
        obj: &obj,
        namespace: &namespace,
        name: &name,
        patroni: &ctx.patroni,
    };
    // A cluster created from a backup: its instances wait for the restore Job.
    let bootstrap = restore::stage(&scope, &cluster).await?;
    let mut rendered = render::render(&cluster);
    match (&mut rendered, &bootstrap) {
        (Ok(r), Bootstrap::Waiting(restore)) => {
            restore::hold(r, &name, None);
            if let Ok(restore) = restore {
                r.config_maps.push(restore.config_map.clone());
            }
        }
        (Ok(r), Bootstrap::Starting(_)) => restore::hold(r, &name, Some(1)),
        _ => {}
    }
    // An in-place restore: the instances stop, one starts, then all.
    let in_place = restore::in_place(&scope, &cluster).await?;
    if let (Ok(r), Some(step)) = (&mut rendered, &in_place) {
        if let Some(n) = step.instances {
            restore::hold(r, &name, Some(n));
        }
        if let Some(restore) = &step.restore {
            r.config_maps.push(restore.config_map.clone());
        }
    }
    let result = match &rendered {
        Ok(_) if paused => {
            observation.reconciled = Err((
                status::PAUSED.into(),
                "spec.paused: no child object is applied".into(),
            ));
            Ok(())
        }
        Ok(rendered) => materialize(&ctx, &obj, &cluster, rendered).await,
        Err(e) => {
            observation.reconciled = Err(("RenderFailed".into(), e.to_string()));
            publish(
                &ctx,
                &obj,
                EventType::Warning,
                "RenderFailed",
                e.to_string(),
            )
            .await;
            Ok(())
        }
    };
    if let Err(e) = &result {
        observation.reconciled = Err((e.reason().into(), brief(e.to_string())));
        publish(
            &ctx,
            &obj,
            EventType::Warning,
            e.reason(),
            brief(e.to_string()),
        )
        .await;
    }

    let sts: Api<StatefulSet> = Api::namespaced(ctx.client.clone(), &namespace);
    let sts = sts
        .get_opt(&names::statefulset(&name))
        .await
        .map_err(|e| Error::List("StatefulSet".into(), e))?;
    (observation.ready, observation.started) = status::ready_replicas(sts.as_ref());
    let pods = members::pods(&ctx.client, &namespace, &name).await?;
    observation.primary = members::labelled_primary(&pods);
    let members = members::from_pods(&pods);
    let server_tls =
        certificates::read(&ctx, &namespace, cluster.spec.server_tls_secret(&name)).await;
    let patroni = converge::client_for(&ctx, &namespace, &name, &pods, server_tls.as_ref()).await;
    let scope = Scope {
        patroni: &patroni,
        ..scope
    };
    // In a synchronous mode, the standbys Patroni may promote (an unreadable key names
    // none: every step that needs one waits).
    let sync = match cluster
        .spec
        .patroni
        .as_ref()
        .and_then(|p| p.synchronous_mode)
    {
        Some(SynchronousMode::Sync | SynchronousMode::Strict) => Some(
            converge::sync_standbys(&ctx, &namespace, &name)
                .await
                .unwrap_or_default(),
        ),
        _ => None,
    };
    observation.members = members::views(&members, sync.as_deref());
    // The day-2 steps act only on a cluster whose children are applied and not paused.
    let acting = result.is_ok() && rendered.is_ok() && !paused;
    observation.bootstrap = match bootstrap {
        Bootstrap::Initdb => None,
        Bootstrap::Restored(c) | Bootstrap::Starting(c) | Bootstrap::Waiting(Err(c)) => Some(c),
        Bootstrap::Waiting(Ok(restore)) if acting => {
            Some(restore::carry_out(&scope, &restore).await?)
        }
        Bootstrap::Waiting(Ok(_)) => Some((
            "False",
            "Waiting".into(),
            "the restore starts once the children are applied and the cluster is not paused".into(),
        )),
    };
    observation.restore = match in_place {
        Some(step) if acting => {
            let stored = cluster.status.as_ref().and_then(|s| s.restore.as_ref());
            Some(
                restore::carry_out_in_place(
                    &scope,
                    step,
                    stored,
                    &pods,
                    &members,
                    observation.desired,
                )
                .await?,
            )
        }
        Some(step) => Some(step.record),
        None => None,
    };
    if acting {
        observation.rolling =
            rollout::step(&scope, sts.as_ref(), &pods, &members, sync.as_deref()).await;
    }
    // A switchover asked for by annotation, once no rollout runs.
    if acting
        && observation.rolling.is_ok()
        && let Some((value, pending)) = switchover::requested(&cluster)
    {
        let patroni = cluster.spec.patroni.as_ref();
        let seconds = |v: Option<i32>| u64::try_from(v.unwrap_or(0)).unwrap_or(0);
        let grace = Duration::from_secs(
            seconds(patroni.and_then(|p| p.ttl)) + seconds(patroni.and_then(|p| p.loop_wait)),
        );
        let outcome = switchover::carry_out(
            &scope,
            &pods,
            &members,
            sync.as_deref(),
            &value,
            pending.as_ref(),
            grace,
        )
        .await;
        match outcome {
            Ok(done) => {
                // Recorded at once: a request is carried out once, even if the status
                // written below fails.
                switchover::record(&scope, &done)
                    .await
                    .map_err(Error::Status)?;
                observation.switchover = Some(done);
            }
            Err(waiting) => observation.rolling = Err(waiting),
        }
    }
    // Backups: WAL archiving as the primary reports it, the outcome of the newest backup
    // Job, and a backup asked for by annotation.
    backup::observe(&scope, &cluster, &pods, &members, acting, &mut observation).await?;
    observation.config = match (&result, &rendered) {
        _ if paused => Err((
            status::PAUSED.into(),
            "spec.paused: nothing is sent to Patroni".into(),
        )),
        (Ok(()), Ok(r)) => {
            converge::converge(
                &scope,
                &r.patroni_dynamic_config,
                &members,
                sync.as_deref(),
                // Replaced pods start with the new configuration: no restarts meanwhile.
                observation.rolling.is_ok(),
            )
            .await
        }
        _ => Err((
            "NotReconciled".into(),
            "the children are not applied; nothing is sent to Patroni".into(),
        )),
    };
    if let (Ok(()), false) = (&observation.config, paused) {
        observation.config = certificates::step(&scope, server_tls.as_ref(), &pods, &members).await;
    }
    write_status(&status_api, &name, &observation, cluster.status.as_ref()).await?;

    result?;
    ctx.failures
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .remove(&key(&obj));
    if converge::converging(&observation.config) || observation.rolling.is_err() {
        return Ok(Action::requeue(CONVERGING_REQUEUE));
    }
    // Pods change readiness without touching any owned object: look again now and then.
    Ok(Action::requeue(ctx.resync))
}

/// Applies every rendered child in dependency order, then prunes.
async fn materialize(
    ctx: &Context,
    obj: &DynamicObject,
    cluster: &PostgresCluster,
    r: &Rendered,
) -> Result<(), Error> {
    let client = &ctx.client;
    let ns = cluster.namespace().unwrap_or_default();
    let name = cluster.name_any();
    let uid = cluster.uid().unwrap_or_default();
    let selector = format!(
        "{}={name},app.kubernetes.io/managed-by=pgpilot",
        names::CLUSTER_LABEL
    );
    let mut changes = Vec::new();
    // An error that must not stop the remaining steps; returned at the end.
    let mut deferred: Option<Error> = None;

    macro_rules! step {
        ($kind:ty, $desired:expr) => {{
            let api: Api<$kind> = Api::namespaced(client.clone(), &ns);
            let live = apply::list(&api, &selector).await?;
            changes.extend(apply::apply_all(&api, $desired, &live, &uid).await?);
            changes.extend(apply::prune(&api, $desired, &live, &uid).await?);
        }};
    }
    // RBAC → ConfigMaps and Secrets → Services → NetworkPolicies → StatefulSets → PDB → CronJobs → pooler → Jobs.
    step!(ServiceAccount, &r.service_accounts);
    step!(Role, &r.roles);
    step!(RoleBinding, &r.role_bindings);
    step!(ConfigMap, &r.config_maps);
    {
        let api: Api<Secret> = Api::namespaced(client.clone(), &ns);
        let live = apply::list(&api, &selector).await?;
        changes.extend(secrets::ensure(&api, &r.secrets, &live, &uid).await?);
        let wanted: Vec<Secret> = r
            .secrets
            .iter()
            .map(|t| Secret {
                metadata: t.metadata.clone(),
                ..Default::default()
            })
            .collect();
        changes.extend(apply::prune(&api, &wanted, &live, &uid).await?);
    }
    step!(Service, &r.services);
    step!(NetworkPolicy, &r.network_policies);
    {
        // A StatefulSet's volume claim templates cannot change after creation: keep the live
        // ones, and grow the claims themselves when the spec asks for more space.
        let api: Api<StatefulSet> = Api::namespaced(client.clone(), &ns);
        let live = apply::list(&api, &selector).await?;
        let desired: Vec<StatefulSet> = r
            .stateful_sets
            .iter()
            .map(|d| {
                let mut d = d.clone();
                if let Some(l) = live.iter().find(|l| l.metadata.name == d.metadata.name)
                    && let (Some(ds), Some(ls)) = (d.spec.as_mut(), l.spec.as_ref())
                {
                    ds.volume_claim_templates = ls.volume_claim_templates.clone();
                }
                d
            })
            .collect();
        changes.extend(apply::apply_all(&api, &desired, &live, &uid).await?);
        changes.extend(apply::prune(&api, &desired, &live, &uid).await?);
        let (grown, refused) = volumes::grow(client, &ns, &r.stateful_sets).await?;
        changes.extend(grown);
        deferred = deferred.or(refused);
    }
    step!(PodDisruptionBudget, &r.pod_disruption_budgets);
    step!(CronJob, &r.cron_jobs);
    step!(Deployment, &r.deployments);
    {
        // On-demand backup Jobs are made once per request (see `backup`), the restore Job
        // once per cluster (see `restore`): never applied or pruned with the rendered ones.
        let api: Api<Job> = Api::namespaced(client.clone(), &ns);
        let selector = format!(
            "{selector},!{},!{}",
            names::BACKUP_REQUEST_LABEL,
            names::RESTORE_LABEL
        );
        let live = apply::list(&api, &selector).await?;
        changes.extend(apply::apply_all(&api, &r.jobs, &live, &uid).await?);
        changes.extend(apply::prune(&api, &r.jobs, &live, &uid).await?);
    }
    if !r.certificates.is_empty() {
        let api: Api<DynamicObject> =
            Api::namespaced_with(client.clone(), &ns, &render::certificate_resource());
        for cert in &r.certificates {
            let cert_name = cert.name_any();
            let current = match api.get_opt(&cert_name).await {
                Ok(c) => c,
                // No JSON Status in the answer: the API group itself is missing.
                Err(kube::Error::Api(s)) if s.code == 404 => {
                    return Err(Error::MissingApi("cert-manager.io/v1 Certificate"));
                }
                Err(e) => return Err(Error::List("Certificate".into(), e)),
            };
            if current
                .as_ref()
                .is_some_and(|c| !apply::controlled_by(c, &uid))
            {
                return Err(Error::Conflict(format!("Certificate/{cert_name}")));
            }
            let want = serde_json::to_value(cert)
                .map_err(|e| Error::Serialize(cert_name.clone(), e.to_string()))?;
            let have = current
                .as_ref()
                .map(serde_json::to_value)
                .transpose()
                .map_err(|e| Error::Serialize(cert_name.clone(), e.to_string()))?;
            let compare = serde_json::json!({ "spec": want["spec"] });
            let change = apply::apply_one(
                &api,
                "Certificate",
                &cert_name,
                &want,
                &compare,
                have.as_ref(),
            )
            .await?;
            changes.extend(change);
        }
    }

    for change in &changes {
        info!(cluster = %format!("{ns}/{name}"), "{change}");
    }
    if let Some((reason, note)) = apply::summary(&changes) {
        publish(ctx, obj, EventType::Normal, reason, note).await;
    }
    deferred.map_or(Ok(()), Err)
}

/// Writes the status when it differs from the stored one.
/// Untyped, so the answer parses even for a stored object pgpilot cannot read.
async fn write_status(
    api: &Api<DynamicObject>,
    name: &str,
    o: &Observation,
    old: Option<&PostgresClusterStatus>,
) -> Result<(), Error> {
    let now = Time(Timestamp::now());
    let new = status::status(o, old, now);
    if old == Some(&new) {
        return Ok(());
    }
    let new =
        serde_json::to_value(&new).map_err(|e| Error::Serialize(name.into(), e.to_string()))?;
    let old = old.and_then(|o| serde_json::to_value(o).ok());
    let patch = serde_json::json!({
        "status": old.map_or_else(|| new.clone(), |old| status::merge_patch(&old, &new))
    });
    api.patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(Error::Status)?;
    Ok(())
}

/// A Kubernetes client from a kubeconfig file, or from the environment (in-cluster service
/// account, then `KUBECONFIG`) when none is given.
pub async fn client(kubeconfig: Option<&std::path::Path>) -> Result<Client, String> {
    let config = match kubeconfig {
        Some(path) => {
            let raw = kube::config::Kubeconfig::read_from(path)
                .map_err(|e| format!("reading {}: {e}", path.display()))?;
            kube::Config::from_custom_kubeconfig(raw, &kube::config::KubeConfigOptions::default())
                .await
                .map_err(|e| format!("loading {}: {e}", path.display()))?
        }
        None => kube::Config::infer()
            .await
            .map_err(|e| format!("finding Kubernetes credentials: {e}"))?,
    };
    Client::try_from(config).map_err(|e| format!("creating the Kubernetes client: {e}"))
}

/// This process's name in leader election and events: the pod name when deployed.
pub fn identity() -> String {
    std::env::var("POD_NAME").unwrap_or_else(|_| {
        let host = std::env::var("HOSTNAME")
            .ok()
            .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
            .unwrap_or_default();
        format!("{}-{}", host.trim(), std::process::id())
    })
}

/// Runs the controller whenever this replica holds the lease, until `shutdown`.
pub async fn run_elected(
    client: Client,
    config: Config,
    settings: Settings,
    shutdown: CancellationToken,
) {
    let identity = identity();
    loop {
        let elector = Arc::new(leader::Elector::new(
            client.clone(),
            &settings.lease_namespace,
            identity.clone(),
        ));
        let Some(leading) = elector.clone().lead(shutdown.clone()).await else {
            return;
        };
        let ctx = Context::new(
            client.clone(),
            config.clone(),
            &settings,
            identity.clone(),
            leading.clone(),
        );
        settings.metrics.set_leading(true);
        // The gauge falls the moment leading ends: that is when reconciles stop acting,
        // before the controller's watches have wound down.
        let gauge = tokio::spawn({
            let (leading, metrics) = (leading.clone(), settings.metrics.clone());
            async move {
                leading.cancelled().await;
                metrics.set_leading(false);
            }
        });
        run(ctx, leading.clone()).await;
        leading.cancel();
        let _ = gauge.await;
        if shutdown.is_cancelled() {
            elector.release().await;
            return;
        }
        info!("stopped reconciling; waiting to lead again");
    }
}
