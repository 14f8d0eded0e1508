//! Connect OAuth (async-stripe has no client for it): authorize URL, code exchange, deauthorize.

use serde::Deserialize;

use crate::client::{Call, Stripe, encode_query};
use crate::error::{StripeError, classify_status, redact_keys};

/// What Stripe answers to a code exchange, minus the tokens: calls use the platform key with
/// `Stripe-Account`, so the access and refresh tokens are dropped unread (SPEC §3 stores none).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct OAuthGrant {
    /// The connected account (`acct_…`).
    pub stripe_user_id: String,
    /// Live or test mode.
    #[serde(default)]
    pub livemode: bool,
    /// Granted scope (`read_write` / `read_only`).
    #[serde(default)]
    pub scope: Option<String>,
    /// The account's publishable key (not secret).
    #[serde(default)]
    pub stripe_publishable_key: Option<String>,
}

#[derive(Deserialize)]
struct OAuthErrorBody {
    error: String,
    #[serde(default)]
    error_description: Option<String>,
}

#[derive(Deserialize)]
struct DeauthorizeBody {
    stripe_user_id: String,
}

/// `<connect_base>/oauth/authorize?response_type=code&client_id=…&scope=read_write&redirect_uri=…&state=…`.
pub fn authorize_url(
    connect_base: &str,
    client_id: &str,
    redirect_uri: &str,
    state: &str,
) -> String {
    let q = encode_query(&[
        ("response_type", "code"),
        ("client_id", client_id),
        ("scope", "read_write"),
        ("redirect_uri", redirect_uri),
        ("state", state),
    ]);
    format!("{}/oauth/authorize?{q}", connect_base.trim_end_matches('/'))
}

fn oauth_error(status: u16, body: &[u8]) -> StripeError {
    match serde_json::from_slice::<OAuthErrorBody>(body) {
        Ok(e) => {
            let description = redact_keys(&e.error_description.unwrap_or_default());
            if e.error == "invalid_grant" {
                StripeError::InvalidGrant { description }
            } else {
                StripeError::OAuth {
                    error: e.error,
                    description,
                }
            }
        }
        // Not the OAuth shape: a regular API error body (bad platform key, …).
        Err(_) => classify_status(status, body, None, 1),
    }
}

impl Stripe {
    /// The authorize URL for `client_id` (`ca_…`) on the configured Connect base.
    pub fn authorize_url(&self, client_id: &str, redirect_uri: &str, state: &str) -> String {
        authorize_url(&self.inner().connect_base, client_id, redirect_uri, state)
    }

    async fn oauth_post(
        &self,
        path: &str,
        form: &[(&str, &str)],
    ) -> Result<bytes::Bytes, StripeError> {
        let inner = self.inner();
        let call = Call {
            method: reqwest::Method::POST,
            url: format!("{}{path}", inner.connect_base),
            body: Some(encode_query(form)),
            account: None,
            idempotency_key: None,
        };
        let answer = inner.send(&self.platform().budget, &call).await?;
        if (200..300).contains(&answer.status) {
            Ok(answer.body)
        } else {
            Err(oauth_error(answer.status, &answer.body))
        }
    }

    /// Exchange an authorization code (`POST <connect_base>/oauth/token`,
    /// `grant_type=authorization_code`, platform key as bearer).
    ///
    /// A bad, used or expired code is [`StripeError::InvalidGrant`]; no answer is
    /// [`StripeError::Unavailable`].
    #[tracing::instrument(level = "debug", skip_all)]
    pub async fn exchange_code(&self, code: &str) -> Result<OAuthGrant, StripeError> {
        let body = self
            .oauth_post(
                "/oauth/token",
                &[("grant_type", "authorization_code"), ("code", code)],
            )
            .await?;
        serde_json::from_slice(&body)
            .map_err(|e| StripeError::Deserialize(format!("oauth token answer: {e}")))
    }

    /// Revoke the platform's access to an account (`POST <connect_base>/oauth/deauthorize`
    /// with `client_id` from the configuration and `stripe_user_id`).
    #[tracing::instrument(level = "debug", skip(self))]
    pub async fn deauthorize(&self, stripe_user_id: &str) -> Result<(), StripeError> {
        let client_id = self
            .config()
            .connect_client_id
            .clone()
            .ok_or_else(|| StripeError::Config("stripe.connect_client_id is not set".into()))?;
        let body = self
            .oauth_post(
                "/oauth/deauthorize",
                &[
                    ("client_id", client_id.as_str()),
                    ("stripe_user_id", stripe_user_id),
                ],
            )
            .await?;
        let answer: DeauthorizeBody = serde_json::from_slice(&body)
            .map_err(|e| StripeError::Deserialize(format!("oauth deauthorize answer: {e}")))?;
        if answer.stripe_user_id != stripe_user_id {
            return Err(StripeError::Deserialize(format!(
                "deauthorize answered for {} instead of {stripe_user_id}",
                answer.stripe_user_id
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authorize_url_shape() {
        let url = authorize_url(
            "https://connect.stripe.com/",
            "ca_123",
            "https://app.example/api/stripe/oauth/callback?x=1",
            "st&ate",
        );
        assert_eq!(
            url,
            "https://connect.stripe.com/oauth/authorize?response_type=code&client_id=ca_123&scope=read_write&redirect_uri=https%3A%2F%2Fapp.example%2Fapi%2Fstripe%2Foauth%2Fcallback%3Fx%3D1&state=st%26ate"
        );
    }

    #[test]
    fn oauth_errors() {
        assert!(matches!(
            oauth_error(400, br#"{"error":"invalid_grant","error_description":"This authorization code has already been used."}"#),
            StripeError::InvalidGrant { description } if description.contains("already been used")
        ));
        assert!(matches!(
            oauth_error(400, br#"{"error":"invalid_client","error_description":"No such application"}"#),
            StripeError::OAuth { error, .. } if error == "invalid_client"
        ));
        assert!(matches!(
            oauth_error(401, br#"{"error":{"type":"invalid_request_error","message":"Invalid API Key provided"}}"#),
            StripeError::Unauthorized { .. }
        ));
    }

    #[test]
    fn grant_ignores_tokens() {
        let g: OAuthGrant = serde_json::from_str(
            r#"{"access_token":"sk_test_tok","refresh_token":"rt_1","token_type":"bearer","stripe_publishable_key":"pk_test_1","stripe_user_id":"acct_1","scope":"read_write","livemode":false}"#,
        )
        .expect("grant");
        assert_eq!(g.stripe_user_id, "acct_1");
        assert_eq!(g.scope.as_deref(), Some("read_write"));
        assert!(!format!("{g:?}").contains("sk_test_tok"));
    }
}
