//! The Connect OAuth flow (SPEC §4): the authorize URL with a one-time state, and the callback
//! that exchanges the code, links the account, queues the first sync and sends the browser
//! back to the portal's settings page.

use actix_web::{HttpRequest, HttpResponse, http::header, web};
use serde::Serialize;
use tributary_domain::{BusinessId, StripeAccountId};
use tributary_persistence::{PersistenceError, access, jobs, oauth_states};

use crate::auth::{AuthedBusiness, ClientBusiness, Identity, Portal};
use crate::error::{ApiError, error_body};
use crate::openapi::{
    Error, Forbidden, Internal, NotConfigured, NotFound, OAuthOutcome, Unauthorized,
};
use crate::state::AppState;

/// Redirect reasons of SPEC §4.
pub mod reason {
    /// `error=access_denied` came back: the user declined.
    pub const DENIED: &str = "stripe_denied";
    /// The state is unknown, used, expired or tampered with.
    pub const STATE_INVALID: &str = "stripe_state_invalid";
    /// Stripe refused the code, did not answer, or answered for an account of the other mode.
    pub const EXCHANGE_FAILED: &str = "stripe_exchange_failed";
    /// The account is already linked to another business.
    pub const ACCOUNT_TAKEN: &str = "stripe_account_taken";
    /// Our own failure (database); logged.
    pub const INTERNAL: &str = "internal_error";
}

/// Expired states are kept this long (for the audit trail), then pruned.
const STATE_RETENTION_SECS: i64 = 86_400;

/// Where to send the user to approve the connection at Stripe.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ConnectUrl {
    /// Stripe's authorize URL with a fresh one-time state, valid 10 minutes.
    url: String,
}

/// A fresh 256-bit nonce, hex.
fn nonce() -> String {
    hex::encode(rand::random::<[u8; 32]>())
}

async fn connect_url_for(
    state: &AppState,
    identity: &Identity,
    business: &BusinessId,
) -> Result<HttpResponse, ApiError> {
    let stripe = &state.settings.stripe;
    let client_id = stripe
        .connect_client_id
        .as_deref()
        .ok_or(ApiError::NotConfigured("stripe.connect_client_id"))?;
    let redirect_uri = stripe
        .oauth_redirect_uri
        .as_deref()
        .ok_or(ApiError::NotConfigured("stripe.oauth_redirect_uri"))?;
    let nonce = nonce();
    let now = tributary_persistence::now();
    oauth_states::create(
        &state.db,
        &nonce,
        business,
        identity.portal.as_str(),
        &identity.user,
        now,
        state.tuning.oauth_state_ttl_secs,
    )
    .await?;
    // Housekeeping: states expired for a day are of no use to anyone.
    if let Err(e) = oauth_states::prune(&state.db, now - STATE_RETENTION_SECS).await {
        tracing::warn!(error = %e, "could not prune old OAuth states");
    }
    let url = state.stripe.authorize_url(client_id, redirect_uri, &nonce);
    Ok(HttpResponse::Ok().json(ConnectUrl { url }))
}

/// `GET /api/stripe/connect-url?businessId=B`.
#[utoipa::path(
    get,
    path = "/api/stripe/connect-url",
    tag = "connect",
    summary = "Stripe's authorize URL for connecting the business",
    params(("businessId" = String, Query, description = "The business (a token must grant it)")),
    responses(
        (status = 200, description = "The authorize URL.", body = ConnectUrl),
        (status = 400, description = "`missing_business_id`.", body = Error),
        (status = 401, response = Unauthorized),
        (status = 404, response = NotFound),
        (status = 500, response = Internal),
        (status = 503, response = NotConfigured),
    ),
    security(("bearer" = []))
)]
pub async fn connect_url(
    state: web::Data<AppState>,
    auth: AuthedBusiness,
) -> Result<HttpResponse, ApiError> {
    connect_url_for(&state, &auth.identity, &auth.business).await
}

/// `GET /api/client/stripe/connect-url`.
#[utoipa::path(
    get,
    path = "/api/client/stripe/connect-url",
    tag = "connect",
    summary = "The client portal's business: Stripe's authorize URL",
    responses(
        (status = 200, description = "The authorize URL.", body = ConnectUrl),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 500, response = Internal),
        (status = 503, response = NotConfigured),
    ),
    security(("bearer" = []))
)]
pub async fn client_connect_url(
    state: web::Data<AppState>,
    auth: ClientBusiness,
) -> Result<HttpResponse, ApiError> {
    connect_url_for(&state, &auth.identity, &auth.business).await
}

