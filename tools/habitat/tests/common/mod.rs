//! A local stack of `habitat up` in a scratch directory on free ports, purged when dropped.

#![allow(dead_code)]

use std::{
    net::{SocketAddr, TcpStream},
    path::PathBuf,
    process::{Command, Output},
    time::Duration,
};

use test_support::{scratch_dir, unique};

pub struct Stack {
    pub dir: PathBuf,
    pub broker_port: u16,
    pub postgres_port: u16,
    pub registry_port: u16,
    pub proxy_port: u16,
    /// The first of five consecutive free ports.
    pub metrics_port: u16,
}

/// The first of `n` consecutive free ports, below the ephemeral range: a port of a stack
/// is chosen before the stack starts (see [`devstack::process::free_ports`]).
pub fn free_ports(n: u16) -> u16 {
    devstack::process::free_ports(n).expect("free ports")
}

/// A free port below the ephemeral range.
pub fn free_port() -> u16 {
    free_ports(1)
}

/// Whether a line of `status` names `part` and says `state`.
pub fn says(status: &str, part: &str, state: &str) -> bool {
    status.lines().any(|line| {
        let mut words = line.split_whitespace();
        words.next() == Some(part) && words.next() == Some(state)
    })
}

impl Stack {
    pub fn new() -> Self {
        Self {
            dir: scratch_dir().join(unique("stack")),
            broker_port: free_port(),
            postgres_port: free_port(),
            registry_port: free_port(),
            proxy_port: free_port(),
            metrics_port: free_ports(6),
        }
    }

    pub fn habitat(&self, command: &str, broker_port: u16) -> Output {
        self.habitat_with(command, &[], broker_port)
    }

    /// `habitat <command> <extra…>` with this stack's directory and ports.
    pub fn habitat_with(&self, command: &str, extra: &[&str], broker_port: u16) -> Output {
        Command::new(env!("CARGO_BIN_EXE_habitat"))
            .arg(command)
            .args(extra)
            .arg("--state-dir")
            .arg(&self.dir)
            .args(["--broker-port", &broker_port.to_string()])
            .args(["--postgres-port", &self.postgres_port.to_string()])
            .args(["--registry-port", &self.registry_port.to_string()])
            .args(["--proxy-port", &self.proxy_port.to_string()])
            .args(["--metrics-port", &self.metrics_port.to_string()])
            .env_remove("HABITAT_STACK_DATABASE_URL")
            .output()
            .expect("run habitat")
    }

    pub fn run(&self, command: &str) -> String {
        let output = self.habitat(command, self.broker_port);
        assert!(
            output.status.success(),
            "habitat {command} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).expect("utf-8")
    }

    pub fn broker_pid(&self) -> i32 {
        std::fs::read_to_string(self.dir.join("devbroker.pid"))
            .expect("pid file")
            .trim()
            .parse()
            .expect("pid")
    }

    /// The pid of a supervised program itself (not its supervisor's), when it runs.
    pub fn program_pid(&self, name: &str) -> Option<i32> {
        habitat::supervise::State::read(&self.dir.join(format!("{name}.state")))?
            .pid
            .and_then(|pid| i32::try_from(pid).ok())
    }

    pub fn accepts(port: u16) -> bool {
        TcpStream::connect_timeout(
            &SocketAddr::from(([127, 0, 0, 1], port)),
            Duration::from_millis(500),
        )
        .is_ok()
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        _ = Command::new(env!("CARGO_BIN_EXE_habitat"))
            .args(["down", "--purge", "--state-dir"])
            .arg(&self.dir)
            .args(["--postgres-port", &self.postgres_port.to_string()])
            .output();
    }
}
