//! A restore's pgBackRest options, derived from its target. `resolve` writes them into the
//! stored spec (so `kubectl get -o yaml` shows the exact restore), `validate` checks that
//! the stored ones still say what the target says, and the restore Job runs them.

use std::collections::BTreeMap;

use k8s_openapi::jiff::Timestamp;

use crate::api::{RestoreTarget, RestoreTargetType};

/// Options a user may add beside those derived from the target.
pub const USER_OPTIONS: [&str; 1] = ["target-timeline"];

/// Options derived from the target.
pub const DERIVED_OPTIONS: [&str; 5] =
    ["set", "target", "target-action", "target-exclusive", "type"];

/// An RFC 3339 time (an offset is required) in the form PostgreSQL's
/// `recovery_target_time` and pgBackRest's backup-set selection both read: UTC, a space
/// between date and time, `+00`. `None` when `value` is not RFC 3339 with an offset.
pub fn recovery_time(value: &str) -> Option<String> {
    // jiff would also take a date-only value as midnight, or a bracketed zone: neither is
    // what a user should rely on for a restore point.
    if !value.contains(['T', 't', ' ']) || value.contains('[') {
        return None;
    }
    let t: Timestamp = value.trim().parse().ok()?;
    let utc = t.to_string();
    let utc = utc.strip_suffix('Z')?;
    Some(format!("{}+00", utc.replacen('T', " ", 1)))
}

/// Writes the default target and the options it resolves to, where absent: never over the
/// user's, since a stored option that disagrees with the target is for validation to report,
/// not to be replaced silently.
pub fn resolve(target: &mut Option<RestoreTarget>, options: &mut Option<BTreeMap<String, String>>) {
    let target = target.get_or_insert_default();
    let kind = *target.type_.get_or_insert(RestoreTargetType::Latest);
    if kind.may_exclude() {
        target.exclusive.get_or_insert(false);
    }
    let options = options.get_or_insert_default();
    for (k, v) in self::options(target) {
        options.entry(k).or_insert(v);
    }
}

/// The options `target` resolves to. A `time` that does not parse is passed through as
/// written: validation reports it.
pub fn options(target: &RestoreTarget) -> BTreeMap<String, String> {
    let kind = target.type_.unwrap_or(RestoreTargetType::Latest);
    let mut o = BTreeMap::new();
    let mut put = |k: &str, v: &str| {
        o.insert(k.to_owned(), v.to_owned());
    };
    if kind == RestoreTargetType::Latest {
        // pgBackRest's `default`: recover to the end of the archived WAL, then promote.
        put("type", "default");
        return o;
    }
    put("type", kind.as_str());
    put("target-action", "promote");
    if kind.has_value()
        && let Some(v) = &target.value
    {
        match kind {
            RestoreTargetType::Time => put("target", &recovery_time(v).unwrap_or(v.clone())),
            _ => put("target", v),
        }
    }
    if kind.may_exclude() {
        put(
            "target-exclusive",
            if target.exclusive == Some(true) {
                "y"
            } else {
                "n"
            },
        );
    }
    if let Some(set) = &target.set {
        put("set", set);
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_need_an_offset_and_become_utc() {
        assert_eq!(
            recovery_time("2026-12-01T10:00:00+02:00").as_deref(),
            Some("2026-12-01 08:00:00+00")
        );
        assert_eq!(
            recovery_time("2026-12-01T10:00:00.25Z").as_deref(),
            Some("2026-12-01 10:00:00.25+00")
        );
        assert_eq!(recovery_time("2026-12-01T10:00:00"), None);
        assert_eq!(recovery_time("2026-12-01"), None);
        assert_eq!(recovery_time("yesterday"), None);
    }

    #[test]
    fn each_target_type_resolves_to_explicit_options() {
        let t = |type_, value: Option<&str>, set: Option<&str>| RestoreTarget {
            type_: Some(type_),
            value: value.map(str::to_owned),
            set: set.map(str::to_owned),
            exclusive: None,
        };
        let o = options(&t(RestoreTargetType::Latest, None, None));
        assert_eq!(o, BTreeMap::from([("type".into(), "default".into())]));
        let o = options(&t(
            RestoreTargetType::Time,
            Some("2026-12-01T10:00:00-01:30"),
            None,
        ));
        assert_eq!(o["type"], "time");
        assert_eq!(o["target"], "2026-12-01 11:30:00+00");
        assert_eq!(o["target-action"], "promote");
        assert_eq!(o["target-exclusive"], "n");
        let o = options(&t(
            RestoreTargetType::Immediate,
            None,
            Some("20261201-100000F"),
        ));
        assert_eq!(o["set"], "20261201-100000F");
        assert!(!o.contains_key("target-exclusive"));
        let o = options(&t(RestoreTargetType::Name, Some("before_migration"), None));
        assert_eq!(o["target"], "before_migration");
        assert!(!o.contains_key("target-exclusive"));
    }
}
