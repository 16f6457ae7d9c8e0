//! `transport-server`: streams a shmring video ring to browsers over WebSocket.
//!
//! `transport-server --demo` starts an in-process test-pattern producer too, so one
//! command shows live video at http://127.0.0.1:8080/.
//!
//! Across machines: `--publish nats://HOST:PORT` sends every frame to NATS
//! (`video.<stream>`), and `--source nats://HOST:PORT/video.<stream>` serves that
//! stream from NATS instead of a ring (`docs/nats-video.md`).

mod config;
mod demo;

use clap::parser::ValueSource;
use clap::{CommandFactory, FromArgMatches, Parser};
use shmring_ws::Server;

use config::Config;
use demo::{DemoProducer, DemoSettings};

/// Streams a shmring video ring to browsers over WebSocket (/stream/ws), with a viewer
/// page at /, /health and /metrics.
#[derive(Parser, Debug)]
#[command(version)]
struct Cli {
    #[command(flatten)]
    config: Config,
    /// Also run a test-pattern producer in this process (shmring-nvenc's test pattern,
    /// libx264) writing the ring; keyframe requests go to it directly.
    #[arg(long)]
    demo: bool,
}

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .init();
    let matches = Cli::command().get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    for flag in ["view_token", "control_token"] {
        if matches.value_source(flag) == Some(ValueSource::CommandLine) {
            tracing::warn!(
                "a token was given on the command line, where every user of this machine sees it (ps); \
                 give it in SDR_VIEW_TOKEN / SDR_CONTROL_TOKEN or a --tokens-file instead"
            );
        }
    }
    let shm_path = cli.config.ring_path(cli.demo);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("transport-server: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        let options = cli.config.server_options(cli.demo)?;
        let server = Server::bind(options).await.map_err(|e| e.to_string())?;
        let _demo = if cli.demo {
            Some(start_demo(&server, &shm_path)?)
        } else {
            None
        };
        server
            .run(async {
                shutdown_signal().await;
                tracing::info!("shutting down");
            })
            .await
            .map_err(|e| e.to_string())?;
        Ok::<(), String>(())
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("transport-server: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Resolves on Ctrl-C (SIGINT) or SIGTERM (what `docker stop` and service managers send),
/// so the server shuts down cleanly and `--demo` removes its private ring either way.
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let terminate = async {
        match signal(SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::warn!("cannot watch for SIGTERM ({e}); stop the server with Ctrl-C");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate => {}
    }
}

fn start_demo(server: &Server, shm_path: &std::path::Path) -> Result<DemoProducer, String> {
    let producer = DemoProducer::start(shm_path, DemoSettings::default()).map_err(|e| e.to_string())?;
    server.keyframe_requests().set_direct(producer.keyframe_callback());
    let addr = server.local_addr().map_err(|e| e.to_string())?;
    tracing::info!("demo: open http://127.0.0.1:{}/ in a browser", addr.port());
    Ok(producer)
}
