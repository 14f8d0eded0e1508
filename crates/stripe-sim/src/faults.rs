//! Fault injection: latency, a per-account token bucket (429), 5xx and lock-timeout ratios and
//! connection resets.

use std::any::Any;
use std::collections::HashMap;
use std::net::Shutdown;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::dev::Extensions;
use serde::{Deserialize, Serialize};

use crate::rng::Rng;

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FaultConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit_per_second: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_ratio: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reset_ratio: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lock_timeout_ratio: Option<f64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Reset,
    RateLimit,
    LockTimeout,
    ServerError,
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

#[derive(Debug)]
pub struct Faults {
    pub config: FaultConfig,
    buckets: HashMap<String, Bucket>,
    rng: Rng,
}

impl Faults {
    pub fn new(seed: u64) -> Self {
        Faults {
            config: FaultConfig::default(),
            buckets: HashMap::new(),
            rng: Rng::derive(seed, "faults"),
        }
    }

    pub fn set(&mut self, config: FaultConfig) {
        self.config = config;
        self.buckets.clear();
    }

    /// What happens to the next request made for `key` (the `Stripe-Account`, or "platform").
    pub fn decide(&mut self, key: &str) -> (Duration, Option<Action>) {
        let c = self.config.clone();
        let latency = Duration::from_millis(c.latency_ms.unwrap_or(0));
        if c.reset_ratio.is_some_and(|r| self.rng.chance(r)) {
            return (latency, Some(Action::Reset));
        }
        if let Some(rate) = c.rate_limit_per_second.filter(|r| *r > 0.0) {
            let now = Instant::now();
            let b = self.buckets.entry(key.to_string()).or_insert(Bucket {
                tokens: rate.max(1.0),
                at: now,
            });
            b.tokens =
                (b.tokens + now.duration_since(b.at).as_secs_f64() * rate).min(rate.max(1.0));
            b.at = now;
            if b.tokens < 1.0 {
                return (latency, Some(Action::RateLimit));
            }
            b.tokens -= 1.0;
        }
        if c.lock_timeout_ratio.is_some_and(|r| self.rng.chance(r)) {
            return (latency, Some(Action::LockTimeout));
        }
        if c.error_ratio.is_some_and(|r| self.rng.chance(r)) {
            return (latency, Some(Action::ServerError));
        }
        (latency, None)
    }
}

/// A duplicate of the connection's socket, kept so a request can drop its connection.
#[derive(Debug, Clone)]
pub struct ConnSocket(pub Arc<socket2::Socket>);

pub fn remember_socket(conn: &dyn Any, ext: &mut Extensions) {
    if let Some(tcp) = conn.downcast_ref::<actix_web::rt::net::TcpStream>()
        && let Ok(sock) = socket2::SockRef::from(tcp).try_clone()
    {
        ext.insert(ConnSocket(Arc::new(sock)));
    }
}

/// Closes the connection under the request: the client gets no response at all.
pub fn reset(sock: &ConnSocket) {
    let _ = sock.0.set_linger(Some(Duration::ZERO));
    let _ = sock.0.shutdown(Shutdown::Both);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_bucket_throttles_per_account() {
        let mut f = Faults::new(1);
        f.set(FaultConfig {
            rate_limit_per_second: Some(2.0),
            ..Default::default()
        });
        let a: Vec<_> = (0..5).map(|_| f.decide("acct_a").1).collect();
        assert_eq!(a.iter().filter(|x| x.is_none()).count(), 2, "{a:?}");
        assert_eq!(a[4], Some(Action::RateLimit));
        assert_eq!(f.decide("acct_b").1, None);
    }

    #[test]
    fn ratios() {
        let mut f = Faults::new(1);
        f.set(FaultConfig {
            error_ratio: Some(1.0),
            ..Default::default()
        });
        assert_eq!(f.decide("x").1, Some(Action::ServerError));
        f.set(FaultConfig {
            reset_ratio: Some(1.0),
            latency_ms: Some(5),
            ..Default::default()
        });
        assert_eq!(
            f.decide("x"),
            (Duration::from_millis(5), Some(Action::Reset))
        );
        f.set(FaultConfig::default());
        assert_eq!(f.decide("x").1, None);
    }
}
