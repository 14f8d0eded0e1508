//! The crate's one error type, and the mapping from Stripe's error bodies to it.

use serde::Deserialize;

/// Stripe's error object: `{"error": {"type", "code", "message", "param", "doc_url"}}`.
///
/// Messages are redacted of anything that looks like a secret key before they are kept.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct ApiError {
    /// `type`: `invalid_request_error`, `api_error`, `card_error`, …
    #[serde(rename = "type", default)]
    pub kind: Option<String>,
    /// `code`: `resource_missing`, `account_invalid`, `rate_limit`, `lock_timeout`, …
    #[serde(default)]
    pub code: Option<String>,
    /// Human readable message (redacted).
    #[serde(default)]
    pub message: Option<String>,
    /// The parameter the error relates to.
    #[serde(default)]
    pub param: Option<String>,
    /// Link to Stripe's documentation of the code.
    #[serde(default)]
    pub doc_url: Option<String>,
}

impl ApiError {
    /// Parse `{"error": {...}}`; `None` when the body is not Stripe's error shape.
    pub fn from_body(body: &[u8]) -> Option<ApiError> {
        #[derive(Deserialize)]
        struct Envelope {
            error: serde_json::Value,
        }
        let env: Envelope = serde_json::from_slice(body).ok()?;
        // OAuth endpoints answer `{"error": "invalid_grant", "error_description": …}`: not this shape.
        let mut err: ApiError = serde_json::from_value(env.error).ok()?;
        err.message = err.message.map(|m| redact_keys(&m));
        Some(err)
    }

    fn summary(&self) -> String {
        let code = self
            .code
            .as_deref()
            .or(self.kind.as_deref())
            .unwrap_or("error");
        match &self.message {
            Some(m) => format!("{code}: {m}"),
            None => code.to_owned(),
        }
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.summary())
    }
}

/// Everything a Stripe call can fail with. No variant ever carries the secret key.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StripeError {
    /// The platform no longer has access to the connected account (`403 account_invalid`, or
    /// Stripe's "does not have access to account" message): the business must reconnect.
    #[error("access to Stripe account {} was revoked: {message}", account.as_deref().unwrap_or("?"))]
    AccessRevoked {
        /// The `Stripe-Account` the request was sent for.
        account: Option<String>,
        /// Stripe's message (redacted).
        message: String,
    },
    /// Still throttled (`429`) after every retry.
    #[error("rate limited by Stripe after {attempts} attempts ({code})")]
    RateLimited {
        /// Attempts made, the first included.
        attempts: u32,
        /// `rate_limit`, `lock_timeout`, …
        code: String,
    },
    /// `5xx`, timeouts or connection failures after every retry.
    #[error("Stripe unavailable after {attempts} attempts: {detail}")]
    Unavailable {
        /// Attempts made, the first included.
        attempts: u32,
        /// Last HTTP status seen, if any answer came back.
        status: Option<u16>,
        /// What went wrong last (no secrets).
        detail: String,
    },
    /// `404` (`resource_missing`).
    #[error("not found: {error}")]
    NotFound {
        /// Stripe's error.
        error: ApiError,
    },
    /// Any other `4xx` (400, 402, 409, …): the request itself is wrong; never retried.
    #[error("bad request ({status}): {error}")]
    BadRequest {
        /// HTTP status.
        status: u16,
        /// Stripe's error.
        error: ApiError,
    },
    /// `401`: the platform key was refused.
    #[error("Stripe refused the platform key: {error}")]
    Unauthorized {
        /// Stripe's error.
        error: ApiError,
    },
    /// `403` other than a revoked account (restricted key without the permission, …).
    #[error("permission denied: {error}")]
    PermissionDenied {
        /// Stripe's error.
        error: ApiError,
    },
    /// Connect OAuth: the authorization code is bad, used or expired (`invalid_grant`).
    #[error("OAuth code refused (invalid_grant): {description}")]
    InvalidGrant {
        /// `error_description` from Stripe.
        description: String,
    },
    /// Connect OAuth: any other `{"error", "error_description"}` answer.
    #[error("OAuth error {error}: {description}")]
    OAuth {
        /// `error`, e.g. `invalid_request`, `invalid_client`.
        error: String,
        /// `error_description`.
        description: String,
    },
    /// A `2xx` answer whose body could not be read as the expected JSON.
    #[error("could not parse Stripe response: {0}")]
    Deserialize(String),
    /// A configuration or request we refuse to send (bad base URL, bad account id, …).
    #[error("invalid Stripe client configuration: {0}")]
    Config(String),
}

impl StripeError {
    /// Short machine code, as used in sync job errors (`access_revoked`, `rate_limited`, …).
    pub fn code(&self) -> &'static str {
        match self {
            StripeError::AccessRevoked { .. } => "access_revoked",
            StripeError::RateLimited { .. } => "rate_limited",
            StripeError::Unavailable { .. } => "stripe_unavailable",
            StripeError::NotFound { .. } => "not_found",
            StripeError::BadRequest { .. } => "bad_request",
            StripeError::Unauthorized { .. } => "unauthorized",
            StripeError::PermissionDenied { .. } => "permission_denied",
            StripeError::InvalidGrant { .. } => "invalid_grant",
            StripeError::OAuth { .. } => "oauth_error",
            StripeError::Deserialize(_) => "stripe_bad_response",
            StripeError::Config(_) => "config",
        }
    }

    /// True when the error means the platform lost access to the account.
    pub fn is_access_revoked(&self) -> bool {
        matches!(self, StripeError::AccessRevoked { .. })
    }
}

impl stripe_client_core::StripeClientErr for StripeError {
    fn deserialize_err(msg: impl std::fmt::Display) -> Self {
        StripeError::Deserialize(msg.to_string())
    }
}

