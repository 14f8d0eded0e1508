//! Bearer-token auth (SPEC §10): HS256 JWTs signed by the host application.
//!
//! Claims: `sub`, `exp`, `portal` (`agency` | `client`), `businesses` (ids) or `admin: true`.
//! `auth.jwt_previous_secret` is accepted as well while a rotation is under way. The checks
//! live in extractors, so a handler cannot run without them:
//!
//! - [`Identity`]: any valid token (`401` otherwise);
//! - [`AuthedBusiness`]: a valid token that grants the business named by the route (path
//!   `{businessId}` or `{id}`, else query `businessId`); a business outside the claims is
//!   `404`, exactly like a business that does not exist;
//! - [`ClientBusiness`]: a client-portal token, whose one business the route acts on;
//! - [`Admin`]: a token with `admin: true` (`403` otherwise).

use std::future::{Ready, ready};

use actix_web::{FromRequest, HttpRequest, dev::Payload, http::header, web};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Deserializer, Serialize};
use tributary_domain::BusinessId;

use crate::error::ApiError;
use crate::state::AppState;

/// Seconds of clock skew tolerated on `exp`.
pub const LEEWAY_SECS: u64 = 30;

/// Which app a token was issued for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Portal {
    /// The agency app: any business listed in the claims.
    Agency,
    /// The client portal: exactly one business.
    Client,
}

impl Portal {
    /// The claim's value: `agency` or `client`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Agency => "agency",
            Self::Client => "client",
        }
    }

    /// Reads `agency` or `client`.
    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "agency" => Some(Self::Agency),
            "client" => Some(Self::Client),
            _ => None,
        }
    }
}

/// The claims as the host application signs them.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    /// The user.
    pub sub: String,
    /// Expiry (unix seconds).
    pub exp: i64,
    /// Which portal the token is for; an admin token may leave it out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub portal: Option<Portal>,
    /// Business ids; numbers are accepted and read as their decimal text.
    #[serde(
        default,
        deserialize_with = "ids",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub businesses: Vec<String>,
    /// Whether the token may use every business and the admin routes.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub admin: bool,
}

impl Claims {
    /// Signs the claims with HS256, as the host application does (the demo and tests mint
    /// their tokens with it).
    pub fn sign(&self, secret: &SecretString) -> Result<String, jsonwebtoken::errors::Error> {
        jsonwebtoken::encode(
            &jsonwebtoken::Header::new(Algorithm::HS256),
            self,
            &jsonwebtoken::EncodingKey::from_secret(secret.expose_secret().as_bytes()),
        )
    }
}

fn ids<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Id {
        Text(String),
        Number(i64),
    }
    let raw = Option::<Vec<Id>>::deserialize(d)?;
    Ok(raw
        .unwrap_or_default()
        .into_iter()
        .map(|id| match id {
            Id::Text(s) => s,
            Id::Number(n) => n.to_string(),
        })
        .collect())
}

/// A verified caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The user (`sub`).
    pub user: String,
    /// The portal (`agency` for an admin token without one).
    pub portal: Portal,
    /// The business ids the token grants.
    pub businesses: Vec<String>,
    /// Whether it is an admin token (every business granted).
    pub admin: bool,
}

impl Identity {
    /// The business `raw` if the token grants it; `404` otherwise (never reveal existence).
    pub fn business(&self, raw: &str) -> Result<BusinessId, ApiError> {
        let granted = self.admin || self.businesses.iter().any(|b| b == raw);
        match BusinessId::parse(raw) {
            Ok(id) if granted => Ok(id),
            _ => Err(ApiError::NotFound("business")),
        }
    }

    /// The one business of a client-portal token.
    pub fn client_business(&self) -> Result<BusinessId, ApiError> {
        match (self.portal, self.businesses.as_slice()) {
            (Portal::Client, [only]) => self.business(only),
            _ => Err(ApiError::Forbidden(
                "this route needs a client-portal token (portal \"client\")",
            )),
        }
    }
}

/// The keys tokens are checked against.
pub struct JwtKeys {
    current: Option<DecodingKey>,
    previous: Option<DecodingKey>,
    validation: Validation,
}

impl std::fmt::Debug for JwtKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtKeys")
            .field("current", &self.current.is_some())
            .field("previous", &self.previous.is_some())
            .finish_non_exhaustive()
    }
}

