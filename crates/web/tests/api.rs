//! The API through its real HTTP server, against the Stripe simulator, on SQLite and on
//! PostgreSQL (`name::sqlite`, `name::postgres`; set `TRIBUTARY_TEST_POSTGRES_URL`).
//! Logs are silent unless `TEST_LOG=1`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::time::Duration;

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tributary_domain::BusinessId;
use tributary_persistence::entities::{stripe_customers, webhook_events};
use tributary_persistence::sea_orm::{ConnectionTrait, DbBackend, Statement};
use tributary_persistence::testing::TestDbRef;
use tributary_persistence::{Database, access, db_test, jobs, mirror, oauth_states, webhooks};
use tributary_stripe_sim::{Scale, SimOptions, SimServer};
use tributary_web::settings::Settings;
use tributary_web::{Application, Tuning};

const SECRET: &str = "test-jwt-secret-0123456789";
const PREVIOUS_SECRET: &str = "previous-jwt-secret-0123456789";
const AGENCY_URL: &str = "https://agency.example/settings/stripe";
const CLIENT_URL: &str = "https://client.example/portal/settings?tab=stripe";
const REDIRECT_URI: &str = "https://api.tributary.test/api/stripe/oauth/callback";
const ORIGIN: &str = "https://agency.example";

/// How a test app is started.
#[derive(Debug, Clone)]
struct Opts {
    workers: bool,
    state_ttl: i64,
    accounts: usize,
    scale: Scale,
    /// Stripe (API and OAuth) somewhere else than the simulator.
    stripe_base: Option<String>,
}

impl Default for Opts {
    fn default() -> Self {
        Self {
            workers: false,
            state_ttl: 600,
            accounts: 3,
            scale: Scale::Empty,
            stripe_base: None,
        }
    }
}

struct TestApp {
    base: String,
    db: Database,
    sim: SimServer,
    http: reqwest::Client,
    handle: actix_web::dev::ServerHandle,
    served: tokio::task::JoinHandle<std::io::Result<()>>,
}

/// An answer, read whole.
#[derive(Debug)]
struct Answer {
    status: StatusCode,
    headers: reqwest::header::HeaderMap,
    text: String,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.text)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.text))
    }

    fn error_code(&self) -> String {
        self.json()["error"]["code"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    fn location(&self) -> String {
        self.headers
            .get("location")
            .expect("a Location header")
            .to_str()
            .unwrap()
            .to_owned()
    }
}

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

fn sign(secret: &str, claims: &Value) -> String {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

fn agency(businesses: &[&str]) -> String {
    sign(
        SECRET,
        &json!({"sub": "user-agency", "exp": now() + 600, "portal": "agency", "businesses": businesses}),
    )
}

fn client(business: &str) -> String {
    sign(
        SECRET,
        &json!({"sub": "user-client", "exp": now() + 600, "portal": "client", "businesses": [business]}),
    )
}

fn admin() -> String {
    sign(
        SECRET,
        &json!({"sub": "user-admin", "exp": now() + 600, "portal": "agency", "admin": true}),
    )
}

fn query_of(url: &str) -> HashMap<String, String> {
    let query = url.split_once('?').map(|(_, q)| q).unwrap_or_default();
    let query = query.split('#').next().unwrap_or_default();
    url::form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .collect()
}

fn biz(id: &str) -> BusinessId {
    BusinessId::parse(id).unwrap()
}

fn init_logs() {
    if std::env::var("TEST_LOG").is_ok_and(|v| v == "1") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tributary_web::telemetry::filter("debug"))
            .with_test_writer()
            .try_init();
    }
}

impl TestApp {
    async fn spawn(t: &TestDbRef) -> TestApp {
        Self::spawn_with(t, Opts::default()).await
    }

    async fn spawn_with(t: &TestDbRef, opts: Opts) -> TestApp {
        Self::spawn_configured(t, opts, |_| {}).await
    }

    /// [`TestApp::spawn_with`], letting the caller adjust the settings before the app is built.
    async fn spawn_configured(
        t: &TestDbRef,
        opts: Opts,
        configure: impl FnOnce(&mut Settings),
    ) -> TestApp {
        init_logs();
        let sim = SimServer::start(SimOptions {
            seed: 7,
            accounts: opts.accounts,
            scale: opts.scale,
            ..Default::default()
        })
        .await
        .expect("simulator");
        let mut settings = Settings::load_from(None, &HashMap::new()).unwrap();
        settings.database.url = t.url.clone();
        settings.server.port = 0;
        settings.server.cors_origins = vec![ORIGIN.to_owned()];
        settings.stripe.secret_key = Some(String::from("sk_test_tributary_api_tests").into());
        settings.stripe.connect_client_id = Some("ca_tributary_sim".into());
        settings.stripe.oauth_redirect_uri = Some(REDIRECT_URI.into());
        let stripe_base = opts.stripe_base.clone().unwrap_or_else(|| sim.base_url());
        settings.stripe.api_base.clone_from(&stripe_base);
        settings.stripe.connect_base = stripe_base;
        settings.stripe.max_requests_per_second = 100;
        settings.frontend.agency_settings_url = Some(AGENCY_URL.into());
        settings.frontend.client_settings_url = Some(CLIENT_URL.into());
        settings.auth.jwt_secret = Some(String::from(SECRET).into());
        settings.auth.jwt_previous_secret = Some(String::from(PREVIOUS_SECRET).into());
        settings.sync.concurrency = 2;
        configure(&mut settings);
        settings
            .validate(tributary_web::settings::Purpose::Serve)
            .unwrap();
        let app = Application::build_with(
            settings,
            Tuning {
                oauth_state_ttl_secs: opts.state_ttl,
                start_workers: opts.workers,
                worker_poll: Duration::from_millis(200),
            },
        )
        .await
        .expect("application");
        let base = format!("http://127.0.0.1:{}", app.port());
        let handle = app.server_handle();
        let served = tokio::spawn(app.run_until_stopped());
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap();
        TestApp {
            base,
            db: t.db.clone(),
            sim,
            http,
            handle,
            served,
        }
    }

