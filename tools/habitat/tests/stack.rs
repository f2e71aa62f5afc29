//! `habitat up | status | down` on real processes: idempotent start, two stacks side by
//! side, and `down` stopping exactly what its own `up` started.

use std::{
    net::{SocketAddr, TcpStream},
    path::PathBuf,
    process::{Command, Output},
    time::Duration,
};

use devstack::process::{free_port, is_alive};
use test_support::{scratch_dir, unique};

struct Stack {
    dir: PathBuf,
    broker_port: u16,
    postgres_port: u16,
    registry_port: u16,
    proxy_port: u16,
    /// The first of five consecutive free ports.
    metrics_port: u16,
}

/// The first of `n` consecutive ports nothing listens on.
fn free_ports(n: u16) -> u16 {
    loop {
        let first = free_port().expect("port");
        let all_free = (0..n).all(|i| {
            first
                .checked_add(i)
                .is_some_and(|p| std::net::TcpListener::bind(("127.0.0.1", p)).is_ok())
        });
        if all_free {
            return first;
        }
    }
}

/// Whether a line of `status` names `part` and says `state`.
fn says(status: &str, part: &str, state: &str) -> bool {
    status.lines().any(|line| {
        let mut words = line.split_whitespace();
        words.next() == Some(part) && words.next() == Some(state)
    })
}

impl Stack {
    fn new() -> Self {
        Self {
            dir: scratch_dir().join(unique("stack")),
            broker_port: free_port().expect("port"),
            postgres_port: free_port().expect("port"),
            registry_port: free_port().expect("port"),
            proxy_port: free_port().expect("port"),
            metrics_port: free_ports(5),
        }
    }

    fn habitat(&self, command: &str, broker_port: u16) -> Output {
        Command::new(env!("CARGO_BIN_EXE_habitat"))
            .arg(command)
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

    fn run(&self, command: &str) -> String {
        let output = self.habitat(command, self.broker_port);
        assert!(
            output.status.success(),
            "habitat {command} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).expect("utf-8")
    }

    fn broker_pid(&self) -> i32 {
        std::fs::read_to_string(self.dir.join("devbroker.pid"))
            .expect("pid file")
            .trim()
            .parse()
            .expect("pid")
    }

    fn accepts(port: u16) -> bool {
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

#[test]
fn two_stacks_run_side_by_side_and_down_stops_only_its_own() {
    let a = Stack::new();
    let b = Stack::new();

    let up = a.run("up");
    assert!(up.contains(&format!("127.0.0.1:{}", a.broker_port)), "{up}");
    assert!(
        up.contains(&format!("127.0.0.1:{}/habitat", a.postgres_port)),
        "{up}"
    );
    let first_pid = a.broker_pid();
    _ = b.run("up");
    for port in [
        a.broker_port,
        a.postgres_port,
        a.registry_port,
        a.proxy_port,
        a.metrics_port + 4,
        b.broker_port,
        b.postgres_port,
        b.registry_port,
        b.proxy_port,
        b.metrics_port + 4,
    ] {
        assert!(Stack::accepts(port), "port {port}");
    }

    // Running `up` again reuses what runs.
    _ = a.run("up");
    assert_eq!(a.broker_pid(), first_pid);

    // A port held by another program is refused with the way out, and nothing starts.
    let c = Stack::new();
    let clash = c.habitat("up", a.broker_port);
    assert!(!clash.status.success());
    let message = String::from_utf8_lossy(&clash.stderr);
    assert!(
        message.contains(&format!("port {} is in use", a.broker_port))
            && message.contains("--broker-port"),
        "{message}"
    );
    assert!(!c.dir.join("postgres").join("data").exists());

    let parts = [
        "devbroker",
        "registry",
        "postgres",
        "patronage-aggregator",
        "allocation-calculator",
        "payment-schedule-creator",
        "distribution-recorder",
        "postgres-sink",
        "rest-proxy",
    ];
    let status = a.run("status");
    for part in parts {
        assert!(says(&status, part, "running"), "{part}: {status}");
    }

    let down = a.run("down");
    for stopped in [
        "Stopped devbroker",
        "Stopped Postgres",
        "Stopped rest-proxy",
        "Stopped postgres-sink",
        "Stopped patronage-aggregator",
    ] {
        assert!(down.contains(stopped), "{stopped}: {down}");
    }
    assert!(!is_alive(first_pid));
    for port in [
        a.broker_port,
        a.postgres_port,
        a.registry_port,
        a.proxy_port,
        a.metrics_port,
    ] {
        assert!(!Stack::accepts(port), "port {port} still open");
    }
    let status = a.run("status");
    for part in parts {
        assert!(says(&status, part, "stopped"), "{part}: {status}");
    }

    // The other stack is untouched.
    assert!(is_alive(b.broker_pid()));
    for port in [
        b.broker_port,
        b.postgres_port,
        b.registry_port,
        b.proxy_port,
    ] {
        assert!(Stack::accepts(port), "port {port}");
    }
}
