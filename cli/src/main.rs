//! The `chunkstream-engine` executable: argument parsing and glue. The work
//! lives in the `chunkstream-engine` library.

mod bench;
mod bench_peer;
mod demo;
mod output;
mod path_memory;
mod paths;
mod recv;
mod relay;
mod send;
mod serve;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Move files between two hosts over QUIC, fast, verified end to end.
#[derive(Debug, Parser)]
#[command(
    name = "chunkstream-engine",
    version,
    about = "Move files between two hosts over QUIC, fast, verified end to end with BLAKE3",
    after_help = "Try it:  chunkstream-engine demo\n\n\
        On the receiving host:  chunkstream-engine recv --out DIR\n\
        On the sending host:    chunkstream-engine send FILE... --to HOST:4433 --peer FINGERPRINT --token TOKEN\n\n\
        Exit codes: 0 success, 1 failure (one-line reason on stderr), 2 usage error, 130 interrupted."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Receive files: listen, print fingerprint and token, write into --out.
    Recv(recv::RecvArgs),
    /// Send files and folders to a receiver.
    Send(send::SendArgs),
    /// Run the agent: receive like `recv`, and send jobs submitted to its
    /// HTTP API (dashboard, events, metrics, history in SQLite).
    Serve(serve::ServeArgs),
    /// List the transfers the agent (`serve`) sent and received.
    History(serve::history::HistoryArgs),
    /// Run a real, verified transfer on loopback with built-in defaults.
    Demo(demo::DemoArgs),
    /// List local interfaces (name, state, MTU, addresses) for --path.
    Paths(paths::PathsArgs),
    /// Relay UDP through an emulated link (rate, delay, jitter, loss).
    Relay(relay::RelayArgs),
    /// Run a scenario over emulated links; write a JSON report to results/.
    Bench(bench::BenchArgs),
    /// Put bench reports side by side, with ratios.
    Compare(bench::CompareArgs),
    /// Far ends of the bench's baseline contenders (internal).
    #[command(subcommand, hide = true)]
    BenchPeer(bench_peer::BenchPeer),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let is_relay = matches!(cli.command, Command::Relay(_));
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        // Colour codes only for a person at a terminal, never into a log file.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        let work = async {
            match cli.command {
                Command::Recv(args) => recv::run(args).await,
                Command::Send(args) => send::run(args).await,
                Command::Serve(args) => serve::run(args).await,
                Command::History(args) => serve::history::run(args),
                Command::Demo(args) => demo::run(args).await,
                Command::BenchPeer(cmd) => bench_peer::run(cmd).await,
                Command::Bench(args) => bench::run(args).await,
                Command::Compare(args) => bench::compare(args),
                Command::Paths(args) => paths::run(args),
                // The relay stops on Ctrl-C / SIGTERM itself and then reports.
                Command::Relay(args) => return relay::run(args).await.map(|()| ExitCode::SUCCESS),
            }
            .map(|()| ExitCode::SUCCESS)
        };
        tokio::select! {
            r = work => r,
            _ = interrupted(), if !is_relay => {
                eprintln!("interrupted; partial files (if any) are kept as .part");
                Ok(ExitCode::from(130))
            }
        }
    });
    // Do not wait for background tasks (open connections) on exit.
    runtime.shutdown_timeout(std::time::Duration::from_millis(100));
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", one_line(&e));
            ExitCode::FAILURE
        }
    }
}

/// Resolves on Ctrl-C or SIGTERM.
async fn interrupted() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
}

/// The error and its causes on one line.
fn one_line(e: &anyhow::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for cause in e.chain() {
        let s = cause.to_string();
        if !parts.iter().any(|p| p.contains(&s)) {
            parts.push(s);
        }
    }
    parts.join(": ").replace('\n', " ")
}
