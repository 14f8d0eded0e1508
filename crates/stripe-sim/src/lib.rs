//! A stateful Stripe simulator (HTTP server) for Tributary tests, benchmarks and the demo.
//!
//! Start it in-process with [`SimServer::start`] (or run the `tributary-stripe-sim` binary) and
//! drive it over HTTP: the Stripe API routes under `/v1`, Connect OAuth under `/oauth`, and the
//! control routes under `/_sim` (see `docs/simulator.md`).
//!
//! # Example
//!
//! A service's test starts a simulator with one generated account and lists its customers, as
//! Stripe would answer them:
//!
//! ```
//! use tributary_stripe_sim::{Scale, SimOptions, SimServer};
//!
//! #[tokio::main]
//! async fn main() -> anyhow::Result<()> {
//!     let sim = SimServer::start(SimOptions {
//!         seed: 7,
//!         accounts: 1,
//!         scale: Scale::Small,
//!         ..Default::default()
//!     })
//!     .await?;
//!     // Any `sk_test_…` key is accepted; `Stripe-Account` picks the connected account.
//!     let page: serde_json::Value = reqwest::Client::new()
//!         .get(format!("{}/v1/customers?limit=3", sim.base_url()))
//!         .bearer_auth("sk_test_example")
//!         .header("Stripe-Account", &sim.accounts()[0])
//!         .send()
//!         .await?
//!         .error_for_status()?
//!         .json()
//!         .await?;
//!     assert_eq!(page["object"], "list");
//!     assert_eq!(page["data"].as_array().map(Vec::len), Some(3));
//!     sim.stop().await;
//!     Ok(())
//! }
//! ```

mod api;
mod control;
mod faults;
mod generate;
mod oauth;
mod rng;
mod store;
mod templates;
mod webhooks;

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::str::FromStr;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use actix_web::dev::ServerHandle;
use actix_web::{App, HttpServer, web};
use anyhow::Context as _;
use serde_json::Value;
use tokio::sync::mpsc;

use crate::store::Account;

/// How much history a generated account holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Scale {
    /// No objects at all.
    Empty,
    /// A few hundred objects.
    #[default]
    Small,
    /// About 15,000 objects.
    Medium,
    /// About 150,000 objects.
    Bench,
}

impl FromStr for Scale {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "empty" => Ok(Scale::Empty),
            "small" => Ok(Scale::Small),
            "medium" => Ok(Scale::Medium),
            "bench" => Ok(Scale::Bench),
            other => Err(format!(
                "unknown scale '{other}' (expected empty, small, medium or bench)"
            )),
        }
    }
}

/// How to start a simulator.
#[derive(Debug, Clone, Default)]
pub struct SimOptions {
    /// Where to listen; `None` = `127.0.0.1:0` (a free port).
    pub addr: Option<SocketAddr>,
    /// Seed for every generated id and object.
    pub seed: u64,
    /// How many connectable accounts to generate at start.
    pub accounts: usize,
    /// The size of each generated account.
    pub scale: Scale,
}

