//! The platform handle, per-account clients, and the one place requests are sent.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderValue};
use secrecy::ExposeSecret;
use stripe_client_core::{CustomizedStripeRequest, StripeClient, StripeMethod};
use tokio::time::Instant;

use crate::config::StripeConfig;
use crate::error::{StripeError, classify_status, redact_keys};
use crate::rate::RateBudget;
use crate::retry::{AttemptOutcome, backoff_delay, parse_retry_after, should_retry};

/// The Stripe API version every request pins: the one async-stripe 1.0.0-rc.10's models were
/// generated from, so typed parsing matches what Stripe sends.
pub const STRIPE_VERSION: &str = "2026-09-30.endive";

const PLATFORM_BUCKET: &str = "";

/// The platform's handle on Stripe: one pooled HTTP client, the platform key, and a request
/// budget per connected account. Cheap to clone; share one per process.
#[derive(Clone, Debug)]
pub struct Stripe {
    inner: Arc<Inner>,
}

/// Alias: the same handle, named after Connect.
pub type StripeConnect = Stripe;

pub(crate) struct Inner {
    pub(crate) http: reqwest::Client,
    pub(crate) config: StripeConfig,
    api_base: String,
    pub(crate) connect_base: String,
    budgets: Mutex<HashMap<String, Arc<RateBudget>>>,
    record_dispatch: AtomicBool,
    stats: Stats,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stripe")
            .field("config", &self.config)
            .field("stats", &self.stats.snapshot())
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Default)]
struct Stats {
    attempts: AtomicU64,
    retries: AtomicU64,
    throttled: AtomicU64,
    by_status: Mutex<BTreeMap<String, u64>>,
}

impl Stats {
    fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot {
            attempts: self.attempts.load(Ordering::Relaxed),
            retries: self.retries.load(Ordering::Relaxed),
            throttled: self.throttled.load(Ordering::Relaxed),
            by_status: self
                .by_status
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone(),
        }
    }

    fn count_status(&self, status: &str) {
        let mut m = self
            .by_status
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *m.entry(status.to_owned()).or_default() += 1;
    }
}

/// Counters since start (for metrics).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatsSnapshot {
    /// HTTP attempts sent, retries included.
    pub attempts: u64,
    /// Attempts that were retries.
    pub retries: u64,
    /// `429` answers seen.
    pub throttled: u64,
    /// Attempts by outcome: the HTTP status (`"200"`, `"429"`, …) or `"transport"` when no
    /// answer came (timeout, reset).
    pub by_status: BTreeMap<String, u64>,
}

fn trim_base(base: &str) -> Result<String, StripeError> {
    let parsed = url::Url::parse(base)
        .map_err(|e| StripeError::Config(format!("base URL {base:?} is not a URL: {e}")))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(StripeError::Config(format!(
            "base URL {base:?} must be http(s)"
        )));
    }
    Ok(base.trim_end_matches('/').to_owned())
}

impl Stripe {
    /// Build the pooled client. Fails only on a bad base URL or key.
    pub fn new(config: StripeConfig) -> Result<Stripe, StripeError> {
        let api_base = trim_base(&config.api_base)?;
        let connect_base = trim_base(&config.connect_base)?;
        let mut auth =
            HeaderValue::from_str(&format!("Bearer {}", config.secret_key.expose_secret()))
                .map_err(|_| {
                    StripeError::Config("the secret key is not a valid header value".into())
                })?;
        auth.set_sensitive(true);
        let mut headers = HeaderMap::new();
        headers.insert(AUTHORIZATION, auth);
        headers.insert("stripe-version", HeaderValue::from_static(STRIPE_VERSION));
        let http = reqwest::Client::builder()
            .default_headers(headers)
            .user_agent(concat!(
                "tributary-stripe-connect/",
                env!("CARGO_PKG_VERSION")
            ))
            .timeout(config.timeout)
            .connect_timeout(config.timeout.min(Duration::from_secs(10)))
            .pool_idle_timeout(Duration::from_secs(60))
            // Stripe never redirects API calls; never carry the bearer anywhere else.
            .redirect(reqwest::redirect::Policy::none())
            .tcp_nodelay(true)
            .build()
            .map_err(|e| StripeError::Config(format!("cannot build HTTP client: {e}")))?;
        Ok(Stripe {
            inner: Arc::new(Inner {
                http,
                config,
                api_base,
                connect_base,
                budgets: Mutex::new(HashMap::new()),
                record_dispatch: AtomicBool::new(false),
                stats: Stats::default(),
            }),
        })
    }

    /// The configuration in use.
    pub fn config(&self) -> &StripeConfig {
        &self.inner.config
    }

