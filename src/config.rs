//! The operator configuration: compiled-in defaults, optionally overridden by a YAML file
//! (`--config`). It only feeds `resolve`; changing it affects objects admitted afterwards.

use std::collections::BTreeMap;
use std::path::Path;

use k8s_openapi::api::core::v1::ResourceRequirements;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use serde::{Deserialize, Serialize};

use crate::api::{AntiAffinity, PoolMode, ServiceType, SynchronousMode};

/// Largest configuration file read, so a wrong path (a log, a device) fails fast.
const MAX_FILE_BYTES: u64 = 1 << 20;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Config {
    pub postgres: PostgresDefaults,
    pub patroni: PatroniDefaults,
    pub backup: BackupDefaults,
    pub pooler: PoolerDefaults,
    pub exporter: ExporterDefaults,
    pub scheduling: SchedulingDefaults,
    pub service: ServiceDefaults,
    pub network_policy: NetworkPolicyDefaults,
    pub policy: Policy,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NetworkPolicyDefaults {
    pub enabled: bool,
    /// Where the operator runs (`pgpilot run` takes `POD_NAMESPACE` when the file does not
    /// say).
    pub operator_namespace: String,
}

/// What clusters may ask for, whoever creates them: checked at admission (and by the
/// controller before it renders), after defaults are resolved. A list that is absent
/// allows anything; a list allows only what it names.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Policy {
    /// Image references or prefixes: `registry.example.com/pg/` allows every image under
    /// it, `registry.example.com/pg/postgres` that repository at any tag or digest.
    pub allowed_images: Option<Vec<String>>,
    /// PriorityClass names pods may use (`null`, no priority class, is always allowed).
    pub allowed_priority_classes: Option<Vec<String>>,
}

impl Policy {
    /// Whether `image` is allowed: an entry ending in `/` matches every image under it;
    /// another matches that repository exactly, bare or followed by `:tag` or `@digest`.
    pub fn allows_image(&self, image: &str) -> bool {
        let Some(allowed) = &self.allowed_images else {
            return true;
        };
        allowed.iter().any(|entry| {
            if entry.ends_with('/') {
                image.starts_with(entry.as_str())
            } else {
                image
                    .strip_prefix(entry.as_str())
                    .is_some_and(|rest| rest.is_empty() || rest.starts_with([':', '@']))
            }
        })
    }