/// A simulator running in-process. It stops when dropped (or via [`SimServer::stop`]).
#[derive(Debug)]
pub struct SimServer {
    addr: SocketAddr,
    accounts: Vec<String>,
    handle: ServerHandle,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl SimServer {
    /// Generates the accounts, binds and starts serving. Callable from `#[tokio::test]` and
    /// `#[actix_web::test]`.
    pub async fn start(opts: SimOptions) -> anyhow::Result<SimServer> {
        let bind = opts
            .addr
            .unwrap_or_else(|| SocketAddr::from((Ipv4Addr::LOCALHOST, 0)));
        let listener = TcpListener::bind(bind).with_context(|| format!("binding {bind}"))?;
        let addr = listener.local_addr().context("reading the bound address")?;
        let anchor = real_now() / generate::DAY * generate::DAY;
        let (seed, n, scale) = (opts.seed, opts.accounts, opts.scale);
        let generated = tokio::task::spawn_blocking(move || generate_all(seed, n, scale, anchor))
            .await
            .context("generating accounts")?;
        let (tx, rx) = mpsc::unbounded_channel();
        let sim = Arc::new(Sim::new(seed, anchor, generated, tx));
        let accounts = sim.read().order.clone();
        let delivery = tokio::spawn(webhooks::deliver(rx));
        let data = web::Data::from(sim.clone());
        let counter = sim.clone();
        let server = HttpServer::new(move || {
            App::new()
                .app_data(data.clone())
                .wrap(actix_web::middleware::from_fn(control::gate))
                .configure(routes)
        })
        .workers(2)
        // Longer than any client's idle pool timeout (reqwest's default 90 s, Tributary's 60 s):
        // with actix's default of 5 s, a client could send on a connection the simulator was
        // closing at that moment, and fail with an incomplete message (seen once in CI).
        .keep_alive(std::time::Duration::from_secs(120))
        .disable_signals()
        .shutdown_timeout(1)
        .on_connect(move |conn, ext| {
            counter.connections.fetch_add(1, Ordering::Relaxed);
            faults::remember_socket(conn, ext);
        })
        .listen(listener)
        .context("listening")?
        .run();
        let handle = server.handle();
        let serve = tokio::spawn(async move {
            if let Err(e) = server.await {
                tracing::error!(error = %e, "simulator server stopped with an error");
            }
        });
        Ok(SimServer {
            addr,
            accounts,
            handle,
            tasks: vec![delivery, serve],
        })
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`: use it as both the API base and the Connect (OAuth) base.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The generated `acct_…` ids, in generation order.
    pub fn accounts(&self) -> Vec<String> {
        self.accounts.clone()
    }

    /// Stops serving and waits for the workers to finish.
    pub async fn stop(mut self) {
        self.handle.stop(false).await;
        for t in self.tasks.drain(..) {
            t.abort();
        }
    }
}

impl Drop for SimServer {
    fn drop(&mut self) {
        // `stop` sends the command at once; the returned future only waits for completion.
        drop(self.handle.stop(false));
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Generates accounts on all cores; each account's data depends only on the seed and its
/// index, so the result is the same however the work is split.
fn generate_all(seed: u64, n: usize, scale: Scale, anchor: i64) -> Vec<Account> {
    let threads = std::thread::available_parallelism()
        .map_or(1, usize::from)
        .min(n.max(1));
    let mut slots: Vec<Option<Account>> = (0..n).map(|_| None).collect();
    std::thread::scope(|scope| {
        for (t, chunk) in slots.chunks_mut(n.div_ceil(threads).max(1)).enumerate() {
            let first = t * n.div_ceil(threads).max(1);
            scope.spawn(move || {
                for (k, slot) in chunk.iter_mut().enumerate() {
                    *slot = Some(generate::generate_account(
                        seed,
                        first + k,
                        None,
                        None,
                        scale,
                        anchor,
                    ));
                }
            });
        }
    });
    slots.into_iter().flatten().collect()
}

fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(control::scope())
        .service(oauth::scope())
        .service(api::scope());
}

pub(crate) fn real_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

#[derive(Debug)]
pub(crate) struct OAuthCode {
    pub account: String,
    pub issued: i64,
    pub used: bool,
}

#[derive(Debug)]
pub(crate) struct World {
    pub accounts: HashMap<String, Account>,
    /// Connectable accounts in creation order (the platform is not one of them).
    pub order: Vec<String>,
    pub platform: String,
    pub codes: HashMap<String, OAuthCode>,
    pub refresh_tokens: HashMap<String, String>,
    pub endpoints: Vec<webhooks::Endpoint>,
    pub rng: rng::Rng,
}

impl World {
    pub fn account(&self, id: &str) -> Option<&Account> {
        self.accounts.get(id)
    }
}

/// The shared state behind every route.
#[derive(Debug)]
pub(crate) struct Sim {
    pub seed: u64,
    world: RwLock<World>,
    pub clock_offset: AtomicI64,
    pub connections: AtomicU64,
    pub faults: Mutex<faults::Faults>,
    pub stats: Mutex<Stats>,
    deliveries: mpsc::UnboundedSender<webhooks::Delivery>,
}

#[derive(Debug, Default)]
pub(crate) struct Stats {
    pub total: u64,
    pub by_route: std::collections::BTreeMap<String, std::collections::BTreeMap<String, u64>>,
}

impl Sim {
    fn new(
        seed: u64,
        anchor: i64,
        generated: Vec<Account>,
        deliveries: mpsc::UnboundedSender<webhooks::Delivery>,
    ) -> Self {
        let mut r = rng::Rng::derive(seed, "platform");
        let platform = r.id("acct_1", 15);
        let object = generate::account_object(
            &platform,
            "Tributary Platform (sim)",
            anchor - 1_000 * generate::DAY,
            "usd",
            "platform@tributary.example",
        );
        let mut accounts = HashMap::new();
        accounts.insert(
            platform.clone(),
            Account::new(
                platform.clone(),
                "Tributary Platform (sim)".into(),
                object,
                seed,
            ),
        );
        let order: Vec<String> = generated.iter().map(|a| a.id.clone()).collect();
        for a in generated {
            accounts.insert(a.id.clone(), a);
        }
        let world = World {
            accounts,
            order,
            platform,
            codes: HashMap::new(),
            refresh_tokens: HashMap::new(),
            endpoints: Vec::new(),
            rng: rng::Rng::derive(seed, "world"),
        };
        Sim {
            seed,
            world: RwLock::new(world),
            clock_offset: AtomicI64::new(0),
            connections: AtomicU64::new(0),
            faults: Mutex::new(faults::Faults::new(seed)),
            stats: Mutex::new(Stats::default()),
            deliveries,
        }
    }

    /// The simulator's clock: wall time plus every `/_sim/clock` advance.
    pub fn now(&self) -> i64 {
        real_now() + self.clock_offset.load(Ordering::Relaxed)
    }

    pub fn read(&self) -> RwLockReadGuard<'_, World> {
        self.world
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn write(&self) -> RwLockWriteGuard<'_, World> {
        self.world
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Sends an event recorded on `account` to every webhook endpoint registered for it.
    pub fn dispatch(&self, world: &World, account: &str, event: &Value) {
        for ep in &world.endpoints {
            if let Some(d) = ep.delivery_for(account, account == world.platform, event) {
                let _ = self.deliveries.send(d);
            }
        }
    }

    pub fn record(&self, route: String, status: &str) {
        let mut s = self
            .stats
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        s.total += 1;
        *s.by_route
            .entry(route)
            .or_default()
            .entry(status.to_string())
            .or_default() += 1;
    }
}
