//! The self-contained demo (SPEC §13): an in-process Stripe simulator, a fresh SQLite file,
//! two demo businesses (one connected and synced, one left for the visitor to connect through
//! the simulator's approval page) and the API with its pages, all pointing at each other.
//!
//! `tributary-api --demo` calls [`Demo::start`]; tests call it too (with a smaller account).
//! Everything goes through the real routes: the connected business is linked by the OAuth
//! flow and synced by the worker pool, exactly as a visitor's click would do it.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rand::RngCore;
use secrecy::SecretString;
use serde_json::{Value, json};
use tributary_domain::{BusinessId, Slug};
use tributary_persistence::{Database, businesses};
use tributary_stripe_sim::{Scale, SimOptions, SimServer};

use crate::auth::{Claims, Portal};
use crate::settings::Settings;
use crate::{Application, StartupError, Tuning};

/// A demo business: the host application's id, its slug and its name.
#[derive(Debug, Clone, Copy)]
pub struct DemoBusiness {
    /// The host application's business id (also its slug).
    pub id: &'static str,
    /// The display name.
    pub name: &'static str,
    /// Connected and synced at start-up; otherwise left for the visitor to connect.
    pub connected: bool,
}

/// The businesses of the demo, in the order they are printed.
pub const BUSINESSES: [DemoBusiness; 2] = [
    DemoBusiness {
        id: "northwind",
        name: "Northwind Coffee Roasters",
        connected: true,
    },
    DemoBusiness {
        id: "bluebird",
        name: "Bluebird Yoga Studio",
        connected: false,
    },
];

/// Names of the simulator accounts left free to connect.
const SPARE_ACCOUNTS: [&str; 3] = ["Bluebird Yoga", "Harbor Bikes", "Juniper Ceramics"];

/// How a demo is started.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// Seed of every generated Stripe object.
    pub seed: u64,
    /// Size of the connected business's Stripe account.
    pub scale: Scale,
    /// Small accounts on the simulator's approval page, free to connect (at most 3).
    pub spare_accounts: usize,
    /// The SQLite file; removed and created afresh at start.
    pub database: PathBuf,
    /// Longest wait for the connected business's first sync.
    pub first_sync_timeout: Duration,
}

impl Default for DemoOptions {
    fn default() -> Self {
        Self {
            seed: 7,
            scale: Scale::Medium,
            spare_accounts: SPARE_ACCOUNTS.len(),
            database: PathBuf::from("tributary-demo.db"),
            first_sync_timeout: Duration::from_secs(600),
        }
    }
}

/// Why the demo could not start.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// The simulator did not start.
    #[error("the Stripe simulator: {0}")]
    Simulator(String),
    /// The application did not start.
    #[error(transparent)]
    Startup(#[from] StartupError),
    /// The demo database file could not be replaced.
    #[error("the demo database {path}: {source}")]
    File {
        /// The file's path.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Registering, connecting or syncing the demo businesses failed.
    #[error("setting up the demo: {0}")]
    Setup(String),
}

fn setup(e: impl std::fmt::Display) -> DemoError {
    DemoError::Setup(e.to_string())
}

/// A running demo: the API (with its pages) and the simulator behind it.
pub struct Demo {
    /// `http://127.0.0.1:PORT`, the API and its pages.
    pub base_url: String,
    /// The simulator's base URL (Stripe API and OAuth).
    pub sim_url: String,
    /// An agency token granting every demo business (valid 7 days).
    pub token: String,
    /// The SQLite file in use.
    pub database: PathBuf,
    /// The `acct_…` of the connected business.
    pub connected_account: String,
    sim: SimServer,
    handle: actix_web::dev::ServerHandle,
    served: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl std::fmt::Debug for Demo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Demo")
            .field("base_url", &self.base_url)
            .field("sim_url", &self.sim_url)
            .finish_non_exhaustive()
    }
}

fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::rng().fill_bytes(&mut buf);
    hex::encode(buf)
}

fn remove_database(path: &Path) -> Result<(), DemoError> {
    for suffix in ["", "-wal", "-shm", "-journal"] {
        let mut file = path.as_os_str().to_owned();
        file.push(suffix);
        match std::fs::remove_file(&file) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(DemoError::File {
                    path: path.display().to_string(),
                    source,
                });
            }
        }
    }
    Ok(())
}

