//! pgpilot: a PostgreSQL operator for Kubernetes. All decisions happen at admission time in
//! pure functions (`resolve`, `validate`, `render`); the reconciler only materializes.

pub mod admission;
pub mod api;
pub mod config;
pub mod controller;
pub mod devcluster;
pub mod manifest;
pub mod metrics;
pub mod names;
pub mod patroni;
pub mod pgprobe;
pub mod quantity;
pub mod render;
pub mod resolve;
pub mod validate;
pub mod webhook;
pub mod yaml;
