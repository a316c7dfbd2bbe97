//! `validate`: every field error of a spec at once, plus warnings for legal but risky
//! choices. Pure and total. Rules are grouped by the part of the spec they read; update
//! rules (`old` is the stored object) live in `update.rs`, and the warnings for parameter
//! changes that need a PostgreSQL restart in `restart.rs`.

mod backup;
mod cron;
mod field;
mod operations;
pub mod pg_settings;
mod policy;
mod postgres;
mod restart;
mod restore;
pub mod roles;
pub mod structure;
mod update;

use k8s_openapi::api::core::v1::ResourceRequirements;

use crate::api::*;
use crate::names::{self, BackupType};
use crate::quantity;

pub use field::{ErrorKind, Errors, FieldError, Path};
pub use restore::SourceLookup;

/// The PostgreSQL major versions the API accepts.
pub const SUPPORTED_VERSIONS: std::ops::RangeInclusive<i32> = 14..=18;
pub const MAX_INSTANCES: i32 = 16;

/// The result of validation: an object is admitted when `errors` is empty; `warnings` are
/// said back to the client either way.
#[derive(Debug, Default, PartialEq)]
pub struct Outcome {
    pub errors: Vec<FieldError>,
    pub warnings: Vec<String>,
}

impl Outcome {
    pub fn is_valid(&self) -> bool {
        self.errors.is_empty()
    }
}

/// Validates `new`, and on UPDATE the transition from `old`.
pub fn validate(new: &PostgresCluster, old: Option<&PostgresCluster>) -> Outcome {
    let mut e = Errors::default();
    metadata(new, &mut e);
    operations::check(new, old, &mut e);
    spec(&new.spec, &mut e);
    restore::bootstrap(new, old, &mut e);
    restore::in_place(new, old, &mut e);
    if let Some(old) = old {
        update::transition(&new.spec, &old.spec, &mut e);
        restart::parameters(&new.spec, &old.spec, &mut e);
    }
    Outcome {
        errors: e.errors,
        warnings: e.warnings,
    }
}

/// [`validate`], and the operator's policy (allowed images and priority classes): what
/// admission and the controller check.
pub fn validate_with(
    new: &PostgresCluster,
    old: Option<&PostgresCluster>,
    config: &crate::config::Config,
) -> Outcome {
    let mut outcome = validate(new, old);
    let mut e = Errors::default();
    policy::check(&new.spec, &config.policy, &mut e);
    outcome.errors.extend(e.errors);
    outcome
}

/// What admission adds when it has looked up the source of a new cluster's restore
/// ([`restore::source`]).
pub fn restore_source(new: &PostgresCluster, found: &SourceLookup) -> Outcome {
    let mut e = Errors::default();
    restore::source(new, found, &mut e);
    Outcome {
        errors: e.errors,
        warnings: e.warnings,
    }
}

/// [`validate`] of an object read leniently ([`structure::read`]), `new` being its cluster
/// (resolved or not): the structural errors first, then the others not about the same
/// fields.
pub fn validate_read(
    read: &structure::Lenient,
    new: &PostgresCluster,
    old: Option<&PostgresCluster>,
    config: &crate::config::Config,
) -> Outcome {
    let outcome = validate_with(new, old, config);
    Outcome {
        errors: read.merge(outcome.errors),
        warnings: outcome.warnings,
    }
}

fn metadata(c: &PostgresCluster, e: &mut Errors) {
    let path = Path::new("metadata").child("name");
    let (name, generated) = match (&c.metadata.name, &c.metadata.generate_name) {
        (Some(n), _) if !n.is_empty() => (n.clone(), false),
        // A generated name is the prefix plus five random characters.
        (_, Some(g)) if !g.is_empty() => (format!("{g}xxxxx"), true),
        _ => return e.required(&path, "a cluster needs a name"),
    };
    let path = if generated {
        Path::new("metadata").child("generateName")
    } else {
        path
    };
    if !names::is_dns1035_label(&name) {
        return e.invalid_str(
            &path,
            &name,
            "must be a DNS-1035 label: lower-case letters, digits and '-', starting with a letter and ending with a letter or digit",
        );
    }
    for (child, kind, max) in child_names(&name, &c.spec) {
        if child.len() > max {
            let allowed = max.saturating_sub(child.len() - name.len());
            e.invalid_str(
                &path,
                &name,
                format!("must be no more than {allowed} characters: the {kind} {child:?} would exceed Kubernetes' limit of {max}"),
            );
            return;
        }
    }
}

