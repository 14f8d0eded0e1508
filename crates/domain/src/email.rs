use std::fmt;

/// A normalised email address: trimmed and lowercased, so that one person's purchases under
/// `Ada@Example.com` and `ada@example.com ` are attributed to the same row.
///
/// Validation is deliberately light (one `@`, something on each side, no whitespace or
/// control characters): Stripe accepts addresses we must still be able to group by.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(transparent)]
pub struct Email(String);

/// Why a string is not an email address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EmailError {
    /// Empty, or only whitespace.
    #[error("email is empty")]
    Empty,
    /// Longer than 320 characters.
    #[error("email is longer than 320 characters")]
    TooLong,
    /// Whitespace or a control character inside, or not exactly one `@` with text on each side.
    #[error("email must contain exactly one '@' with text on both sides")]
    Malformed,
}

impl Email {
    /// Trims, checks and lowercases an address.
    pub fn parse(raw: &str) -> Result<Self, EmailError> {
        let trimmed = raw.trim();
        if trimmed.is_empty() {
            return Err(EmailError::Empty);
        }
        if trimmed.len() > 320 {
            return Err(EmailError::TooLong);
        }
        if trimmed.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(EmailError::Malformed);
        }
        let mut parts = trimmed.split('@');
        match (parts.next(), parts.next(), parts.next()) {
            (Some(local), Some(domain), None) if !local.is_empty() && !domain.is_empty() => {
                Ok(Self(trimmed.to_lowercase()))
            }
            _ => Err(EmailError::Malformed),
        }
    }

    /// Normalises an optional, possibly blank or invalid value; `None` when there is no
    /// usable address.
    pub fn normalise(raw: Option<&str>) -> Option<Self> {
        raw.and_then(|r| Self::parse(r).ok())
    }

    /// The normalised address.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The normalised address, as an owned string.
    pub fn into_inner(self) -> String {
        self.0
    }
}

impl fmt::Display for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for Email {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trims_and_lowercases() {
        assert_eq!(
            Email::parse(" Ada@Example.COM\n").unwrap().as_str(),
            "ada@example.com"
        );
    }

    #[test]
    fn rejects_malformed() {
        assert_eq!(Email::parse("   "), Err(EmailError::Empty));
        assert_eq!(Email::parse("ada"), Err(EmailError::Malformed));
        assert_eq!(Email::parse("@example.com"), Err(EmailError::Malformed));
        assert_eq!(Email::parse("ada@"), Err(EmailError::Malformed));
        assert_eq!(Email::parse("a@b@c"), Err(EmailError::Malformed));
        assert_eq!(Email::parse("a da@b.c"), Err(EmailError::Malformed));
        assert_eq!(
            Email::parse(&format!("{}@b.c", "a".repeat(400))),
            Err(EmailError::TooLong)
        );
    }

    #[test]
    fn normalise_drops_unusable_values() {
        assert_eq!(Email::normalise(None), None);
        assert_eq!(Email::normalise(Some("")), None);
        assert_eq!(Email::normalise(Some("x@y")).unwrap().as_str(), "x@y");
    }
}