    /// A client for one connected account: every request carries `Stripe-Account: acct_…`
    /// and draws on that account's budget, shared with every other client of the account.
    pub fn account(&self, account_id: &str) -> Result<AccountClient, StripeError> {
        validate_account_id(account_id)?;
        Ok(AccountClient {
            stripe: self.clone(),
            budget: self.inner.budget(account_id),
            account: Some(account_id.to_owned()),
        })
    }

    /// A client for the platform's own account (no `Stripe-Account`).
    pub fn platform(&self) -> AccountClient {
        AccountClient {
            stripe: self.clone(),
            budget: self.inner.budget(PLATFORM_BUCKET),
            account: None,
        }
    }

    /// Counters since start.
    pub fn stats(&self) -> StatsSnapshot {
        self.inner.stats.snapshot()
    }

    /// Keep (or stop keeping) the dispatch time of every attempt, per account; for tests and
    /// diagnostics. Applies to budgets that exist now and later.
    pub fn record_dispatch_times(&self, on: bool) {
        self.inner.record_dispatch.store(on, Ordering::Relaxed);
        let budgets = self
            .inner
            .budgets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for b in budgets.values() {
            b.record(on);
        }
    }

    /// Dispatch times recorded for one account (sorted), see [`Stripe::record_dispatch_times`].
    pub fn dispatch_times(&self, account_id: &str) -> Vec<Instant> {
        let mut v = self.inner.budget(account_id).recorded();
        v.sort();
        v
    }

    pub(crate) fn inner(&self) -> &Inner {
        &self.inner
    }
}

fn validate_account_id(id: &str) -> Result<(), StripeError> {
    let ok = id.starts_with("acct_")
        && id.len() > 5
        && id.len() <= 255
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(StripeError::Config(format!(
            "{id:?} is not a Stripe account id (acct_…)"
        )))
    }
}

/// A request ready to send (retries resend it as is).
#[derive(Debug)]
pub(crate) struct Call {
    pub method: reqwest::Method,
    pub url: String,
    pub body: Option<String>,
    pub account: Option<String>,
    pub idempotency_key: Option<String>,
}

/// The final answer of [`Inner::send`]: a `2xx` body, or a non-retryable status and body.
#[derive(Debug)]
pub(crate) struct Answer {
    pub status: u16,
    pub body: Bytes,
}

impl Inner {
    fn budget(&self, key: &str) -> Arc<RateBudget> {
        let mut budgets = self
            .budgets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        budgets
            .entry(key.to_owned())
            .or_insert_with(|| {
                let b = RateBudget::new(self.config.max_requests_per_second);
                if self.record_dispatch.load(Ordering::Relaxed) {
                    b.record(true);
                }
                Arc::new(b)
            })
            .clone()
    }

    pub(crate) fn api_url(&self, path: &str, query: Option<&str>) -> String {
        let path = path.strip_prefix("/v1").unwrap_or(path);
        match query {
            Some(q) if !q.is_empty() => format!("{}/v1{path}?{q}", self.api_base),
            _ => format!("{}/v1{path}", self.api_base),
        }
    }

