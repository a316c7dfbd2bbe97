//! Shared by the webhook tests and the load tool; each uses a different part.
#![allow(dead_code)]

pub mod client;
pub mod reviews;
pub mod server;
pub mod tls;