/// Map a final (not to be retried) non-2xx answer to an error.
///
/// `attempts` counts the attempts made; it matters only for the exhausted-retry variants.
pub fn classify_status(
    status: u16,
    body: &[u8],
    account: Option<&str>,
    attempts: u32,
) -> StripeError {
    let error = ApiError::from_body(body).unwrap_or_else(|| ApiError {
        message: Some(redact_keys(&String::from_utf8_lossy(
            &body[..body.len().min(300)],
        ))),
        ..ApiError::default()
    });
    let no_access = error
        .message
        .as_deref()
        .is_some_and(|m| m.contains("does not have access to account"));
    match status {
        403 if error.code.as_deref() == Some("account_invalid") || no_access => {
            StripeError::AccessRevoked {
                account: account.map(str::to_owned),
                message: error.message.unwrap_or_default(),
            }
        }
        401 if no_access => StripeError::AccessRevoked {
            account: account.map(str::to_owned),
            message: error.message.unwrap_or_default(),
        },
        401 => StripeError::Unauthorized { error },
        403 => StripeError::PermissionDenied { error },
        404 => StripeError::NotFound { error },
        429 => StripeError::RateLimited {
            attempts,
            code: error.code.unwrap_or_else(|| "rate_limit".to_owned()),
        },
        s if s >= 500 => StripeError::Unavailable {
            attempts,
            status: Some(s),
            detail: error.summary(),
        },
        s => StripeError::BadRequest { status: s, error },
    }
}

/// Mask anything that looks like a Stripe secret or restricted key (`sk_live_…`, `rk_test_…`),
/// keeping its last four characters, as Stripe itself does in messages.
pub fn redact_keys(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    loop {
        let found = ["sk_live_", "sk_test_", "rk_live_", "rk_test_"]
            .iter()
            .filter_map(|p| rest.find(p).map(|i| (i, p.len())))
            .min();
        let Some((start, prefix_len)) = found else {
            out.push_str(rest);
            return out;
        };
        out.push_str(&rest[..start + prefix_len]);
        let tail = &rest[start + prefix_len..];
        let key_len = tail
            .find(|c: char| !c.is_ascii_alphanumeric() && c != '_')
            .unwrap_or(tail.len());
        let key = &tail[..key_len];
        if key.len() > 4 {
            out.push_str("****");
            out.push_str(&key[key.len() - 4..]);
        } else {
            out.push_str("****");
        }
        rest = &tail[key_len..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn revoked_account_from_403_account_invalid() {
        let body = br#"{"error":{"type":"invalid_request_error","code":"account_invalid","message":"The provided key 'sk_test_abcdefghijkl1234' does not have access to account 'acct_1' (or that account does not exist). Application access may have been revoked."}}"#;
        let err = classify_status(403, body, Some("acct_1"), 1);
        assert!(err.is_access_revoked(), "{err:?}");
        let shown = format!("{err} {err:?}");
        assert!(!shown.contains("sk_test_abcdefghijkl1234"), "{shown}");
        assert!(shown.contains("sk_test_****1234"), "{shown}");
        assert_eq!(err.code(), "access_revoked");
    }

    #[test]
    fn revoked_account_from_401_message() {
        let body = br#"{"error":{"type":"invalid_request_error","message":"The provided key 'sk_live_zzzz' does not have access to account 'acct_9'"}}"#;
        assert!(classify_status(401, body, Some("acct_9"), 1).is_access_revoked());
    }

    #[test]
    fn other_statuses() {
        let missing = br#"{"error":{"type":"invalid_request_error","code":"resource_missing","message":"No such customer: 'cus_x'","param":"id"}}"#;
        match classify_status(404, missing, None, 1) {
            StripeError::NotFound { error } => {
                assert_eq!(error.code.as_deref(), Some("resource_missing"));
                assert_eq!(error.param.as_deref(), Some("id"));
            }
            e => panic!("{e:?}"),
        }
        let bad = br#"{"error":{"type":"invalid_request_error","code":"parameter_invalid_integer","message":"Invalid integer"}}"#;
        assert!(matches!(
            classify_status(400, bad, None, 1),
            StripeError::BadRequest { status: 400, .. }
        ));
        assert!(matches!(
            classify_status(401, br#"{"error":{"type":"invalid_request_error","message":"Invalid API Key provided: sk_test_****"}}"#, None, 1),
            StripeError::Unauthorized { .. }
        ));
        assert!(matches!(
            classify_status(
                403,
                br#"{"error":{"type":"invalid_request_error","code":"secret_key_required"}}"#,
                None,
                1
            ),
            StripeError::PermissionDenied { .. }
        ));
        match classify_status(
            429,
            br#"{"error":{"type":"invalid_request_error","code":"lock_timeout"}}"#,
            None,
            5,
        ) {
            StripeError::RateLimited { attempts: 5, code } => assert_eq!(code, "lock_timeout"),
            e => panic!("{e:?}"),
        }
        assert!(matches!(
            classify_status(503, b"<html>bad gateway</html>", None, 3),
            StripeError::Unavailable {
                status: Some(503),
                attempts: 3,
                ..
            }
        ));
    }

    #[test]
    fn redaction() {
        assert_eq!(
            redact_keys("key sk_test_123456789 end"),
            "key sk_test_****6789 end"
        );
        assert_eq!(redact_keys("'rk_live_ab'"), "'rk_live_****'");
        assert_eq!(redact_keys("nothing here"), "nothing here");
        assert_eq!(
            redact_keys("a sk_live_aaaaaaa1 b sk_test_bbbbbbb2"),
            "a sk_live_****aaa1 b sk_test_****bbb2"
        );
    }
}
