//! The `tributary-api` binary as an operator runs it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Command, Output};

use sea_orm::{ConnectionTrait, Statement};
use tributary_persistence::testing::{Backend, TestDbRef, run_unmigrated};

const BIN: &str = env!("CARGO_BIN_EXE_tributary-api");

/// Runs the binary with a clean environment: only `PATH` and the given variables.
fn api(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.args(args).env_clear();
    if let Ok(path) = std::env::var("PATH") {
        cmd.env("PATH", path);
    }
    cmd.envs(env.iter().copied());
    cmd.output().expect("run tributary-api")
}

async fn tables(t: &TestDbRef) -> Vec<String> {
    let sql = match t.backend {
        Backend::Sqlite => "SELECT name FROM sqlite_master WHERE type = 'table'",
        Backend::Postgres => "SELECT tablename::text FROM pg_tables WHERE schemaname = 'public'",
    };
    let backend = t.db.conn().get_database_backend();
    t.db.conn()
        .query_all_raw(Statement::from_string(backend, sql))
        .await
        .unwrap()
        .iter()
        .map(|r| r.try_get_by_index::<String>(0).unwrap())
        .collect()
}

async fn migrate_creates_every_table(backend: Backend) {
    run_unmigrated(backend, |t| async move {
        assert!(
            !tables(&t).await.iter().any(|n| n == "businesses"),
            "starts empty"
        );
        let out = api(&["migrate"], &[("DATABASE_URL", &t.url)]);
        assert!(
            out.status.success(),
            "migrate failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let have = tables(&t).await;
        for table in tributary_migrations::TABLES {
            assert!(
                have.iter().any(|n| n == table),
                "{table} missing after migrate"
            );
        }
        // Idempotent.
        assert!(
            api(&["migrate"], &[("TRIBUTARY__DATABASE__URL", &t.url)])
                .status
                .success()
        );
    })
    .await;
}

mod migrate {
    #[tokio::test]
    async fn sqlite() {
        super::migrate_creates_every_table(super::Backend::Sqlite).await;
    }

    #[tokio::test]
    async fn postgres() {
        super::migrate_creates_every_table(super::Backend::Postgres).await;
    }
}

fn one_line_error(out: &Output) -> String {
    assert_eq!(out.status.code(), Some(2), "exit status");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr}");
    stderr
}

#[test]
fn serve_without_a_stripe_key_names_the_key() {
    let err = one_line_error(&api(&["serve"], &[]));
    assert!(
        err.contains("stripe.secret_key") && err.contains("STRIPE_SECRET_KEY"),
        "{err}"
    );
    let err = one_line_error(&api(&[], &[("STRIPE_SECRET_KEY", "sk_test_123")]));
    assert!(err.contains("auth.jwt_secret"), "{err}");
}

#[test]
fn malformed_values_name_the_key_and_hide_secrets() {
    let err = one_line_error(&api(&["serve"], &[("TRIBUTARY__SERVER__PORT", "http")]));
    assert!(err.contains("server.port"), "{err}");
    let err = one_line_error(&api(
        &["serve"],
        &[("STRIPE_SECRET_KEY", "rk_live_VERYSECRET")],
    ));
    assert!(
        err.contains("stripe.secret_key") && !err.contains("VERYSECRET"),
        "{err}"
    );
    let err = one_line_error(&api(
        &["--config", "/nonexistent/tributary.toml", "serve"],
        &[],
    ));
    assert!(err.contains("--config"), "{err}");
}

#[test]
fn help_lists_the_subcommands() {
    let out = api(&["--help"], &[]);
    let help = String::from_utf8_lossy(&out.stdout);
    for word in ["serve", "migrate", "--demo", "--config"] {
        assert!(help.contains(word), "--help lacks {word}: {help}");
    }
}

/// `tributary-api --demo` as README's first command runs it, in an empty directory with no
/// configuration: it generates the simulated Stripe account, connects and syncs the first demo
/// business, creates its SQLite file there, and prints each business's page URLs with a token.
#[test]
fn demo_starts_with_nothing_configured_and_prints_the_pages() {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;
    use std::time::Duration;

    let dir = std::env::temp_dir().join(format!("tributary-demo-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut cmd = Command::new(BIN);
    cmd.args(["--demo", "--port", "0"])
        .current_dir(&dir)
        .env_clear()
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    if let Ok(path) = std::env::var("PATH") {
        cmd.env("PATH", path);
    }
    let mut child = cmd.spawn().expect("start tributary-api --demo");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut printed = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(300);
    while let Ok(line) =
        rx.recv_timeout(deadline.saturating_duration_since(std::time::Instant::now()))
    {
        let last = line.contains("Ctrl-C stops the demo");
        printed.push(line);
        if last {
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    let banner = printed.join("\n");
    for business in ["northwind", "bluebird"] {
        for page in ["settings/stripe", "sales", "dashboard"] {
            let url = format!("/ui/businesses/{business}/{page}#token=ey");
            assert!(banner.contains(&url), "{url} not printed:\n{banner}");
        }
    }
    assert!(
        banner.contains("connected to a simulated Stripe account and synced"),
        "{banner}"
    );
    assert!(dir.join("tributary-demo.db").exists(), "the demo database");
    let _ = std::fs::remove_dir_all(&dir);
}

#[path = "cli/secrets.rs"]
mod secrets;

#[path = "cli/load.rs"]
mod load;
