//! `wxbroker simulate`: the WeChat simulator alone, with the accounts and
//! suites given on the command line, for integration tests elsewhere.

use anyhow::Context;
use wxbroker::cli::SimulateArgs;
use wxbroker::config::LogFormat;
use wxbroker::logging;
use wxbroker::simulator::{AccountKind, SimConfig, Simulator};

use super::shutdown_signal;

pub async fn run(args: SimulateArgs) -> anyhow::Result<()> {
    logging::init(LogFormat::Pretty, "info");
    let simulator = Simulator::new(SimConfig {
        token_lifetime: args.token_lifetime,
        classic_overlap: args.overlap,
        stable_window: args.stable_window,
        daily_limit: args.daily_limit,
        ..SimConfig::default()
    });
    let accounts = if args.accounts.is_empty() {
        vec![wxbroker::cli::SimAccount {
            appid: "wxdemo0000000001".into(),
            secret: "demo-secret".into(),
            wecom: false,
        }]
    } else {
        args.accounts
    };
    for account in &accounts {
        let kind = if account.wecom {
            AccountKind::Wecom
        } else {
            AccountKind::Wechat
        };
        simulator.add_account(&account.appid, &account.secret, kind);
    }
    for arg in &args.suites {
        let suite_id = &arg.suite.suite_id;
        simulator.add_suite(arg.suite.clone());
        simulator.set_suite_receive_id(suite_id, arg.receive_id);
        if let Some(url) = &arg.callback {
            simulator.set_suite_callback_url(suite_id, url);
        }
    }
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("simulator {}", args.listen))?;
    let addr = listener.local_addr()?;
    println!("wechat simulator on http://{addr}");
    for account in &accounts {
        println!(
            "  account {} ({})",
            account.appid,
            if account.wecom { "wecom" } else { "wechat" }
        );
    }
    for arg in &args.suites {
        let suite = &arg.suite;
        match &arg.callback {
            Some(url) => println!(
                "  suite {} ({}) pushing a suite_ticket to {url} every {}",
                suite.suite_id,
                if suite.customized {
                    "代开发"
                } else {
                    "third-party app"
                },
                humantime::format_duration(arg.ticket_every)
            ),
            None => println!(
                "  suite {} (no callback: POST /__sim/suites to set one)",
                suite.suite_id
            ),
        }
    }
    println!("  admin: http://{addr}/__sim/calls, http://{addr}/__sim/suites/calls");
    // The listener is bound already, so a suite token can be fetched with
    // the first ticket the moment it is pushed.
    let pushers: Vec<_> = args
        .suites
        .iter()
        .filter(|arg| arg.callback.is_some())
        .map(|arg| simulator.spawn_suite_ticket_pusher(&arg.suite.suite_id, arg.ticket_every))
        .collect();
    simulator.serve(listener, shutdown_signal()).await?;
    pushers.iter().for_each(tokio::task::JoinHandle::abort);
    Ok(())
}
