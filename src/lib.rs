//! wxbroker: a sidecar daemon that owns WeChat access tokens.

pub mod broker;
pub mod clock;
pub mod config;
pub mod metrics;
pub mod secret;
pub mod simulator;
pub mod store;
pub mod wechat;
