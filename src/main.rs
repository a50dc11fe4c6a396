//! `convgate serve`: runs the gateway; `convgate migrate`: copies an
//! embedded data dir into PostgreSQL. See README.md for every setting.

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
    Serve(Box<ServeArgs>),
    /// Copy an embedded data dir into an empty PostgreSQL database (the
    /// data dir is left as it was), then verify the counts.
    Migrate(MigrateArgs),
}

/// Flags of `convgate migrate`.
#[derive(clap::Args)]
struct MigrateArgs {
    /// The data dir to copy (stop the gateway using it first).
    #[arg(long)]
    from: std::path::PathBuf,
    /// The PostgreSQL URL to copy into, e.g. postgres://convgate@127.0.0.1:5432/convgate.
    #[arg(long, env = "CONVGATE_STORE", hide_env_values = true)]
    to: convgate::config::Secret,
}

/// mimalloc rather than the system allocator: a command allocates a few
/// dozen small short-lived buffers (JSON fields, keys, the reply), the
/// pattern glibc's malloc is slowest at (see the README's Performance).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = match Cli::parse().command {
        Command::Serve(args) => *args,
        Command::Migrate(m) => return migrate(m).await,
    };
    let config = Config::load(args)?;
    let filter = EnvFilter::try_new(&config.log).context("invalid log filter")?;
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if config.log_format == "json" {
        // One JSON object per line, for log collectors.
        logs.json().init();
    } else {
        // Colours only for a person at a terminal, never in files.
        logs.with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init();
    }
    // Handlers first: a signal that arrives once we are serving must stop us gracefully.
    let shutdown = shutdown_signal()?;
    let gateway = convgate::server::start(config)
        .await
        .context("cannot start convgate")?;
    if let Some(token) = &gateway.bootstrap_token {
        // Shown once: only its SHA-256 is stored.
        println!("API token: {token}");
    }
    tracing::info!(websocket = %gateway.ws_url(), post = %gateway.api_url(), "API endpoints");
    match &gateway.ctx.config.public_base_url {
        Some(base) => tracing::info!(
            providers = %format!("{}/channels/{{kind}}/{{botID}}", base.trim_end_matches('/')),
            console = %format!("{}/console", base.trim_end_matches('/')),
            "provider webhooks and agent console (public_base_url)"
        ),
        None => tracing::info!(
            console = %format!("{}/console", gateway.api_url().trim_end_matches("/api")),
            "public_base_url is not set: SMS webhooks cannot be verified, sends ask for no status callbacks, users' url is empty"
        ),
    }
    shutdown.await;
    tracing::info!("shutting down");
    gateway.shutdown();
    gateway.wait().await?;
    Ok(())
}

/// `convgate migrate`: copies, verifies, prints the counts by kind.
async fn migrate(m: MigrateArgs) -> anyhow::Result<()> {
    let from = m.from.clone();
    let report = tokio::task::spawn_blocking(move || {
        convgate::store::copy_to_postgres(&m.from, m.to.expose())
    })
    .await?
    .with_context(|| format!("cannot migrate {}", from.display()))?;
    println!(
        "copied {} keys from {}; verified:",
        report.keys,
        from.display()
    );
    for (kind, n) in &report.by_kind {
        println!("  {kind:<6} {n}");
    }
    Ok(())
}

/// Installs the SIGINT and SIGTERM handlers now; the future resolves on either.
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut int = signal(SignalKind::interrupt()).context("install SIGINT handler")?;
    let mut term = signal(SignalKind::terminate()).context("install SIGTERM handler")?;
    Ok(async move {
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
    })
}
