//! wxbroker: a daemon that owns WeChat credentials (access tokens,
//! tickets, Open Platform and WeCom service-provider tokens) and serves
//! them to the services on a host or a fleet.
//!
//! The modules stand in layers, each importing only those below it
//! (`tests/layers.rs` fails the build on any loop), from the leaves up:
//!
//! 1. Vocabulary and leaves: [`credential`] (the credentials the broker
//!    owns), [`secret`], [`clock`], [`errors`] (an error and its causes,
//!    each once, on one line), [`files`] (every durable file, opened and
//!    replaced safely), [`metrics`] (the Prometheus registry), [`jssdk`],
//!    [`errmsg`], [`wechat_path`] (a WeChat API path judged as WeChat
//!    would: which credential it carries, whether it may be forwarded),
//!    [`http_io`] (bodies with a deadline, plain responses, query
//!    strings), [`client`], [`notify`], [`process_guard`], [`fd_limit`],
//!    and [`simulator`], a faithful fake of WeChat's API for tests and
//!    `demo`.
//! 2. [`tls`], then [`config`]: the TOML file as validated settings.
//! 3. The outside world: [`upstream`] (how the broker's own calls reach
//!    WeChat), [`wechat`] (the credential protocol and its error classes),
//!    [`store`] (tokens and daily counts across restarts, Redis for a
//!    fleet), [`identity`] (who may read or forward what), [`audit`]
//!    (every forwarded call, recorded off the request path), [`logging`],
//!    [`reload`].
//! 4. [`engine`]: one writer task per credential (a refresher, or a
//!    follower of a leader broker), and lock-free readers; it knows no
//!    kind. [`children`] runs many credentials under one parent as one
//!    table on the engine's policy.
//! 5. The kinds: the apps and their tickets (in [`engine`]'s `app.rs`),
//!    [`platform`] (the Open Platform), [`suite`] (WeCom service
//!    providers), [`sink`] (token files).
//! 6. [`broker`]: every configured credential, by kind, and the gauges a
//!    scrape reads; [`diagnostics`]: quota and rid lookups made with the
//!    broker's own credentials.
//! 7. [`server`]: the token API on TCP and a Unix socket (each route a
//!    row of one table over the credential operations), the proxy, the
//!    WeChat-compatible listener, the remote listener, the operations
//!    listener.
//! 8. The daemon ([`start`], [`Daemon`]); the binary (`src/main.rs`, one
//!    module per command under `src/cmd/`) sits on top, with [`cli`] (its
//!    command line) and [`demo`] (the demo's simulator and settings).
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
