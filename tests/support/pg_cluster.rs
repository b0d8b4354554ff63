//! A throwaway PostgreSQL cluster (`initdb` + `pg_ctl` in a temporary directory on a free loopback
//! port), stopped and deleted on drop. Shared by the integration tests (`tests/postgres.rs`) and the
//! benchmark (`benches/e2e.rs`, through `#[path]`).

use anyhow::Context;
use std::path::PathBuf;
use std::process::Command;

pub struct PgCluster {
    pub url: String,
    bin: PathBuf,
    data: PathBuf,
    _dir: tempfile::TempDir,
    as_postgres: bool,
}

/// The PostgreSQL server binaries: `AIPROD_PG_BIN`, else the newest under /usr/lib/postgresql.
pub fn find_bin() -> Option<PathBuf> {
    if let Ok(dir) = std::env::var("AIPROD_PG_BIN") {
        return Some(PathBuf::from(dir));
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.path().join("bin"))
                .filter(|p| p.join("initdb").exists())
                .collect()
        })
        .unwrap_or_default();
    found.sort();
    found.pop()
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

impl PgCluster {
    /// Starts a cluster, panicking when it cannot (tests).
    pub fn start() -> PgCluster {
        let bin = find_bin().expect("PostgreSQL server binaries (initdb, pg_ctl) are required: install postgresql-15 or set AIPROD_PG_BIN");
        PgCluster::try_start(bin).expect("a throwaway PostgreSQL cluster")
    }

    /// Starts a cluster with the server binaries in `bin`.
    pub fn try_start(bin: PathBuf) -> anyhow::Result<PgCluster> {
        let dir = tempfile::tempdir()?;
        let data = dir.path().join("data");
        let as_postgres = is_root();
        if as_postgres {
            let status = Command::new("chown")
                .args(["-R", "postgres"])
                .arg(dir.path())
                .status()
                .context("chown")?;
            anyhow::ensure!(status.success(), "chown of the cluster directory failed");
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let cluster = PgCluster {
            url: format!("postgres://aiprod@127.0.0.1:{port}/postgres"),
            bin,
            data: data.clone(),
            _dir: dir,
            as_postgres,
        };
        let out = cluster
            .command("initdb")
            .args(["-A", "trust", "-U", "aiprod", "--no-sync", "-D"])
            .arg(&data)
            .output()
            .context("initdb")?;
        anyhow::ensure!(
            out.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        cluster.pg_start(&port.to_string())?;
        Ok(cluster)
    }

    fn command(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        if self.as_postgres {
            // initdb refuses to run as root: run the cluster as the `postgres` user.
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(path);
            c
        } else {
            Command::new(path)
        }
    }

    fn pg_start(&self, port: &str) -> anyhow::Result<()> {
        // `AIPROD_PG_OPTS` adds server options (e.g. `-c shared_preload_libraries=pg_stat_statements`
        // to profile a bench's statements).
        let extra = std::env::var("AIPROD_PG_OPTS").unwrap_or_default();
        let opts = format!(
            "-p {port} -c listen_addresses=127.0.0.1 -c unix_socket_directories='' -c fsync=off {extra}"
        );
        let log = self.data.join("server.log");
        let out = self
            .command("pg_ctl")
            .args(["-w", "-t", "60", "-D"])
            .arg(&self.data)
            .arg("-l")
            .arg(&log)
            .args(["-o", &opts, "start"])
            .output()
            .context("pg_ctl start")?;
        anyhow::ensure!(
            out.status.success(),
            "pg_ctl start: {} {}",
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        Ok(())
    }

    fn pg_stop(&self, mode: &str) -> std::io::Result<std::process::Output> {
        self.command("pg_ctl")
            .args(["-w", "-t", "60", "-D"])
            .arg(&self.data)
            .args(["-m", mode, "stop"])
            .output()
    }

    /// Stops the server (`pg_ctl stop -m fast`: clients are disconnected), keeping its data; for
    /// outage scenarios.
    pub fn stop(&self) {
        let out = self.pg_stop("fast").expect("pg_ctl stop");
        assert!(
            out.status.success(),
            "pg_ctl stop: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Starts a stopped server again on the same port and data.
    pub fn restart(&self) {
        let port = self
            .url
            .rsplit_once(':')
            .and_then(|(_, rest)| rest.split('/').next())
            .expect("port in url");
        self.pg_start(port).expect("pg_ctl restart");
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        let _ = self.pg_stop("immediate");
    }
}
