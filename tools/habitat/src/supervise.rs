//! `habitat supervise`: keeps one program of the local stack running, as compose's
//! `restart: unless-stopped` does. The program runs as this process's child; when it
//! exits it is started again after a backoff (1 s doubling to 30 s, back to 1 s once it
//! has run for a minute). SIGTERM or SIGINT stops the program (SIGTERM, then SIGKILL after
//! its grace) and then the supervisor. Its state — the program's pid, restarts, the last
//! exit and when — is kept in a JSON file `habitat status` reads.

use std::{
    ffi::OsString,
    path::{Path, PathBuf},
    process::{ExitStatus, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};
use chrono::{DateTime, Utc};
use clap::Args;
use serde::{Deserialize, Serialize};
use tokio::signal::unix::{SignalKind, signal};

/// First wait before a restart.
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
/// Longest wait before a restart.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// A program that ran this long is healthy again: its next restart waits the first backoff.
const HEALTHY_AFTER: Duration = Duration::from_secs(60);
/// How long a stopping program gets between SIGTERM and SIGKILL.
const GRACE: Duration = Duration::from_secs(10);

#[derive(Debug, Args)]
pub struct SuperviseArgs {
    /// The state file to keep.
    #[arg(long)]
    pub state: PathBuf,
    /// The signal that stops the program: TERM, or INT (Postgres's fast shutdown).
    #[arg(long, default_value = "TERM", value_parser = ["TERM", "INT"])]
    pub stop_signal: String,
    /// The program and its arguments.
    #[arg(last = true, required = true)]
    pub command: Vec<OsString>,
}

/// What a supervisor reports about its program.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    /// The running program's pid (none between a death and its restart).
    pub pid: Option<u32>,
    /// Restarts since the supervisor started.
    pub restarts: u32,
    /// How the program last ended ("exit code 1", "killed by signal 9").
    pub last_exit: Option<String>,
    pub last_exit_at: Option<DateTime<Utc>>,
    /// When the running program was started.
    pub started_at: Option<DateTime<Utc>>,
}

impl State {
    /// The state in `path`, if a supervisor wrote one.
    pub fn read(path: &Path) -> Option<Self> {
        serde_json::from_slice(&std::fs::read(path).ok()?).ok()
    }

    fn write(&self, path: &Path) -> Result<()> {
        let temporary = path.with_extension("state.tmp");
        std::fs::write(&temporary, serde_json::to_vec(self)?)?;
        std::fs::rename(&temporary, path)
            .with_context(|| format!("cannot write {}", path.display()))
    }
}

/// How an exit status reads in `habitat status`.
pub fn describe(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt as _;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit code {code}"),
        (None, Some(signal)) => format!("killed by signal {signal}"),
        (None, None) => "ended".to_owned(),
    }
}

/// The wait before the next restart: doubled after a short run, reset after a healthy one.
fn next_backoff(previous: Duration, ran: Duration) -> Duration {
    if ran >= HEALTHY_AFTER {
        FIRST_BACKOFF
    } else {
        (previous * 2).min(MAX_BACKOFF)
    }
}

/// Runs the supervisor until SIGTERM or SIGINT.
pub fn run(args: &SuperviseArgs) -> Result<()> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(supervise(args))
}

async fn supervise(args: &SuperviseArgs) -> Result<()> {
    let (program, rest) = args.command.split_first().context("no program given")?;
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut state = State::default();
    let mut backoff = FIRST_BACKOFF / 2;
    loop {
        let mut child = tokio::process::Command::new(program)
            .args(rest)
            .stdin(Stdio::null())
            .spawn()
            .with_context(|| format!("cannot start {}", program.to_string_lossy()))?;
        let started = Instant::now();
        state.pid = child.id();
        state.started_at = Some(Utc::now());
        state.write(&args.state)?;
        let status = tokio::select! {
            status = child.wait() => status?,
            _ = terminate.recv() => return stop(child, state, args).await,
            _ = interrupt.recv() => return stop(child, state, args).await,
        };
        let ran = started.elapsed();
        backoff = next_backoff(backoff, ran);
        state.pid = None;
        state.restarts += 1;
        state.last_exit = Some(describe(status));
        state.last_exit_at = Some(Utc::now());
        state.write(&args.state)?;
        eprintln!(
            "habitat supervise: {} ended ({}) after {} s; starting it again in {} s.",
            program.to_string_lossy(),
            describe(status),
            ran.as_secs(),
            backoff.as_secs()
        );
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            _ = terminate.recv() => return Ok(()),
            _ = interrupt.recv() => return Ok(()),
        }
    }
}

/// Stops the program: its stop signal, SIGKILL after the grace.
async fn stop(
    mut child: tokio::process::Child,
    mut state: State,
    args: &SuperviseArgs,
) -> Result<()> {
    let signal = if args.stop_signal == "INT" {
        libc::SIGINT
    } else {
        libc::SIGTERM
    };
    if let Some(pid) = child.id() {
        _ = devstack::process::signal(i32::try_from(pid)?, signal);
    }
    let status = match tokio::time::timeout(GRACE, child.wait()).await {
        Ok(status) => status?,
        Err(_) => {
            child.kill().await?;
            child.wait().await?
        }
    };
    state.pid = None;
    state.last_exit = Some(format!("stopped ({})", describe(status)));
    state.last_exit_at = Some(Utc::now());
    state.write(&args.state)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restarts_back_off_and_a_healthy_run_resets_the_backoff() {
        let mut backoff = FIRST_BACKOFF / 2;
        let waits: Vec<u64> = (0..7)
            .map(|_| {
                backoff = next_backoff(backoff, Duration::from_secs(2));
                backoff.as_secs()
            })
            .collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 30, 30]);
        assert_eq!(next_backoff(backoff, HEALTHY_AFTER), FIRST_BACKOFF);
    }
}