    async fn stop(self) {
        self.handle.stop(true).await;
        let _ = self.served.await;
        self.sim.stop().await;
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Answer {
        let url = if path.starts_with("http") {
            path.to_owned()
        } else {
            format!("{}{path}", self.base)
        };
        let mut req = self.http.request(method, url);
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        if let Some(body) = body {
            req = req.json(&body);
        }
        let res = req.send().await.expect("request");
        Answer {
            status: res.status(),
            headers: res.headers().clone(),
            text: res.text().await.unwrap(),
        }
    }

    async fn get(&self, path: &str, token: &str) -> Answer {
        self.send(Method::GET, path, Some(token), None).await
    }

    async fn post(&self, path: &str, token: &str) -> Answer {
        self.send(Method::POST, path, Some(token), None).await
    }

    async fn put(&self, path: &str, token: &str, body: Value) -> Answer {
        self.send(Method::PUT, path, Some(token), Some(body)).await
    }

    async fn delete(&self, path: &str, token: &str) -> Answer {
        self.send(Method::DELETE, path, Some(token), None).await
    }

    fn account(&self, i: usize) -> String {
        self.sim.accounts()[i].clone()
    }

    /// `GET /api/stripe/connect-url?businessId=B` → the authorize URL.
    async fn connect_url(&self, token: &str, business: &str) -> String {
        let res = self
            .get(
                &format!("/api/stripe/connect-url?businessId={business}"),
                token,
            )
            .await;
        assert_eq!(res.status, StatusCode::OK, "{}", res.text);
        res.json()["url"].as_str().unwrap().to_owned()
    }

    /// Approves (`Some(acct)`) or denies (`None`) at the simulator and returns the URL Stripe
    /// sends the browser to, rewritten to this app's address.
    async fn authorize(&self, authorize_url: &str, decision: Option<&str>) -> String {
        let extra = match decision {
            Some(acct) => format!("&sim_account={acct}"),
            None => "&sim_decision=deny".to_owned(),
        };
        let res = self
            .send(Method::GET, &format!("{authorize_url}{extra}"), None, None)
            .await;
        assert_eq!(res.status, StatusCode::FOUND, "{}", res.text);
        let location = res.location();
        let query = location
            .strip_prefix(REDIRECT_URI)
            .expect("redirected to the registered URI");
        format!("{}/api/stripe/oauth/callback{query}", self.base)
    }

    /// Calls the callback; returns where it redirects to and that URL's query.
    async fn callback(&self, url: &str) -> (String, HashMap<String, String>) {
        let res = self.send(Method::GET, url, None, None).await;
        assert_eq!(res.status, StatusCode::FOUND, "{}", res.text);
        let location = res.location();
        let query = query_of(&location);
        (location, query)
    }

    /// The whole agency flow for `business` and simulator account `acct`.
    async fn connect(&self, business: &str, acct: &str) -> HashMap<String, String> {
        let url = self.connect_url(&agency(&[business]), business).await;
        let back = self.authorize(&url, Some(acct)).await;
        self.callback(&back).await.1
    }

    async fn status(&self, business: &str) -> Value {
        let res = self
            .get(
                &format!("/api/stripe/{business}/status"),
                &agency(&[business]),
            )
            .await;
        assert_eq!(res.status, StatusCode::OK, "{}", res.text);
        res.json()
    }

    async fn sim_requests(&self, route: &str) -> u64 {
        let v: Value = self
            .http
            .get(format!("{}/_sim/requests", self.sim.base_url()))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        v["by_route"][route]
            .as_object()
            .map(|by_status| by_status.values().filter_map(Value::as_u64).sum())
            .unwrap_or(0)
    }

    async fn sim_control(&self, path: &str, body: Value) {
        let res = self
            .http
            .post(format!("{}{path}", self.sim.base_url()))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert!(res.status().is_success(), "{path}: {}", res.status());
    }

    /// The id of the business's latest sync job.
    async fn last_sync_id(&self, business: &str) -> String {
        self.status(business).await["last_sync"]["id"]
            .as_str()
            .expect("a sync job")
            .to_owned()
    }

    /// Connects `business` to `acct` and waits for its first sync to succeed.
    pub(crate) async fn connect_and_sync(&self, business: &str, acct: &str) {
        assert_eq!(self.connect(business, acct).await["stripe"], "connected");
        let job = self.last_sync_id(business).await;
        self.wait_succeeded(business, &job).await;
    }

    /// Queues a sync of `business` through `POST /api/stripe/{business}/sync{query}` and waits
    /// for it to succeed; returns the job.
    pub(crate) async fn sync_and_wait(&self, business: &str, query: &str) -> Value {
        let res = self
            .post(
                &format!("/api/stripe/{business}/sync{query}"),
                &agency(&[business]),
            )
            .await;
        assert_eq!(res.status, StatusCode::ACCEPTED, "{}", res.text);
        let job = res.json()["id"].as_str().unwrap().to_owned();
        self.wait_succeeded(business, &job).await
    }

    /// Waits for the job to end, and asserts it succeeded.
    pub(crate) async fn wait_succeeded(&self, business: &str, job_id: &str) -> Value {
        let job = self
            .wait_for_job(business, job_id, &["succeeded", "failed"])
            .await;
        assert_eq!(job["status"], "succeeded", "{job}");
        job
    }

    async fn wait_for_job(&self, business: &str, job_id: &str, done: &[&str]) -> Value {
        let deadline = std::time::Instant::now() + Duration::from_secs(120);
        loop {
            let res = self
                .get(
                    &format!("/api/stripe/{business}/sync-jobs/{job_id}"),
                    &agency(&[business]),
                )
                .await;
            assert_eq!(res.status, StatusCode::OK, "{}", res.text);
            let job = res.json();
            if done.contains(&job["status"].as_str().unwrap()) {
                return job;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "job {job_id} still {job}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Rows the business has in every table that carries `business_id`.
async fn rows_by_table(db: &Database, business: &str) -> HashMap<&'static str, i64> {
    let backend = db.conn().get_database_backend();
    let placeholder = if backend == DbBackend::Postgres {
        "$1"
    } else {
        "?"
    };
    let mut out = HashMap::new();
    for table in tributary_migrations::TABLES {
        if matches!(*table, "businesses" | "agency_billing") {
            continue;
        }
        let row = db
            .conn()
            .query_one_raw(Statement::from_sql_and_values(
                backend,
                format!("SELECT COUNT(*) AS n FROM {table} WHERE business_id = {placeholder}"),
                [business.into()],
            ))
            .await
            .unwrap()
            .unwrap();
        out.insert(*table, row.try_get::<i64>("", "n").unwrap());
    }
    out
}

fn customer(business: &str, id: &str) -> stripe_customers::Model {
    stripe_customers::Model {
        business_id: business.into(),
        stripe_id: id.into(),
        email: Some(format!("{id}@example.com")),
        name: Some(format!("name of {id}")),
        currency: Some("usd".into()),
        raw: json!({"id": id, "object": "customer"}),
        livemode: false,
        created: 1_700_000_000,
        deleted: false,
        last_event_at: 1_700_000_000,
        synced_at: 1_700_000_000,
    }
}

/// Mirrored and connection rows for `business`, written through the repositories.
async fn seed_rows(db: &Database, business: &str) {
    let b = biz(business);
    mirror::upsert::<stripe_customers::Entity, _>(
        db.conn(),
        &b,
        vec![
            customer(business, &format!("cus_{business}_1")),
            customer(business, &format!("cus_{business}_2")),
        ],
    )
    .await
    .unwrap();
    webhooks::set_secret(db, &b, "whsec_seeded_secret", now())
        .await
        .unwrap();
    webhooks::record_event(
        db.conn(),
        webhook_events::Model {
            endpoint: "connect".into(),
            event_id: format!("evt_{business}"),
            business_id: Some(business.into()),
            event_type: "customer.updated".into(),
            account: None,
            livemode: false,
            received_at: now(),
            processed_at: Some(now()),
            outcome: "applied".into(),
            payload: None,
        },
    )
    .await
    .unwrap();
    oauth_states::create(
        db,
        &format!("seeded-{business}"),
        &b,
        "agency",
        "u",
        now(),
        600,
    )
    .await
    .unwrap();
}

fn assert_no_trace(answer: &Answer, needles: &[&str]) {
    for needle in needles {
        assert!(
            !answer.text.contains(needle),
            "body reveals {needle}: {}",
            answer.text
        );
    }
}

// ---------------------------------------------------------------------------------------
// Connect flow
// ---------------------------------------------------------------------------------------

db_test!(
    agency_connect_links_the_account_and_queues_a_first_sync,
    |t| {
        let app = TestApp::spawn(&t).await;
        let acct = app.account(0);
        let url = app.connect_url(&agency(&["biz-a"]), "biz-a").await;
        let sim_base = app.sim.base_url();
        assert!(url.starts_with(&format!("{sim_base}/oauth/authorize?response_type=code&client_id=ca_tributary_sim&scope=read_write&redirect_uri=")), "{url}");
        let q = query_of(&url);
        assert_eq!(q["redirect_uri"], REDIRECT_URI);
        let state = &q["state"];
        assert_eq!(state.len(), 64, "a 256-bit nonce: {state}");
        let second = app.connect_url(&agency(&["biz-a"]), "biz-a").await;
        assert_ne!(
            query_of(&second)["state"],
            *state,
            "every URL has a fresh state"
        );

        let back = app.authorize(&url, Some(&acct)).await;
        let (location, q) = app.callback(&back).await;
        assert!(
            location.starts_with(&format!("{AGENCY_URL}?")),
            "{location}"
        );
        assert_eq!(q["businessId"], "biz-a");
        assert_eq!(q["stripe"], "connected");
        assert!(!q.contains_key("reason"));

        let status = app.status("biz-a").await;
        let keys: Vec<&str> = status
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(
            keys.iter()
                .copied()
                .collect::<std::collections::BTreeSet<_>>(),
            [
                "status",
                "account_id",
                "account_name",
                "connected_at",
                "last_sync",
                "last_successful_sync_at"
            ]
            .into_iter()
            .collect()
        );
        assert_eq!(status["status"], "connected");
        assert_eq!(status["account_id"], acct.as_str());
        assert!(
            status["account_name"]
                .as_str()
                .is_some_and(|n| !n.is_empty()),
            "{status}"
        );
        let connected_at = status["connected_at"].as_str().unwrap();
        assert!(
            connected_at.ends_with('Z') && connected_at.contains('T'),
            "{connected_at}"
        );
        let job = &status["last_sync"];
        assert_eq!(job["trigger"], "backfill");
        assert_eq!(job["status"], "queued");
        assert_eq!(job["business_id"], "biz-a");
        assert_eq!(job["error"], Value::Null);
        assert_eq!(job["progress"], json!({}));
        assert_eq!(status["last_successful_sync_at"], Value::Null);
        let row = access::get(&app.db, &biz("biz-a")).await.unwrap().unwrap();
        assert_eq!(row.scope, "read_write");
        assert!(!row.livemode);
        app.stop().await;
    }
);

db_test!(states_are_bound_to_business_portal_and_user, |t| {
    let app = TestApp::spawn(&t).await;
    // A state that expired two days ago is pruned when a new one is minted.
    oauth_states::create(
        &app.db,
        "ancient",
        &biz("biz-a"),
        "agency",
        "u",
        now() - 2 * 86_400,
        600,
    )
    .await
    .unwrap();
    assert_eq!(rows_by_table(&app.db, "biz-a").await["oauth_states"], 1);
    let url = app.connect_url(&agency(&["biz-a", "biz-b"]), "biz-b").await;
    let nonce = query_of(&url)["state"].clone();
    assert_eq!(
        rows_by_table(&app.db, "biz-a").await["oauth_states"],
        0,
        "pruned"
    );
    let saved = oauth_states::consume(&app.db, &nonce, now())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(saved.business_id, "biz-b");
    assert_eq!(saved.portal, "agency");
    assert_eq!(saved.user_sub, "user-agency");
    assert!((590..=600).contains(&(saved.expires_at - saved.created_at)));
    let res = app
        .get("/api/client/stripe/connect-url", &client("biz-c"))
        .await;
    let nonce = query_of(res.json()["url"].as_str().unwrap())["state"].clone();
    let saved = oauth_states::consume(&app.db, &nonce, now())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (
            saved.business_id.as_str(),
            saved.portal.as_str(),
            saved.user_sub.as_str()
        ),
        ("biz-c", "client", "user-client")
    );
    app.stop().await;
});

db_test!(every_redirect_reason, |t| {
    let app = TestApp::spawn(&t).await;
    let (acct0, acct1) = (app.account(0), app.account(1));

    // The user declines at Stripe.
    let url = app.connect_url(&agency(&["biz-a"]), "biz-a").await;
    let back = app.authorize(&url, None).await;
    assert!(back.contains("error=access_denied"), "{back}");
    let (location, q) = app.callback(&back).await;
    assert!(location.starts_with(AGENCY_URL), "{location}");
    assert_eq!(
        (
            q["businessId"].as_str(),
            q["stripe"].as_str(),
            q["reason"].as_str()
        ),
        ("biz-a", "error", "stripe_denied")
    );

    // Forged, tampered and missing states: the business cannot be known.
    for forged in [
        format!(
            "{}/api/stripe/oauth/callback?code=ac_x&state={}",
            app.base,
            "ab".repeat(32)
        ),
        format!(
            "{}/api/stripe/oauth/callback?code=ac_x&state=%3Cscript%3E",
            app.base
        ),
        format!("{}/api/stripe/oauth/callback?code=ac_x", app.base),
        format!("{}/api/stripe/oauth/callback?error=access_denied", app.base),
    ] {
        let (location, q) = app.callback(&forged).await;
        assert!(
            location.starts_with(&format!("{AGENCY_URL}?")),
            "{location}"
        );
        assert!(!q.contains_key("businessId"), "{location}");
        assert_eq!(
            (q["stripe"].as_str(), q["reason"].as_str()),
            ("error", "stripe_state_invalid")
        );
    }

    // A code Stripe refuses.
    let url = app.connect_url(&agency(&["biz-a"]), "biz-a").await;
    let state = query_of(&url)["state"].clone();
    let (_, q) = app
        .callback(&format!(
            "{}/api/stripe/oauth/callback?code=ac_not_issued&state={state}",
            app.base
        ))
        .await;
    assert_eq!(
        (q["businessId"].as_str(), q["reason"].as_str()),
        ("biz-a", "stripe_exchange_failed")
    );
    assert_eq!(app.status("biz-a").await["status"], "not_connected");

    // A successful link, then the same callback replayed.
    let url = app.connect_url(&agency(&["biz-a"]), "biz-a").await;
    let back = app.authorize(&url, Some(&acct0)).await;
    assert_eq!(app.callback(&back).await.1["stripe"], "connected");
    let (location, q) = app.callback(&back).await;
    assert!(!q.contains_key("businessId"), "{location}");
    assert_eq!(q["reason"], "stripe_state_invalid");

    // A used code with a fresh state: Stripe refuses it.
    let url = app.connect_url(&agency(&["biz-a"]), "biz-a").await;
    let fresh = query_of(&url)["state"].clone();
    let used_code = query_of(&back)["code"].clone();
    let (_, q) = app
        .callback(&format!(
            "{}/api/stripe/oauth/callback?code={used_code}&state={fresh}",
            app.base
        ))
        .await;
    assert_eq!(q["reason"], "stripe_exchange_failed");

    // The same account for another business.
    let q = app.connect("biz-b", &acct0).await;
    assert_eq!(
        (q["businessId"].as_str(), q["reason"].as_str()),
        ("biz-b", "stripe_account_taken")
    );
    assert_eq!(app.status("biz-b").await["status"], "not_connected");
    assert_eq!(app.status("biz-a").await["account_id"], acct0.as_str());
    assert_eq!(app.connect("biz-b", &acct1).await["stripe"], "connected");
    app.stop().await;
});

db_test!(an_expired_state_is_refused, |t| {
    let app = TestApp::spawn_with(
        &t,
        Opts {
            state_ttl: 1,
            ..Opts::default()
        },
    )
    .await;
    let url = app.connect_url(&agency(&["biz-a"]), "biz-a").await;
    let back = app.authorize(&url, Some(&app.account(0))).await;
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let (location, q) = app.callback(&back).await;
    assert!(!q.contains_key("businessId"), "{location}");
    assert_eq!(q["reason"], "stripe_state_invalid");
    assert_eq!(app.status("biz-a").await["status"], "not_connected");
    app.stop().await;
});

db_test!(client_portal_connects_watches_and_disconnects, |t| {
    let app = TestApp::spawn(&t).await;
    let acct = app.account(2);
    let token = client("biz-c");
    let res = app.get("/api/client/stripe/status", &token).await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.text);
    assert_eq!(res.json()["status"], "not_connected");
    let res = app.get("/api/client/stripe/connect-url", &token).await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.text);
    let url = res.json()["url"].as_str().unwrap().to_owned();
    let back = app.authorize(&url, Some(&acct)).await;
    let (location, q) = app.callback(&back).await;
    assert!(
        location.starts_with(&format!("{CLIENT_URL}&")),
        "{location}"
    );
    assert_eq!(
        (
            q["tab"].as_str(),
            q["businessId"].as_str(),
            q["stripe"].as_str()
        ),
        ("stripe", "biz-c", "connected")
    );

    // Denied and replayed in the client portal go back to the client page.
    let url = app
        .get("/api/client/stripe/connect-url", &token)
        .await
        .json()["url"]
        .as_str()
        .unwrap()
        .to_owned();
    let (location, q) = app.callback(&app.authorize(&url, None).await).await;
    assert!(location.starts_with(CLIENT_URL), "{location}");
    assert_eq!(q["reason"], "stripe_denied");

    let status = app.get("/api/client/stripe/status", &token).await.json();
    assert_eq!(status["status"], "connected");
    assert_eq!(status["account_id"], acct.as_str());
    // A client token may use the agency routes of its own business.
    let res = app.get("/api/stripe/biz-c/status", &token).await;
    assert_eq!(res.json(), status);
    let res = app.post("/api/stripe/biz-c/sync", &token).await;
    assert_eq!(res.status, StatusCode::ACCEPTED, "{}", res.text);

    // An agency token is not a client-portal token.
    let res = app
        .get("/api/client/stripe/status", &agency(&["biz-c"]))
        .await;
    assert_eq!(res.status, StatusCode::FORBIDDEN, "{}", res.text);

    let res = app.delete("/api/client/stripe/disconnect", &token).await;
    assert_eq!(res.status, StatusCode::NO_CONTENT, "{}", res.text);
    assert!(res.headers.get("tributary-revoke").is_none());
    assert_eq!(app.sim_requests("POST /oauth/deauthorize").await, 1);
    assert_eq!(
        app.get("/api/client/stripe/status", &token).await.json()["status"],
        "not_connected"
    );
    let res = app.delete("/api/client/stripe/disconnect", &token).await;
    assert_eq!(res.status, StatusCode::CONFLICT);
    assert_eq!(res.error_code(), "not_connected");
    app.stop().await;
});

// ---------------------------------------------------------------------------------------
// Auth and isolation
// ---------------------------------------------------------------------------------------

/// Every `/api` route of this module that acts on a business, for business `b`.
fn business_routes(b: &str, job: &str) -> Vec<(Method, String, Option<Value>)> {
    vec![
        (
            Method::GET,
            format!("/api/stripe/connect-url?businessId={b}"),
            None,
        ),
        (Method::GET, format!("/api/stripe/{b}/status"), None),
        (Method::POST, format!("/api/stripe/{b}/sync"), None),
        (Method::GET, format!("/api/stripe/{b}/sync-jobs"), None),
        (
            Method::GET,
            format!("/api/stripe/{b}/sync-jobs/{job}"),
            None,
        ),
        (
            Method::PUT,
            format!("/api/stripe/{b}/webhook-secret"),
            Some(json!({"secret": "whsec_attacker_secret"})),
        ),
        (Method::DELETE, format!("/api/stripe/{b}"), None),
    ]
}

fn client_routes() -> Vec<(Method, String, Option<Value>)> {
    vec![
        (Method::GET, "/api/client/stripe/connect-url".into(), None),
        (Method::GET, "/api/client/stripe/status".into(), None),
        (Method::DELETE, "/api/client/stripe/disconnect".into(), None),
    ]
}

fn admin_routes(b: &str) -> Vec<(Method, String, Option<Value>)> {
    vec![
        (
            Method::PUT,
            format!("/api/businesses/{b}"),
            Some(json!({"name": "Renamed", "slug": "renamed", "agency_id": "ag-1"})),
        ),
        (Method::DELETE, format!("/api/businesses/{b}"), None),
        (Method::GET, "/api/admin/connections".into(), None),
        (
            Method::GET,
            "/api/admin/connections?status=revoked".into(),
            None,
        ),
    ]
}

db_test!(every_route_refuses_missing_bad_and_foreign_tokens, |t| {
    let app = TestApp::spawn(&t).await;
    let victim_acct = app.account(1);
    app.put(
        "/api/businesses/biz-victim",
        &admin(),
        json!({"name": "Victim Co", "slug": "victim-co"}),
    )
    .await;
    assert_eq!(
        app.connect("biz-victim", &victim_acct).await["stripe"],
        "connected"
    );
    seed_rows(&app.db, "biz-victim").await;
    let victim_job = app.last_sync_id("biz-victim").await;
    let before = rows_by_table(&app.db, "biz-victim").await;
    let needles = [
        "biz-victim",
        victim_acct.as_str(),
        victim_job.as_str(),
        "Victim Co",
        "victim-co",
    ];

    let claims = |exp: i64| json!({"sub": "intruder", "exp": exp, "portal": "agency", "businesses": ["biz-victim"]});
    let expired = sign(SECRET, &claims(now() - 3600));
    let wrong_secret = sign("some-other-secret-0123456789", &claims(now() + 600));
    let hs384 = jsonwebtoken::encode(
        &Header::new(Algorithm::HS384),
        &claims(now() + 600),
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap();
    let unsigned = {
        let part = |v: &Value| {
            let s = v.to_string();
            let mut out = String::new();
            const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
            for c in s.as_bytes().chunks(3) {
                let n = (u32::from(c[0]) << 16)
                    | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
                    | u32::from(*c.get(2).unwrap_or(&0));
                for i in 0..=c.len() {
                    out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
                }
            }
            out
        };
        format!(
            "{}.{}.",
            part(&json!({"alg": "none", "typ": "JWT"})),
            part(&claims(now() + 600))
        )
    };
    let bad_tokens: Vec<(&str, Option<String>)> = vec![
        ("no token", None),
        ("expired", Some(expired)),
        ("wrong secret", Some(wrong_secret)),
        ("HS384", Some(hs384)),
        ("alg none", Some(unsigned)),
        ("garbage", Some("not-a-jwt".into())),
        (
            "client token naming two businesses",
            Some(sign(
                SECRET,
                &json!({"sub": "u", "exp": now() + 600, "portal": "client", "businesses": ["biz-victim", "biz-mine"]}),
            )),
        ),
    ];
    let mut all_routes = business_routes("biz-victim", &victim_job);
    all_routes.extend(client_routes());
    all_routes.extend(admin_routes("biz-victim"));
    for (name, token) in &bad_tokens {
        for (method, path, body) in &all_routes {
            let res = app
                .send(method.clone(), path, token.as_deref(), body.clone())
                .await;
            assert_eq!(
                res.status,
                StatusCode::UNAUTHORIZED,
                "{name}: {method} {path}: {}",
                res.text
            );
            assert_eq!(res.error_code(), "unauthorized", "{name}: {method} {path}");
            assert_no_trace(&res, &needles);
        }
    }

    // Tokens for another business: 404, with the very body of a business that does not exist.
    for (name, token) in [
        ("agency token of another business", agency(&["biz-mine"])),
        ("client token of another business", client("biz-mine")),
    ] {
        for (method, path, body) in business_routes("biz-victim", &victim_job) {
            let res = app
                .send(method.clone(), &path, Some(&token), body.clone())
                .await;
            assert_eq!(
                res.status,
                StatusCode::NOT_FOUND,
                "{name}: {method} {path}: {}",
                res.text
            );
            assert_no_trace(&res, &needles);
            let unknown_path = path.replace("biz-victim", "biz-nowhere");
            let unknown = app
                .send(method.clone(), &unknown_path, Some(&token), body)
                .await;
            assert_eq!(unknown.status, StatusCode::NOT_FOUND, "{unknown_path}");
            assert_eq!(unknown.text, res.text, "{name}: {method} {path}");
        }
        // Client routes act on the token's own business only.
        for (method, path, body) in client_routes() {
            let res = app.send(method.clone(), &path, Some(&token), body).await;
            assert_no_trace(&res, &needles);
        }
        for (method, path, body) in admin_routes("biz-victim") {
            let res = app.send(method.clone(), &path, Some(&token), body).await;
            assert_eq!(
                res.status,
                StatusCode::FORBIDDEN,
                "{name}: {method} {path}: {}",
                res.text
            );
            assert_no_trace(&res, &needles);
        }
    }
    // A job of the victim through the intruder's own business.
    let res = app
        .get(
            &format!("/api/stripe/biz-mine/sync-jobs/{victim_job}"),
            &agency(&["biz-mine"]),
        )
        .await;
    assert_eq!(res.status, StatusCode::NOT_FOUND);
    assert_no_trace(&res, &needles);
    let res = app
        .get("/api/stripe/biz-mine/sync-jobs", &agency(&["biz-mine"]))
        .await;
    assert_eq!(res.json()["total"], 0);

    // Nothing of the victim changed.
    assert_eq!(rows_by_table(&app.db, "biz-victim").await, before);
    assert_eq!(app.status("biz-victim").await["status"], "connected");
    assert_eq!(
        webhooks::secret(&app.db, &biz("biz-victim"))
            .await
            .unwrap()
            .as_deref(),
        Some("whsec_seeded_secret")
    );
    assert_eq!(app.sim_requests("POST /oauth/deauthorize").await, 0);

    // The previous secret still works during a rotation.
    let rotated = sign(PREVIOUS_SECRET, &claims(now() + 600));
    let res = app.get("/api/stripe/biz-victim/status", &rotated).await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.text);
    app.stop().await;
});

// ---------------------------------------------------------------------------------------
// Relinking and disconnecting
// ---------------------------------------------------------------------------------------

db_test!(relinking_to_another_account_clears_the_old_rows, |t| {
    let app = TestApp::spawn(&t).await;
    let (acct0, acct1) = (app.account(0), app.account(1));
    assert_eq!(app.connect("biz-a", &acct0).await["stripe"], "connected");
    assert_eq!(
        app.connect("biz-other", &app.account(2)).await["stripe"],
        "connected"
    );
    seed_rows(&app.db, "biz-a").await;
    seed_rows(&app.db, "biz-other").await;
    let other_before = rows_by_table(&app.db, "biz-other").await;
    let first_job = app.last_sync_id("biz-a").await;

    // The same account again keeps the rows.
    assert_eq!(app.connect("biz-a", &acct0).await["stripe"], "connected");
    assert_eq!(rows_by_table(&app.db, "biz-a").await["stripe_customers"], 2);
    assert_eq!(
        app.status("biz-a").await["last_sync"]["id"],
        first_job.as_str(),
        "joins the queued sync"
    );

    assert_eq!(app.connect("biz-a", &acct1).await["stripe"], "connected");
    let rows = rows_by_table(&app.db, "biz-a").await;
    for table in tributary_migrations::MIRROR_TABLES {
        assert_eq!(rows[table], 0, "{table} of the old account");
    }
    let status = app.status("biz-a").await;
    assert_eq!(status["account_id"], acct1.as_str());
    assert_ne!(
        status["last_sync"]["id"],
        first_job.as_str(),
        "a new first sync"
    );
    assert_eq!(status["last_sync"]["status"], "queued");
    let old = app
        .get(
            &format!("/api/stripe/biz-a/sync-jobs/{first_job}"),
            &agency(&["biz-a"]),
        )
        .await
        .json();
    assert_eq!(
        old["status"], "failed",
        "the old account's sync was cancelled"
    );
    assert_eq!(old["error"]["code"], "cancelled");
    assert_eq!(rows_by_table(&app.db, "biz-other").await, other_before);
    app.stop().await;
});

db_test!(disconnect_clears_every_table_and_revokes_at_stripe, |t| {
    let app = TestApp::spawn(&t).await;
    let (acct0, acct1) = (app.account(0), app.account(1));
    assert_eq!(app.connect("biz-a", &acct0).await["stripe"], "connected");
    assert_eq!(app.connect("biz-b", &acct1).await["stripe"], "connected");
    app.put(
        "/api/businesses/biz-a",
        &admin(),
        json!({"name": "A", "slug": "biz-a"}),
    )
    .await;
    seed_rows(&app.db, "biz-a").await;
    seed_rows(&app.db, "biz-b").await;
    let before = rows_by_table(&app.db, "biz-a").await;
    for table in [
        "stripe_access",
        "stripe_customers",
        "sync_jobs",
        "oauth_states",
        "webhook_endpoints",
        "webhook_events",
    ] {
        assert!(before[table] > 0, "{table} seeded: {before:?}");
    }
    let b_before = rows_by_table(&app.db, "biz-b").await;

    // A sync of biz-a holds the lease, as a worker would.
    let job = jobs::active_job(&app.db, &biz("biz-a"))
        .await
        .unwrap()
        .unwrap();
    assert!(
        jobs::claim(&app.db, &job.id, "worker-1", now(), 60)
            .await
            .unwrap()
    );

    let res = app.delete("/api/stripe/biz-a", &agency(&["biz-a"])).await;
    assert_eq!(res.status, StatusCode::NO_CONTENT, "{}", res.text);
    assert!(res.headers.get("tributary-revoke").is_none());
    assert!(res.text.is_empty());
    let after = rows_by_table(&app.db, "biz-a").await;
    assert!(after.values().all(|n| *n == 0), "rows left: {after:?}");
    assert_eq!(
        rows_by_table(&app.db, "biz-b").await,
        b_before,
        "the other business is untouched"
    );
    // The worker lost its lease: it can neither renew nor finish.
    assert!(
        !jobs::renew(&app.db, &job.id, "worker-1", now(), 60)
            .await
            .unwrap()
    );
    assert!(
        !jobs::finish(&app.db, &job.id, "worker-1", jobs::SUCCEEDED, None, now())
            .await
            .unwrap()
    );
    assert!(
        tributary_persistence::businesses::get(&app.db, &biz("biz-a"))
            .await
            .unwrap()
            .is_some(),
        "the business itself stays"
    );
    assert_eq!(app.sim_requests("POST /oauth/deauthorize").await, 1);
    assert_eq!(app.status("biz-a").await["status"], "not_connected");
    assert_eq!(app.status("biz-b").await["status"], "connected");

    let res = app.delete("/api/stripe/biz-a", &agency(&["biz-a"])).await;
    assert_eq!(res.status, StatusCode::CONFLICT);
    assert_eq!(res.error_code(), "not_connected");
    let res = app
        .post("/api/stripe/biz-a/sync", &agency(&["biz-a"]))
        .await;
    assert_eq!(res.status, StatusCode::CONFLICT);
    assert_eq!(res.error_code(), "not_connected");

    // Stripe already forgot biz-b's account: the local clear happens and the header says so.
    app.sim_control(&format!("/_sim/accounts/{acct1}/revoke"), json!({}))
        .await;
    let res = app.delete("/api/stripe/biz-b", &agency(&["biz-b"])).await;
    assert_eq!(res.status, StatusCode::NO_CONTENT, "{}", res.text);
    assert_eq!(res.headers.get("tributary-revoke").unwrap(), "failed");
    let after = rows_by_table(&app.db, "biz-b").await;
    assert!(after.values().all(|n| *n == 0), "rows left: {after:?}");
    app.stop().await;
});

db_test!(disconnect_in_the_middle_of_a_sync_leaves_nothing, |t| {
    let app = TestApp::spawn_with(
        &t,
        Opts {
            workers: true,
            scale: Scale::Small,
            accounts: 2,
            ..Opts::default()
        },
    )
    .await;
    let (acct0, acct1) = (app.account(0), app.account(1));
    app.connect_and_sync("biz-b", &acct1).await;
    let b_rows = rows_by_table(&app.db, "biz-b").await;
    assert!(b_rows["stripe_customers"] > 0, "{b_rows:?}");

    // Slow Stripe down so the first sync of biz-a is still running when it disconnects.
    app.sim_control("/_sim/faults", json!({"latency_ms": 200}))
        .await;
    assert_eq!(app.connect("biz-a", &acct0).await["stripe"], "connected");
    let job = app.last_sync_id("biz-a").await;
    app.wait_for_job("biz-a", &job, &["running"]).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while rows_by_table(&app.db, "biz-a")
        .await
        .iter()
        .filter(|(t, _)| t.starts_with("stripe_") && **t != "stripe_access")
        .all(|(_, n)| *n == 0)
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the sync wrote nothing"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let running = jobs::get(&app.db, &biz("biz-a"), &job)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        running.status,
        jobs::RUNNING,
        "still syncing when disconnected"
    );
    let res = app.delete("/api/stripe/biz-a", &agency(&["biz-a"])).await;
    assert_eq!(res.status, StatusCode::NO_CONTENT, "{}", res.text);
    app.sim_control("/_sim/faults", json!({})).await;
    // Give the cancelled worker time to notice and stop.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = rows_by_table(&app.db, "biz-a").await;
    assert!(
        after.values().all(|n| *n == 0),
        "rows written back after the disconnect: {after:?}"
    );
    assert_eq!(
        rows_by_table(&app.db, "biz-b").await,
        b_rows,
        "the other business is untouched"
    );
    assert_eq!(app.sim_requests("POST /oauth/deauthorize").await, 1);
    app.stop().await;
});

