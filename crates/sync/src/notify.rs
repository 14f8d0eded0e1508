//! Host notices (SPEC §11): when `notify.url` is set, the service POSTs a signed JSON notice
//! there on `connection.revoked`, `sync.failed` and `sync.succeeded`, retried with backoff.
//!
//! The body is `{"id", "type", "created", "business_id", "data"}`; the header
//! `Tributary-Signature: t=<unix>,v1=<hex HMAC-SHA256 of "{t}.{body}">` uses Stripe's scheme,
//! so a host can verify it with the code it already has for Stripe webhooks.

use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};

/// Where notices go.
#[derive(Debug, Clone)]
pub struct NotifyConfig {
    /// The host's URL notices are POSTed to.
    pub url: String,
    /// The secret notices are signed with.
    pub secret: SecretString,
    /// Attempts per notice, the first included.
    pub attempts: u32,
    /// First retry delay; doubles per attempt, with jitter.
    pub backoff: Duration,
    /// Longest one attempt may take (connect and answer); a host that never answers must
    /// not hold a task forever.
    pub timeout: Duration,
}

impl NotifyConfig {
    /// Six attempts from a one-second backoff, ten seconds each.
    pub fn new(url: impl Into<String>, secret: SecretString) -> Self {
        Self {
            url: url.into(),
            secret,
            attempts: 6,
            backoff: Duration::from_secs(1),
            timeout: Duration::from_secs(10),
        }
    }
}

/// Sends one notice in the background; the caller never waits for the host.
pub fn send(config: &NotifyConfig, kind: &str, business_id: &str, now: i64, data: Value) {
    let notice = json!({
        "id": format!("ntc_{}", tributary_domain::JobId::new()),
        "type": kind,
        "created": now,
        "business_id": business_id,
        "data": data,
    });
    let config = config.clone();
    tokio::spawn(async move { deliver(&config, &notice).await });
}

/// Delivers with retries; gives up (and logs) after `attempts`.
pub async fn deliver(config: &NotifyConfig, notice: &Value) -> bool {
    let Ok(client) = reqwest::Client::builder()
        .timeout(config.timeout)
        .connect_timeout(config.timeout)
        // The notice goes to the configured URL only, never where an answer points.
        .redirect(reqwest::redirect::Policy::none())
        .build()
    else {
        return false;
    };
    let body = notice.to_string();
    let kind = notice
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    for attempt in 0..config.attempts.max(1) {
        let t = tributary_persistence::now();
        let signature = tributary_stripe_connect::sign_payload(
            body.as_bytes(),
            config.secret.expose_secret(),
            t,
        );
        let result = client
            .post(&config.url)
            .header("content-type", "application/json")
            .header("tributary-signature", signature)
            .body(body.clone())
            .send()
            .await;
        match result {
            Ok(res) if res.status().is_success() => return true,
            Ok(res) => {
                tracing::warn!(notice = %kind, status = %res.status(), attempt, "host notice refused")
            }
            Err(e) => {
                tracing::warn!(notice = %kind, error = %e, attempt, "host notice not delivered")
            }
        }
        let base = config.backoff.saturating_mul(2u32.saturating_pow(attempt));
        let jitter = base.mul_f64(rand_fraction() * 0.5);
        tokio::time::sleep(base + jitter).await;
    }
    tracing::error!(notice = %kind, "host notice dropped after retries");
    false
}

fn rand_fraction() -> f64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(tributary_persistence::now() as u64);
    (h.finish() % 10_000) as f64 / 10_000.0
}
