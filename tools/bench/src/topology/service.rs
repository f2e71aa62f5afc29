//! A program of the topology started as a process for a run, with its metrics port.

use super::*;

/// A program of the topology running as a process.
pub(crate) struct Service {
    pub(crate) name: String,
    pub(crate) pid: i32,
    _child: Child,
    _guardian: Guardian,
    pub(crate) metrics: u16,
}

impl Service {
    pub(crate) fn start(
        name: &str,
        instance: usize,
        env: &[(&str, String)],
        args: &[String],
        logs: &std::path::Path,
    ) -> Result<Self> {
        let env_var = format!("HABITAT_{}_BIN", name.to_uppercase().replace('-', "_"));
        let metrics = free_port()?;
        let log = std::fs::File::create(logs.join(format!("{name}-{instance}.log")))?;
        let mut command = Command::new(sibling_binary(name, &env_var)?);
        habitat::stack::clear_habitat_env(&mut command, |_| false);
        // The proxy serves `/readyz` and `/metrics` beside its API.
        let listen = if name == PROXY {
            "HABITAT_LISTEN"
        } else {
            "HABITAT_METRICS_LISTEN"
        };
        let child = command
            .args(args)
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .env(listen, format!("127.0.0.1:{metrics}"))
            .env("HABITAT_LOG", log_filter())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("start {name} (build it: cargo build --release -p {name})"))?;
        let pid = i32::try_from(child.id())?;
        Ok(Self {
            name: name.to_owned(),
            pid,
            _child: child,
            _guardian: Guardian::new(&format!("kill -9 {pid} 2>/dev/null"))?,
            metrics,
        })
    }

    /// Whether the process has ended.
    pub(crate) fn exited(&self) -> bool {
        ended(self.pid)
    }

    pub(crate) fn ready(&self, runtime: &tokio::runtime::Runtime) -> bool {
        let url = format!("http://127.0.0.1:{}/readyz", self.metrics);
        runtime
            .block_on(async { reqwest::get(url).await.ok() })
            .is_some_and(|r| r.status().is_success())
    }
}

/// A fresh directory for the programs' logs of a run.
pub(crate) fn logs_dir() -> Result<std::path::PathBuf> {
    let logs = std::env::temp_dir().join(format!(
        "habitat-bench-logs-{}",
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::create_dir_all(&logs)?;
    Ok(logs)
}

/// A program's arguments for its YAML configuration `file`, if any.
pub(crate) fn config_args(file: Option<&std::path::Path>) -> Vec<String> {
    file.iter()
        .flat_map(|f| ["--config".to_owned(), f.display().to_string()])
        .collect()
}

/// Whether process `pid` has ended: gone, or a zombie (a child is not reaped before the run
/// ends).
fn ended(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        // The state follows the command's name, which is in parentheses.
        .and_then(|stat| {
            stat.rsplit_once(") ")
                .map(|(_, rest)| rest.starts_with('Z'))
        })
        .unwrap_or(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_child_that_ended_is_seen_before_it_is_reaped() {
        let mut child = Command::new("sleep").arg("30").spawn().expect("sleep");
        let pid = i32::try_from(child.id()).expect("pid");
        assert!(!ended(pid), "a running child has not ended");
        child.kill().expect("kill");
        // Not reaped yet: a zombie, until `wait`.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !ended(pid) {
            assert!(
                std::time::Instant::now() < deadline,
                "the killed child never ended"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        _ = child.wait().expect("reaped");
        assert!(ended(pid), "a reaped child has ended");
    }
}
