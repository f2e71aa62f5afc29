//! A Postgres cluster run from the machine's own server binaries (`initdb`, `pg_ctl`).

use std::{
    ffi::OsStr,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{Context, Result, bail};

use crate::process::{is_root, run};

/// The Debian package that provides the server binaries (Debian 12's PostgreSQL).
pub const DEBIAN_PACKAGE: &str = "postgresql-15";

/// The operating-system user the server runs as when we are root (Postgres refuses root).
const SERVER_USER: &str = "postgres";

/// The role every local cluster is created with (trust authentication, loopback only).
pub const SUPERUSER: &str = "habitat";

/// Where the Postgres server binaries are.
#[derive(Clone, Debug)]
pub struct PgBin {
    dir: PathBuf,
}

impl PgBin {
    /// Finds the server binaries: the newest `/usr/lib/postgresql/<major>/bin`, else the
    /// directory of `initdb` on `PATH` when `postgres` sits beside it.
    pub fn locate() -> Result<Self> {
        let mut candidates: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|entry| {
                let major = entry.file_name().to_str()?.parse().ok()?;
                Some((major, entry.path().join("bin")))
            })
            .collect();
        candidates.sort();
        if let Some((_, dir)) = candidates
            .into_iter()
            .rev()
            .find(|(_, dir)| dir.join("initdb").exists() && dir.join("postgres").exists())
        {
            return Ok(Self { dir });
        }
        if let Some(dir) = std::env::var_os("PATH").and_then(|path| {
            std::env::split_paths(&path)
                .find(|dir| dir.join("initdb").is_file() && dir.join("postgres").is_file())
        }) {
            return Ok(Self { dir });
        }
        bail!(
            "PostgreSQL server binaries not found (initdb, postgres, pg_ctl). Install them with: \
             sudo apt-get install -y {DEBIAN_PACKAGE}"
        )
    }

    /// Finds the server binaries, installing Debian's package first when they are missing
    /// and we are root; otherwise fails with the exact command to run.
    pub fn ensure() -> Result<Self> {
        if let Ok(found) = Self::locate() {
            return Ok(found);
        }
        if !is_root() || Command::new("apt-get").arg("--version").output().is_err() {
            return Self::locate();
        }
        eprintln!("PostgreSQL not found: installing {DEBIAN_PACKAGE} with apt-get.");
        run(Command::new("apt-get").args(["update", "-qq"]))?;
        run(Command::new("apt-get")
            .args([
                "install",
                "-y",
                "-qq",
                "--no-install-recommends",
                DEBIAN_PACKAGE,
            ])
            .env("DEBIAN_FRONTEND", "noninteractive"))?;
        Self::locate()
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A command for one of the binaries, run as the server user when we are root.
    pub fn command(&self, name: &str) -> Command {
        let program = self.dir.join(name);
        if is_root() {
            let mut command = Command::new("runuser");
            _ = command.args(["-u", SERVER_USER, "--"]).arg(program);
            command
        } else {
            Command::new(program)
        }
    }
}

/// Settings of a cluster.
#[derive(Clone, Debug, Default)]
pub struct ClusterOptions {
    /// Trade durability for speed (tests): no fsync, no full-page writes.
    pub ephemeral: bool,
    /// Server settings, `name=value` (`track_commit_timestamp=on`).
    pub settings: Vec<String>,
}

/// A throwaway cluster of a test's own (one it may crash and restart), started in `dir`
/// with `database` created; stopped and `dir` removed when the returned guardian drops or
/// the test process dies.
pub fn throwaway_cluster(
    dir: &Path,
    database: &str,
) -> Result<(Cluster, crate::process::Guardian)> {
    let cluster = Cluster::new(
        PgBin::ensure()?,
        dir,
        crate::process::free_port()?,
        ClusterOptions {
            ephemeral: true,
            settings: Vec::new(),
        },
    );
    cluster.init()?;
    cluster.start()?;
    let guardian = crate::process::Guardian::new(&format!(
        "{}; rm -rf {}",
        cluster.stop_script(),
        shell_quote(dir.as_os_str())
    ))?;
    cluster.create_database(database)?;
    Ok((cluster, guardian))
}

/// One Postgres cluster in a directory of its own, listening on loopback.
#[derive(Clone, Debug)]
pub struct Cluster {
    bin: PgBin,
    dir: PathBuf,
    port: u16,
    options: ClusterOptions,
}

impl Cluster {
    /// A cluster in `dir` (its data in `dir/data`); created by [`Cluster::init`].
    pub fn new(bin: PgBin, dir: &Path, port: u16, options: ClusterOptions) -> Self {
        Self {
            bin,
            dir: dir.to_path_buf(),
            port,
            options,
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// Creates the cluster unless it exists already.
    pub fn init(&self) -> Result<()> {
        std::fs::create_dir_all(&self.dir)
            .with_context(|| format!("cannot create {}", self.dir.display()))?;
        if is_root() {
            run(Command::new("chown")
                .args(["-R", &format!("{SERVER_USER}:")])
                .arg(&self.dir))?;
        }
        if self.data().join("PG_VERSION").exists() {
            return Ok(());
        }
        run(self
            .bin
            .command("initdb")
            .arg("-D")
            .arg(self.data())
            .args(["-U", SUPERUSER, "--auth=trust", "-E", "UTF8", "--locale=C"])
            .args(self.options.ephemeral.then_some("--no-sync")))
        .context("initdb failed")
    }

    /// The server's settings, as `postgres` options.
    fn server_options(&self) -> Vec<String> {
        let mut options = vec![
            "-p".to_owned(),
            self.port.to_string(),
            "-k".to_owned(),
            self.dir.display().to_string(),
            "-c".to_owned(),
            "listen_addresses=127.0.0.1".to_owned(),
            "-c".to_owned(),
            "max_connections=200".to_owned(),
        ];
        if self.options.ephemeral {
            for setting in [
                "fsync=off",
                "synchronous_commit=off",
                "full_page_writes=off",
            ] {
                options.extend(["-c".to_owned(), setting.to_owned()]);
            }
        }
        for setting in &self.options.settings {
            options.extend(["-c".to_owned(), setting.clone()]);
        }
        // Extra server options for a look inside (`-c shared_preload_libraries=…`).
        if let Ok(extra) = std::env::var("HABITAT_POSTGRES_OPTIONS") {
            options.extend(extra.split_whitespace().map(str::to_owned));
        }
        options
    }

    /// The server as a foreground process (for a supervisor): `postgres -D <data> …`.
    /// SIGINT stops it fast (sessions rolled back).
    pub fn server_command(&self) -> Command {
        let mut command = self.bin.command("postgres");
        _ = command
            .arg("-D")
            .arg(self.data())
            .args(self.server_options());
        command
    }

    /// Starts the server and waits until it accepts connections.
    pub fn start(&self) -> Result<()> {
        let settings = self.server_options().join(" ");
        run(self
            .bin
            .command("pg_ctl")
            .arg("-D")
            .arg(self.data())
            .arg("-l")
            .arg(self.dir.join("postgres.log"))
            .args(["-w", "-t", "60", "-o"])
            .arg(settings)
            .arg("start")
            .stdout(Stdio::null()))
        .with_context(|| {
            format!(
                "Postgres did not start; see {}",
                self.dir.join("postgres.log").display()
            )
        })
    }

    /// The process id of the running server (from `postmaster.pid`).
    pub fn postmaster_pid(&self) -> Result<i32> {
        std::fs::read_to_string(self.data().join("postmaster.pid"))?
            .lines()
            .next()
            .and_then(|l| l.trim().parse().ok())
            .context("postmaster.pid without a process id")
    }

    /// Whether the server of this directory is running.
    pub fn is_running(&self) -> bool {
        self.data().join("postmaster.pid").exists()
            && self
                .bin
                .command("pg_ctl")
                .arg("-D")
                .arg(self.data())
                .arg("status")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|status| status.success())
    }

    /// Stops the server (fast shutdown: open sessions are rolled back).
    pub fn stop(&self) -> Result<()> {
        self.stop_with("fast")
    }

    /// Stops the server as a crash would (immediate shutdown: no checkpoint, sessions
    /// cut; the next start recovers from the write-ahead log).
    pub fn stop_immediately(&self) -> Result<()> {
        self.stop_with("immediate")
    }

    fn stop_with(&self, mode: &str) -> Result<()> {
        run(self
            .bin
            .command("pg_ctl")
            .arg("-D")
            .arg(self.data())
            .args(["-m", mode, "-w", "stop"])
            .stdout(Stdio::null()))
    }

    /// The shell command that stops this cluster at once, for a [`crate::process::Guardian`].
    pub fn stop_script(&self) -> String {
        let pg_ctl = shell_quote(self.bin.dir.join("pg_ctl").as_os_str());
        let data = shell_quote(self.data().as_os_str());
        let stop = format!("{pg_ctl} -D {data} -m immediate -w stop >/dev/null 2>&1");
        if is_root() {
            format!("runuser -u {SERVER_USER} -- {stop}")
        } else {
            stop
        }
    }

    /// A connection URL for `database` as the superuser.
    pub fn url(&self, database: &str) -> String {
        format!("postgres://{SUPERUSER}@127.0.0.1:{}/{database}", self.port)
    }

    /// A client program (`psql`, `createdb`…) connected to this cluster as the superuser.
    pub fn client(&self, program: &str) -> Command {
        let mut command = Command::new(self.bin.dir.join(program));
        _ = command
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(["-U", SUPERUSER]);
        command
    }

    /// Waits until the server accepts sessions (not merely connections: a server still
    /// recovering refuses them).
    pub fn wait_ready(&self) -> Result<()> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            let ready = self
                .bin
                .command("pg_isready")
                .args(["-q", "-h", "127.0.0.1", "-p", &self.port.to_string()])
                .status()
                .is_ok_and(|status| status.success());
            if ready {
                return Ok(());
            }
            anyhow::ensure!(
                std::time::Instant::now() < deadline,
                "Postgres on port {} is not ready after 60 s; see {}",
                self.port,
                self.dir.join("postgres.log").display()
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }

    /// Creates a database unless it exists.
    pub fn create_database(&self, name: &str) -> Result<()> {
        let exists = self
            .client("psql")
            .args(["-d", "postgres", "-tAc"])
            .arg(format!(
                "SELECT 1 FROM pg_database WHERE datname = '{name}'"
            ))
            .output()
            .context("cannot run psql")?;
        if String::from_utf8_lossy(&exists.stdout).trim() == "1" {
            return Ok(());
        }
        run(self.client("createdb").arg(name))
    }
}

/// Quotes a path for `sh`.
pub fn shell_quote(value: &OsStr) -> String {
    format!("'{}'", value.to_string_lossy().replace('\'', r"'\''"))
}
