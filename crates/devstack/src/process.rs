//! Child processes of the stack: running commands, detached daemons with pid files,
//! guardians that clean up when their owner exits, and readiness waits.

use std::{
    fs,
    io::{BufRead, BufReader},
    net::{SocketAddr, TcpListener, TcpStream},
    path::Path,
    process::{Child, ChildStdin, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

/// Whether this process runs as root.
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    #[allow(unsafe_code)]
    unsafe {
        libc::geteuid() == 0
    }
}

/// Runs a command to completion; an error carries its stderr.
pub fn run(command: &mut Command) -> Result<()> {
    let output = command
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run {:?}", command.get_program()))?;
    if !output.status.success() {
        bail!(
            "{:?} failed ({}): {}",
            command.get_program(),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}

/// A binary of this workspace: `$env_var` when set, else the one built beside the running
/// executable (`target/<profile>/<name>`, also when running from `target/<profile>/deps/`).
pub fn sibling_binary(name: &str, env_var: &str) -> Result<std::path::PathBuf> {
    if let Some(path) = std::env::var_os(env_var) {
        return Ok(path.into());
    }
    let exe = std::env::current_exe()?;
    let mut dir = exe.parent().map(Path::to_path_buf);
    while let Some(candidate) = dir {
        let bin = candidate.join(name);
        if bin.is_file() {
            return Ok(bin);
        }
        dir = candidate
            .parent()
            .filter(|_| candidate.ends_with("deps"))
            .map(Path::to_path_buf);
    }
    bail!(
        "{name} binary not found next to {}; build it with: cargo build -p {name}",
        exe.display()
    )
}

/// A TCP port nothing listens on at loopback, for a program started next to bind (see
/// [`free_ports`]).
pub fn free_port() -> Result<u16> {
    free_ports(1)
}

/// The first of `n` consecutive TCP ports nothing listens on at loopback, for programs
/// started next to bind. They are picked at random below Linux's ephemeral range (32768
/// and up), where the kernel takes ports for outgoing connections and for binds to port 0:
/// a port from that range, free when asked, can be taken by a client's connection before
/// the program binds it. Ports this process handed out already are not handed out again.
pub fn free_ports(n: u16) -> Result<u16> {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut given = GIVEN
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let free = |p: u16| {
        !given.contains(&p) && TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, p)).is_ok()
    };
    let span = PORTS_END - PORTS_START - n;
    for attempt in 0..1_000_u64 {
        let first = PORTS_START + u16::try_from(random(attempt) % u64::from(span)).unwrap_or(0);
        if (0..n).all(|i| free(first + i)) {
            given.extend(first..first + n);
            return Ok(first);
        }
    }
    bail!("no {n} consecutive free ports between {PORTS_START} and {PORTS_END} on 127.0.0.1")
}

/// Where [`free_ports`] picks: below the ephemeral range, above the project's fixed
/// defaults (`habitat up`'s lie between 15432 and 19110).
const PORTS_START: u16 = 20_000;
const PORTS_END: u16 = 32_000;

/// A number different per process and per `salt`.
fn random(salt: u64) -> u64 {
    use std::hash::BuildHasher;
    std::collections::hash_map::RandomState::new().hash_one((
        salt,
        std::process::id(),
        Instant::now(),
    ))
}

/// Waits until `addr` accepts TCP connections.
pub fn wait_for_tcp(addr: SocketAddr, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("nothing accepted connections on {addr} within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// Sends a signal to a process; false when it does not exist.
pub fn signal(pid: i32, signal: i32) -> bool {
    // SAFETY: kill has no memory-safety preconditions; an invalid pid yields an error.
    #[allow(unsafe_code)]
    unsafe {
        libc::kill(pid, signal) == 0
    }
}

/// Whether a process is alive (a zombie, exited but not yet reaped, is not).
pub fn is_alive(pid: i32) -> bool {
    signal(pid, 0) && !is_zombie(pid)
}

/// Stops a process: SIGTERM, then SIGKILL after `grace`. Returns when it is gone.
pub fn terminate(pid: i32, grace: Duration) {
    if !signal(pid, libc::SIGTERM) {
        return;
    }
    let deadline = Instant::now() + grace;
    while is_alive(pid) {
        if Instant::now() >= deadline {
            _ = signal(pid, libc::SIGKILL);
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn is_zombie(pid: i32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|stat| {
            stat.rsplit_once(')')
                .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(true)
}

/// Starts `command` detached from this process (its own session), output appended to
/// `log`, its pid written to `pid_file`.
pub fn spawn_detached(command: &mut Command, log: &Path, pid_file: &Path) -> Result<i32> {
    use std::os::unix::process::CommandExt as _;
    let out = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("cannot open {}", log.display()))?;
    let child = command
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out)
        .process_group(0)
        .spawn()
        .with_context(|| format!("cannot start {:?}", command.get_program()))?;
    let pid = child.id() as i32;
    fs::write(pid_file, pid.to_string())?;
    Ok(pid)
}

/// Reads a pid file; `None` when absent or when that process is gone.
pub fn live_pid(pid_file: &Path) -> Option<i32> {
    let pid: i32 = fs::read_to_string(pid_file).ok()?.trim().parse().ok()?;
    is_alive(pid).then_some(pid)
}

/// A `sh` process that runs a clean-up script when its owner exits, however it exits:
/// the owner holds the write end of its stdin, and the script runs at end of input.
#[derive(Debug)]
pub struct Guardian {
    _child: Child,
    _stdin: ChildStdin,
}

impl Guardian {
    pub fn new(script: &str) -> Result<Self> {
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(format!("cat >/dev/null; {script}"))
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("cannot start a guardian shell")?;
        let stdin = child.stdin.take().context("guardian without stdin")?;
        Ok(Self {
            _child: child,
            _stdin: stdin,
        })
    }
}

/// Reads a child's stdout until a line containing `marker`, returning that line.
pub fn read_until(child: &mut Child, marker: &str, timeout: Duration) -> Result<String> {
    let stdout = child.stdout.take().context("child stdout is not piped")?;
    let (tx, rx) = std::sync::mpsc::channel();
    let marker = marker.to_owned();
    _ = std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines();
        for line in lines.by_ref().map_while(Result::ok) {
            if line.contains(&marker) {
                _ = tx.send(line);
                break;
            }
        }
        // Keep draining so the child never blocks on a full pipe.
        for _ in lines {}
    });
    rx.recv_timeout(timeout)
        .map_err(|_| anyhow::anyhow!("no startup line within {timeout:?}"))
}

/// GETs `path` from an HTTP server on loopback `port`; the body, or `None` while nothing
/// answers (for waiting on `/metrics` or `/readyz`).
pub fn http_get(port: u16, path: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    write!(stream, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").ok()?;
    let mut response = String::new();
    _ = stream.read_to_string(&mut response).ok()?;
    response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
}

/// The sum of a Prometheus metric's samples that carry every label of `labels`.
pub fn metric_value(exposition: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let values: Vec<f64> = exposition
        .lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
        .filter(|l| {
            labels
                .iter()
                .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .filter_map(|l| l.rsplit_once(' ')?.1.parse().ok())
        .collect();
    (!values.is_empty()).then(|| values.iter().sum())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_ports_lie_below_the_ephemeral_range_and_are_given_once() {
        let mut seen = Vec::new();
        for _ in 0..50 {
            let first = free_ports(3).expect("ports");
            assert!((PORTS_START..PORTS_END - 2).contains(&first), "{first}");
            for port in first..first + 3 {
                assert!(!seen.contains(&port), "{port} given twice");
                seen.push(port);
            }
        }
        let port = free_port().expect("a port");
        let listener = TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, port)).expect("free");
        drop(listener);
    }
}