    pub fn allows_priority_class(&self, name: &str) -> bool {
        self.allowed_priority_classes
            .as_ref()
            .is_none_or(|allowed| allowed.iter().any(|a| a == name))
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PostgresDefaults {
    /// The major version a cluster gets when it names none.
    pub default_version: i32,
    /// Image per supported major version; the keys are the versions the operator accepts.
    pub images: BTreeMap<i32, String>,
    pub instances: i32,
    pub resources: ResourceRequirements,
    /// Parameters every cluster starts with (the tuned and HA parameters come on top).
    pub parameters: BTreeMap<String, String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PatroniDefaults {
    pub ttl: i32,
    pub loop_wait: i32,
    pub retry_timeout: i32,
    pub maximum_lag_on_failover: i64,
    pub synchronous_mode: SynchronousMode,
    pub synchronous_node_count: i32,
    pub failsafe_mode: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BackupDefaults {
    pub image: String,
    pub retention_full: i32,
    pub retention_differential: i32,
    pub full_schedule: String,
    pub differential_schedule: String,
    /// Backups per repository listed in a cluster's `status.backups` (the newest).
    pub inventory_limit: usize,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PoolerDefaults {
    pub image: String,
    pub mode: PoolMode,
    pub max_client_connections: i32,
    pub default_pool_size: i32,
    pub resources: ResourceRequirements,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExporterDefaults {
    pub enabled: bool,
    pub image: String,
    pub port: i32,
    pub resources: ResourceRequirements,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SchedulingDefaults {
    pub anti_affinity: AntiAffinity,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServiceDefaults {
    #[serde(rename = "type")]
    pub type_: ServiceType,
}

fn resources(cpu: &str, memory: &str, memory_limit: &str) -> ResourceRequirements {
    let q = |s: &str| Quantity(s.to_owned());
    ResourceRequirements {
        requests: Some(BTreeMap::from([
            ("cpu".to_owned(), q(cpu)),
            ("memory".to_owned(), q(memory)),
        ])),
        limits: Some(BTreeMap::from([("memory".to_owned(), q(memory_limit))])),
        ..Default::default()
    }
}

impl Default for Config {
    fn default() -> Self {
        let images = [
            (14, "14.20"),
            (15, "15.15"),
            (16, "16.11"),
            (17, "17.7"),
            (18, "18.1"),
        ]
        .into_iter()
        .map(|(major, tag)| (major, format!("ghcr.io/pgpilot/postgres:{tag}")))
        .collect();
        let parameters = [
            // pg_stat_statements feeds the exporter and is what operators look at first.
            ("shared_preload_libraries", "pg_stat_statements"),
            // Network volumes and SSDs: random reads cost little more than sequential ones.
            ("random_page_cost", "1.1"),
            ("effective_io_concurrency", "200"),
            ("log_checkpoints", "on"),
            ("log_lock_waits", "on"),
            ("log_min_duration_statement", "1000"),
            ("idle_in_transaction_session_timeout", "600000"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        Config {
            postgres: PostgresDefaults {
                default_version: 18,
                images,
                instances: 2,
                // Memory limit equal to the request: PostgreSQL's shared memory cannot be
                // reclaimed, so a pod that bursts past its request is the first OOM victim.
                resources: resources("500m", "1Gi", "1Gi"),
                parameters,
            },
            patroni: PatroniDefaults {
                ttl: 30,
                loop_wait: 10,
                retry_timeout: 10,
                maximum_lag_on_failover: 1 << 20,
                synchronous_mode: SynchronousMode::Async,
                synchronous_node_count: 1,
                // Measured on the data plane: with false, a frozen API server stops
                // every write until it is back; with true, writes go on.
                failsafe_mode: true,
            },
            backup: BackupDefaults {
                image: "ghcr.io/pgpilot/pgbackrest:2.57.0".into(),
                retention_full: 2,
                retention_differential: 6,
                full_schedule: "0 1 * * 0".into(),
                differential_schedule: "0 1 * * 1-6".into(),
                inventory_limit: 10,
            },
            pooler: PoolerDefaults {
                image: "ghcr.io/pgpilot/pgbouncer:1.25.0".into(),
                mode: PoolMode::Transaction,
                max_client_connections: 1000,
                default_pool_size: 20,
                resources: resources("100m", "64Mi", "128Mi"),
            },
            exporter: ExporterDefaults {
                enabled: true,
                image: "quay.io/prometheuscommunity/postgres-exporter:v0.18.1".into(),
                port: 9187,
                resources: resources("50m", "64Mi", "128Mi"),
            },
            scheduling: SchedulingDefaults {
                anti_affinity: AntiAffinity::Preferred,
            },
            service: ServiceDefaults {
                type_: ServiceType::ClusterIP,
            },
            network_policy: NetworkPolicyDefaults {
                enabled: true,
                operator_namespace: "pgpilot-system".into(),
            },
            policy: Policy::default(),
        }
    }
}

impl Config {
    /// The compiled-in defaults with `yaml` laid over them: maps are merged key by key, any
    /// other value replaces the default. Unknown keys are errors, so a typo cannot silently
    /// leave a default in place.
    pub fn from_yaml(yaml: &str) -> Result<Config, String> {
        let overlay: serde_json::Value =
            serde_yaml::from_str(yaml).map_err(|e| format!("not valid YAML: {e}"))?;
        let mut merged = serde_json::to_value(Config::default()).map_err(|e| e.to_string())?;
        match overlay {
            serde_json::Value::Null => {}
            serde_json::Value::Object(_) => merge(&mut merged, overlay),
            _ => return Err("must be a YAML mapping".into()),
        }
        let config: Config = serde_json::from_value(merged).map_err(|e| e.to_string())?;
        config.check()?;
        Ok(config)
    }

    /// Reads a configuration file.
    pub fn load(path: &Path) -> Result<Config, String> {
        let context = |e: String| format!("{}: {e}", path.display());
        let meta = std::fs::metadata(path).map_err(|e| context(e.to_string()))?;
        if !meta.is_file() || meta.len() > MAX_FILE_BYTES {
            return Err(context(format!(
                "must be a regular file of at most {MAX_FILE_BYTES} bytes"
            )));
        }
        let text = std::fs::read_to_string(path).map_err(|e| context(e.to_string()))?;
        Config::from_yaml(&text).map_err(context)
    }

    /// Checks that the configuration can produce valid clusters.
    fn check(&self) -> Result<(), String> {
        if !self
            .postgres
            .images
            .contains_key(&self.postgres.default_version)
        {
            return Err(format!(
                "postgres.defaultVersion {} has no entry in postgres.images",
                self.postgres.default_version
            ));
        }
        if let Some((v, _)) = self
            .postgres
            .images
            .iter()
            .find(|(_, i)| i.trim().is_empty())
        {
            return Err(format!("postgres.images.{v} must not be empty"));
        }
        // The catalog must pass the policy, or every cluster left to its defaults is refused.
        let catalog = self.postgres.images.values().chain([
            &self.backup.image,
            &self.pooler.image,
            &self.exporter.image,
        ]);
        for image in catalog {
            if !self.policy.allows_image(image) {
                return Err(format!(
                    "policy.allowedImages does not allow the catalog's image {image:?}"
                ));
            }
        }
        let p = &self.patroni;
        if p.loop_wait + 2 * p.retry_timeout > p.ttl {
            return Err("patroni: loopWait + 2 * retryTimeout must not exceed ttl".into());
        }
        let ns = &self.network_policy.operator_namespace;
        if !crate::names::is_dns1123_label(ns) {
            return Err(format!(
                "networkPolicy.operatorNamespace {ns:?} is not a namespace name"
            ));
        }
        Ok(())
    }

    /// The image for a major version, if the catalog has one.
    pub fn image_for(&self, major: i32) -> Option<&str> {
        self.postgres.images.get(&major).map(String::as_str)
    }

    /// Supported major versions, ascending.
    pub fn supported_versions(&self) -> Vec<i32> {
        self.postgres.images.keys().copied().collect()
    }
}

fn merge(base: &mut serde_json::Value, overlay: serde_json::Value) {
    match (base, overlay) {
        (serde_json::Value::Object(b), serde_json::Value::Object(o)) => {
            for (k, v) in o {
                match b.get_mut(&k) {
                    Some(slot) => merge(slot, v),
                    None => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (slot, v) => *slot = v,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_consistent() {
        Config::default().check().unwrap();
        assert_eq!(
            Config::default().supported_versions(),
            vec![14, 15, 16, 17, 18]
        );
    }

    #[test]
    fn overlay_merges_maps_and_replaces_values() {
        let c = Config::from_yaml(
            "postgres:\n  images:\n    17: example.com/pg:17.9\npatroni:\n  ttl: 40\n",
        )
        .unwrap();
        assert_eq!(c.image_for(17), Some("example.com/pg:17.9"));
        assert_eq!(c.image_for(16), Some("ghcr.io/pgpilot/postgres:16.11"));
        assert_eq!(c.patroni.ttl, 40);
        assert_eq!(c.patroni.loop_wait, 10);
    }

    #[test]
    fn overlay_errors_are_precise() {
        let e = Config::from_yaml("patroni:\n  tll: 40\n").unwrap_err();
        assert!(e.contains("unknown field `tll`"), "{e}");
        let e = Config::from_yaml("postgres:\n  defaultVersion: 13\n").unwrap_err();
        assert!(e.contains("defaultVersion 13 has no entry"), "{e}");
        let e = Config::from_yaml("patroni:\n  ttl: 20\n").unwrap_err();
        assert!(e.contains("loopWait + 2 * retryTimeout"), "{e}");
        assert!(Config::from_yaml("- a\n").unwrap_err().contains("mapping"));
        assert!(
            Config::from_yaml("a: [")
                .unwrap_err()
                .contains("not valid YAML")
        );
        assert_eq!(Config::from_yaml("").unwrap(), Config::default());
    }
}
