//! No secret in any output: every subcommand runs with `RUST_LOG=trace` (every crate, the
//! HTTP client and the database driver included) through a sync, a backfill, an audit, a
//! verify, a revoked account and a daemon stopped by SIGTERM, and neither stdout nor stderr
//! shows the Stripe key, a webhook or notice secret, the JWT secret or an `Authorization`
//! header value.

use std::io::{BufRead, BufReader};
use std::sync::mpsc;

use super::*;

/// 32 random hex characters.
fn random_hex() -> String {
    use std::hash::{BuildHasher, Hasher};
    (0..2)
        .map(|i| {
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_u64(i);
            h.write_u128(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos(),
            );
            format!("{:016x}", h.finish())
        })
        .collect()
}

/// What must never be printed, and the text that would show it.
struct Secrets {
    stripe_key: String,
    others: Vec<(&'static str, String)>,
}

impl Secrets {
    fn new() -> Self {
        Secrets {
            stripe_key: format!("sk_test_{}", random_hex()),
            others: vec![
                ("connect webhook secret", format!("whsec_{}", random_hex())),
                ("platform webhook secret", format!("whsec_{}", random_hex())),
                ("notice secret", format!("whsec_{}", random_hex())),
                ("JWT secret", format!("jwt-{}", random_hex())),
            ],
        }
    }

    /// `(what, needle)`: the Stripe key may show as Stripe redacts it (`sk_test_****` and its
    /// last four characters), never more.
    fn needles(&self) -> Vec<(String, String)> {
        let key = &self.stripe_key;
        let mut out = vec![
            ("Stripe key".to_owned(), key[..key.len() - 4].to_owned()),
            (
                "Stripe key's random part".to_owned(),
                key["sk_test_".len()..key.len() - 4].to_owned(),
            ),
            ("Authorization header".to_owned(), format!("Bearer {key}")),
        ];
        out.extend(
            self.others
                .iter()
                .map(|(what, s)| ((*what).to_owned(), s.clone())),
        );
        out
    }
}

fn assert_no_secrets(what: &str, output: &str, secrets: &Secrets) {
    for (name, needle) in secrets.needles() {
        if let Some(at) = output.find(&needle) {
            let line = output[..at].rfind('\n').map_or(0, |i| i + 1);
            let end = output[at..].find('\n').map_or(output.len(), |i| at + i);
            panic!("{what} printed the {name}:\n{}", &output[line..end]);
        }
    }
}

/// A host that acknowledges every notice.
async fn notice_sink() -> (String, tokio::task::JoinHandle<()>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/notices", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 64 * 1024];
                let _ = socket.read(&mut buf).await;
                let _ = socket
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                    .await;
            });
        }
    });
    (url, task)
}

fn text(out: &Output) -> String {
    format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

async fn no_secret_in_any_output(backend: Backend) {
    run(backend, |t| async move {
        let sim = SimServer::start(SimOptions {
            seed: 31,
            accounts: 2,
            scale: Scale::Small,
            ..Default::default()
        })
        .await
        .unwrap();
        connect_all(&t, &sim).await;
        let (notify_url, sink) = notice_sink().await;
        let secrets = Secrets::new();
        let mut env = env_for(&t, &sim);
        env.insert("STRIPE_SECRET_KEY", secrets.stripe_key.clone());
        for (key, (_, value)) in [
            "TRIBUTARY__STRIPE__CONNECT_WEBHOOK_SECRET",
            "TRIBUTARY__STRIPE__PLATFORM_WEBHOOK_SECRET",
            "TRIBUTARY__NOTIFY__SECRET",
            "TRIBUTARY__AUTH__JWT_SECRET",
        ]
        .into_iter()
        .zip(&secrets.others)
        {
            env.insert(key, value.clone());
        }
        env.insert("TRIBUTARY__NOTIFY__URL", notify_url);
        env.insert("RUST_LOG", "trace".to_owned());

        let mut printed = String::new();
        for args in [
            &["migrate"][..],
            &["run-once"],
            &["sync", "--business", "biz_0", "--full"],
            &["backfill", "--business", "biz_0", "--days", "3650"],
            &["audit", "--business", "biz_0"],
            &["verify", "--business", "biz_0"],
        ] {
            let out = scheduler(args, &env).output().unwrap();
            let shown = text(&out);
            assert!(
                out.status.success(),
                "{args:?} failed:\n{}",
                &shown[shown.len().saturating_sub(4000)..]
            );
            assert_no_secrets(&format!("{args:?}"), &shown, &secrets);
            printed.push_str(&shown);
        }

        // Stripe's answer for a revoked account quotes the key it was sent.
        reqwest::Client::new()
            .post(format!(
                "{}/_sim/accounts/{}/revoke",
                sim.base_url(),
                sim.accounts()[1]
            ))
            .send()
            .await
            .unwrap();
        let out = scheduler(&["sync", "--business", "biz_1"], &env)
            .output()
            .unwrap();
        assert!(!out.status.success());
        let shown = text(&out);
        assert!(shown.contains("access_revoked"), "{shown}");
        assert_no_secrets("sync of a revoked account", &shown, &secrets);
        printed.push_str(&shown);

        // The daemon, until SIGTERM after its first round.
        // Rounds every 2 s: biz_0, synced more than a second ago, is synced again.
        let mut child = scheduler(&["daemon", "--every", "2s"], &env)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (tx, rx) = mpsc::channel::<(bool, String)>();
        let readers: Vec<_> = [
            (
                true,
                Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            ),
            (false, Box::new(child.stderr.take().unwrap())),
        ]
        .into_iter()
        .map(|(is_stdout, pipe)| {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    let _ = tx.send((is_stdout, line));
                }
            })
        })
        .collect();
        drop(tx);
        let mut daemon = String::new();
        let deadline = std::time::Instant::now() + Duration::from_secs(300);
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let (is_stdout, line) = rx.recv_timeout(left).expect("the daemon finishes a round");
            daemon.push_str(&line);
            daemon.push('\n');
            if is_stdout && line.starts_with("round: 1 queued") {
                break;
            }
        }
        let status = std::process::Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let exit = child.wait().unwrap();
        for r in readers {
            r.join().unwrap();
        }
        daemon.extend(rx.iter().map(|(_, l)| l + "\n"));
        assert!(daemon.contains("stopping: signal received"), "{daemon}");
        assert!(exit.success(), "{daemon}");
        assert!(daemon.contains("biz_0 succeeded"), "{daemon}");
        assert_no_secrets("daemon", &daemon, &secrets);
        printed.push_str(&daemon);

        // The check could have failed: every crate logged at trace, the HTTP client and the
        // database driver included, and the requests that carried the key were made.
        for target in ["hyper_util::", "reqwest::", "tributary_sync::"] {
            assert!(printed.contains(target), "nothing logged by {target}");
        }
        assert!(printed.contains("TRACE"), "trace logging did not run");
        assert!(
            printed.contains("does not have access to account"),
            "Stripe's answer to the revoked account was not shown"
        );
        sink.abort();
        sim.stop().await;
    })
    .await;
}

mod no_secret_in_output {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite() {
        super::no_secret_in_any_output(super::Backend::Sqlite).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres() {
        super::no_secret_in_any_output(super::Backend::Postgres).await;
    }
}
