//! pgBackRest repositories and their schedules.

use std::collections::BTreeSet;

use crate::api::{BackupRepo, PostgresClusterSpec, S3UriStyle};
use crate::names;
use crate::quantity;

use super::cron;
use super::field::{Errors, Path};

pub const REPO_NAMES: [&str; 4] = ["repo1", "repo2", "repo3", "repo4"];

pub fn backup(s: &PostgresClusterSpec, e: &mut Errors) {
    let p = Path::new("spec").child("backup").child("pgbackrest");
    let pb = s.backup.as_ref().and_then(|b| b.pgbackrest.as_ref());
    if let Some(image) = pb.and_then(|b| b.image.as_ref()) {
        super::image(&p.child("image"), image, e);
    }
    let repos = s.backup_repos();
    if repos.is_empty() {
        e.warn(
            &p.child("repos"),
            "no backup repository: the data cannot be restored if the volumes are lost",
        );
    }
    if repos.len() > REPO_NAMES.len() {
        e.too_many(&p.child("repos"), repos.len(), REPO_NAMES.len());
    }
    let mut seen = BTreeSet::new();
    for (i, r) in repos.iter().enumerate() {
        let rp = p.child("repos").index(i);
        if !REPO_NAMES.contains(&r.name.as_str()) {
            e.not_supported(&rp.child("name"), &r.name, &REPO_NAMES);
        } else if !seen.insert(r.name.as_str()) {
            e.duplicate(&rp.child("name"), &r.name);
        }
        repo(&rp, r, e);
    }
}

/// The kind of storage a repository uses.
pub fn repo_kind(r: &BackupRepo) -> Option<&'static str> {
    let kinds = [
        (r.s3.is_some(), "s3"),
        (r.gcs.is_some(), "gcs"),
        (r.azure.is_some(), "azure"),
        (r.volume.is_some(), "volume"),
    ];
    let mut set = kinds.iter().filter(|(on, _)| *on).map(|(_, k)| *k);
    match (set.next(), set.next()) {
        (Some(k), None) => Some(k),
        _ => None,
    }
}