// ---------------------------------------------------------------------------------------
// Sync, jobs, webhook secret
// ---------------------------------------------------------------------------------------

db_test!(manual_sync_joins_the_active_job_and_jobs_page, |t| {
    let app = TestApp::spawn(&t).await;
    let token = agency(&["biz-a"]);
    let res = app.post("/api/stripe/biz-a/sync", &token).await;
    assert_eq!(res.status, StatusCode::CONFLICT);
    assert_eq!(res.error_code(), "not_connected");
    assert_eq!(
        app.connect("biz-a", &app.account(0)).await["stripe"],
        "connected"
    );
    let first = app.status("biz-a").await["last_sync"].clone();

    let res = app.post("/api/stripe/biz-a/sync", &token).await;
    assert_eq!(res.status, StatusCode::ACCEPTED, "{}", res.text);
    let joined = res.json();
    assert_eq!(joined["id"], first["id"], "joins the queued first sync");
    let again = app.post("/api/stripe/biz-a/sync", &token).await.json();
    assert_eq!(again["id"], first["id"]);

    // Finish it as a worker would, with progress and an error.
    let id = first["id"].as_str().unwrap().to_owned();
    assert!(jobs::claim(&app.db, &id, "w", now(), 60).await.unwrap());
    let progress = json!({"customers": {"fetched": 3, "written": 3, "done": true}});
    assert!(
        jobs::set_progress(&app.db, &id, "w", progress.clone())
            .await
            .unwrap()
    );
    let running = app
        .get(&format!("/api/stripe/biz-a/sync-jobs/{id}"), &token)
        .await
        .json();
    assert_eq!(running["status"], "running");
    assert_eq!(running["progress"], progress);
    assert!(running["started_at"].as_str().unwrap().ends_with('Z'));
    assert!(
        jobs::finish(
            &app.db,
            &id,
            "w",
            jobs::FAILED,
            Some(("rate_limited", "Stripe kept answering 429")),
            now()
        )
        .await
        .unwrap()
    );

    let res = app.post("/api/stripe/biz-a/sync", &token).await;
    assert_eq!(res.status, StatusCode::ACCEPTED);
    let second = res.json();
    assert_ne!(
        second["id"], first["id"],
        "a new job once the first finished"
    );
    assert_eq!(second["trigger"], "manual");
    assert_eq!(second["status"], "queued");
    let keys: std::collections::BTreeSet<String> =
        second.as_object().unwrap().keys().cloned().collect();
    assert_eq!(
        keys,
        [
            "id",
            "business_id",
            "trigger",
            "status",
            "created_at",
            "started_at",
            "finished_at",
            "error",
            "progress"
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect()
    );

    let page = app.get("/api/stripe/biz-a/sync-jobs", &token).await.json();
    assert_eq!(page["total"], 2);
    assert_eq!(
        (page["page"].as_u64(), page["per_page"].as_u64()),
        (Some(1), Some(20))
    );
    let items = page["items"].as_array().unwrap();
    assert_eq!(items[0]["id"], second["id"], "newest first");
    assert_eq!(items[1]["id"], first["id"]);
    assert_eq!(
        items[1]["error"],
        json!({"code": "rate_limited", "message": "Stripe kept answering 429"})
    );
    assert!(items[1]["finished_at"].as_str().unwrap().ends_with('Z'));
    let page2 = app
        .get("/api/stripe/biz-a/sync-jobs?page=2&per_page=1", &token)
        .await
        .json();
    assert_eq!(page2["items"].as_array().unwrap().len(), 1);
    assert_eq!(page2["items"][0]["id"], first["id"]);
    for bad in ["?per_page=0", "?per_page=101", "?page=0", "?page=x"] {
        let res = app
            .get(&format!("/api/stripe/biz-a/sync-jobs{bad}"), &token)
            .await;
        assert_eq!(res.status, StatusCode::BAD_REQUEST, "{bad}");
        assert!(res.json()["error"]["message"].is_string());
    }
    let res = app
        .get(
            "/api/stripe/biz-a/sync-jobs/0190aaaa-0000-7000-8000-000000000000",
            &token,
        )
        .await;
    assert_eq!(res.status, StatusCode::NOT_FOUND);
    assert_eq!(res.error_code(), "not_found");

    // The status shows the last run and the last success.
    let status = app.status("biz-a").await;
    assert_eq!(status["last_sync"]["id"], second["id"]);
    assert_eq!(status["last_successful_sync_at"], Value::Null);
    assert!(
        jobs::claim(&app.db, second["id"].as_str().unwrap(), "w", now(), 60)
            .await
            .unwrap()
    );
    assert!(
        jobs::finish(
            &app.db,
            second["id"].as_str().unwrap(),
            "w",
            jobs::SUCCEEDED,
            None,
            now()
        )
        .await
        .unwrap()
    );
    let status = app.status("biz-a").await;
    assert!(
        status["last_successful_sync_at"]
            .as_str()
            .unwrap()
            .ends_with('Z'),
        "{status}"
    );
    app.stop().await;
});

db_test!(first_sync_runs_in_the_api_worker_pool, |t| {
    let app = TestApp::spawn_with(
        &t,
        Opts {
            workers: true,
            scale: Scale::Small,
            accounts: 1,
            ..Opts::default()
        },
    )
    .await;
    assert_eq!(
        app.connect("biz-a", &app.account(0)).await["stripe"],
        "connected"
    );
    let id = app.last_sync_id("biz-a").await;
    let job = app.wait_succeeded("biz-a", &id).await;
    assert!(
        job["progress"].as_object().is_some_and(|p| !p.is_empty()),
        "{job}"
    );
    let status = app.status("biz-a").await;
    assert!(status["last_successful_sync_at"].is_string(), "{status}");
    assert!(rows_by_table(&app.db, "biz-a").await["stripe_customers"] > 0);
    app.stop().await;
});

db_test!(webhook_secret_is_validated_and_stored, |t| {
    let app = TestApp::spawn(&t).await;
    let token = agency(&["biz-a"]);
    let res = app
        .put(
            "/api/stripe/biz-a/webhook-secret",
            &token,
            json!({"secret": "whsec_abcdef0123456789"}),
        )
        .await;
    assert_eq!(res.status, StatusCode::NO_CONTENT, "{}", res.text);
    assert_eq!(
        webhooks::secret(&app.db, &biz("biz-a"))
            .await
            .unwrap()
            .as_deref(),
        Some("whsec_abcdef0123456789")
    );
    for bad in [
        json!({"secret": "sk_live_notawebhooksecret"}),
        json!({"secret": "whsec_"}),
        json!({"secret": "whsec_with space"}),
    ] {
        let res = app
            .put("/api/stripe/biz-a/webhook-secret", &token, bad.clone())
            .await;
        assert_eq!(res.status, StatusCode::BAD_REQUEST, "{bad}");
        assert_eq!(res.error_code(), "invalid_secret");
        assert!(!res.text.contains("notawebhooksecret"), "never echoed");
    }
    for bad in [
        json!({}),
        json!({"secret": 5}),
        json!({"secret": "whsec_abcdef0123456789", "extra": 1}),
    ] {
        let res = app
            .put("/api/stripe/biz-a/webhook-secret", &token, bad.clone())
            .await;
        assert_eq!(res.status, StatusCode::BAD_REQUEST, "{bad}");
        assert_eq!(res.error_code(), "invalid_json");
    }
    let res = app
        .http
        .put(format!("{}/api/stripe/biz-a/webhook-secret", app.base))
        .bearer_auth(&token)
        .header("content-type", "application/json")
        .body("{\"secret\":")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    let huge = json!({"secret": format!("whsec_{}", "a".repeat(100 * 1024))});
    let res = app
        .put("/api/stripe/biz-a/webhook-secret", &token, huge)
        .await;
    assert_eq!(res.status, StatusCode::PAYLOAD_TOO_LARGE, "{}", res.text);
    assert_eq!(res.error_code(), "payload_too_large");
    assert_eq!(
        webhooks::secret(&app.db, &biz("biz-a"))
            .await
            .unwrap()
            .as_deref(),
        Some("whsec_abcdef0123456789")
    );
    app.stop().await;
});

// ---------------------------------------------------------------------------------------
// Admin
// ---------------------------------------------------------------------------------------

db_test!(admin_registers_renames_and_removes_businesses, |t| {
    let app = TestApp::spawn(&t).await;
    let res = app
        .put(
            "/api/businesses/biz-a",
            &admin(),
            json!({"name": "Acme", "slug": "acme", "agency_id": "ag-1"}),
        )
        .await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.text);
    let body = res.json();
    assert_eq!(
        (
            body["id"].as_str(),
            body["slug"].as_str(),
            body["name"].as_str(),
            body["agency_id"].as_str()
        ),
        (Some("biz-a"), Some("acme"), Some("Acme"), Some("ag-1"))
    );
    let res = app
        .put(
            "/api/businesses/biz-a",
            &admin(),
            json!({"name": "Acme Ltd", "slug": "acme-ltd"}),
        )
        .await;
    assert_eq!(res.status, StatusCode::OK);
    assert_eq!(res.json()["slug"], "acme-ltd");
    assert_eq!(res.json()["agency_id"], Value::Null);
    let res = app
        .put(
            "/api/businesses/biz-b",
            &admin(),
            json!({"name": "Other", "slug": "acme-ltd"}),
        )
        .await;
    assert_eq!(res.status, StatusCode::CONFLICT);
    assert_eq!(res.error_code(), "slug_taken");
    for (body, code) in [
        (json!({"name": "X", "slug": "Bad Slug"}), "invalid_slug"),
        (json!({"name": "X", "slug": "connect"}), "invalid_slug"),
        (json!({"name": "X", "slug": "a"}), "invalid_slug"),
        (json!({"name": "  ", "slug": "fine"}), "invalid_name"),
        (json!({"slug": "fine"}), "invalid_json"),
    ] {
        let res = app
            .put("/api/businesses/biz-b", &admin(), body.clone())
            .await;
        assert_eq!(res.status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(res.error_code(), code, "{body}");
    }
    let res = app
        .put(
            "/api/businesses/biz-b",
            &agency(&["biz-b"]),
            json!({"name": "B", "slug": "bbb"}),
        )
        .await;
    assert_eq!(res.status, StatusCode::FORBIDDEN);

    // Connections needing attention.
    assert_eq!(
        app.connect("biz-a", &app.account(0)).await["stripe"],
        "connected"
    );
    assert_eq!(
        app.connect("biz-b", &app.account(1)).await["stripe"],
        "connected"
    );
    assert_eq!(
        app.connect("biz-c", &app.account(2)).await["stripe"],
        "connected"
    );
    assert!(
        access::mark_revoked(&app.db, &biz("biz-b"), now())
            .await
            .unwrap()
    );
    let job = jobs::active_job(&app.db, &biz("biz-c"))
        .await
        .unwrap()
        .unwrap();
    assert!(jobs::claim(&app.db, &job.id, "w", now(), 60).await.unwrap());
    assert!(
        jobs::finish(
            &app.db,
            &job.id,
            "w",
            jobs::FAILED,
            Some(("stripe_unavailable", "down")),
            now()
        )
        .await
        .unwrap()
    );
    let ids = |v: Value| -> Vec<(String, String)> {
        v["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| {
                (
                    i["business_id"].as_str().unwrap().to_owned(),
                    i["attention"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    };
    let revoked = app
        .get("/api/admin/connections?status=revoked", &admin())
        .await
        .json();
    assert_eq!(
        ids(revoked.clone()),
        vec![("biz-b".to_owned(), "revoked".to_owned())]
    );
    assert!(revoked["items"][0]["revoked_at"].is_string());
    let failing = app
        .get("/api/admin/connections?status=failing", &admin())
        .await
        .json();
    assert_eq!(
        ids(failing.clone()),
        vec![("biz-c".to_owned(), "failing".to_owned())]
    );
    assert_eq!(
        failing["items"][0]["last_sync"]["error"]["code"],
        "stripe_unavailable"
    );
    assert_eq!(
        ids(app.get("/api/admin/connections", &admin()).await.json()).len(),
        2
    );
    let res = app
        .get("/api/admin/connections?status=fine", &admin())
        .await;
    assert_eq!(res.status, StatusCode::BAD_REQUEST);
    let res = app.get("/api/admin/connections", &agency(&["biz-a"])).await;
    assert_eq!(res.status, StatusCode::FORBIDDEN);

    // Removing a business disconnects it (revoking at Stripe) and frees its slug.
    seed_rows(&app.db, "biz-a").await;
    let res = app.delete("/api/businesses/biz-a", &admin()).await;
    assert_eq!(res.status, StatusCode::NO_CONTENT, "{}", res.text);
    assert_eq!(app.sim_requests("POST /oauth/deauthorize").await, 1);
    assert!(
        tributary_persistence::businesses::get(&app.db, &biz("biz-a"))
            .await
            .unwrap()
            .is_none()
    );
    let rows = rows_by_table(&app.db, "biz-a").await;
    assert!(rows.values().all(|n| *n == 0), "{rows:?}");
    let res = app
        .put(
            "/api/businesses/biz-d",
            &admin(),
            json!({"name": "D", "slug": "acme-ltd"}),
        )
        .await;
    assert_eq!(
        res.status,
        StatusCode::OK,
        "the removed business's slug is free: {}",
        res.text
    );
    let res = app.delete("/api/businesses/biz-nowhere", &admin()).await;
    assert_eq!(res.status, StatusCode::NOT_FOUND);
    // An admin token reaches any business's routes.
    let res = app.get("/api/stripe/biz-b/status", &admin()).await;
    assert_eq!(res.json()["status"], "revoked");
    app.stop().await;
});

// ---------------------------------------------------------------------------------------
// Errors and CORS
// ---------------------------------------------------------------------------------------

db_test!(errors_are_json_and_cors_follows_the_settings, |t| {
    let app = TestApp::spawn(&t).await;
    let res = app.get("/api/nothing-here", &agency(&["biz-a"])).await;
    assert_eq!(res.status, StatusCode::NOT_FOUND);
    assert_eq!(res.error_code(), "not_found");
    let res = app
        .get("/api/stripe/connect-url", &agency(&["biz-a"]))
        .await;
    assert_eq!(res.status, StatusCode::BAD_REQUEST);
    assert_eq!(res.error_code(), "missing_business_id");

    let preflight = app
        .http
        .request(
            Method::OPTIONS,
            format!("{}/api/stripe/biz-a/status", app.base),
        )
        .header("origin", ORIGIN)
        .header("access-control-request-method", "GET")
        .header("access-control-request-headers", "authorization")
        .send()
        .await
        .unwrap();
    assert!(preflight.status().is_success(), "{}", preflight.status());
    assert_eq!(preflight.headers()["access-control-allow-origin"], ORIGIN);
    let res = app
        .http
        .get(format!("{}/api/stripe/biz-a/status", app.base))
        .bearer_auth(agency(&["biz-a"]))
        .header("origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    assert!(res.headers().get("access-control-allow-origin").is_none());
    app.stop().await;
});

/// A stand-in Stripe whose OAuth answers depend on the code: `live` links a live-mode account,
/// `down` is a 503 Stripe says not to retry, `garbage` is not JSON, anything else links
/// `acct_fake1` in test mode. `/v1/account` always fails.
async fn fake_stripe() -> (String, actix_web::dev::ServerHandle) {
    use actix_web::{App, HttpResponse, HttpServer, web};
    async fn token(body: String) -> HttpResponse {
        let code = url::form_urlencoded::parse(body.as_bytes())
            .find(|(k, _)| k == "code")
            .map(|(_, v)| v.into_owned())
            .unwrap_or_default();
        let grant = |acct: &str, live: bool| {
            json!({"access_token": "sk_x", "livemode": live, "refresh_token": "rt_x", "scope": "read_write",
                   "stripe_publishable_key": "pk_x", "stripe_user_id": acct, "token_type": "bearer"})
        };
        match code.as_str() {
            "live" => HttpResponse::Ok().json(grant("acct_live1", true)),
            "down" => HttpResponse::ServiceUnavailable()
                .insert_header(("Stripe-Should-Retry", "false"))
                .json(json!({"error": {"type": "api_error", "message": "down"}})),
            "garbage" => HttpResponse::Ok().body("<html>"),
            _ => HttpResponse::Ok().json(grant("acct_fake1", false)),
        }
    }
    async fn account() -> HttpResponse {
        HttpResponse::InternalServerError()
            .insert_header(("Stripe-Should-Retry", "false"))
            .json(json!({"error": {"type": "api_error", "message": "boom"}}))
    }
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let server = HttpServer::new(|| {
        App::new()
            .route("/oauth/token", web::post().to(token))
            .route("/v1/account", web::get().to(account))
    })
    .workers(1)
    .disable_signals()
    .listen(listener)
    .unwrap()
    .run();
    let handle = server.handle();
    tokio::spawn(server);
    (base, handle)
}

db_test!(refused_exchanges_other_modes_and_missing_names, |t| {
    let (base, fake) = fake_stripe().await;
    let app = TestApp::spawn_with(
        &t,
        Opts {
            stripe_base: Some(base),
            ..Opts::default()
        },
    )
    .await;
    let token = agency(&["biz-a"]);
    let callback = |code: &str, state: &str| {
        format!(
            "{}/api/stripe/oauth/callback?code={code}&scope=read_write&state={state}",
            app.base
        )
    };
    for code in ["live", "down", "garbage"] {
        let url = app.connect_url(&token, "biz-a").await;
        let state = query_of(&url)["state"].clone();
        let (_, q) = app.callback(&callback(code, &state)).await;
        assert_eq!(
            (q["businessId"].as_str(), q["reason"].as_str()),
            ("biz-a", "stripe_exchange_failed"),
            "{code}"
        );
        assert_eq!(
            app.status("biz-a").await["status"],
            "not_connected",
            "{code}"
        );
    }
    // Linked even though the display name could not be read.
    let url = app.connect_url(&token, "biz-a").await;
    let state = query_of(&url)["state"].clone();
    let (_, q) = app.callback(&callback("ok", &state)).await;
    assert_eq!(q["stripe"], "connected");
    let status = app.status("biz-a").await;
    assert_eq!(
        (status["account_id"].as_str(), &status["account_name"]),
        (Some("acct_fake1"), &Value::Null)
    );
    app.stop().await;
    fake.stop(true).await;
});
#[path = "api/browser.rs"]
mod browser;
#[path = "api/contacts.rs"]
mod contacts;
#[path = "api/faults.rs"]
mod faults;
#[path = "api/hostile.rs"]
mod hostile;
#[path = "api/metrics.rs"]
mod metrics;
#[path = "api/openapi.rs"]
mod openapi;
#[path = "api/storm.rs"]
mod storm;
#[path = "api/webhooks.rs"]
mod webhooks_api;
