//! SIGTERM in the middle of a sync, for each command that syncs (`sync`, `backfill`,
//! `run-once`, `daemon`; docs/security.md, "Faults and load"): the process finishes the page it
//! is writing, releases its job and exits 0; the job is never left `running` under a live lease
//! (it is `queued` and unleased, so the next run takes it at once), and the next run leaves the
//! mirror exact.

use std::process::Child;

use super::*;

/// Sends SIGTERM to the child (std can only SIGKILL).
fn sigterm(child: &Child) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill -TERM failed");
}

/// Waits for the child to exit; a deadlock guard, not a timing assertion.
fn wait_exit(child: &mut Child) -> std::process::ExitStatus {
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if std::time::Instant::now() > deadline {
            child.kill().ok();
            panic!("the scheduler did not exit after SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

async fn sigterm_mid_sync_releases_the_job(backend: Backend, args: &[&str]) {
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    run(backend, |t| async move {
        let sim = SimServer::start(SimOptions {
            seed: 9,
            accounts: 1,
            scale: Scale::Small,
            ..Default::default()
        })
        .await
        .unwrap();
        let businesses = connect_all(&t, &sim).await;
        let business = &businesses[0];
        let mut env = env_for(&t, &sim);
        // Slow Stripe down so the signal lands mid-sync.
        let http = reqwest::Client::new();
        http.post(format!("{}/_sim/faults", sim.base_url()))
            .json(&serde_json::json!({"latency_ms": 200}))
            .send()
            .await
            .unwrap();
        // A small account is a dozen requests: a budget of 4 a second makes the sync last
        // seconds, so the signal surely lands mid-sync.
        env.insert("TRIBUTARY__STRIPE__MAX_REQUESTS_PER_SECOND", "4".to_owned());
        // A long lease: had the process left the job leased, nothing could take it for a
        // minute, and the checks below would see it.
        env.insert("TRIBUTARY__SYNC__LEASE_SECS", "60".to_owned());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut child = scheduler(&args, &env)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // Wait until the process has written a page of its job.
        let job = loop {
            let job = jobs::active_job(&t.db, business).await.unwrap();
            if let Some(j) = job
                && j.status == jobs::RUNNING
                && j.progress
                    .as_object()
                    .is_some_and(|p| p.values().any(|r| r["written"].as_u64() > Some(0)))
            {
                break j;
            }
            assert!(
                child.try_wait().unwrap().is_none(),
                "the scheduler exited before the signal"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        sigterm(&child);
        let status = tokio::task::block_in_place(|| wait_exit(&mut child));
        let out = child.wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            status.success(),
            "{args:?} exited {status} after SIGTERM\n{stdout}"
        );
        // Released: queued and unleased, not running under a lease nobody renews.
        let after = jobs::get(&t.db, business, &job.id).await.unwrap().unwrap();
        assert_eq!(
            (after.status.as_str(), after.lease_owner.as_deref()),
            (jobs::QUEUED, None),
            "{after:?}\n{stdout}"
        );
        assert!(after.lease_expires_at.is_none(), "{after:?}");
        match args[0] {
            "sync" => {
                let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
                assert_eq!(report["error"][0], "interrupted", "{report}");
            }
            "backfill" => {
                let counts: serde_json::Value = serde_json::from_str(&stdout).unwrap();
                assert_eq!(counts["status"], "queued", "{counts}");
            }
            _ => assert!(stdout.contains("1 interrupted"), "{stdout}"),
        }

        // The next run takes the released job over at once and finishes it exactly.
        http.post(format!("{}/_sim/faults", sim.base_url()))
            .json(&serde_json::json!({}))
            .send()
            .await
            .unwrap();
        env.insert(
            "TRIBUTARY__STRIPE__MAX_REQUESTS_PER_SECOND",
            "1000".to_owned(),
        );
        let stdout = ok(&scheduler(&["run-once"], &env).output().unwrap());
        assert!(stdout.contains("1 run here, 0 failed"), "{stdout}");
        let (list, total) = jobs::list(&t.db, business, 10, 0).await.unwrap();
        assert_eq!(total, 1, "the released job itself was resumed");
        assert_eq!(list[0].id, job.id);
        assert_eq!(list[0].status, jobs::SUCCEEDED);
        let out = ok(
            &scheduler(&["audit", "--business", business.as_str()], &env)
                .output()
                .unwrap(),
        );
        assert!(out.contains("\"differences\": []"), "{out}");
    })
    .await;
}

mod sigterm_sync {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite() {
        let args = ["sync", "--business", "biz_0", "--full"];
        super::sigterm_mid_sync_releases_the_job(super::Backend::Sqlite, &args).await;
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres() {
        let args = ["sync", "--business", "biz_0", "--full"];
        super::sigterm_mid_sync_releases_the_job(super::Backend::Postgres, &args).await;
    }
}

mod sigterm_backfill {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite() {
        let args = ["backfill", "--business", "biz_0", "--days", "3650"];
        super::sigterm_mid_sync_releases_the_job(super::Backend::Sqlite, &args).await;
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres() {
        let args = ["backfill", "--business", "biz_0", "--days", "3650"];
        super::sigterm_mid_sync_releases_the_job(super::Backend::Postgres, &args).await;
    }
}

mod sigterm_run_once {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite() {
        super::sigterm_mid_sync_releases_the_job(super::Backend::Sqlite, &["run-once"]).await;
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres() {
        super::sigterm_mid_sync_releases_the_job(super::Backend::Postgres, &["run-once"]).await;
    }
}

mod sigterm_daemon {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite() {
        let args = ["daemon", "--every", "1h"];
        super::sigterm_mid_sync_releases_the_job(super::Backend::Sqlite, &args).await;
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres() {
        let args = ["daemon", "--every", "1h"];
        super::sigterm_mid_sync_releases_the_job(super::Backend::Postgres, &args).await;
    }
}