/// The children whose names grow with the cluster name, with Kubernetes' limit for each.
fn child_names(name: &str, spec: &PostgresClusterSpec) -> Vec<(String, &'static str, usize)> {
    let hash = "x".repeat(names::ROLES_HASH_LEN);
    let mut out = vec![
        (
            names::statefulset(name),
            "StatefulSet",
            names::STATEFULSET_MAX,
        ),
        (names::replicas_service(name), "Service", names::LABEL_MAX),
        (names::pooler(name), "Service", names::LABEL_MAX),
        (names::roles_job(name, &hash), "Job", names::LABEL_MAX),
    ];
    if spec.bootstrap.as_ref().is_some_and(|b| b.restore.is_some()) {
        out.push((names::restore_job(name), "Job", names::LABEL_MAX));
    }
    if spec.restore.is_some() {
        out.push((
            names::in_place_backup_job(name, "x"),
            "Job",
            names::LABEL_MAX,
        ));
    }
    if !spec.backup_repos().is_empty() {
        // On-demand backups (`pgpilot.io/backup`): one Job per request, a hash in its name.
        out.push((
            names::backup_request_job(name, "x"),
            "Job",
            names::LABEL_MAX,
        ));
    }
    for repo in spec.backup_repos() {
        let schedules = repo.schedules.as_ref();
        let kinds = [
            (BackupType::Full, schedules.and_then(|s| s.full.as_ref())),
            (
                BackupType::Differential,
                schedules.and_then(|s| s.differential.as_ref()),
            ),
            (
                BackupType::Incremental,
                schedules.and_then(|s| s.incremental.as_ref()),
            ),
        ];
        for (kind, schedule) in kinds {
            if schedule.is_some() {
                out.push((
                    names::backup_cronjob(name, &repo.name, kind),
                    "CronJob",
                    names::CRONJOB_MAX,
                ));
            }
        }
    }
    out
}

fn instances(spec: &PostgresClusterSpec) -> i32 {
    spec.instances.unwrap_or(1)
}

fn spec(s: &PostgresClusterSpec, e: &mut Errors) {
    let p = Path::new("spec");
    if let Some(v) = s.postgres_version
        && !SUPPORTED_VERSIONS.contains(&v)
    {
        let supported: Vec<String> = SUPPORTED_VERSIONS.map(|v| v.to_string()).collect();
        let supported: Vec<&str> = supported.iter().map(String::as_str).collect();
        e.not_supported(&p.child("postgresVersion"), &v.to_string(), &supported);
    }
    if let Some(image) = &s.image {
        self::image(&p.child("image"), image, e);
    }
    if let Some(n) = s.instances {
        e.range(&p.child("instances"), n, 1, MAX_INSTANCES);
        if n == 1 {
            e.warn(&p.child("instances"), "a single instance has no failover: the cluster is down whenever its pod or node is");
        }
    }
    storage(&p.child("storage"), &s.storage, e);
    if let Some(r) = &s.resources {
        let memory_min = 256 * quantity::MIB;
        resources(&p.child("resources"), r, Some(memory_min), e);
    }
    postgres::postgresql(s, e);
    patroni(s, e);
    roles::users_and_databases(s, e);
    backup::backup(s, e);
    pooler(s, e);
    monitoring(s, e);
    tls(s, e);
    scheduling(s, e);
    service(s, e);
    network_policy(s, e);
}

