//! The same service on a real PostgreSQL: a throwaway cluster (`initdb` + `pg_ctl` in a temporary
//! directory on a free loopback port), started by the test itself.

use crate::harness::*;
use aiprod_sdk::{Client, pb};
use pb::JobState::*;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;

/// A PostgreSQL cluster that is stopped and deleted on drop.
pub struct PgCluster {
    pub url: String,
    bin: PathBuf,
    data: PathBuf,
    _dir: tempfile::TempDir,
    as_postgres: bool,
}

fn pg_bin() -> PathBuf {
    if let Ok(dir) = std::env::var("AIPROD_PG_BIN") {
        return PathBuf::from(dir);
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
    found.pop().expect("PostgreSQL server binaries (initdb, pg_ctl) are required: install postgresql-15 or set AIPROD_PG_BIN")
}

impl PgCluster {
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

    pub fn start() -> PgCluster {
        let bin = pg_bin();
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().join("data");
        let as_postgres = nix_is_root();
        if as_postgres {
            let status = Command::new("chown")
                .args(["-R", "postgres"])
                .arg(dir.path())
                .status()
                .expect("chown");
            assert!(status.success());
        }
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
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
            .expect("initdb");
        assert!(
            out.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let opts = format!(
            "-p {port} -c listen_addresses=127.0.0.1 -c unix_socket_directories='' -c fsync=off"
        );
        let log = data.join("server.log");
        let out = cluster
            .command("pg_ctl")
            .args(["-w", "-t", "60", "-D"])
            .arg(&data)
            .arg("-l")
            .arg(&log)
            .args(["-o", &opts, "start"])
            .output()
            .expect("pg_ctl");
        assert!(
            out.status.success(),
            "pg_ctl start: {} {}",
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        cluster
    }
}

impl PgCluster {
    /// Stops the server (`pg_ctl stop -m fast`: clients are disconnected), keeping its data; for
    /// outage scenarios.
    pub fn stop(&self) {
        let out = self
            .command("pg_ctl")
            .args(["-w", "-t", "60", "-D"])
            .arg(&self.data)
            .args(["-m", "fast", "stop"])
            .output()
            .expect("pg_ctl stop");
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
        let opts = format!(
            "-p {port} -c listen_addresses=127.0.0.1 -c unix_socket_directories='' -c fsync=off"
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
            .expect("pg_ctl start");
        assert!(
            out.status.success(),
            "pg_ctl restart: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

fn nix_is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        let _ = self
            .command("pg_ctl")
            .args(["-D"])
            .arg(&self.data)
            .args(["-m", "immediate", "stop"])
            .output();
    }
}

fn config_for(url: &str, dir: &tempfile::TempDir, latency_ms: u64) -> aiprod::config::Config {
    let mut c = test_config(dir, latency_ms);
    c.database_url = url.to_string();
    c
}

#[tokio::test]
async fn the_whole_service_runs_on_postgres() {
    let pg = PgCluster::start();
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let server = TestServer::start_with(config_for(&pg.url, &dir, 30), dir).await;
    let (_, secret, client) = server.tenant("acme", pb::Tier::Platinum).await;

    // Idempotency under concurrency.
    let calls = (0..20).map(|_| {
        let client = client.clone();
        async move {
            create(&client, create_request("pg-same", "brand_campaign"))
                .await
                .job_id
        }
    });
    let ids = futures::future::join_all(calls).await;
    assert!(ids.iter().all(|id| id == &ids[0]));

    // Review, edit, approve.
    wait_for_state(&client, &ids[0], AwaitingApproval).await;
    let m = client
        .icc()
        .get_manifest(pb::GetManifestRequest {
            job_id: ids[0].clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .manifest
        .unwrap();
    let m2 = client
        .icc()
        .update_manifest(pb::UpdateManifestRequest {
            job_id: ids[0].clone(),
            manifest: Some(pb::Manifest {
                audio_style: "piano".into(),
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["audio_style".into()],
            }),
            etag: m.etag,
        })
        .await
        .unwrap()
        .into_inner()
        .manifest
        .unwrap();
    client
        .icc()
        .approve_manifest(pb::ApproveManifestRequest {
            job_id: ids[0].clone(),
            etag: m2.etag,
        })
        .await
        .unwrap();

    // A second job, then a restart mid-render on the same database.
    let second = create(
        &client,
        pb::CreateJobRequest {
            auto_approve: true,
            ..create_request("pg-2", "premium_spot")
        },
    )
    .await;
    watch_until(&client, &second.job_id, 0, |e| {
        matches!(e.payload, Some(pb::job_event::Payload::ShotRendered(_)))
    })
    .await;
    let (config, dir) = server.stop().await;
    let server = TestServer::start_with(config, dir).await;
    let client = Client::connect(server.endpoint.clone(), &secret)
        .await
        .unwrap();
    for id in [&ids[0], &second.job_id] {
        let events = watch_to_delivery(&client, id).await;
        assert_gap_free(&events);
        assert_eq!(states(&events).last(), Some(&Delivered));
        let report = costs(&client, id).await;
        assert_certified(&report);
        assert_no_double_billing(&report);
    }
    let listed = client
        .render()
        .list_jobs(pb::ListJobsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .jobs;
    assert_eq!(
        listed.iter().map(|j| j.job_id.clone()).collect::<Vec<_>>(),
        [second.job_id.clone(), ids[0].clone()]
    );
    let other = server.platinum("globex").await;
    let err = expect_err(
        other
            .render()
            .get_job(pb::GetJobRequest {
                job_id: ids[0].clone(),
            })
            .await,
    );
    assert_eq!(err.code(), tonic::Code::NotFound);
}
