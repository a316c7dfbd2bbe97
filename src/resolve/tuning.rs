//! PostgreSQL parameters derived from the pod's resources, volume size and instance count.
//!
//! The formulas follow long-standing community guidance (the PostgreSQL wiki's "Tuning Your
//! PostgreSQL Server", pgtune): a quarter of memory for shared buffers, the rest assumed to
//! be page cache. They are deliberately simple, so a reader can predict them.

use std::collections::BTreeMap;

use crate::quantity::{GIB, MIB, PgUnit, pg_memory, pg_memory_bytes};

/// What the derived parameters depend on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TuningInputs {
    /// Memory request of the PostgreSQL container, in bytes.
    pub memory: Option<i128>,
    /// Data volume size, in bytes.
    pub storage: Option<i128>,
    pub instances: i32,
    /// `max_connections` as resolved (explicit or derived), which `work_mem` divides by.
    pub connections: Option<i128>,
}

/// Parameters required for Patroni-managed streaming replication; they may be raised or
/// (for `wal_level`) set to `logical`, never weakened. Validation enforces that.
pub const HA_FIXED: [(&str, &str); 4] = [
    // Physical replication and pg_rewind need at least `replica` WAL and hint-bit logging.
    ("wal_level", "replica"),
    ("wal_log_hints", "on"),
    ("hot_standby", "on"),
    // The default pg_hba rules authenticate with SCRAM; md5 hashes would not match them.
    ("password_encryption", "scram-sha-256"),
];

/// Every parameter this module derives, with the unit a bare number means for it.
pub const MEMORY_PARAMETERS: [(&str, PgUnit); 6] = [
    ("shared_buffers", PgUnit::Block),
    ("effective_cache_size", PgUnit::Block),
    ("maintenance_work_mem", PgUnit::Kilobyte),
    ("work_mem", PgUnit::Kilobyte),
    ("max_wal_size", PgUnit::Megabyte),
    ("min_wal_size", PgUnit::Megabyte),
];

/// The unit of a memory parameter, if it is one this module knows.
pub fn memory_unit(name: &str) -> Option<PgUnit> {
    MEMORY_PARAMETERS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, u)| *u)
}

/// WAL senders and slots: one per replica, plus room for a base backup (two connections
/// with streamed WAL), pg_rewind and a pgBackRest backup; never below PostgreSQL's 10.
pub fn wal_senders(instances: i32) -> i32 {
    (instances.clamp(1, 1000) + 4).max(10)
}

/// Connections that fit in memory: about 16 MiB of memory per connection, between
/// PostgreSQL's default of 100 and 500 (beyond that, a pooler is the answer).
pub fn max_connections(memory: i128) -> i128 {
    (memory / (16 * MIB)).clamp(100, 500)
}

/// The smallest memory request the formulas are meant for; below it nothing is derived.
const MIN_TUNED_MEMORY: i128 = 64 * MIB;

/// `max_connections` for a memory request, when one is known.
pub fn derive_max_connections(memory: Option<i128>) -> Option<String> {
    memory
        .filter(|m| *m >= MIN_TUNED_MEMORY)
        .map(|m| max_connections(m).to_string())
}

