//! Signed webhook delivery (`Stripe-Signature: t=…,v1=…`, HMAC-SHA256 over `"{t}.{body}"`).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use tokio::sync::mpsc;

#[derive(Debug, Default)]
pub struct EndpointStats {
    pub delivered: AtomicU64,
    pub failed: AtomicU64,
    pub attempts: AtomicU64,
}

#[derive(Debug)]
pub struct Endpoint {
    pub id: String,
    pub url: String,
    pub secret: String,
    /// A Connect endpoint receives every connected account's events, with `account`.
    pub connect: bool,
    /// A plain endpoint registered for one account receives only that account's events.
    pub account: Option<String>,
    pub stats: Arc<EndpointStats>,
}

#[derive(Debug)]
pub struct Delivery {
    pub endpoint: String,
    pub url: String,
    pub secret: String,
    pub body: String,
    pub stats: Arc<EndpointStats>,
}

impl Endpoint {
    /// The delivery of an event recorded on `account` to this endpoint, if it is one of its
    /// events: Connect endpoints get every connected account's events; a plain endpoint gets
    /// the events of its `account`, or of the platform when it names none.
    pub fn delivery_for(
        &self,
        account: &str,
        is_platform: bool,
        event: &Value,
    ) -> Option<Delivery> {
        let wanted = match (self.connect, self.account.as_deref()) {
            (true, _) => !is_platform,
            (false, Some(a)) => a == account,
            (false, None) => is_platform,
        };
        if !wanted {
            return None;
        }
        let mut event = event.clone();
        if let Some(m) = event.as_object_mut() {
            if self.connect {
                m.insert("account".into(), json!(account));
            } else {
                m.remove("account");
            }
            m.insert("pending_webhooks".into(), json!(1));
        }
        Some(Delivery {
            endpoint: self.id.clone(),
            url: self.url.clone(),
            secret: self.secret.clone(),
            body: event.to_string(),
            stats: self.stats.clone(),
        })
    }

    pub fn describe(&self) -> Value {
        json!({
            "id": self.id,
            "url": self.url,
            "connect": self.connect,
            "account": self.account,
            "delivered": self.stats.delivered.load(Ordering::Relaxed),
            "failed": self.stats.failed.load(Ordering::Relaxed),
            "attempts": self.stats.attempts.load(Ordering::Relaxed),
        })
    }
}

/// The `Stripe-Signature` header value for `body` signed at `t`.
pub fn signature(secret: &str, t: i64, body: &str) -> String {
    #[allow(clippy::expect_used)]
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC accepts keys of any length");
    mac.update(format!("{t}.{body}").as_bytes());
    format!("t={t},v1={}", hex::encode(mac.finalize().into_bytes()))
}

/// Delivers events in order, retrying a failed delivery a few times.
pub async fn deliver(mut rx: mpsc::UnboundedReceiver<Delivery>) {
    let client = match reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "cannot build the webhook client");
            return;
        }
    };
    // One queue per endpoint: in order for each, and a dead receiver delays no one else.
    let mut queues: HashMap<String, mpsc::UnboundedSender<Delivery>> = HashMap::new();
    while let Some(d) = rx.recv().await {
        let tx = queues.entry(d.endpoint.clone()).or_insert_with(|| {
            let (tx, rx) = mpsc::unbounded_channel();
            tokio::spawn(endpoint_loop(client.clone(), rx));
            tx
        });
        let _ = tx.send(d);
    }
}

async fn endpoint_loop(client: reqwest::Client, mut rx: mpsc::UnboundedReceiver<Delivery>) {
    while let Some(d) = rx.recv().await {
        let mut ok = false;
        for attempt in 0..3u32 {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(250 * u64::from(attempt * attempt))).await;
            }
            d.stats.attempts.fetch_add(1, Ordering::Relaxed);
            // Signatures use wall time: receivers check them against their own clock.
            let t = crate::real_now();
            let res = client
                .post(&d.url)
                .header("Content-Type", "application/json; charset=utf-8")
                .header(
                    "User-Agent",
                    "Stripe/1.0 (+https://stripe.com/docs/webhooks)",
                )
                .header("Stripe-Signature", signature(&d.secret, t, &d.body))
                .body(d.body.clone())
                .send()
                .await;
            match res {
                Ok(r) if r.status().is_success() => {
                    ok = true;
                    break;
                }
                Ok(r) => tracing::debug!(status = %r.status(), url = %d.url, "webhook refused"),
                Err(e) => tracing::debug!(error = %e, url = %d.url, "webhook delivery failed"),
            }
        }
        if ok {
            d.stats.delivered.fetch_add(1, Ordering::Relaxed);
        } else {
            d.stats.failed.fetch_add(1, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_matches_stripe_scheme() {
        // Computed independently: echo -n '1700000000.{}' | openssl dgst -sha256 -hmac whsec_test
        let s = signature("whsec_test", 1_700_000_000, "{}");
        assert_eq!(
            s,
            "t=1700000000,v1=35495024f4ef3f94e5a93e22221544c4b75e9a42300cd965ab81cb85cd994e91"
        );
    }
}