impl Demo {
    /// Starts the simulator and the API on `settings.server.host:port` (port 0 picks a free
    /// one), registers the demo businesses, connects the first one through the OAuth flow and
    /// waits for its first sync. Every Stripe, JWT, frontend and database setting is the
    /// demo's own; host, port and logging come from `settings`.
    pub async fn start(mut settings: Settings, opts: DemoOptions) -> Result<Demo, DemoError> {
        let sim = SimServer::start(SimOptions {
            seed: opts.seed,
            accounts: 0,
            ..SimOptions::default()
        })
        .await
        .map_err(|e| DemoError::Simulator(format!("{e:#}")))?;
        let sim_url = sim.base_url();
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(300))
            .build()
            .map_err(setup)?;
        // The connected business's account carries its name on the approval page and badge.
        let scale = match opts.scale {
            Scale::Empty => "empty",
            Scale::Small => "small",
            Scale::Medium => "medium",
            Scale::Bench => "bench",
        };
        let connected_name = BUSINESSES
            .iter()
            .find(|b| b.connected)
            .map_or("Demo account", |b| b.name);
        let created = post_json(
            &http,
            &format!("{sim_url}/_sim/accounts"),
            &json!({"name": connected_name, "scale": scale}),
        )
        .await?;
        let connected_account = created["id"]
            .as_str()
            .ok_or_else(|| DemoError::Simulator("no account was generated".into()))?
            .to_owned();
        for name in SPARE_ACCOUNTS.iter().take(opts.spare_accounts) {
            post_json(
                &http,
                &format!("{sim_url}/_sim/accounts"),
                &json!({"name": name, "scale": "small"}),
            )
            .await?;
        }

        let addr = format!("{}:{}", settings.server.host, settings.server.port);
        let listener = TcpListener::bind(&addr)
            .map_err(|source| DemoError::Startup(StartupError::Bind { addr, source }))?;
        let port = listener.local_addr().map_err(setup)?.port();
        let host = match settings.server.host.as_str() {
            "0.0.0.0" | "::" | "[::]" => "127.0.0.1".to_owned(),
            h if h.contains(':') && !h.starts_with('[') => format!("[{h}]"),
            h => h.to_owned(),
        };
        let base_url = format!("http://{host}:{port}");

        let jwt_secret = SecretString::from(random_hex(32));
        let webhook_secret = format!("whsec_{}", random_hex(24));
        remove_database(&opts.database)?;
        settings.database.url = format!("sqlite://{}?mode=rwc", opts.database.display());
        settings.database.migrate_on_start = true;
        settings.stripe.secret_key = Some(SecretString::from("sk_test_tributary_demo"));
        settings.stripe.api_base.clone_from(&sim_url);
        settings.stripe.connect_base.clone_from(&sim_url);
        settings.stripe.connect_client_id = Some("ca_demo".into());
        settings.stripe.oauth_redirect_uri = Some(format!("{base_url}/api/stripe/oauth/callback"));
        settings.stripe.connect_webhook_secret = Some(SecretString::from(webhook_secret.clone()));
        settings.frontend.agency_settings_url = Some(format!("{base_url}/ui/settings"));
        settings.frontend.client_settings_url = Some(format!("{base_url}/ui/settings"));
        settings.auth.jwt_secret = Some(jwt_secret.clone());
        settings.auth.jwt_previous_secret = None;

        let db = Database::connect(&settings.database.url)
            .await
            .map_err(StartupError::from)?;
        db.migrate().await.map_err(StartupError::from)?;
        let now = tributary_persistence::now();
        for b in BUSINESSES {
            let id = BusinessId::parse(b.id).map_err(setup)?;
            let slug = Slug::parse(b.id).map_err(setup)?;
            businesses::upsert(&db, &id, &slug, b.name, None, now)
                .await
                .map_err(setup)?;
        }

        let app = Application::with_listener(settings, db, listener, Tuning::default())?;
        let handle = app.server_handle();
        let served = tokio::spawn(app.run_until_stopped());

        let token = Claims {
            sub: "demo-user".into(),
            exp: now + 7 * 24 * 3600,
            portal: Some(Portal::Agency),
            businesses: BUSINESSES.iter().map(|b| b.id.to_owned()).collect(),
            admin: false,
        }
        .sign(&jwt_secret)
        .map_err(setup)?;

