//! Rules for changing a stored cluster: what cannot change without losing data or the
//! ability to restore it.

use std::cmp::Ordering;

use crate::api::{BackupRepo, PostgresClusterSpec};
use crate::quantity;

use super::backup::repo_kind;
use super::field::{Errors, Path};

pub fn transition(new: &PostgresClusterSpec, old: &PostgresClusterSpec, e: &mut Errors) {
    let p = Path::new("spec");
    if let (Some(n), Some(o)) = (new.postgres_version, old.postgres_version)
        && n != o
    {
        e.forbidden(
            &p.child("postgresVersion"),
            format!("cannot change from {o} to {n}: a major upgrade needs its own procedure (a new image within major {o} is a rolling update)"),
        );
    }
    let sp = p.child("storage");
    shrink(
        &sp.child("size"),
        &new.storage.size.0,
        &old.storage.size.0,
        e,
    );
    if new.storage.storage_class_name != old.storage.storage_class_name {
        immutable(
            &sp.child("storageClassName"),
            &old.storage.storage_class_name,
            e,
        );
    }
    if new.bootstrap != old.bootstrap {
        e.forbidden(
            &p.child("bootstrap"),
            "field is immutable: it acted once, when the cluster was created; to go back in time in place, use spec.restore",
        );
    }
    let rp = p.child("backup").child("pgbackrest").child("repos");
    let new_repos = new.backup_repos();
    let old_repos = old.backup_repos();
    for (i, r) in new_repos.iter().enumerate() {
        let path = rp.index(i);
        if let Some(o) = old_repos.iter().find(|o| o.name == r.name) {
            same_repo(&path, r, o, e);
        } else if let Some(o) = old_repos
            .iter()
            .find(|o| destination(o).is_some() && destination(o) == destination(r))
        {
            e.invalid_str(
                &path.child("name"),
                &r.name,
                format!("this repository was named {:?}: a repository keeps its name, or its backups and archive are lost to pgBackRest", o.name),
            );
        }
    }
}

/// Where a repository's data lives, to recognise a repository under a new name.
fn destination(r: &BackupRepo) -> Option<String> {
    if let Some(s3) = &r.s3 {
        return Some(format!("s3://{}/{}", s3.endpoint, s3.bucket));
    }
    if let Some(g) = &r.gcs {
        return Some(format!("gs://{}", g.bucket));
    }
    if let Some(a) = &r.azure {
        return Some(format!("azure://{}/{}", a.account, a.container));
    }
    None
}

fn same_repo(path: &Path, new: &BackupRepo, old: &BackupRepo, e: &mut Errors) {
    if let (Some(n), Some(o)) = (repo_kind(new), repo_kind(old))
        && n != o
    {
        e.forbidden(
            path,
            format!(
                "{} cannot move from {o} to {n}; add a new repository instead",
                new.name
            ),
        );
    }
    if let (Some(n), Some(o)) = (&new.volume, &old.volume) {
        let vp = path.child("volume");
        if let (Some(ns), Some(os)) = (&n.size, &o.size) {
            shrink(&vp.child("size"), &ns.0, &os.0, e);
        }
        if n.storage_class_name != o.storage_class_name {
            immutable(&vp.child("storageClassName"), &o.storage_class_name, e);
        }
    }
}

fn shrink(path: &Path, new: &str, old: &str, e: &mut Errors) {
    if quantity::compare(new, old) == Some(Ordering::Less) {
        e.forbidden(
            path,
            format!("cannot shrink from {old} to {new}: volumes can only grow"),
        );
    }
}

fn immutable(path: &Path, old: &Option<String>, e: &mut Errors) {
    let was = old
        .as_deref()
        .map_or("null (the cluster default)".to_owned(), |s| {
            format!("{s:?}")
        });
    e.forbidden(
        path,
        format!("field is immutable (was {was}): existing volumes cannot change class"),
    );
}
