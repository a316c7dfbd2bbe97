//! `ContinuousArchiving`: whether the primary's WAL reaches the repositories, from the
//! primary's own report. PostgreSQL's `archive_command` (`archive-push.sh`, rendered with
//! the pgBackRest configuration) writes annotation `pgpilot.io/archive` on its pod after a
//! failed push, and after the first success following a failure or a container start; the
//! controller reads it with the pods it lists anyway. No exec, no SQL, no object-store key
//! outside the pods that already hold one.

use k8s_openapi::api::core::v1::Pod;
use serde::Deserialize;

use crate::render::ARCHIVE_ANNOTATION;

/// What `archive-report.py` writes.
#[derive(Deserialize, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
struct Report {
    ok: bool,
    wal: String,
    time: String,
    #[serde(default)]
    exit_code: Option<i64>,
    #[serde(default)]
    failures: Option<u64>,
    #[serde(default)]
    since: Option<String>,
}

/// Longest WAL name or time echoed from a report into the status: the annotation is
/// written from inside a database pod, so its content is bounded before it is repeated.
const FIELD_MAX: usize = 64;

fn bounded(s: &str) -> String {
    let plain: String = s
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || "-:.+TZ".contains(*c))
        .take(FIELD_MAX)
        .collect();
    if plain.is_empty() { "?".into() } else { plain }
}

/// Failed pushes since the primary's last successful one (0 while it archives), for the
/// metrics; `None` without a readable report.
pub fn failures(pods: &[Pod], primary: Option<&str>) -> Option<u64> {
    let r = read(pods, primary?)?.ok()?;
    Some(if r.ok { 0 } else { r.failures.unwrap_or(1) })
}

/// The primary's report, if it wrote one.
fn read(pods: &[Pod], primary: &str) -> Option<Result<Report, serde_json::Error>> {
    let text = super::members::annotation(pods, primary, ARCHIVE_ANNOTATION)?;
    Some(serde_json::from_str(text))
}

/// `ContinuousArchiving` (status, reason, message) for a cluster whose primary is
/// `primary`: `True` once it reported a push, `False` while its pushes fail, `Unknown`
/// without a primary or a report.
pub fn condition(pods: &[Pod], primary: Option<&str>) -> (&'static str, String, String) {
    let Some(primary) = primary else {
        return (
            "Unknown",
            "NoPrimary".into(),
            "no primary runs, so nothing archives".into(),
        );
    };
    let Some(report) = read(pods, primary) else {
        return (
            "Unknown",
            "NoReport".into(),
            format!(
                "{primary} has archived no WAL segment since its container started (it reports its first push, and every failure)"
            ),
        );
    };
    match report {
        Err(e) => (
            "Unknown",
            "UnreadableReport".into(),
            format!("{primary}'s annotation {ARCHIVE_ANNOTATION} cannot be read: {e}"),
        ),
        Ok(r) if r.ok => (
            "True",
            "Archiving".into(),
            format!(
                "{primary} pushed WAL segment {} to the repositories at {}",
                bounded(&r.wal),
                bounded(&r.time)
            ),
        ),
        Ok(r) => (
            "False",
            "ArchivePushFailed".into(),
            format!(
                "{primary}: archive-push of WAL segment {} failed {} time(s) since {} (pgBackRest exit code {}, last at {}); PostgreSQL keeps the segments in pg_wal and retries; see kubectl logs {primary} -c postgres",
                bounded(&r.wal),
                r.failures.unwrap_or(1),
                r.since
                    .as_deref()
                    .map(bounded)
                    .unwrap_or_else(|| "?".into()),
                r.exit_code
                    .map(|c| c.to_string())
                    .unwrap_or_else(|| "?".into()),
                bounded(&r.time)
            ),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn pod(name: &str, report: Option<&str>) -> Pod {
        let mut p = Pod::default();
        p.metadata.name = Some(name.into());
        if let Some(r) = report {
            p.metadata.annotations = Some(BTreeMap::from([(ARCHIVE_ANNOTATION.into(), r.into())]));
        }
        p
    }

    #[test]
    fn the_primarys_report_decides() {
        let ok = r#"{"ok":true,"wal":"000000010000000000000007","time":"2026-12-01T00:00:00Z"}"#;
        let failed = r#"{"ok":false,"wal":"000000010000000000000008","time":"2026-12-01T00:01:00Z","exitCode":82,"failures":3,"since":"2026-12-01T00:00:30Z"}"#;
        // A replica's stale report does not count: only the primary archives.
        let pods = [pod("pg-0", Some(ok)), pod("pg-1", Some(failed))];
        let (status, reason, message) = condition(&pods, Some("pg-0"));
        assert_eq!((status, reason.as_str()), ("True", "Archiving"));
        assert!(message.contains("000000010000000000000007"), "{message}");
        let (status, reason, message) = condition(&pods, Some("pg-1"));
        assert_eq!((status, reason.as_str()), ("False", "ArchivePushFailed"));
        assert!(
            message.contains("000000010000000000000008 failed 3 time(s) since 2026-12-01T00:00:30Z (pgBackRest exit code 82"),
            "{message}"
        );
        assert_eq!(condition(&pods, None).0, "Unknown");
        assert_eq!(failures(&pods, Some("pg-0")), Some(0));
        assert_eq!(failures(&pods, Some("pg-1")), Some(3));
        assert_eq!(failures(&[pod("pg-0", None)], Some("pg-0")), None);
        assert_eq!(condition(&[pod("pg-0", None)], Some("pg-0")).1, "NoReport");
    }

    #[test]
    fn a_hostile_report_is_bounded_and_never_trusted_as_true() {
        let (status, reason, _) = condition(&[pod("pg-0", Some("not json"))], Some("pg-0"));
        assert_eq!((status, reason.as_str()), ("Unknown", "UnreadableReport"));
        let long = format!(
            r#"{{"ok":false,"wal":"{}","time":"t\n<script>","failures":1}}"#,
            "A".repeat(10_000)
        );
        let (status, _, message) = condition(&[pod("pg-0", Some(&long))], Some("pg-0"));
        assert_eq!(status, "False");
        assert!(message.len() < 600, "{}", message.len());
        assert!(
            !message.contains('<') && !message.contains('\n'),
            "{message}"
        );
    }
}
