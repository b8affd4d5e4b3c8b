//! The `synod` binary.

use clap::Parser;

// The server allocates and frees many short-lived buffers per request (bodies, encoded
// log entries, responses); mimalloc handles that pattern with far less CPU than glibc's
// allocator.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
use synod::config::{Cli, Command};

fn main() {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => {
            let config = match args.resolve() {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("synod: {e}");
                    std::process::exit(2);
                }
            };
            tracing_subscriber::fmt()
                .with_env_filter(
                    tracing_subscriber::EnvFilter::try_from_default_env()
                        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&config.log)),
                )
                .with_writer(std::io::stderr)
                .init();
            let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("synod: cannot start the runtime: {e}");
                    std::process::exit(1);
                }
            };
            if let Err(e) = runtime.block_on(synod::server::run(config)) {
                eprintln!("synod: {e:#}");
                std::process::exit(1);
            }
        }
        Command::Cluster(args) => {
            let result = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(anyhow::Error::from)
                .and_then(|rt| rt.block_on(synod::cli::cluster(args)));
            match result {
                Ok(out) => print!("{}", out.trim_end_matches('\n').to_string() + "\n"),
                Err(e) => {
                    eprintln!("synod: {e:#}");
                    std::process::exit(1);
                }
            }
        }
    }
}
