//! Start-to-ready time: spawns a command (the daemon), polls `GET /readyz`
//! on its operations listener every millisecond, and prints how long it
//! took from spawn to the first `200`. Then stops the daemon with SIGTERM.
//!
//! ```text
//! cargo run --release --example ready_time -- --probe 127.0.0.1:9931 \
//!     -- target/release/wxbroker serve --config bench.toml
//! ```

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use clap::Parser;

#[derive(Debug, Parser)]
struct Args {
    /// The operations listener to probe.
    #[arg(long)]
    probe: SocketAddr,
    /// Give up after this long.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    timeout: Duration,
    /// Where the daemon's stderr goes.
    #[arg(long)]
    log: Option<PathBuf>,
    /// The command and its arguments.
    #[arg(last = true, required = true)]
    command: Vec<String>,
}

/// The status code of `GET /readyz`, or `None` if nothing answered.
fn probe(addr: SocketAddr) -> Option<u16> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_millis(100)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(1))).ok()?;
    stream
        .write_all(b"GET /readyz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .ok()?;
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).ok()?;
    std::str::from_utf8(&head[9..12]).ok()?.parse().ok()
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let stderr = match &args.log {
        Some(path) => Stdio::from(std::fs::File::create(path)?),
        None => Stdio::null(),
    };
    let started = Instant::now();
    let mut child = Command::new(&args.command[0])
        .args(&args.command[1..])
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()?;
    let mut ready = None;
    let mut probes = 0u32;
    while started.elapsed() < args.timeout {
        probes += 1;
        if probe(args.probe) == Some(200) {
            ready = Some(started.elapsed());
            break;
        }
        if let Some(status) = child.try_wait()? {
            anyhow::bail!("the daemon exited before it was ready: {status}");
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let stopped = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    if !matches!(stopped, Ok(status) if status.success()) {
        child.kill()?;
    }
    child.wait()?;
    match ready {
        Some(took) => {
            println!(
                "ready_ms={:.2} probes={probes}",
                took.as_secs_f64() * 1000.0
            );
            Ok(())
        }
        None => anyhow::bail!("not ready within {:?}", args.timeout),
    }
}
