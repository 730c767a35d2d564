//! `wxbroker demo`: the daemon against the built-in simulator, with the
//! banner and showcase that [`wxbroker::demo`] writes.

use anyhow::Context;
use wxbroker::cli::DemoArgs;
use wxbroker::config::LogFormat;
use wxbroker::{demo, logging, Listeners};

use super::shutdown_signal;

pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    logging::init(LogFormat::Pretty, "info");
    let simulator = demo::simulator(args.lifetime);
    let sim_listener = tokio::net::TcpListener::bind(args.simulator_listen)
        .await
        .with_context(|| format!("simulator {}", args.simulator_listen))?;
    let sim_url = format!("http://{}", sim_listener.local_addr()?);
    let (stop_sim, sim_stopped) = tokio::sync::oneshot::channel::<()>();
    let wecom = simulator.clone();
    let sim_task = tokio::spawn(simulator.serve(sim_listener, async move {
        let _ = sim_stopped.await;
    }));
    let config = demo::config(
        &sim_url,
        args.listen,
        &args.socket,
        args.metrics_listen,
        args.compat_listen,
        args.lifetime,
    )?;
    let listeners = Listeners::bind(&config)
        .await
        .context("binding the demo's listeners (pass --listen/--metrics-listen 127.0.0.1:0 if the ports are taken)")?;
    let listen = listeners.api_tcp_addr().unwrap_or(args.listen);
    let metrics = listeners.metrics_addr().unwrap_or(args.metrics_listen);
    let compat = listeners.compat_addr().unwrap_or(args.compat_listen);
    let callback = listeners
        .callback_addr()
        .context("the demo's callback listener")?;
    println!(
        "{}",
        demo::banner(
            listen,
            &args.socket,
            metrics,
            compat,
            &sim_url,
            args.lifetime
        )
    );
    let showcase = tokio::spawn(async move {
        println!("{}", demo::signed_wx_config(listen).await);
        println!(
            "{}",
            demo::suite_showcase(wecom, listen, compat, callback).await
        );
    });
    wxbroker::run(&config, listeners, shutdown_signal()).await?;
    showcase.abort();
    let _ = stop_sim.send(());
    let _ = sim_task.await;
    Ok(())
}
