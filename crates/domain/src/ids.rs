use std::fmt;

/// Why an identifier was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// Empty (or, for a slug, shorter than two characters).
    #[error("{kind} must not be empty")]
    Empty {
        /// The identifier's name in messages (e.g. `"business id"`).
        kind: &'static str,
    },
    /// Longer than `max` characters.
    #[error("{kind} is longer than {max} characters")]
    TooLong {
        /// The identifier's name in messages.
        kind: &'static str,
        /// The longest accepted length.
        max: usize,
    },
    /// Does not start with the required prefix.
    #[error("{kind} must start with '{prefix}'")]
    Prefix {
        /// The identifier's name in messages.
        kind: &'static str,
        /// The required prefix (e.g. `acct_`).
        prefix: &'static str,
    },
    /// Holds a character outside the allowed set.
    #[error("{kind} contains characters outside {allowed}")]
    Charset {
        /// The identifier's name in messages.
        kind: &'static str,
        /// The allowed characters, described for the message.
        allowed: &'static str,
    },
    /// A reserved slug (`connect`).
    #[error("'{0}' is reserved and cannot be used as a slug")]
    Reserved(String),
}

macro_rules! text_id {
    ($(#[$doc:meta])* $name:ident, $kind:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// Accepts the host application's identifier as given: non-empty, at most 128
            /// characters, printable, no whitespace.
            pub fn parse(raw: &str) -> Result<Self, IdError> {
                if raw.is_empty() {
                    return Err(IdError::Empty { kind: $kind });
                }
                if raw.len() > 128 {
                    return Err(IdError::TooLong { kind: $kind, max: 128 });
                }
                if raw.chars().any(|c| c.is_whitespace() || c.is_control()) {
                    return Err(IdError::Charset { kind: $kind, allowed: "printable, non-space characters" });
                }
                Ok(Self(raw.to_owned()))
            }

            /// The id as given.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                Self::parse(&s).map_err(serde::de::Error::custom)
            }
        }
    };
}

text_id!(
    /// A business (tenant) id, owned by the host application.
    BusinessId,
    "business id"
);
text_id!(
    /// An agency id, owned by the host application.
    AgencyId,
    "agency id"
);

/// A connected Stripe account id (`acct_…`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(transparent)]
pub struct StripeAccountId(String);

impl StripeAccountId {
    /// Accepts `acct_` followed by ASCII letters and digits, at most 255 characters.
    pub fn parse(raw: &str) -> Result<Self, IdError> {
        const KIND: &str = "Stripe account id";
        let Some(rest) = raw.strip_prefix("acct_") else {
            return Err(IdError::Prefix {
                kind: KIND,
                prefix: "acct_",
            });
        };
        if rest.is_empty() {
            return Err(IdError::Empty { kind: KIND });
        }
        if raw.len() > 255 {
            return Err(IdError::TooLong {
                kind: KIND,
                max: 255,
            });
        }
        if !rest.chars().all(|c| c.is_ascii_alphanumeric()) {
            return Err(IdError::Charset {
                kind: KIND,
                allowed: "[A-Za-z0-9]",
            });
        }
        Ok(Self(raw.to_owned()))
    }

    /// The account id, `acct_…`.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for StripeAccountId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for StripeAccountId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// A business's URL slug: `[a-z0-9-]{2,63}`, `connect` reserved (it names the Connect
/// webhook endpoint, `/api/webhooks/stripe/connect`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(transparent)]
pub struct Slug(String);

impl Slug {
    /// Accepts `[a-z0-9-]{2,63}` except the reserved `connect`.
    pub fn parse(raw: &str) -> Result<Self, IdError> {
        const KIND: &str = "slug";
        if raw.len() < 2 {
            return Err(IdError::Empty { kind: KIND });
        }
        if raw.len() > 63 {
            return Err(IdError::TooLong {
                kind: KIND,
                max: 63,
            });
        }
        if !raw
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            return Err(IdError::Charset {
                kind: KIND,
                allowed: "[a-z0-9-]",
            });
        }
        if raw == "connect" {
            return Err(IdError::Reserved(raw.to_owned()));
        }
        Ok(Self(raw.to_owned()))
    }

    /// The slug.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Slug {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An id we mint (sync jobs, webhook records): UUID v7, so ids sort by creation time.
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(transparent)]
pub struct JobId(String);

impl JobId {
    /// A new UUID v7 id.
    pub fn new() -> Self {
        Self(uuid::Uuid::now_v7().to_string())
    }

    /// Accepts any UUID, in its hyphenated lowercase form.
    pub fn parse(raw: &str) -> Result<Self, IdError> {
        uuid::Uuid::parse_str(raw)
            .map(|u| Self(u.to_string()))
            .map_err(|_| IdError::Charset {
                kind: "job id",
                allowed: "a UUID",
            })
    }

    /// The id, a hyphenated lowercase UUID.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for JobId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn account_ids_need_the_prefix_and_a_body() {
        assert!(StripeAccountId::parse("acct_1AbC").is_ok());
        assert!(matches!(
            StripeAccountId::parse("acct_"),
            Err(IdError::Empty { .. })
        ));
        assert!(matches!(
            StripeAccountId::parse("cus_1"),
            Err(IdError::Prefix { .. })
        ));
        assert!(matches!(
            StripeAccountId::parse("acct_a-b"),
            Err(IdError::Charset { .. })
        ));
    }

    #[test]
    fn slugs_follow_the_spec() {
        assert!(Slug::parse("acme-co").is_ok());
        assert!(Slug::parse("a").is_err());
        assert!(Slug::parse(&"a".repeat(64)).is_err());
        assert!(Slug::parse("Acme").is_err());
        assert_eq!(
            Slug::parse("connect"),
            Err(IdError::Reserved("connect".into()))
        );
    }

    #[test]
    fn business_ids_are_printable_and_bounded() {
        assert!(BusinessId::parse("biz_42").is_ok());
        assert!(BusinessId::parse("").is_err());
        assert!(BusinessId::parse("a b").is_err());
        assert!(BusinessId::parse(&"x".repeat(129)).is_err());
    }

    #[test]
    fn job_ids_are_v7_and_ordered() {
        let a = JobId::new();
        let b = JobId::new();
        assert!(a < b || a.as_str()[..13] == b.as_str()[..13]);
        assert_eq!(JobId::parse(a.as_str()).unwrap(), a);
        assert!(JobId::parse("nope").is_err());
    }
}