impl JwtKeys {
    /// Keys from `auth.jwt_secret` and `auth.jwt_previous_secret`. Without a current secret
    /// every token is refused.
    pub fn new(current: Option<&SecretString>, previous: Option<&SecretString>) -> Self {
        let key = |s: &SecretString| DecodingKey::from_secret(s.expose_secret().as_bytes());
        // Only HS256: `none` and every other algorithm fail the header check.
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = LEEWAY_SECS;
        // A token the host minted for later (`nbf`) is not valid yet; jsonwebtoken does not
        // check `nbf` unless asked.
        validation.validate_nbf = true;
        validation.validate_aud = false;
        validation.required_spec_claims = ["exp", "sub"].iter().map(|s| (*s).to_owned()).collect();
        Self {
            current: current.map(key),
            previous: previous.map(key),
            validation,
        }
    }

    /// Verifies a token and checks the claims make sense together.
    pub fn verify(&self, token: &str) -> Result<Identity, ApiError> {
        let current = self
            .current
            .as_ref()
            .ok_or(ApiError::Unauthorized("the bearer token is not valid"))?;
        let decoded = match jsonwebtoken::decode::<Claims>(token, current, &self.validation) {
            Err(e) if *e.kind() == ErrorKind::InvalidSignature => match &self.previous {
                Some(previous) => jsonwebtoken::decode::<Claims>(token, previous, &self.validation),
                None => Err(e),
            },
            other => other,
        };
        let claims = decoded
            .map_err(|e| match e.kind() {
                ErrorKind::ExpiredSignature => {
                    ApiError::Unauthorized("the bearer token has expired")
                }
                _ => ApiError::Unauthorized("the bearer token is not valid"),
            })?
            .claims;
        if claims.sub.trim().is_empty() {
            return Err(ApiError::Unauthorized("the bearer token has no subject"));
        }
        let portal = match (claims.portal, claims.admin) {
            (Some(Portal::Client), true) => {
                return Err(ApiError::Unauthorized(
                    "a client-portal token cannot be an admin token",
                ));
            }
            (Some(p), _) => p,
            (None, true) => Portal::Agency,
            (None, false) => {
                return Err(ApiError::Unauthorized(
                    "the bearer token has no portal claim",
                ));
            }
        };
        if portal == Portal::Client && claims.businesses.len() != 1 {
            return Err(ApiError::Unauthorized(
                "a client-portal token must name exactly one business",
            ));
        }
        Ok(Identity {
            user: claims.sub,
            portal,
            businesses: claims.businesses,
            admin: claims.admin,
        })
    }
}

fn state(req: &HttpRequest) -> Result<&AppState, ApiError> {
    req.app_data::<web::Data<AppState>>()
        .map(|d| d.get_ref())
        .ok_or_else(|| ApiError::internal(std::io::Error::other("AppState is not registered")))
}

fn bearer(req: &HttpRequest) -> Result<&str, ApiError> {
    let value = req
        .headers()
        .get(header::AUTHORIZATION)
        .ok_or(ApiError::Unauthorized(
            "an Authorization: Bearer token is required",
        ))?
        .to_str()
        .map_err(|_| ApiError::Unauthorized("the bearer token is not valid"))?;
    match value.split_once(' ') {
        Some((scheme, token))
            if scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() =>
        {
            Ok(token.trim())
        }
        _ => Err(ApiError::Unauthorized(
            "an Authorization: Bearer token is required",
        )),
    }
}

fn identity(req: &HttpRequest) -> Result<Identity, ApiError> {
    let token = bearer(req)?;
    state(req)?.jwt.verify(token)
}

impl FromRequest for Identity {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(identity(req))
    }
}

/// A caller and the business the route acts on, which the caller's token grants.
#[derive(Debug, Clone)]
pub struct AuthedBusiness {
    /// The caller.
    pub identity: Identity,
    /// The business, granted by the token.
    pub business: BusinessId,
}

fn query_business(req: &HttpRequest) -> Option<String> {
    url::form_urlencoded::parse(req.query_string().as_bytes())
        .find(|(k, _)| k == "businessId")
        .map(|(_, v)| v.into_owned())
}

fn authed_business(req: &HttpRequest) -> Result<AuthedBusiness, ApiError> {
    let identity = identity(req)?;
    let raw = req
        .match_info()
        .get("businessId")
        .or_else(|| req.match_info().get("id"))
        .map(str::to_owned)
        .or_else(|| query_business(req))
        .ok_or_else(|| ApiError::bad_request("missing_business_id", "businessId is required"))?;
    let business = identity.business(&raw)?;
    crate::telemetry::record_business(&business);
    Ok(AuthedBusiness { identity, business })
}

impl FromRequest for AuthedBusiness {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(authed_business(req))
    }
}

/// A client-portal caller and its one business.
#[derive(Debug, Clone)]
pub struct ClientBusiness {
    /// The caller.
    pub identity: Identity,
    /// The token's one business.
    pub business: BusinessId,
}