/// A container image reference: registry/path:tag or @digest, no whitespace or control
/// characters; a warning for floating tags.
fn image(path: &Path, image: &str, e: &mut Errors) {
    let allowed = |c: char| c.is_ascii_alphanumeric() || "._-/:@".contains(c);
    if image.is_empty()
        || image.len() > 512
        || !image.chars().all(allowed)
        || image.starts_with(['-', '.', '/', ':', '@'])
    {
        return e.invalid_str(
            path,
            image,
            "must be a container image reference such as registry.example.com/postgres:17.6",
        );
    }
    let last = image.rsplit('/').next().unwrap_or(image);
    if !image.contains('@') && (!last.contains(':') || last.ends_with(":latest")) {
        e.warn(path, format!("{image:?} has no fixed tag or digest: pods may run different versions after a restart"));
    }
}

fn storage(p: &Path, s: &StorageSpec, e: &mut Errors) {
    match quantity::bytes(&s.size.0) {
        Err(why) => e.invalid_str(&p.child("size"), &s.size.0, why),
        Ok(b) if b < quantity::GIB => e.invalid_str(
            &p.child("size"),
            &s.size.0,
            "must be at least 1Gi: WAL alone needs hundreds of megabytes",
        ),
        Ok(_) => {}
    }
    if let Some(class) = &s.storage_class_name {
        storage_class(&p.child("storageClassName"), class, e);
    }
}

fn storage_class(p: &Path, class: &str, e: &mut Errors) {
    if !names::is_dns1123_subdomain(class) {
        e.invalid_str(
            p,
            class,
            "must be a StorageClass name (a DNS-1123 subdomain)",
        );
    }
}

/// Quantities parse, are positive, requests do not exceed limits, and memory meets `memory_min`.
fn resources(p: &Path, r: &ResourceRequirements, memory_min: Option<i128>, e: &mut Errors) {
    let mut parsed = |which: &str,
                      map: &Option<
        std::collections::BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>,
    >| {
        let mut out = std::collections::BTreeMap::new();
        for (k, q) in map.iter().flatten() {
            let path = p.child(which).key(k);
            match quantity::parse(&q.0) {
                Err(why) => e.invalid_str(&path, &q.0, why),
                Ok(v) if v.0 <= 0 => e.invalid_str(&path, &q.0, "must be greater than zero"),
                Ok(v) => {
                    out.insert(k.clone(), v);
                }
            }
        }
        out
    };
    let requests = parsed("requests", &r.requests);
    let limits = parsed("limits", &r.limits);
    for (k, req) in &requests {
        if let Some(lim) = limits.get(k)
            && req > lim
        {
            let q = &r
                .requests
                .as_ref()
                .map(|m| m[k].0.clone())
                .unwrap_or_default();
            let l = &r
                .limits
                .as_ref()
                .map(|m| m[k].0.clone())
                .unwrap_or_default();
            e.invalid_str(
                &p.child("requests").key(k),
                q,
                format!("must be less than or equal to the {k} limit of {l}"),
            );
        }
    }
    if let (Some(min), Some(mem)) = (memory_min, requests.get("memory"))
        && mem.whole() < min
    {
        let q = r
            .requests
            .as_ref()
            .map(|m| m["memory"].0.clone())
            .unwrap_or_default();
        e.invalid_str(
            &p.child("requests").key("memory"),
            &q,
            format!("must be at least {}Mi", min / quantity::MIB),
        );
    }
}

