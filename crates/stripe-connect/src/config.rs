use std::time::Duration;

use secrecy::SecretString;

/// How to reach Stripe. Built by the application from the `stripe.*` keys of SPEC §2.
///
/// `Debug` never shows the key (`SecretString` prints as redacted).
#[derive(Debug, Clone)]
pub struct StripeConfig {
    /// Platform secret key (`sk_test_…` / `sk_live_…`), sent as `Authorization: Bearer`.
    pub secret_key: SecretString,
    /// `stripe.api_base`, default `https://api.stripe.com`.
    pub api_base: String,
    /// `stripe.connect_base`, default `https://connect.stripe.com`.
    pub connect_base: String,
    /// `stripe.connect_client_id` (`ca_…`), needed for authorize URLs and deauthorize.
    pub connect_client_id: Option<String>,
    /// `stripe.max_requests_per_second`: budget per connected account, default 25.
    pub max_requests_per_second: u32,
    /// Per-attempt timeout (connect + answer), default 30 s.
    pub timeout: Duration,
    /// Retries after the first attempt, default 5.
    pub max_retries: u32,
    /// First backoff delay before jitter, default 500 ms; doubles per retry.
    pub initial_backoff: Duration,
    /// Longest backoff delay (and longest `Retry-After` honoured), default 30 s.
    pub max_backoff: Duration,
}

/// Stripe's production API base.
pub const DEFAULT_API_BASE: &str = "https://api.stripe.com";
/// Stripe's production Connect OAuth base.
pub const DEFAULT_CONNECT_BASE: &str = "https://connect.stripe.com";

impl StripeConfig {
    /// Defaults of SPEC §2 around a key.
    pub fn new(secret_key: SecretString) -> Self {
        StripeConfig {
            secret_key,
            api_base: DEFAULT_API_BASE.to_owned(),
            connect_base: DEFAULT_CONNECT_BASE.to_owned(),
            connect_client_id: None,
            max_requests_per_second: 25,
            timeout: Duration::from_secs(30),
            max_retries: 5,
            initial_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(30),
        }
    }

    /// Point both the API and OAuth at one base (the simulator serves both).
    pub fn with_base(mut self, base: impl Into<String>) -> Self {
        let base = base.into();
        self.api_base.clone_from(&base);
        self.connect_base = base;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_hides_the_key() {
        let cfg = StripeConfig::new(SecretString::from("sk_test_supersecret123"));
        let shown = format!("{cfg:?}");
        assert!(!shown.contains("supersecret"), "{shown}");
        assert!(shown.contains("max_requests_per_second: 25"));
    }
}
