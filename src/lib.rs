//! wxbroker: a sidecar daemon that owns WeChat access tokens.

pub mod config;
pub mod secret;
pub mod simulator;
