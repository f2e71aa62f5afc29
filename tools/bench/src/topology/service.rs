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
