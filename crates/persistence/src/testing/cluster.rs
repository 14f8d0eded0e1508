//! A private PostgreSQL server for fault tests: created with `initdb` in a temporary directory,
//! on its own free port, so a test can stop it (`pg_ctl stop -m fast|immediate`) and start it
//! again without touching the shared server other tests use.
//!
//! Needs the PostgreSQL server binaries (`initdb`, `pg_ctl`; Debian puts them in
//! `/usr/lib/postgresql/<version>/bin`, off `PATH`). Without them [`PgCluster::start`] prints a
//! notice and returns `None`, unless `CI=true`, where it panics. PostgreSQL refuses to run as
//! root, so under root every command runs as the `postgres` OS user (`runuser`).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use super::{TestDb, ci, notice};

/// How [`PgCluster::stop`] shuts the server down (`pg_ctl stop -m …`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopMode {
    /// Disconnects every client, rolls their transactions back, checkpoints.
    Fast,
    /// Kills the server without a checkpoint, as a crash does: the next start replays the WAL.
    Immediate,
}

impl StopMode {
    fn as_str(self) -> &'static str {
        match self {
            Self::Fast => "fast",
            Self::Immediate => "immediate",
        }
    }
}

/// A running private PostgreSQL server; stopped (immediately) and deleted when dropped.
#[derive(Debug)]
pub struct PgCluster {
    bin: PathBuf,
    data: PathBuf,
    log: PathBuf,
    socket_dir: PathBuf,
    port: u16,
    as_postgres: bool,
    _dir: tempfile::TempDir,
}

/// The directory holding `initdb` and `pg_ctl`: `PATH` first, then the newest
/// `/usr/lib/postgresql/<version>/bin`.
fn server_bin_dir() -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .find(|d| d.join("initdb").is_file() && d.join("pg_ctl").is_file())
    });
    if on_path.is_some() {
        return on_path;
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(Result::ok)
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            (bin.join("initdb").is_file() && bin.join("pg_ctl").is_file()).then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin)
}

fn running_as_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn check(what: &str, out: std::io::Result<Output>) -> Output {
    let out = out.unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

impl PgCluster {
    /// Creates and starts a private server, or `None` (after a notice) when the PostgreSQL
    /// server binaries are missing. Panics under `CI=true` when they are.
    pub fn start() -> Option<PgCluster> {
        let Some(bin) = server_bin_dir() else {
            assert!(
                !ci(),
                "CI=true: the fault tests need PostgreSQL's initdb and pg_ctl (apt-get install postgresql)"
            );
            notice(
                "NOTICE: PostgreSQL fault test SKIPPED (no initdb/pg_ctl on PATH or in /usr/lib/postgresql/*/bin)",
            );
            return None;
        };
        let as_postgres = running_as_root();
        let dir = tempfile::Builder::new()
            .prefix("tributary-pg-")
            .tempdir()
            .expect("temp dir");
        if as_postgres {
            check(
                "chown the cluster directory to postgres",
                Command::new("chown")
                    .args(["postgres:", &dir.path().display().to_string()])
                    .output(),
            );
        }
        let cluster = PgCluster {
            data: dir.path().join("data"),
            log: dir.path().join("postgres.log"),
            socket_dir: dir.path().to_owned(),
            port: free_port(),
            bin,
            as_postgres,
            _dir: dir,
        };
        let data = cluster.data.display().to_string();
        check(
            "initdb",
            cluster
                .command("initdb")
                .args(["-D", &data, "-U", "postgres", "-A", "trust", "-E", "UTF8"])
                .args(["--locale=C", "--no-sync"])
                .output(),
        );
        cluster.start_server();
        Some(cluster)
    }

    /// A command of the server's bin directory, run as `postgres` under root.
    fn command(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        let mut cmd = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(path);
            c
        } else {
            Command::new(path)
        };
        // Never inherit a PGDATA, PGPORT, … of the machine's own server.
        for (key, _) in std::env::vars_os() {
            if key.to_str().is_some_and(|k| k.starts_with("PG")) {
                cmd.env_remove(key);
            }
        }
        cmd.current_dir(&self.socket_dir);
        cmd
    }

    /// Starts the (stopped) server and waits until it accepts connections.
    pub fn start_server(&self) {
        // fsync off: the tests kill the server, never the machine, so the page cache keeps
        // every write; unflushed WAL buffers (`synchronous_commit = off`) are still lost by an
        // immediate stop.
        let options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -c unix_socket_directories={} -c fsync=off -c max_connections=200",
            self.port,
            self.socket_dir.display()
        );
        check(
            "pg_ctl start",
            self.command("pg_ctl")
                .args(["-D", &self.data.display().to_string()])
                .args(["-l", &self.log.display().to_string()])
                .args(["-o", &options, "-w", "-t", "60", "start"])
                .output(),
        );
    }

    /// Stops the server and waits until it is gone.
    pub fn stop(&self, mode: StopMode) {
        check(
            "pg_ctl stop",
            self.command("pg_ctl")
                .args(["-D", &self.data.display().to_string()])
                .args(["-m", mode.as_str(), "-w", "-t", "60", "stop"])
                .output(),
        );
    }

    /// The port the server listens on (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The URL of the `postgres` database (to create test databases from).
    pub fn admin_url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// A fresh migrated database on this server (dropped by [`TestDb::cleanup`]).
    pub async fn test_db(&self) -> TestDb {
        TestDb::postgres_at(&self.admin_url(), true).await
    }

    /// The server's log so far (for assertion messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The data directory (for assertion messages).
    pub fn data_dir(&self) -> &Path {
        &self.data
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        let _ = self
            .command("pg_ctl")
            .args(["-D", &self.data.display().to_string()])
            .args(["-m", "immediate", "-w", "stop"])
            .output();
    }
}
