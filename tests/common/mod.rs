//! Shared helpers for the integration tests: start a real `synod serve` process on an
//! ephemeral loopback port with its own temporary data directory, and stop it on drop.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// A running `synod serve` child process.
pub struct ServerProcess {
    pub child: Child,
    /// `127.0.0.1:PORT` the server is listening on.
    pub addr: String,
    pub data_dir: PathBuf,
}

impl ServerProcess {
    /// Starts the synod binary with `serve --listen 127.0.0.1:0 --data-dir DIR` plus `extra`
    /// arguments and waits (bounded) until it reports its bound address on stdout.
    pub fn start(data_dir: &Path, extra: &[&str]) -> ServerProcess {
        let mut child = Command::new(env!("CARGO_BIN_EXE_synod"))
            .arg("serve")
            .arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--data-dir")
            .arg(data_dir)
            .args(extra)
            .env("RUST_LOG", "synod=info")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn synod");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            while let Some(Ok(line)) = lines.next() {
                if let Some(addr) = line.strip_prefix("synod listening on http://") {
                    let _ = tx.send(addr.trim().to_string());
                }
            }
        });
        let addr = match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(addr) => addr,
            Err(_) => {
                let _ = child.kill();
                panic!("synod did not report its listening address within 30 s");
            }
        };
        ServerProcess { child, addr, data_dir: data_dir.to_path_buf() }
    }

    /// Base URL of the Eureka API, e.g. `http://127.0.0.1:1234/eureka`.
    pub fn eureka_url(&self) -> String {
        format!("http://{}/eureka", self.addr)
    }

    /// Sends SIGKILL and reaps the process.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Polls `cond` every 50 ms until it returns true or `timeout` passes.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    cond()
}