/// `base` with `pairs` appended to its query (before any fragment).
fn with_query(base: &str, pairs: &[(&str, &str)]) -> String {
    let (head, fragment) = match base.split_once('#') {
        Some((h, f)) => (h, Some(f)),
        None => (base, None),
    };
    let mut query = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        query.append_pair(k, v);
    }
    let sep = match head.find('?') {
        None => "?",
        Some(i) if i + 1 == head.len() || head.ends_with('&') => "",
        Some(_) => "&",
    };
    let mut out = format!("{head}{sep}{}", query.finish());
    if let Some(f) = fragment {
        out.push('#');
        out.push_str(f);
    }
    out
}

/// Where the callback sends the browser: the portal's settings URL with the outcome.
fn finish(
    state: &AppState,
    portal: Portal,
    business: Option<&BusinessId>,
    outcome: Result<(), &'static str>,
) -> HttpResponse {
    let frontend = &state.settings.frontend;
    let base = match portal {
        Portal::Client => frontend
            .client_settings_url
            .as_deref()
            .or(frontend.agency_settings_url.as_deref()),
        Portal::Agency => frontend.agency_settings_url.as_deref(),
    };
    let mut pairs: Vec<(&str, &str)> = Vec::with_capacity(3);
    if let Some(b) = business {
        pairs.push(("businessId", b.as_str()));
    }
    match outcome {
        Ok(()) => pairs.push(("stripe", "connected")),
        Err(r) => {
            pairs.push(("stripe", "error"));
            pairs.push(("reason", r));
        }
    }
    match base {
        Some(base) => HttpResponse::Found()
            .insert_header((header::LOCATION, with_query(base, &pairs)))
            .insert_header((header::CACHE_CONTROL, "no-store"))
            .finish(),
        // No settings page configured: answer the outcome as JSON rather than nothing.
        None => match outcome {
            Ok(()) => HttpResponse::Ok().json(serde_json::json!({
                "stripe": "connected",
                "businessId": business.map(BusinessId::as_str),
            })),
            Err(r) => HttpResponse::BadRequest()
                .json(error_body(r, "the Stripe connection did not complete")),
        },
    }
}

/// `GET /api/stripe/oauth/callback?code=…&state=…` (no JWT: the state authenticates).
#[utoipa::path(
    get,
    path = "/api/stripe/oauth/callback",
    tag = "connect",
    summary = "Where Stripe sends the user back; no token, the state authenticates",
    description = "Exchanges the code, links the account, queues the first sync and redirects \
        to the portal's settings URL with `?businessId=B&stripe=connected`, or \
        `?businessId=B&stripe=error&reason=R` where R is `stripe_denied`, \
        `stripe_state_invalid`, `stripe_exchange_failed`, `stripe_account_taken` or \
        `internal_error`.",
    params(
        ("code" = Option<String>, Query, description = "The authorization code"),
        ("state" = Option<String>, Query, description = "The one-time state of the connect URL"),
        ("error" = Option<String>, Query, description = "Stripe's error (`access_denied`: the user declined)"),
    ),
    responses(
        (status = 302, description = "Back to the portal's settings page with the outcome.",
            headers(("Location" = String, description = "The settings URL with the outcome"))),
        (status = 200, description = "Connected, when no settings page is configured.",
            body = OAuthOutcome),
        (status = 400, description = "Not connected (the reason is the code), when no settings \
            page is configured.", body = Error),
    )
)]
pub async fn oauth_callback(state: web::Data<AppState>, req: HttpRequest) -> HttpResponse {
    let mut code = None;
    let mut nonce = None;
    let mut error = None;
    for (k, v) in url::form_urlencoded::parse(req.query_string().as_bytes()) {
        match &*k {
            "code" => code = Some(v.into_owned()),
            "state" => nonce = Some(v.into_owned()),
            "error" => error = Some(v.into_owned()),
            _ => {}
        }
    }
    let now = tributary_persistence::now();
    // A nonce we minted is 64 hex characters; anything else is tampered with.
    let nonce = nonce.filter(|n| n.len() == 64 && n.bytes().all(|b| b.is_ascii_hexdigit()));
    let Some(nonce) = nonce else {
        tracing::warn!("OAuth callback without a well-formed state");
        return finish(&state, Portal::Agency, None, Err(reason::STATE_INVALID));
    };
    let saved = match oauth_states::consume(&state.db, &nonce, now).await {
        Ok(Some(saved)) => saved,
        Ok(None) => {
            tracing::warn!("OAuth callback with an unknown, used or expired state");
            return finish(&state, Portal::Agency, None, Err(reason::STATE_INVALID));
        }
        Err(e) => {
            tracing::error!(error = %e, "could not read the OAuth state");
            return finish(&state, Portal::Agency, None, Err(reason::INTERNAL));
        }
    };
    let (Some(portal), Ok(business)) = (
        Portal::parse(&saved.portal),
        BusinessId::parse(&saved.business_id),
    ) else {
        tracing::error!(portal = %saved.portal, "stored OAuth state is not valid");
        return finish(&state, Portal::Agency, None, Err(reason::STATE_INVALID));
    };
    if let Some(error) = error {
        // `error` is whatever the query string says: logged escaped, never as raw lines.
        tracing::info!(business_id = %business, user = %saved.user_sub, ?error, "Stripe sent the user back without a code");
        let r = if error == "access_denied" {
            reason::DENIED
        } else {
            reason::EXCHANGE_FAILED
        };
        return finish(&state, portal, Some(&business), Err(r));
    }
    let Some(code) = code.filter(|c| !c.is_empty()) else {
        tracing::warn!(business_id = %business, "OAuth callback with neither code nor error");
        return finish(
            &state,
            portal,
            Some(&business),
            Err(reason::EXCHANGE_FAILED),
        );
    };
    tracing::info!(business_id = %business, user = %saved.user_sub, portal = portal.as_str(), "OAuth callback");
    let outcome = link(&state, &business, &code, now).await;
    finish(&state, portal, Some(&business), outcome)
}

