//! The `synod` binary.

use clap::Parser;

// The server allocates and frees many short-lived buffers per request (bodies, encoded
// log entries, responses); mimalloc handles that pattern with far less CPU than glibc's
// allocator. It is built without transparent huge pages (feature `no_thp`): with them, every
// fresh 2 MiB region is zeroed on first touch and split again when freed, which cost the
// three-node raft benchmark about 15% of its register throughput on a 2-core machine.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
use synod::cli::SnapshotAction;
use synod::config::{AuthAction, Cli, Command};

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
            let filter = tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&config.log));
            let logs = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
            match config.log_format {
                synod::config::LogFormat::Text => logs.init(),
                synod::config::LogFormat::Json => logs.json().flatten_event(true).with_current_span(false).init(),
            }
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
        Command::Cluster(args) => finish(client(synod::cli::cluster(args))),
        Command::Apps(server) => finish(client(synod::cli::apps(server))),
        Command::App { name, server } => finish(client(synod::cli::app(server, &name))),
        Command::Instance { action, server } => finish(client(synod::cli::instance(server, action))),
        Command::Status(server) => finish(client(synod::cli::status(server))),
        Command::Auth { action } => finish(auth(action)),
        Command::Snapshot { action } => finish(match action {
            SnapshotAction::Save { file, local, server } => client(synod::cli::snapshot_save(&file, local, server)),
            SnapshotAction::Restore { file, data_dir } => synod::cli::snapshot_restore(&file, &data_dir),
            SnapshotAction::Inspect { file } => synod::cli::snapshot_inspect(&file),
        }),
        Command::Watch(server) => {
            finish(client(async move { synod::cli::watch(server).await.map(|()| String::new()) }))
        }
    }
}

/// `synod auth …`: what to paste into the auth file.
fn auth(action: AuthAction) -> anyhow::Result<String> {
    match action {
        AuthAction::HashPassword => {
            let mut line = String::new();
            std::io::stdin().read_line(&mut line)?;
            let password = line.trim_end_matches(['\n', '\r']);
            if password.is_empty() {
                anyhow::bail!("no password on standard input");
            }
            synod::auth::users::hash_password(password).map_err(anyhow::Error::msg)
        }
        AuthAction::NewToken => {
            let (token, digest) = synod::auth::users::new_token();
            Ok(format!("token:        {token}\ntoken_sha256 = \"{digest}\""))
        }
    }
}

/// Runs a client command on a small runtime.
fn client(fut: impl std::future::Future<Output = anyhow::Result<String>>) -> anyhow::Result<String> {
    tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(anyhow::Error::from)?.block_on(fut)
}

/// Prints a client command's output, or its one-line error with exit code 1.
fn finish(result: anyhow::Result<String>) {
    match result {
        Ok(out) if out.is_empty() => {}
        Ok(out) => println!("{}", out.trim_end_matches('\n')),
        Err(e) => {
            eprintln!("synod: {e:#}");
            std::process::exit(1);
        }
    }
}
