//! wxbroker: a sidecar daemon that owns WeChat access tokens.
//!
//! How the pieces fit:
//!
//! - [`config`] turns the TOML file into validated settings.
//! - [`wechat`] speaks WeChat's token protocol and classifies its failures.
//! - [`engine`] runs one refresher task per credential, the only writer
//!   of that credential; readers get the current value without waiting.
//! - [`broker`] holds every configured credential, by kind: the apps, the
//!   Open Platform's component apps, WeCom's suites.
//! - [`children`] runs many credentials under one parent (a platform's
//!   authorizers) as one compact table with one writer, on the engine's
//!   policy.
//! - [`store`] keeps tokens and daily fetch counts across restarts.
//! - [`files`] opens and replaces every durable file the broker keeps, and
//!   trusts only what its own uid alone could have written.
//! - [`server`] serves the token API on TCP and a Unix socket (with a
//!   token-injecting proxy to WeChat), the WeChat-compatible listener for
//!   unchanged SDKs, and `/metrics`, `/livez`, `/readyz` on the operations
//!   listener.
//! - [`wechat_path`] judges a WeChat API path as WeChat would (which
//!   credential it carries, whether it may be forwarded); [`http_io`] is
//!   the HTTP plumbing every listener shares (bodies with a deadline,
//!   plain responses, the reading of query strings).
//! - [`metrics`] owns the Prometheus registry.
//! - [`simulator`] is a faithful fake of WeChat's API, for tests and `demo`.
//! - [`client`] is the small HTTP client `wxbroker token` and
//!   `wxbroker probe` use.
//! - [`sink`] keeps an optional file per app holding its current token.
//! - [`notify`] tells systemd when the daemon is ready and when it stops.
//! - [`process_guard`] keeps the process from being dumped or traced.
//! - [`reload`] re-reads the configuration on SIGHUP off the signal loop.
//! - [`errors`] prints an error with its causes, each once, as one line.
//! - [`fd_limit`] raises the open-file limit at start and fits the
//!   connection limit to it.
//! - [`diagnostics`] asks WeChat, with the broker's own credentials, how
//!   much of a quota is left, resets it, and looks up an error's `rid`;
//!   its poll exports the quota left as a metric.
//! - [`tls`] serves the compatible listeners over HTTPS and makes the
//!   local CA of `wxbroker tls init`; [`upstream`] says how the broker's
//!   own calls reach WeChat (`connect_to`, its own DNS client).
//! - [`identity`] says which apps a request may read: a remote client's
//!   bearer credential, a local peer's uid and gid (`[[clients]]`).
//! - [`audit`] records every call the broker forwards to WeChat (who,
//!   what, WeChat's answer) in the log and `[log] audit_file`, off the
//!   request path; [`errmsg`] reads the rid and a refused address out of
//!   WeChat's error messages.
//! - [`suite`] holds the logic of WeCom service providers' suites (their
//!   callback checks, pushed events and the suite_ticket rule), as pure
//!   functions for the engine to run.
//!
//! [`start`] wires them together from already-bound [`Listeners`], so tests
//! and `demo` bind ephemeral ports themselves.

pub mod audit;
pub mod broker;
pub mod children;
pub mod cli;
pub mod client;
pub mod clock;
pub mod config;
pub mod credential;
mod daemon;
pub mod demo;
pub mod diagnostics;
pub mod engine;
pub mod errmsg;
pub mod errors;
pub mod fd_limit;
pub mod files;
pub mod http_io;
pub mod identity;
pub mod jssdk;
pub mod logging;
pub mod metrics;
pub mod notify;
pub mod platform;
pub mod process_guard;
pub mod reload;
pub mod secret;
pub mod server;
pub mod simulator;
pub mod sink;
pub mod store;
pub mod suite;
pub mod tls;
pub mod upstream;
pub mod wechat;
pub mod wechat_path;

pub use daemon::{run, start, start_with, Daemon, NotReady, StartError, Tuning};
pub use server::Listeners;
