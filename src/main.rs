//! `convgate serve`: runs the gateway. See README.md for every setting.

use anyhow::Context;
use clap::{Parser, Subcommand};
use convgate::config::{Config, ServeArgs};
use tracing_subscriber::EnvFilter;

/// A self-hosted gateway speaking the Convrs cmd/ok JSON protocol.
#[derive(Parser)]
#[command(name = "convgate", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway.
    Serve(ServeArgs),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let Command::Serve(args) = Cli::parse().command;
    let config = Config::load(args)?;
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_new(&config.log).context("invalid log filter")?)
        .with_writer(std::io::stderr)
        .init();
    let gateway = convgate::server::start(config)
        .await
        .context("cannot start convgate")?;
    if let Some(token) = &gateway.bootstrap_token {
        // Shown once: only its SHA-256 is stored.
        println!("API token: {token}");
    }
    tracing::info!(websocket = %gateway.ws_url(), post = %gateway.api_url(), "API endpoints");
    shutdown_signal().await;
    tracing::info!("shutting down");
    gateway.shutdown();
    gateway.wait().await?;
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("install SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