/// Exchanges the code and links the account; `Err` is the redirect reason.
#[tracing::instrument(skip_all, fields(business_id = %business))]
async fn link(
    state: &AppState,
    business: &BusinessId,
    code: &str,
    now: i64,
) -> Result<(), &'static str> {
    let grant = state
        .interactive(state.stripe.exchange_code(code))
        .await
        .map_err(|e| {
            tracing::warn!(error = %e, "Stripe refused the authorization code");
            reason::EXCHANGE_FAILED
        })?;
    if grant.livemode != state.livemode {
        // One deployment, one mode: an account of the other mode is refused.
        tracing::warn!(
            account = %grant.stripe_user_id,
            account_livemode = grant.livemode,
            "refusing an account of the other mode"
        );
        return Err(reason::EXCHANGE_FAILED);
    }
    let account = StripeAccountId::parse(&grant.stripe_user_id).map_err(|e| {
        tracing::warn!(error = %e, "Stripe answered with an unusable account id");
        reason::EXCHANGE_FAILED
    })?;
    let internal = |e: PersistenceError| {
        tracing::error!(error = %e, "could not store the connection");
        reason::INTERNAL
    };
    if let Some(holder) = access::by_account(&state.db, account.as_str())
        .await
        .map_err(internal)?
        && holder.business_id != business.as_str()
    {
        tracing::warn!(account = %account, "account already linked to another business");
        return Err(reason::ACCOUNT_TAKEN);
    }
    // The display name is a nicety: the sync refreshes it, so a failure here is not fatal.
    let name = match state.stripe.account(account.as_str()) {
        Ok(client) => state
            .interactive(client.display_name())
            .await
            .unwrap_or_else(|e| {
                tracing::warn!(error = %e, "could not read the account's display name");
                None
            }),
        Err(e) => {
            tracing::warn!(error = %e, "could not build a client for the account");
            None
        }
    };
    let previous = access::get(&state.db, business).await.map_err(internal)?;
    if previous
        .as_ref()
        .is_some_and(|p| p.stripe_account_id != account.as_str())
    {
        // A sync of the old account must not write into the new link.
        jobs::fail_active(
            &state.db,
            business,
            "cancelled",
            "the business was linked to another Stripe account",
            now,
        )
        .await
        .map_err(internal)?;
    }
    let scope = grant.scope.as_deref().unwrap_or("read_write");
    let outcome = access::connect(
        &state.db,
        business,
        access::NewConnection {
            account: &account,
            account_name: name.as_deref(),
            livemode: grant.livemode,
            scope,
        },
        now,
    )
    .await;
    match outcome {
        Ok(access::Connected::Linked) => {
            tracing::info!(account = %account, "Stripe account connected");
        }
        Ok(access::Connected::Relinked { previous }) => {
            tracing::info!(account = %account, %previous, "Stripe account relinked; old rows cleared");
        }
        Err(PersistenceError::Conflict(_)) => return Err(reason::ACCOUNT_TAKEN),
        Err(e) => return Err(internal(e)),
    }
    match jobs::enqueue(&state.db, business, "backfill", false, now).await {
        Ok(_) => state.workers.wake(),
        // Connected all the same: the scheduler's next run syncs it.
        Err(e) => tracing::error!(error = %e, "could not queue the first sync"),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::with_query;

    #[test]
    fn appends_to_any_settings_url() {
        assert_eq!(
            with_query(
                "https://a.example/s",
                &[("businessId", "b 1"), ("stripe", "connected")]
            ),
            "https://a.example/s?businessId=b+1&stripe=connected"
        );
        assert_eq!(
            with_query("https://a.example/s?tab=stripe#top", &[("stripe", "error")]),
            "https://a.example/s?tab=stripe&stripe=error#top"
        );
        assert_eq!(with_query("/s?", &[("a", "1")]), "/s?a=1");
    }
}