fn patroni(s: &PostgresClusterSpec, e: &mut Errors) {
    let Some(pt) = &s.patroni else { return };
    let p = Path::new("spec").child("patroni");
    if let Some(v) = pt.ttl {
        e.range(&p.child("ttl"), v, 20, 3600);
    }
    if let Some(v) = pt.loop_wait {
        e.range(&p.child("loopWait"), v, 1, 3600);
    }
    if let Some(v) = pt.retry_timeout {
        e.range(&p.child("retryTimeout"), v, 3, 3600);
    }
    if let (Some(ttl), Some(lw), Some(rt)) = (pt.ttl, pt.loop_wait, pt.retry_timeout)
        && i64::from(lw) + 2 * i64::from(rt) > i64::from(ttl)
    {
        e.invalid(
            &p.child("ttl"),
            ttl.to_string(),
            format!("must be at least loopWait + 2 * retryTimeout = {}, or a leader may lose its lock while still retrying", i64::from(lw) + 2 * i64::from(rt)),
        );
    }
    if let Some(v) = pt.maximum_lag_on_failover
        && v < 0
    {
        e.invalid(
            &p.child("maximumLagOnFailover"),
            v.to_string(),
            "must be zero or more bytes",
        );
    }
    let n = instances(s);
    let mode = pt.synchronous_mode.unwrap_or(SynchronousMode::Async);
    match mode {
        SynchronousMode::Sync | SynchronousMode::Strict if n < 2 => {
            let v = if mode == SynchronousMode::Sync { "sync" } else { "strict" };
            e.invalid_str(&p.child("synchronousMode"), v, "needs at least 2 instances: there is no standby to wait for");
        }
        SynchronousMode::Strict if n == 2 => e.warn(
            &p.child("synchronousMode"),
            "strict with 2 instances: the primary stops accepting writes whenever its only standby is down",
        ),
        SynchronousMode::Async if n >= 3 => e.warn(
            &p.child("synchronousMode"),
            format!("async with {n} instances: a failover may lose recently committed transactions; sync keeps them"),
        ),
        _ => {}
    }
    if let Some(c) = pt.synchronous_node_count {
        let max = n.saturating_sub(1).max(1);
        e.range(&p.child("synchronousNodeCount"), c, 1, max);
    }
    if pt.failsafe_mode == Some(false) && n > 1 {
        e.warn(
            &p.child("failsafeMode"),
            "false: while the Kubernetes API is unreachable (an upgrade of the control plane, an etcd outage), the primary demotes itself and the cluster takes no writes; true keeps a primary that still reaches every member",
        );
    }
}

fn pooler(s: &PostgresClusterSpec, e: &mut Errors) {
    let Some(pl) = &s.pooler else { return };
    let p = Path::new("spec").child("pooler");
    if let Some(image) = &pl.image {
        self::image(&p.child("image"), image, e);
    }
    if let Some(v) = pl.instances {
        e.range(&p.child("instances"), v, 1, 32);
    }
    if let Some(v) = pl.max_client_connections {
        e.range(&p.child("maxClientConnections"), v, 1, 100_000);
    }
    if let Some(v) = pl.default_pool_size {
        e.range(&p.child("defaultPoolSize"), v, 1, 10_000);
        let max_connections = s
            .postgresql
            .as_ref()
            .and_then(|pg| pg.parameters.as_ref())
            .and_then(|m| m.get("max_connections"))
            .and_then(|v| v.as_str().parse::<i64>().ok());
        if let Some(max) = max_connections
            && i64::from(v) >= max
        {
            e.invalid(
                &p.child("defaultPoolSize"),
                v.to_string(),
                format!("must be less than max_connections ({max})"),
            );
        }
    }
    if let Some(r) = &pl.resources {
        resources(&p.child("resources"), r, None, e);
    }
    if pl.enabled == Some(true) && pl.mode == Some(PoolMode::Statement) {
        e.warn(
            &p.child("mode"),
            "statement pooling breaks multi-statement transactions",
        );
    }
}

fn monitoring(s: &PostgresClusterSpec, e: &mut Errors) {
    let Some(x) = s.monitoring.as_ref().and_then(|m| m.exporter.as_ref()) else {
        return;
    };
    let p = Path::new("spec").child("monitoring").child("exporter");
    if let Some(image) = &x.image {
        self::image(&p.child("image"), image, e);
    }
    if let Some(port) = x.port {
        e.range(&p.child("port"), port, 1024, 65535);
        if crate::names::RESERVED_PORTS.contains(&port) {
            e.invalid(
                &p.child("port"),
                port.to_string(),
                "is used by PostgreSQL, Patroni or pgBackRest in the same pod",
            );
        }
    }
    if let Some(r) = &x.resources {
        resources(&p.child("resources"), r, None, e);
    }
}

