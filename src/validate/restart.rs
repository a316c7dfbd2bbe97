//! Warnings for parameter changes that take effect only after PostgreSQL restarts.
//!
//! `new` and `old` are resolved specs (the webhook validates after mutation, and the stored
//! object was resolved when admitted), so a parameter that resolution derives from another
//! field, such as `max_wal_senders` from `instances`, is compared like one the user edited.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};

use crate::api::PostgresClusterSpec;
use crate::quantity::pg_integer;

use super::field::{Errors, Path, quote};
use super::pg_settings::{self, Context, HOT_STANDBY_MINIMUMS};

const REPLICAS_FIRST: &str =
    "takes effect after a restart of every instance; replicas restart first, then the primary";
const PRIMARY_FIRST: &str = "takes effect after a restart of every instance; the primary restarts first, then the replicas: a standby cannot run with a lower value than its primary";

/// One warning per parameter that was changed, added or removed and needs a restart in the
/// cluster's PostgreSQL major version.
pub fn parameters(new: &PostgresClusterSpec, old: &PostgresClusterSpec, e: &mut Errors) {
    // The running major: a change of postgresVersion is rejected anyway.
    let Some(major) = old.postgres_version.or(new.postgres_version) else {
        return;
    };
    let new_params = lower_case(new);
    let old_params = lower_case(old);
    let names: BTreeSet<&String> = new_params.keys().chain(old_params.keys()).collect();
    let pp = Path::new("spec").child("postgresql").child("parameters");
    for name in names {
        let (n, o) = (new_params.get(name).copied(), old_params.get(name).copied());
        if same(n, o) || pg_settings::context(major, name) != Some(Context::Postmaster) {
            continue;
        }
        let what = match (o, n) {
            (Some(o), Some(n)) => format!("changed from {} to {}", shown(o), shown(n)),
            (None, Some(n)) => format!("set to {}", shown(n)),
            (Some(o), None) => format!("removed (was {})", shown(o)),
            (None, None) => continue,
        };
        let order = if lowered_minimum(name, n, o) {
            PRIMARY_FIRST
        } else {
            REPLICAS_FIRST
        };
        e.warn(&pp.key(name), format!("{what}: {order}"));
    }
}

/// The parameters by lower-case name, as PostgreSQL reads them.
fn lower_case(s: &PostgresClusterSpec) -> BTreeMap<String, &str> {
    let params = s.postgresql.as_ref().and_then(|p| p.parameters.as_ref());
    params
        .into_iter()
        .flatten()
        .map(|(k, v)| (k.to_ascii_lowercase(), v.as_str()))
        .collect()
}

/// Whether two values are the same setting to PostgreSQL: equal text, or the same amount
/// in other units (`1GB` and `1024MB`).
fn same(new: Option<&str>, old: Option<&str>) -> bool {
    match (new, old) {
        (Some(n), Some(o)) if n != o => matches!(
            (pg_integer(n), pg_integer(o)),
            (Some(n), Some(o)) if n.compare(o) == Some(Ordering::Equal)
        ),
        _ => new == old,
    }
}

/// Whether a hot-standby minimum is lowered. Only a change between two values can be told
/// apart: what an added or removed setting is compared with is PostgreSQL's default.
fn lowered_minimum(name: &str, new: Option<&str>, old: Option<&str>) -> bool {
    let (Some(n), Some(o)) = (new, old) else {
        return false;
    };
    HOT_STANDBY_MINIMUMS.contains(&name)
        && matches!(
            (pg_integer(n), pg_integer(o)),
            (Some(n), Some(o)) if n.compare(o) == Some(Ordering::Less)
        )
}

/// A value as written when it is a plain token (`200`, `256MB`, `logical`), else quoted.
fn shown(v: &str) -> String {
    let plain = !v.is_empty()
        && v.len() <= 64
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
    if plain { v.to_owned() } else { quote(v) }
}
