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

/// The first of `n` consecutive ports nothing listens on, below Linux's ephemeral range
/// (32768 and up): a port of a stack is chosen before the stack starts, and the client
/// connections of a stack already running take ephemeral ports, so a port from that range
/// can be taken by the time `up` binds it.
/// Ports already handed out by this process (not yet bound by their stack) are not handed
/// out again.
pub fn free_ports(n: u16) -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut given = GIVEN.lock().expect("ports lock");
    let free =
        |p: u16| !given.contains(&p) && std::net::TcpListener::bind(("127.0.0.1", p)).is_ok();
    loop {
        let first = 20_000 + u16::try_from(rand_below(12_000)).expect("small");
        if (0..n).all(|i| free(first + i)) {
            given.extend(first..first + n);
            return first;
        }
    }
}

/// A free port below the ephemeral range (see [`free_ports`]).
pub fn free_port() -> u16 {
    free_ports(1)
}

/// A number below `n`, different per call.
fn rand_below(n: u32) -> u32 {
    u32::from_le_bytes(
        uuid::Uuid::new_v4().as_bytes()[..4]
            .try_into()
            .expect("four bytes"),
    ) % n
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