    /// Send with retries. `Ok` holds a `2xx` answer or a final `4xx` the caller maps itself;
    /// throttling, `5xx` and transport failures that outlive the retries are errors here.
    #[tracing::instrument(level = "debug", skip_all, fields(method = %call.method, account = call.account.as_deref().unwrap_or("-")))]
    pub(crate) async fn send(
        &self,
        budget: &RateBudget,
        call: &Call,
    ) -> Result<Answer, StripeError> {
        let max_attempts = self.config.max_retries.saturating_add(1);
        let endpoint = crate::metrics::endpoint_label(&call.url);
        let mut attempt: u32 = 0;
        loop {
            attempt += 1;
            budget.acquire().await;
            self.stats.attempts.fetch_add(1, Ordering::Relaxed);
            if attempt > 1 {
                self.stats.retries.fetch_add(1, Ordering::Relaxed);
                metrics::counter!(crate::metrics::RETRIES).increment(1);
            }
            let sent = Instant::now();
            let mut req = self.http.request(call.method.clone(), &call.url);
            if let Some(acct) = &call.account {
                req = req.header("stripe-account", acct);
            }
            if let Some(key) = &call.idempotency_key {
                req = req.header("idempotency-key", key);
            }
            if let Some(body) = &call.body {
                req = req
                    .header(
                        reqwest::header::CONTENT_TYPE,
                        "application/x-www-form-urlencoded",
                    )
                    .body(body.clone());
            }
            let result = match req.send().await {
                Ok(resp) => {
                    let status = resp.status().as_u16();
                    let headers = resp.headers().clone();
                    match resp.bytes().await {
                        Ok(body) => Ok((status, headers, body)),
                        Err(e) => Err(e),
                    }
                }
                Err(e) => Err(e),
            };
            metrics::histogram!(crate::metrics::REQUEST_DURATION, "endpoint" => endpoint.clone())
                .record(sent.elapsed().as_secs_f64());
            let (status, headers, body) = match result {
                Ok(r) => r,
                Err(e) if e.is_builder() => {
                    return Err(StripeError::Config(format!(
                        "cannot build request: {}",
                        transport_detail(&e)
                    )));
                }
                Err(e) => {
                    let detail = transport_detail(&e);
                    self.stats.count_status("transport");
                    count_request(&endpoint, "transport");
                    if attempt >= max_attempts {
                        return Err(StripeError::Unavailable {
                            attempts: attempt,
                            status: None,
                            detail,
                        });
                    }
                    let delay = self.delay(attempt - 1, None);
                    tracing::debug!(attempt, ?delay, %detail, "transport failure; retrying");
                    tokio::time::sleep(delay).await;
                    continue;
                }
            };
            let status_label = status.to_string();
            self.stats.count_status(&status_label);
            count_request(&endpoint, &status_label);
            if (200..300).contains(&status) {
                return Ok(Answer { status, body });
            }
            if status == 429 {
                self.stats.throttled.fetch_add(1, Ordering::Relaxed);
                metrics::counter!(crate::metrics::RATE_LIMITED).increment(1);
            }
            let hint = headers
                .get("stripe-should-retry")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<bool>().ok());
            let code = crate::error::ApiError::from_body(&body).and_then(|e| e.code);
            let retry = should_retry(AttemptOutcome::Status {
                status,
                should_retry: hint,
                code: code.as_deref(),
            });
            if !retry || attempt >= max_attempts {
                if status == 429 || status >= 500 || retry {
                    return Err(classify_status(
                        status,
                        &body,
                        call.account.as_deref(),
                        attempt,
                    ));
                }
                return Ok(Answer { status, body });
            }
            let retry_after = headers
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| parse_retry_after(v, time::OffsetDateTime::now_utc()));
            let delay = self.delay(attempt - 1, retry_after);
            if status == 429 {
                budget.pause(delay);
            }
            tracing::debug!(attempt, status, ?delay, "retryable answer; retrying");
            tokio::time::sleep(delay).await;
        }
    }

    fn delay(&self, retry: u32, retry_after: Option<Duration>) -> Duration {
        backoff_delay(
            retry,
            self.config.initial_backoff,
            self.config.max_backoff,
            retry_after,
            &mut rand::rng(),
        )
    }
}

fn count_request(endpoint: &str, status: &str) {
    metrics::counter!(
        crate::metrics::REQUESTS,
        "endpoint" => endpoint.to_owned(),
        "status" => status.to_owned()
    )
    .increment(1);
}

fn transport_detail(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timeout"
    } else if e.is_connect() {
        "connect"
    } else if e.is_body() || e.is_decode() {
        "body"
    } else {
        "transport"
    };
    // reqwest errors name the URL, never headers; still scrub anything key-shaped.
    let mut msg = format!("{kind}: {e}");
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        source = s.source();
    }
    redact_keys(&msg)
}

/// A random idempotency key for one logical POST (kept across its retries).
fn idempotency_key() -> String {
    let bytes: [u8; 16] = rand::random();
    hex::encode(bytes)
}

/// Requests for one account (or the platform). Implements async-stripe's
/// [`StripeClient`], so every typed request of the async-stripe crates can be sent with it:
///
/// ```no_run
/// # async fn f(client: tributary_stripe_connect::AccountClient) -> Result<(), tributary_stripe_connect::StripeError> {
/// let customer = stripe_core::customer::RetrieveCustomer::new("cus_123").send(&client).await?;
/// # let _ = customer; Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct AccountClient {
    pub(crate) stripe: Stripe,
    pub(crate) budget: Arc<RateBudget>,
    pub(crate) account: Option<String>,
}

impl AccountClient {
    /// The `acct_…` this client sends as `Stripe-Account` (`None` for the platform).
    pub fn account_id(&self) -> Option<&str> {
        self.account.as_deref()
    }

    /// The platform handle this client came from.
    pub fn stripe(&self) -> &Stripe {
        &self.stripe
    }