fn tls(s: &PostgresClusterSpec, e: &mut Errors) {
    let p = Path::new("spec").child("tls");
    let Some(t) = &s.tls else {
        return e.warn(&p, "no TLS: connections to PostgreSQL are not encrypted");
    };
    match (&t.issuer_ref, &t.secret_name) {
        (Some(_), Some(_)) => e.forbidden(
            &p.child("secretName"),
            "may not be set together with issuerRef",
        ),
        (None, None) => e.required(&p, "one of issuerRef or secretName"),
        _ => {}
    }
    if let Some(i) = &t.issuer_ref {
        let ip = p.child("issuerRef");
        if !names::is_dns1123_subdomain(&i.name) {
            e.invalid_str(
                &ip.child("name"),
                &i.name,
                "must be an issuer name (a DNS-1123 subdomain)",
            );
        }
        if let Some(kind) = &i.kind
            && kind != "Issuer"
            && kind != "ClusterIssuer"
        {
            e.not_supported(&ip.child("kind"), kind, &["Issuer", "ClusterIssuer"]);
        }
        if let Some(group) = &i.group
            && !names::is_dns1123_subdomain(group)
        {
            e.invalid_str(
                &ip.child("group"),
                group,
                "must be an API group (a DNS-1123 subdomain)",
            );
        }
    }
    if let Some(secret) = &t.secret_name
        && !names::is_dns1123_subdomain(secret)
    {
        e.invalid_str(
            &p.child("secretName"),
            secret,
            "must be a Secret name (a DNS-1123 subdomain)",
        );
    }
}

fn scheduling(s: &PostgresClusterSpec, e: &mut Errors) {
    let Some(sc) = &s.scheduling else { return };
    let p = Path::new("spec").child("scheduling");
    let mode = s.patroni.as_ref().and_then(|pt| pt.synchronous_mode);
    if let Some(mode @ (SynchronousMode::Sync | SynchronousMode::Strict)) = mode
        && sc.anti_affinity == Some(AntiAffinity::Preferred)
        && instances(s) > 1
    {
        let (name, loss) = match mode {
            SynchronousMode::Strict => ("strict", "stops writes until another standby is named"),
            _ => ("sync", "may lose the transactions it acknowledged"),
        };
        e.warn(
            &p.child("antiAffinity"),
            format!("preferred with synchronousMode {name}: the scheduler may put the primary and its synchronous standby on one node, and losing that node {loss}; required keeps every instance on a node of its own"),
        );
    }
    for (k, v) in sc.node_selector.iter().flatten() {
        label(&p.child("nodeSelector"), k, v, e);
    }
    for (i, t) in sc.tolerations.iter().flatten().enumerate() {
        let tp = p.child("tolerations").index(i);
        let op = t.operator.as_deref().unwrap_or("Equal");
        match op {
            "Exists" => {
                if t.value.as_deref().is_some_and(|v| !v.is_empty()) {
                    e.invalid_str(
                        &tp.child("value"),
                        t.value.as_deref().unwrap_or(""),
                        "must be empty when operator is Exists",
                    );
                }
            }
            "Equal" => {
                if t.key.as_deref().unwrap_or("").is_empty() {
                    e.required(&tp.child("key"), "operator Equal needs a key");
                }
            }
            other => e.not_supported(&tp.child("operator"), other, &["Equal", "Exists"]),
        }
        if let Some(key) = t.key.as_deref().filter(|k| !k.is_empty())
            && !is_qualified_name(key)
        {
            e.invalid_str(&tp.child("key"), key, "must be a label key");
        }
        let effect = t.effect.as_deref().unwrap_or("");
        if !["", "NoSchedule", "PreferNoSchedule", "NoExecute"].contains(&effect) {
            e.not_supported(
                &tp.child("effect"),
                effect,
                &["NoSchedule", "PreferNoSchedule", "NoExecute"],
            );
        }
        if t.toleration_seconds.is_some() && effect != "NoExecute" {
            e.forbidden(
                &tp.child("tolerationSeconds"),
                "only applies to the NoExecute effect",
            );
        }
    }
    for (i, c) in sc.topology_spread_constraints.iter().flatten().enumerate() {
        let cp = p.child("topologySpreadConstraints").index(i);
        if c.max_skew < 1 {
            e.invalid(
                &cp.child("maxSkew"),
                c.max_skew.to_string(),
                "must be at least 1",
            );
        }
        if c.topology_key.is_empty() || !is_qualified_name(&c.topology_key) {
            e.invalid_str(
                &cp.child("topologyKey"),
                &c.topology_key,
                "must be a node label key such as topology.kubernetes.io/zone",
            );
        }
        if !["DoNotSchedule", "ScheduleAnyway"].contains(&c.when_unsatisfiable.as_str()) {
            e.not_supported(
                &cp.child("whenUnsatisfiable"),
                &c.when_unsatisfiable,
                &["DoNotSchedule", "ScheduleAnyway"],
            );
        }
    }
    if let Some(pc) = &sc.priority_class_name
        && !names::is_dns1123_subdomain(pc)
    {
        e.invalid_str(
            &p.child("priorityClassName"),
            pc,
            "must be a PriorityClass name (a DNS-1123 subdomain)",
        );
    }
}

