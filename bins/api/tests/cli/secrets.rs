//! No secret in any output: `tributary-api serve` (not the demo) runs with `RUST_LOG=trace`
//! (every crate: the HTTP server and client, the database driver) through a whole life —
//! businesses registered, two Stripe accounts connected through the OAuth flow against the
//! simulator, first syncs in its worker pool, a manual sync, webhooks signed by the simulator
//! and by hand on all three endpoints, refused tokens and signatures, a revoked account, a
//! disconnect, SIGTERM — and neither stdout nor stderr shows the Stripe key, a webhook or
//! notice secret, the JWT secrets, a token, or an `Authorization` header value.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use secrecy::SecretString;
use serde_json::{Value, json};
use tributary_persistence::testing::run;
use tributary_stripe_sim::{Scale, SimOptions, SimServer};
use tributary_web::auth::{Claims, Portal};

use super::*;

const REDIRECT_URI: &str = "https://api.tributary.test/api/stripe/oauth/callback";
const AGENCY_URL: &str = "https://agency.example/settings/stripe";
/// What a forged log line would look like.
const FORGED: &str = "2026-01-01T00:00:00.000000Z ERROR tributary_web: forged line injected";

/// 32 random hex characters.
fn random_hex() -> String {
    use std::hash::{BuildHasher, Hasher};
    (0..2)
        .map(|i| {
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_u64(i);
            format!("{:016x}", h.finish())
        })
        .collect()
}

/// Every secret of the process, by the setting that carries it.
struct Secrets {
    stripe_key: String,
    jwt: String,
    jwt_previous: String,
    connect: String,
    platform: String,
    business: String,
    notify: String,
    /// Every token sent, valid or not.
    tokens: Vec<String>,
}

impl Secrets {
    fn new() -> Self {
        Secrets {
            stripe_key: format!("sk_test_{}", random_hex()),
            jwt: format!("jwt-{}", random_hex()),
            jwt_previous: format!("jwt-old-{}", random_hex()),
            connect: format!("whsec_{}", random_hex()),
            platform: format!("whsec_{}", random_hex()),
            business: format!("whsec_{}", random_hex()),
            notify: format!("whsec_{}", random_hex()),
            tokens: Vec::new(),
        }
    }

    fn token(&mut self, secret: &str, claims: &Claims) -> String {
        let token = claims.sign(&SecretString::from(secret)).unwrap();
        self.tokens.push(token.clone());
        token
    }

    /// `(what, needle)`. The Stripe key may show as Stripe redacts it (`sk_test_****` and its
    /// last four characters), never more; a token by its signature, the part only the secret
    /// can make.
    fn needles(&self) -> Vec<(String, String)> {
        let key = &self.stripe_key;
        let mut out = vec![
            ("Stripe key".to_owned(), key[..key.len() - 4].to_owned()),
            (
                "Stripe key's random part".to_owned(),
                key["sk_test_".len()..key.len() - 4].to_owned(),
            ),
            ("JWT secret".to_owned(), self.jwt.clone()),
            ("previous JWT secret".to_owned(), self.jwt_previous.clone()),
            ("Connect webhook secret".to_owned(), self.connect.clone()),
            ("platform webhook secret".to_owned(), self.platform.clone()),
            ("business webhook secret".to_owned(), self.business.clone()),
            ("notice secret".to_owned(), self.notify.clone()),
        ];
        for token in &self.tokens {
            let signature = token.rsplit('.').next().unwrap().to_owned();
            out.push(("a token's signature".to_owned(), signature));
            out.push((
                "an Authorization header".to_owned(),
                format!("Bearer {token}"),
            ));
        }
        out
    }
}

