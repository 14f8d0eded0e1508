//! Pure types and rules of Tributary: ids, money, email normalisation, spend deduplication
//! and subscription metrics. Nothing here performs I/O, so every rule can be tested (and
//! property-tested) on plain values.
//!
//! ```
//! use tributary_domain::{Email, Money, Currency, StripeAccountId};
//!
//! let email = Email::parse("  Ada@Example.COM ").unwrap();
//! assert_eq!(email.as_str(), "ada@example.com");
//!
//! let yen = Money::new(1500, Currency::parse("JPY").unwrap());
//! assert_eq!(yen.to_string(), "1500 jpy"); // zero-decimal: never scaled
//!
//! assert!(StripeAccountId::parse("acct_1Nv0FGQ9RKHgCVdK").is_ok());
//! assert!(StripeAccountId::parse("cus_123").is_err());
//! ```

mod email;
mod ids;
pub mod metrics;
mod money;
pub mod mrr;
pub mod spend;

pub use email::{Email, EmailError};
pub use ids::{AgencyId, BusinessId, IdError, JobId, Slug, StripeAccountId};
pub use money::{Currency, CurrencyError, Money};
