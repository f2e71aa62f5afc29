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
}

impl Stack {
    fn new() -> Self {
        Self {
            dir: scratch_dir().join(unique("stack")),
            broker_port: free_port().expect("port"),
            postgres_port: free_port().expect("port"),
            registry_port: free_port().expect("port"),
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
            .env_remove("DATABASE_URL")
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
        b.broker_port,
        b.postgres_port,
        b.registry_port,
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

    let status = a.run("status");
    assert!(
        status.contains("devbroker  running")
            && status.contains("registry   running")
            && status.contains("postgres   running"),
        "{status}"
    );

    let down = a.run("down");
    assert!(
        down.contains("Stopped devbroker") && down.contains("Stopped Postgres"),
        "{down}"
    );
    assert!(!is_alive(first_pid));
    for port in [a.broker_port, a.postgres_port, a.registry_port] {
        assert!(!Stack::accepts(port), "port {port} still open");
    }
    let status = a.run("status");
    assert!(
        status.contains("devbroker  stopped") && status.contains("postgres   stopped"),
        "{status}"
    );

    // The other stack is untouched.
    assert!(is_alive(b.broker_pid()));
    for port in [b.broker_port, b.postgres_port, b.registry_port] {
        assert!(Stack::accepts(port), "port {port}");
    }
}