        let demo = Demo {
            base_url,
            sim_url,
            token,
            database: opts.database.clone(),
            connected_account,
            sim,
            handle,
            served,
        };
        // Live updates: the simulator delivers every later change to the Connect endpoint.
        post_json(
            &http,
            &format!("{}/_sim/webhooks", demo.sim_url),
            &json!({
                "url": format!("{}/api/webhooks/stripe/connect", demo.base_url),
                "secret": webhook_secret,
                "connect": true,
            }),
        )
        .await?;
        for b in BUSINESSES.iter().filter(|b| b.connected) {
            demo.connect(&http, b.id, &demo.connected_account).await?;
            demo.wait_for_sync(&http, b.id, opts.first_sync_timeout)
                .await?;
        }
        Ok(demo)
    }

    /// The page of a business: `settings/stripe`, `sales` or `dashboard`.
    pub fn page_url(&self, business: &str, page: &str) -> String {
        format!("{}/ui/businesses/{business}/{page}", self.base_url)
    }

    /// [`Demo::page_url`] with the demo token in the fragment, as the host app links it.
    pub fn page_url_with_token(&self, business: &str, page: &str) -> String {
        format!("{}#token={}", self.page_url(business, page), self.token)
    }

    /// What `--demo` prints: where to go.
    pub fn banner(&self) -> String {
        let mut out = format!(
            "Tributary demo: API and pages on {}, Stripe simulator on {}, database {} (fresh each run).\n",
            self.base_url,
            self.sim_url,
            self.database.display()
        );
        for b in BUSINESSES {
            let what = if b.connected {
                "connected to a simulated Stripe account and synced"
            } else {
                "not connected: press Connect and approve on the simulator's page"
            };
            out.push_str(&format!("\n{} ({what})\n", b.name));
            for (label, page) in [
                ("settings ", "settings/stripe"),
                ("sales    ", "sales"),
                ("dashboard", "dashboard"),
            ] {
                out.push_str(&format!(
                    "  {label}  {}\n",
                    self.page_url_with_token(b.id, page)
                ));
            }
        }
        out.push_str("\nThe demo token is valid for 7 days. Ctrl-C stops the demo.");
        out
    }

    /// Serves until the process is asked to stop, then stops the simulator.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let served = self
            .served
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(e)));
        self.sim.stop().await;
        served
    }

    /// Stops the API (letting running syncs finish) and the simulator (tests).
    pub async fn stop(self) {
        self.handle.stop(true).await;
        let _ = self.served.await;
        self.sim.stop().await;
    }

    /// Links `business` to `account` through the real OAuth flow: connect URL, the
    /// simulator's approval (scripted), the callback.
    async fn connect(
        &self,
        http: &reqwest::Client,
        business: &str,
        account: &str,
    ) -> Result<(), DemoError> {
        let answer: Value = http
            .get(format!(
                "{}/api/stripe/connect-url?businessId={business}",
                self.base_url
            ))
            .bearer_auth(&self.token)
            .send()
            .await
            .map_err(setup)?
            .error_for_status()
            .map_err(setup)?
            .json()
            .await
            .map_err(setup)?;
        let url = answer["url"]
            .as_str()
            .ok_or_else(|| setup("connect-url answered no url"))?;
        let callback = location(
            http.get(format!("{url}&sim_account={account}"))
                .send()
                .await
                .map_err(setup)?,
        )?;
        let settings_page = location(http.get(callback).send().await.map_err(setup)?)?;
        if !settings_page.contains("stripe=connected") {
            return Err(setup(format!(
                "connecting {business} ended at {settings_page}"
            )));
        }
        Ok(())
    }

    /// Waits until the business's newest sync has finished; an error if it failed.
    async fn wait_for_sync(
        &self,
        http: &reqwest::Client,
        business: &str,
        timeout: Duration,
    ) -> Result<(), DemoError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let status: Value = http
                .get(format!("{}/api/stripe/{business}/status", self.base_url))
                .bearer_auth(&self.token)
                .send()
                .await
                .map_err(setup)?
                .json()
                .await
                .map_err(setup)?;
            match status["last_sync"]["status"].as_str() {
                Some("succeeded") => return Ok(()),
                Some("failed") => {
                    return Err(setup(format!(
                        "the first sync of {business} failed: {}",
                        status["last_sync"]["error"]
                    )));
                }
                _ if tokio::time::Instant::now() > deadline => {
                    return Err(setup(format!(
                        "the first sync of {business} did not finish in {timeout:?}"
                    )));
                }
                _ => tokio::time::sleep(Duration::from_millis(250)).await,
            }
        }
    }
}

async fn post_json(http: &reqwest::Client, url: &str, body: &Value) -> Result<Value, DemoError> {
    http.post(url)
        .json(body)
        .send()
        .await
        .map_err(|e| DemoError::Simulator(e.to_string()))?
        .error_for_status()
        .map_err(|e| DemoError::Simulator(e.to_string()))?
        .json()
        .await
        .map_err(|e| DemoError::Simulator(e.to_string()))
}

fn location(res: reqwest::Response) -> Result<String, DemoError> {
    res.headers()
        .get(reqwest::header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .ok_or_else(|| setup(format!("expected a redirect, got {}", res.status())))
}
