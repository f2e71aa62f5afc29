//! Finding and starting the devbroker binary.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use anyhow::{Context, Result};

use crate::process::read_until;

/// Environment variable naming the devbroker binary to run.
pub const BIN_ENV: &str = "HABITAT_DEVBROKER_BIN";

/// The line devbroker prints once it accepts connections.
pub const READY_MARKER: &str = "devbroker listening on ";

/// The devbroker binary: `$HABITAT_DEVBROKER_BIN`, else the one built beside the running
/// executable.
pub fn binary() -> Result<PathBuf> {
    crate::process::sibling_binary("devbroker", BIN_ENV)
}

/// A devbroker started as a child process.
#[derive(Debug)]
pub struct BrokerProcess {
    pub child: Child,
    pub addr: SocketAddr,
}

/// Starts devbroker on a free loopback port (in memory, or durable in `data_dir`) and
/// waits for its startup line.
pub fn start(bin: &Path, data_dir: Option<&Path>, log: Option<&Path>) -> Result<BrokerProcess> {
    start_on(bin, SocketAddr::from(([127, 0, 0, 1], 0)), data_dir, log)
}

/// Starts devbroker listening on `listen` (a restart on the address its clients know),
/// in memory or durable in `data_dir`, and waits for its startup line. The log, when
/// given, is appended to.
pub fn start_on(
    bin: &Path,
    listen: SocketAddr,
    data_dir: Option<&Path>,
    log: Option<&Path>,
) -> Result<BrokerProcess> {
    let mut command = Command::new(bin);
    _ = command
        .arg("--listen")
        .arg(listen.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped());
    if let Some(dir) = data_dir {
        _ = command.arg("--data-dir").arg(dir);
    }
    if let Some(log) = log {
        _ = command.stderr(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(log)?,
        );
    }
    let mut child = command
        .spawn()
        .with_context(|| format!("cannot start {}", bin.display()))?;
    let line = read_until(&mut child, READY_MARKER, Duration::from_secs(30))
        .context("devbroker did not report ready")?;
    let addr = line
        .split(READY_MARKER)
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|addr| addr.parse().ok())
        .with_context(|| format!("unexpected startup line: {line}"))?;
    Ok(BrokerProcess { child, addr })
}

/// A devbroker on a data directory for tests that kill it: SIGKILLed by [`Durable::kill`]
/// (or by its guardian if the test dies first) and started again on the same address
/// and directory. Its log is appended to `log`.
#[derive(Debug)]
pub struct Durable {
    pub process: BrokerProcess,
    _guardian: crate::process::Guardian,
}

impl Durable {
    /// Starts the workspace's devbroker on `listen` (port 0: a free one), durable in `dir`.
    pub fn start(listen: SocketAddr, dir: &Path, log: &Path) -> Result<Self> {
        let process = start_on(&binary()?, listen, Some(dir), Some(log))?;
        let guardian =
            crate::process::Guardian::new(&format!("kill -9 {} 2>/dev/null", process.child.id()))?;
        Ok(Self {
            process,
            _guardian: guardian,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.process.addr
    }

    /// SIGKILL, as a crash.
    pub fn kill(mut self) {
        _ = self.process.child.kill();
        _ = self.process.child.wait();
    }
}
