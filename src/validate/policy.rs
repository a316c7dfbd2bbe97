//! The operator configuration's `policy`: the images and priority classes a cluster may
//! use, whoever creates it. Checked on the resolved spec, so a default counts like a value
//! the user wrote; the controller checks again before it renders.

use crate::api::PostgresClusterSpec;
use crate::config::Policy;

use super::field::{Errors, Path};

pub fn check(spec: &PostgresClusterSpec, policy: &Policy, e: &mut Errors) {
    let root = Path::new("spec");
    let images = [
        (root.child("image"), spec.image.as_deref()),
        (
            root.child("backup").child("pgbackrest").child("image"),
            spec.backup
                .as_ref()
                .and_then(|b| b.pgbackrest.as_ref())
                .and_then(|p| p.image.as_deref()),
        ),
        (
            root.child("pooler").child("image"),
            spec.pooler.as_ref().and_then(|p| p.image.as_deref()),
        ),
        (
            root.child("monitoring").child("exporter").child("image"),
            spec.monitoring
                .as_ref()
                .and_then(|m| m.exporter.as_ref())
                .and_then(|x| x.image.as_deref()),
        ),
    ];
    for (path, image) in images {
        if let Some(image) = image
            && !policy.allows_image(image)
        {
            let allowed = policy.allowed_images.as_deref().unwrap_or_default();
            e.forbidden(
                &path,
                format!(
                    "{image:?} is not allowed by the operator's policy (allowedImages: {})",
                    allowed.join(", ")
                ),
            );
        }
    }
    let class = spec
        .scheduling
        .as_ref()
        .and_then(|s| s.priority_class_name.as_deref());
    if let Some(class) = class
        && !policy.allows_priority_class(class)
    {
        let allowed = policy
            .allowed_priority_classes
            .as_deref()
            .unwrap_or_default();
        e.forbidden(
            &root.child("scheduling").child("priorityClassName"),
            format!(
                "{class:?} is not allowed by the operator's policy (allowedPriorityClasses: {})",
                allowed.join(", ")
            ),
        );
    }
}