fn service(s: &PostgresClusterSpec, e: &mut Errors) {
    let Some(sv) = &s.service else { return };
    let p = Path::new("spec").child("service");
    for k in sv.annotations.iter().flatten().map(|(k, _)| k) {
        if !is_qualified_name(k) {
            e.invalid_str(
                &p.child("annotations").key(k),
                k,
                "must be a qualified name such as example.com/key",
            );
        }
    }
    let ranges = sv
        .load_balancer_source_ranges
        .as_deref()
        .unwrap_or_default();
    if !ranges.is_empty() && sv.type_ != Some(ServiceType::LoadBalancer) {
        e.forbidden(
            &p.child("loadBalancerSourceRanges"),
            "only applies to type LoadBalancer",
        );
    }
    for (i, r) in ranges.iter().enumerate() {
        if !is_cidr(r) {
            e.invalid_str(
                &p.child("loadBalancerSourceRanges").index(i),
                r,
                "must be a CIDR such as 10.0.0.0/8",
            );
        }
    }
}

fn network_policy(s: &PostgresClusterSpec, e: &mut Errors) {
    let Some(np) = &s.network_policy else { return };
    let p = Path::new("spec").child("networkPolicy");
    if let Some(ns) = &np.operator_namespace
        && !crate::names::is_dns1123_label(ns)
    {
        e.invalid_str(
            &p.child("operatorNamespace"),
            ns,
            "must be a namespace name (a DNS-1123 label)",
        );
    }
    if np.enabled == Some(false) {
        e.warn(
            &p.child("enabled"),
            "false: any pod that reaches the instances may call Patroni's API (reads are open) and pgBackRest's server",
        );
    }
}

fn label(p: &Path, k: &str, v: &str, e: &mut Errors) {
    if !is_qualified_name(k) {
        e.invalid_str(&p.key(k), k, "must be a label key such as example.com/name");
    }
    let ok_value = v.len() <= 63
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        && (v.is_empty()
            || (v.starts_with(|c: char| c.is_ascii_alphanumeric())
                && v.ends_with(|c: char| c.is_ascii_alphanumeric())));
    if !ok_value {
        e.invalid_str(&p.key(k), v, "must be a label value: at most 63 alphanumerics, '-', '_' or '.', starting and ending alphanumeric");
    }
}

/// A Kubernetes qualified name: an optional DNS subdomain prefix and `/`, then a name of at
/// most 63 alphanumerics, `-`, `_` or `.`, starting and ending alphanumeric.
pub fn is_qualified_name(s: &str) -> bool {
    let (prefix, name) = match s.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, s),
    };
    if prefix.is_some_and(|p| p.is_empty() || !names::is_dns1123_subdomain(p)) {
        return false;
    }
    !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric())
}

fn is_cidr(s: &str) -> bool {
    let Some((addr, len)) = s.split_once('/') else {
        return false;
    };
    let Ok(len) = len.parse::<u8>() else {
        return false;
    };
    match addr.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V4(_)) => len <= 32,
        Ok(std::net::IpAddr::V6(_)) => len <= 128,
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests;