/// The derived parameters for `inputs` (except `max_connections`, which they depend on; see
/// `derive_max_connections`). Only what can be computed is returned: without a parseable
/// memory request the memory parameters are left alone (validation reports it).
pub fn derive(inputs: TuningInputs) -> BTreeMap<String, String> {
    let mut p = BTreeMap::new();
    let mut set = |k: &str, v: String| {
        p.insert(k.to_owned(), v);
    };
    if let Some(memory) = inputs.memory.filter(|m| *m >= MIN_TUNED_MEMORY) {
        let connections = inputs
            .connections
            .filter(|c| *c > 0)
            .unwrap_or_else(|| max_connections(memory));
        // 25% of memory: the shared buffer pool; the kernel's page cache holds the rest.
        let shared = memory / 4;
        set("shared_buffers", pg_memory(shared));
        // What the planner may assume is cached: shared buffers plus most of the page cache.
        set("effective_cache_size", pg_memory(memory * 3 / 4));
        // Vacuum and index builds: 1/16 of memory, between 16 MB and 2 GB (above that,
        // autovacuum cannot use more anyway).
        set(
            "maintenance_work_mem",
            pg_memory((memory / 16).clamp(16 * MIB, 2 * GIB)),
        );
        // Per sort or hash, per connection: the memory outside shared buffers spread over all
        // connections, with room for three such operations each; at least 1 MB.
        set(
            "work_mem",
            // Saturating: an absurd max_connections (validation reports it) must not
            // overflow on its way there.
            pg_memory(((memory - shared) / connections.saturating_mul(3)).max(MIB)),
        );
    }
    if let Some(storage) = inputs.storage.filter(|s| *s > 0) {
        // WAL between checkpoints: a quarter of the volume, between 256 MB and 16 GB, so
        // a burst of writes can never fill a small disk with WAL.
        let max_wal = (storage / 4).clamp(256 * MIB, 16 * GIB);
        set("max_wal_size", pg_memory(max_wal));
        set("min_wal_size", pg_memory((max_wal / 4).max(32 * MIB)));
    }
    let senders = wal_senders(inputs.instances).to_string();
    set("max_wal_senders", senders.clone());
    set("max_replication_slots", senders);
    p
}

/// Bytes of a memory parameter's value, if it is a memory parameter with a size value.
pub fn parameter_bytes(name: &str, value: &str) -> Option<i128> {
    pg_memory_bytes(value, memory_unit(name)?)
}

#[cfg(test)]
mod tests {

    #[test]
    fn an_absurd_max_connections_does_not_overflow() {
        let p = derive(TuningInputs {
            memory: Some(GIB),
            storage: None,
            instances: 2,
            connections: Some(i128::MAX),
        });
        assert_eq!(p["work_mem"], "1MB");
    }
    use super::*;

    #[test]
    fn one_gibibyte() {
        let p = derive(TuningInputs {
            memory: Some(GIB),
            storage: Some(10 * GIB),
            instances: 2,
            connections: None,
        });
        assert_eq!(p["shared_buffers"], "256MB");
        assert_eq!(p["effective_cache_size"], "768MB");
        assert_eq!(p["maintenance_work_mem"], "64MB");
        assert_eq!(p["work_mem"], "2MB");
        assert_eq!(p["max_wal_size"], "2560MB");
        assert_eq!(p["min_wal_size"], "640MB");
        assert_eq!(p["max_wal_senders"], "10");
    }

    #[test]
    fn work_mem_divides_by_the_resolved_connections() {
        let p = derive(TuningInputs {
            memory: Some(8 * GIB),
            storage: None,
            instances: 3,
            connections: Some(300),
        });
        // (8 GiB - 2 GiB shared buffers) / (300 connections * 3 operations)
        assert_eq!(p["work_mem"], "6MB");
    }

    #[test]
    fn large_memory_is_capped() {
        let p = derive(TuningInputs {
            memory: Some(256 * GIB),
            storage: Some(1 << 44),
            instances: 16,
            connections: None,
        });
        assert_eq!(p["maintenance_work_mem"], "2048MB");
        assert_eq!(
            derive_max_connections(Some(256 * GIB)).as_deref(),
            Some("500")
        );
        assert_eq!(derive_max_connections(Some(MIB)), None);
        assert_eq!(p["max_wal_size"], "16384MB");
        assert_eq!(p["max_wal_senders"], "20");
    }

    #[test]
    fn unknown_memory_derives_no_memory_parameters() {
        let p = derive(TuningInputs {
            memory: None,
            storage: None,
            instances: 1,
            connections: None,
        });
        assert!(!p.contains_key("shared_buffers"));
        assert_eq!(p.len(), 2);
    }
}