fn claims(sub: &str, exp_in: i64, businesses: &[&str], admin: bool) -> Claims {
    Claims {
        sub: sub.to_owned(),
        exp: now() + exp_in,
        portal: Some(Portal::Agency),
        businesses: businesses.iter().map(|b| (*b).to_owned()).collect(),
        admin,
    }
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn without_colours(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c == 'm' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// A host that acknowledges every notice.
async fn notice_sink() -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/notices", listener.local_addr().unwrap());
    tokio::spawn(async move {
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
    url
}

struct Api {
    base: String,
    http: reqwest::Client,
}

impl Api {
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        let url = if path.starts_with("http") {
            path.to_owned()
        } else {
            format!("{}{path}", self.base)
        };
        let mut req = self.http.request(method, url);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let res = req.send().await.unwrap();
        let status = res.status().as_u16();
        let location = res
            .headers()
            .get("location")
            .map(|l| l.to_str().unwrap().to_owned());
        let text = res.text().await.unwrap();
        let body = match location {
            Some(l) => json!({"location": l}),
            None => serde_json::from_str(&text).unwrap_or(Value::String(text)),
        };
        (status, body)
    }

    async fn hook(&self, path: &str, event: &Value, secret: &str) -> (u16, Value) {
        let body = event.to_string();
        let signature = tributary_stripe_connect::sign_payload(body.as_bytes(), secret, now());
        let res = self
            .http
            .post(format!("{}{path}", self.base))
            .header("content-type", "application/json")
            .header("stripe-signature", signature)
            .body(body)
            .send()
            .await
            .unwrap();
        let status = res.status().as_u16();
        (status, res.json().await.unwrap_or(Value::Null))
    }

    /// The OAuth flow for `business` with the simulator's account `acct`.
    async fn connect(&self, token: &str, business: &str, acct: &str) {
        let (status, body) = self
            .call(
                reqwest::Method::GET,
                &format!("/api/stripe/connect-url?businessId={business}"),
                Some(token),
                None,
            )
            .await;
        assert_eq!(status, 200, "{body}");
        let url = format!("{}&sim_account={acct}", body["url"].as_str().unwrap());
        let (status, body) = self.call(reqwest::Method::GET, &url, None, None).await;
        assert_eq!(status, 302, "{body}");
        let back = body["location"].as_str().unwrap();
        let query = back.strip_prefix(REDIRECT_URI).unwrap();
        let (status, body) = self
            .call(
                reqwest::Method::GET,
                &format!("/api/stripe/oauth/callback{query}"),
                None,
                None,
            )
            .await;
        assert_eq!(status, 302, "{body}");
        let location = body["location"].as_str().unwrap();
        assert!(location.contains("stripe=connected"), "{location}");
    }

    /// Waits for the business's status to satisfy `done`.
    async fn wait_status(&self, token: &str, business: &str, done: impl Fn(&Value) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(180);
        loop {
            let (status, body) = self
                .call(
                    reqwest::Method::GET,
                    &format!("/api/stripe/{business}/status"),
                    Some(token),
                    None,
                )
                .await;
            assert_eq!(status, 200, "{body}");
            if done(&body) {
                return;
            }
            assert!(Instant::now() < deadline, "{business}: {body}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

fn succeeded(status: &Value) -> bool {
    status["last_sync"]["status"] == "succeeded"
}

async fn no_secret_in_any_output(backend: Backend) {
    run(backend, |t| async move {
        let sim = SimServer::start(SimOptions {
            seed: 41,
            accounts: 2,
            scale: Scale::Small,
            ..Default::default()
        })
        .await
        .unwrap();
        let (acct_s, acct_r) = (sim.accounts()[0].clone(), sim.accounts()[1].clone());
        let mut s = Secrets::new();
        let notify_url = notice_sink().await;
        let env: HashMap<&str, String> = HashMap::from([
            ("DATABASE_URL", t.url.clone()),
            ("STRIPE_SECRET_KEY", s.stripe_key.clone()),
            ("STRIPE_CONNECT_CLIENT_ID", "ca_tributary_secrets".to_owned()),
            ("STRIPE_OAUTH_REDIRECT_URI", REDIRECT_URI.to_owned()),
            ("TRIBUTARY__STRIPE__API_BASE", sim.base_url()),
            ("TRIBUTARY__STRIPE__CONNECT_BASE", sim.base_url()),
            ("TRIBUTARY__STRIPE__MAX_REQUESTS_PER_SECOND", "1000".to_owned()),
            ("TRIBUTARY__STRIPE__CONNECT_WEBHOOK_SECRET", s.connect.clone()),
            ("TRIBUTARY__STRIPE__PLATFORM_WEBHOOK_SECRET", s.platform.clone()),
            ("TRIBUTARY__AUTH__JWT_SECRET", s.jwt.clone()),
            ("TRIBUTARY__AUTH__JWT_PREVIOUS_SECRET", s.jwt_previous.clone()),
            ("TRIBUTARY__FRONTEND__AGENCY_SETTINGS_URL", AGENCY_URL.to_owned()),
            ("TRIBUTARY__NOTIFY__URL", notify_url),
            ("TRIBUTARY__NOTIFY__SECRET", s.notify.clone()),
            ("TRIBUTARY__SYNC__CONCURRENCY", "2".to_owned()),
            ("RUST_LOG", "trace".to_owned()),
        ]);
        let mut cmd = Command::new(BIN);
        cmd.args(["serve", "--port", "0"])
            .env_clear()
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Ok(path) = std::env::var("PATH") {
            cmd.env("PATH", path);
        }
        cmd.envs(env.iter().map(|(k, v)| (*k, v.as_str())));
        let mut child = cmd.spawn().expect("start tributary-api serve");
        let (tx, rx) = mpsc::channel::<String>();
        let readers: Vec<_> = [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ]
        .into_iter()
        .map(|pipe| {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    let _ = tx.send(line);
                }
            })
        })
        .collect();
        drop(tx);
        let mut printed = String::new();
        let deadline = Instant::now() + Duration::from_secs(120);
        let port = loop {
            let line = rx
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
                .unwrap_or_else(|_| panic!("tributary-api did not start:\n{printed}"));
            printed.push_str(&line);
            printed.push('\n');
            let plain = without_colours(&line);
            if plain.contains("tributary-api listening") {
                let at = plain.find("port=").unwrap() + "port=".len();
                let digits: String = plain[at..].chars().take_while(char::is_ascii_digit).collect();
                break digits.parse::<u16>().unwrap();
            }
        };
        let api = Api {
            base: format!("http://127.0.0.1:{port}"),
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .timeout(Duration::from_secs(60))
                .build()
                .unwrap(),
        };
        use reqwest::Method;
        let admin = s.token(&s.jwt.clone(), &claims("admin", 600, &[], true));
        let agency = s.token(&s.jwt.clone(), &claims("u", 600, &["biz-s", "biz-r"], false));

        for (id, slug) in [("biz-s", "secret-co"), ("biz-r", "revoked-co")] {
            let (status, body) = api
                .call(
                    Method::PUT,
                    &format!("/api/businesses/{id}"),
                    Some(&admin),
                    Some(json!({"name": id, "slug": slug, "agency_id": "ag-1"})),
                )
                .await;
            assert_eq!(status, 200, "{body}");
        }
        // The simulator delivers every later change of the accounts, signed.
        api.call(
            Method::POST,
            &format!("{}/_sim/webhooks", sim.base_url()),
            None,
            Some(json!({"url": format!("{}/api/webhooks/stripe/connect", api.base),
                        "secret": s.connect, "connect": true})),
        )
        .await;
        api.connect(&agency, "biz-s", &acct_s).await;
        api.connect(&agency, "biz-r", &acct_r).await;
        api.wait_status(&agency, "biz-s", succeeded).await;
        api.wait_status(&agency, "biz-r", succeeded).await;

        let (status, _) = api
            .call(
                Method::PUT,
                "/api/stripe/biz-s/webhook-secret",
                Some(&agency),
                Some(json!({"secret": s.business})),
            )
            .await;
        assert_eq!(status, 204);
        let (status, body) = api
            .call(
                Method::POST,
                &format!("{}/_sim/accounts/{acct_s}/mutate", sim.base_url()),
                None,
                Some(json!({"count": 5, "seed": 3})),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let (_, eps) = api
                .call(Method::GET, &format!("{}/_sim/webhooks", sim.base_url()), None, None)
                .await;
            if eps[0]["delivered"].as_u64().unwrap_or(0) >= 5 {
                break;
            }
            assert!(Instant::now() < deadline, "{eps}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }

        // Signed by hand: a business's own endpoint, the platform's billing, a forgery.
        let event = |id: &str, kind: &str, object: Value| {
            json!({"id": id, "object": "event", "type": kind, "created": now(),
                   "livemode": false, "api_version": tributary_stripe_connect::STRIPE_VERSION,
                   "data": {"object": object}})
        };
        let (status, body) = api
            .hook(
                "/api/webhooks/stripe/secret-co",
                &event("evt_own_1", "customer.updated",
                       json!({"id": "cus_own_1", "object": "customer", "email": "own@example.com", "created": now()})),
                &s.business,
            )
            .await;
        assert_eq!(status, 200, "{body}");
        let (status, body) = api
            .hook(
                "/api/webhooks/stripe",
                &event("evt_plat_1", "checkout.session.completed",
                       json!({"id": "cs_plat_1", "object": "checkout.session", "client_reference_id": "ag-1",
                              "customer": "cus_plat_1", "subscription": "sub_plat_1", "mode": "subscription"})),
                &s.platform,
            )
            .await;
        assert_eq!(status, 200, "{body}");
        let (status, _) = api
            .hook(
                "/api/webhooks/stripe/connect",
                &event("evt_forged", "customer.updated", json!({"id": "cus_x", "object": "customer"})),
                "whsec_not_the_secret",
            )
            .await;
        assert_eq!(status, 400);

        // Refused tokens, and one signed with the previous secret during a rotation.
        let expired = s.token(&s.jwt.clone(), &claims("u", -3600, &["biz-s"], false));
        let forged = s.token("some-other-secret-0123456789", &claims("u", 600, &["biz-s"], true));
        let rotated = s.token(&s.jwt_previous.clone(), &claims("u", 600, &["biz-s"], false));
        for (token, want) in [(&expired, 401), (&forged, 401), (&rotated, 200)] {
            let (status, _) = api
                .call(Method::GET, "/api/stripe/biz-s/status", Some(token), None)
                .await;
            assert_eq!(status, want);
        }

        // Log forging: values that reach the logs, each with a line break and a line of its
        // own: the callback's `error`, a signed event's id.
        let (status, body) = api
            .call(
                Method::GET,
                "/api/stripe/connect-url?businessId=biz-s",
                Some(&agency),
                None,
            )
            .await;
        assert_eq!(status, 200, "{body}");
        let state = body["url"].as_str().unwrap().split("state=").nth(1).unwrap();
        let state = state.split('&').next().unwrap().to_owned();
        let (status, _) = api
            .call(
                Method::GET,
                &format!(
                    "/api/stripe/oauth/callback?state={state}&error=x%0A{}",
                    FORGED.replace(' ', "%20")
                ),
                None,
                None,
            )
            .await;
        assert_eq!(status, 302);
        let (status, body) = api
            .hook(
                "/api/webhooks/stripe/secret-co",
                &event(
                    &format!("evt_x\n{FORGED}"),
                    "customer.updated",
                    json!({"id": "cus_own_2", "object": "customer"}),
                ),
                &s.business,
            )
            .await;
        assert_eq!(status, 400, "{body}");

        // A manual sync.
        let (status, body) = api
            .call(Method::POST, "/api/stripe/biz-s/sync", Some(&agency), None)
            .await;
        assert_eq!(status, 202, "{body}");
        let job = body["id"].as_str().unwrap().to_owned();
        api.wait_status(&agency, "biz-s", |st| st["last_sync"]["id"] == job.as_str() && succeeded(st))
            .await;

        // The second account removes the platform: the deauthorization comes as a webhook.
        api.call(
            Method::POST,
            &format!("{}/_sim/accounts/{acct_r}/revoke", sim.base_url()),
            None,
            None,
        )
        .await;
        api.wait_status(&agency, "biz-r", |st| st["status"] == "revoked").await;

        // Disconnect: revoked at Stripe, cleared here.
        let (status, body) = api
            .call(Method::DELETE, "/api/stripe/biz-s", Some(&agency), None)
            .await;
        assert_eq!(status, 204, "{body}");

        let status = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let exit = child.wait().unwrap();
        for r in readers {
            r.join().unwrap();
        }
        printed.extend(rx.iter().map(|l| l + "\n"));
        assert!(exit.success(), "exit {exit}");

        for (what, needle) in s.needles() {
            if let Some(at) = printed.find(&needle) {
                let start = printed[..at].rfind('\n').map_or(0, |i| i + 1);
                let end = printed[at..].find('\n').map_or(printed.len(), |i| at + i);
                panic!("tributary-api printed {what}:\n{}", &printed[start..end]);
            }
        }
        let plain = without_colours(&printed);
        assert!(
            !plain.lines().any(|l| l.starts_with(FORGED)),
            "a request wrote a log line of its own"
        );
        assert!(plain.contains("injected"), "the forged values were not logged at all");
        // The check could have failed: every crate logged at trace (the server, the HTTP
        // client, ours), and the requests carrying each secret were made.
        assert!(printed.contains("TRACE"), "trace logging did not run");
        for target in ["actix_", "hyper_util::", "reqwest::", "tributary_web", "tributary_sync::"] {
            assert!(printed.contains(target), "nothing logged by {target}");
        }
        assert!(printed.contains("webhook event"), "no webhook was logged");
        assert!(printed.contains("Stripe disconnected"), "the disconnect was not logged");
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