pub(super) fn repo(rp: &Path, r: &BackupRepo, e: &mut Errors) {
    let kinds = [
        r.s3.is_some(),
        r.gcs.is_some(),
        r.azure.is_some(),
        r.volume.is_some(),
    ];
    match kinds.iter().filter(|k| **k).count() {
        0 => e.required(rp, "one of s3, gcs, azure or volume"),
        1 => {}
        _ => e.forbidden(rp, "only one of s3, gcs, azure or volume may be set"),
    }
    if let Some(s3) = &r.s3 {
        let p = rp.child("s3");
        let bucket_ok = (3..=63).contains(&s3.bucket.len())
            && s3
                .bucket
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '.' || c == '-')
            && s3.bucket.starts_with(|c: char| c.is_ascii_alphanumeric())
            && s3.bucket.ends_with(|c: char| c.is_ascii_alphanumeric());
        if !bucket_ok {
            e.invalid_str(
                &p.child("bucket"),
                &s3.bucket,
                "must be an S3 bucket name: 3 to 63 lower-case letters, digits, '.' or '-'",
            );
        }
        if s3.endpoint.contains("://") {
            e.invalid_str(&p.child("endpoint"), &s3.endpoint, "must be a host name (and optional port) without a scheme; pgBackRest always uses HTTPS");
        } else if !is_host_port(&s3.endpoint) {
            e.invalid_str(
                &p.child("endpoint"),
                &s3.endpoint,
                "must be a host name with an optional :port",
            );
        }
        if s3.region.is_empty()
            || !s3
                .region
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-')
        {
            e.invalid_str(
                &p.child("region"),
                &s3.region,
                "must be a region name such as eu-west-1",
            );
        }
        secret_ref(
            &p.child("credentialsSecret"),
            s3.credentials_secret.as_deref(),
            e,
        );
        secret_ref(&p.child("caSecret"), s3.ca_secret.as_deref(), e);
        if s3.bucket.contains('.') && s3.uri_style == Some(S3UriStyle::Host) {
            e.warn(
                &p.child("uriStyle"),
                format!("bucket {:?} holds a '.': addressed host-style as {}.{}, it does not match a wildcard certificate for the endpoint and pgBackRest refuses the connection; uriStyle: path avoids that", s3.bucket, s3.bucket, s3.endpoint),
            );
        }
    }
    if let Some(gcs) = &r.gcs {
        let p = rp.child("gcs");
        if gcs.bucket.is_empty() || gcs.bucket.len() > 222 || gcs.bucket.contains(['/', ' ']) {
            e.invalid_str(&p.child("bucket"), &gcs.bucket, "must be a bucket name");
        }
        secret_ref(
            &p.child("credentialsSecret"),
            gcs.credentials_secret.as_deref(),
            e,
        );
    }
    if let Some(az) = &r.azure {
        let p = rp.child("azure");
        if !(3..=24).contains(&az.account.len())
            || !az
                .account
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        {
            e.invalid_str(
                &p.child("account"),
                &az.account,
                "must be a storage account name: 3 to 24 lower-case letters and digits",
            );
        }
        if !(3..=63).contains(&az.container.len()) || !names::is_dns1123_label(&az.container) {
            e.invalid_str(
                &p.child("container"),
                &az.container,
                "must be a container name: 3 to 63 lower-case letters, digits and '-'",
            );
        }
        secret_ref(
            &p.child("credentialsSecret"),
            Some(&az.credentials_secret),
            e,
        );
    }
    if let Some(v) = &r.volume {
        let p = rp.child("volume");
        match &v.size {
            None => e.required(&p.child("size"), "a volume repository needs a size"),
            Some(size) => match quantity::bytes(&size.0) {
                Err(why) => e.invalid_str(&p.child("size"), &size.0, why),
                Ok(b) if b < quantity::GIB => {
                    e.invalid_str(&p.child("size"), &size.0, "must be at least 1Gi")
                }
                Ok(_) => {}
            },
        }
        if let Some(class) = &v.storage_class_name {
            super::storage_class(&p.child("storageClassName"), class, e);
        }
    }
    if let Some(s) = &r.schedules {
        let p = rp.child("schedules");
        let all = [
            ("full", &s.full),
            ("differential", &s.differential),
            ("incremental", &s.incremental),
        ];
        for (name, schedule) in all {
            if let Some(schedule) = schedule
                && let Err(why) = cron::check(schedule)
            {
                e.invalid_str(&p.child(name), schedule, why);
            }
        }
        if all.iter().all(|(_, s)| s.is_none()) {
            e.warn(
                &p,
                format!(
                    "no schedule for {}: only WAL is archived, no backup is taken automatically",
                    r.name
                ),
            );
        } else if s.full.is_none() {
            e.warn(&p.child("full"), format!("no full backup schedule for {}: differential and incremental backups need a full one to start from", r.name));
        }
    }
    if let Some(ret) = &r.retention {
        let p = rp.child("retention");
        if let Some(n) = ret.full {
            e.range(&p.child("full"), n, 1, 9_999_999);
        }
        if let Some(n) = ret.differential {
            e.range(&p.child("differential"), n, 1, 9_999_999);
        }
    }
}

fn secret_ref(p: &Path, name: Option<&str>, e: &mut Errors) {
    if let Some(name) = name
        && !names::is_dns1123_subdomain(name)
    {
        e.invalid_str(p, name, "must be a Secret name (a DNS-1123 subdomain)");
    }
}

fn is_host_port(s: &str) -> bool {
    let (host, port) = match s.rsplit_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (s, None),
    };
    let port_ok = port.is_none_or(|p| p.parse::<u16>().is_ok_and(|n| n > 0));
    let host_ok = !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        });
    host_ok && port_ok
}