    /// `GET /v1{path}?{query}`, returning the raw body of a `2xx` answer.
    pub async fn get_bytes(
        &self,
        path: &str,
        query: &[(&str, &str)],
    ) -> Result<Bytes, StripeError> {
        let q = encode_query(query);
        self.request(StripeMethod::Get, path, Some(q), None, self.account.clone())
            .await
    }

    /// `GET /v1{path}?{query}` as JSON.
    pub async fn get_json(
        &self,
        path: &str,
        query: &[(&str, &str)],
    ) -> Result<serde_json::Value, StripeError> {
        let bytes = self.get_bytes(path, query).await?;
        serde_json::from_slice(&bytes).map_err(|e| StripeError::Deserialize(e.to_string()))
    }

    pub(crate) async fn request(
        &self,
        method: StripeMethod,
        path: &str,
        query: Option<String>,
        body: Option<String>,
        account: Option<String>,
    ) -> Result<Bytes, StripeError> {
        let inner = self.stripe.inner();
        let method = match method {
            StripeMethod::Get => reqwest::Method::GET,
            StripeMethod::Post => reqwest::Method::POST,
            StripeMethod::Delete => reqwest::Method::DELETE,
        };
        let idempotency_key = (method != reqwest::Method::GET).then(idempotency_key);
        let budget = if account == self.account {
            self.budget.clone()
        } else {
            inner.budget(account.as_deref().unwrap_or(PLATFORM_BUCKET))
        };
        let call = Call {
            method,
            url: inner.api_url(path, query.as_deref()),
            body,
            account,
            idempotency_key,
        };
        let answer = inner.send(&budget, &call).await?;
        if (200..300).contains(&answer.status) {
            Ok(answer.body)
        } else {
            Err(classify_status(
                answer.status,
                &answer.body,
                call.account.as_deref(),
                1,
            ))
        }
    }
}

impl StripeClient for AccountClient {
    type Err = StripeError;

    fn execute(
        &self,
        req: CustomizedStripeRequest,
    ) -> impl std::future::Future<Output = Result<Bytes, StripeError>> + Send {
        let (rb, over) = req.into_pieces();
        // A per-request account override is honoured; our retry policy replaces any
        // per-request strategy, and the client timeout applies.
        let account = over
            .account_id
            .map(|a| a.as_str().to_owned())
            .or_else(|| self.account.clone());
        async move {
            if let Some(acct) = &account {
                validate_account_id(acct)?;
            }
            self.request(rb.method, &rb.path, rb.query, rb.body, account)
                .await
        }
    }
}

/// `application/x-www-form-urlencoded` query from pairs, keys as Stripe spells them
/// (`created[gte]`, `expand[]`).
pub fn encode_query(pairs: &[(&str, &str)]) -> String {
    let mut s = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        s.append_pair(k, v);
    }
    s.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::SecretString;

    #[test]
    fn urls_and_ids() {
        let stripe = Stripe::new(
            StripeConfig::new(SecretString::from("sk_test_x")).with_base("http://127.0.0.1:9/"),
        )
        .expect("client");
        assert_eq!(
            stripe.inner().api_url("/customers", Some("limit=1")),
            "http://127.0.0.1:9/v1/customers?limit=1"
        );
        assert_eq!(
            stripe.inner().api_url("/v1/events", None),
            "http://127.0.0.1:9/v1/events"
        );
        assert!(stripe.account("acct_123").is_ok());
        assert!(stripe.account("cus_123").is_err());
        assert!(stripe.account("acct_1\r\nX: y").is_err());
        assert!(
            Stripe::new(StripeConfig::new(SecretString::from("sk_test_x")).with_base("ftp://x"))
                .is_err()
        );
        let shown = format!("{stripe:?}");
        assert!(!shown.contains("sk_test_x"), "{shown}");
    }

    #[test]
    fn query_encoding() {
        assert_eq!(
            encode_query(&[
                ("created[gte]", "10"),
                ("expand[]", "data.line_items"),
                ("q", "a b&c")
            ]),
            "created%5Bgte%5D=10&expand%5B%5D=data.line_items&q=a+b%26c"
        );
    }

    #[test]
    fn budgets_are_shared_per_account() {
        let stripe =
            Stripe::new(StripeConfig::new(SecretString::from("sk_test_x"))).expect("client");
        let a1 = stripe.account("acct_1").expect("a");
        let a2 = stripe.account("acct_1").expect("a");
        let b = stripe.account("acct_2").expect("b");
        assert!(Arc::ptr_eq(&a1.budget, &a2.budget));
        assert!(!Arc::ptr_eq(&a1.budget, &b.budget));
        assert!(!Arc::ptr_eq(&a1.budget, &stripe.platform().budget));
    }
}