impl FromRequest for ClientBusiness {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(identity(req).and_then(|identity| {
            let business = identity.client_business()?;
            crate::telemetry::record_business(&business);
            Ok(ClientBusiness { identity, business })
        }))
    }
}

/// A caller whose token carries `admin: true`.
#[derive(Debug, Clone)]
pub struct Admin(pub Identity);

impl FromRequest for Admin {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(identity(req).and_then(|identity| {
            if identity.admin {
                Ok(Admin(identity))
            } else {
                Err(ApiError::Forbidden("this route needs an admin token"))
            }
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{EncodingKey, Header};

    const SECRET: &str = "current-secret-0123456789";
    const OLD: &str = "previous-secret-0123456789";

    fn keys() -> JwtKeys {
        JwtKeys::new(
            Some(&SecretString::from(SECRET)),
            Some(&SecretString::from(OLD)),
        )
    }

    fn now() -> i64 {
        time::OffsetDateTime::now_utc().unix_timestamp()
    }

    fn token(secret: &str, claims: serde_json::Value) -> String {
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(secret.as_bytes()),
        )
        .unwrap_or_default()
    }

    fn b64(v: &serde_json::Value) -> String {
        base64_url(v.to_string().as_bytes())
    }

    fn base64_url(bytes: &[u8]) -> String {
        const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let mut out = String::new();
        for chunk in bytes.chunks(3) {
            let b = [
                chunk[0],
                *chunk.get(1).unwrap_or(&0),
                *chunk.get(2).unwrap_or(&0),
            ];
            let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
            for i in 0..=chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            }
        }
        out
    }

    #[test]
    fn accepts_current_and_previous_secrets() {
        let claims = serde_json::json!({"sub": "u1", "exp": now() + 60, "portal": "agency", "businesses": ["b1", 42]});
        let id = keys()
            .verify(&token(SECRET, claims.clone()))
            .expect("current");
        assert_eq!(id.businesses, vec!["b1", "42"]);
        assert_eq!(id.portal, Portal::Agency);
        assert!(
            keys().verify(&token(OLD, claims.clone())).is_ok(),
            "previous"
        );
        assert!(matches!(
            keys().verify(&token("another-secret-0123456789", claims)),
            Err(ApiError::Unauthorized(_))
        ));
    }

    #[test]
    fn refuses_expired_malformed_and_other_algorithms() {
        let expired = serde_json::json!({"sub": "u1", "exp": now() - 120, "portal": "agency"});
        assert!(matches!(
            keys().verify(&token(SECRET, expired)),
            Err(ApiError::Unauthorized(m)) if m.contains("expired")
        ));
        let no_exp = serde_json::json!({"sub": "u1", "portal": "agency"});
        assert!(keys().verify(&token(SECRET, no_exp)).is_err());
        assert!(keys().verify("not.a.token").is_err());
        let claims =
            serde_json::json!({"sub": "u1", "exp": now() + 60, "portal": "agency", "admin": true});
        let none = format!(
            "{}.{}.",
            b64(&serde_json::json!({"alg": "none", "typ": "JWT"})),
            b64(&claims)
        );
        assert!(keys().verify(&none).is_err(), "alg none");
        let hs512 = jsonwebtoken::encode(
            &Header::new(Algorithm::HS512),
            &claims,
            &EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .unwrap_or_default();
        assert!(keys().verify(&hs512).is_err(), "HS512");
        assert!(
            JwtKeys::new(None, None)
                .verify(&token(SECRET, claims))
                .is_err()
        );
    }

    #[test]
    fn signed_claims_verify() {
        let claims = Claims {
            sub: "demo".into(),
            exp: now() + 60,
            portal: Some(Portal::Client),
            businesses: vec!["biz-1".into()],
            admin: false,
        };
        let token = claims.sign(&SecretString::from(SECRET)).unwrap_or_default();
        let id = keys().verify(&token).expect("verifies");
        assert_eq!((id.user.as_str(), id.portal), ("demo", Portal::Client));
    }

    #[test]
    fn client_tokens_name_exactly_one_business() {
        let two = serde_json::json!({"sub": "u", "exp": now() + 60, "portal": "client", "businesses": ["a", "b"]});
        assert!(keys().verify(&token(SECRET, two)).is_err());
        let one = serde_json::json!({"sub": "u", "exp": now() + 60, "portal": "client", "businesses": ["a"]});
        let id = keys().verify(&token(SECRET, one)).expect("one business");
        assert_eq!(
            id.client_business().map(|b| b.to_string()).ok().as_deref(),
            Some("a")
        );
        assert!(id.business("b").is_err());
        let no_portal = serde_json::json!({"sub": "u", "exp": now() + 60, "businesses": ["a"]});
        assert!(keys().verify(&token(SECRET, no_portal)).is_err());
    }
}
