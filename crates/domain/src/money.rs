use std::fmt;

/// A lowercase ISO 4217 currency code, as Stripe spells it (`usd`, `jpy`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(transparent)]
pub struct Currency(String);

/// Why a string is not a currency code (it holds the string).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("currency must be a three-letter ISO code, got '{0}'")]
pub struct CurrencyError(pub String);

/// Currencies Stripe treats as zero-decimal: amounts are whole units, never scaled.
const ZERO_DECIMAL: &[&str] = &[
    "bif", "clp", "djf", "gnf", "jpy", "kmf", "krw", "mga", "pyg", "rwf", "ugx", "vnd", "vuv",
    "xaf", "xof", "xpf",
];
/// Currencies with three decimals (amounts in thousandths).
const THREE_DECIMAL: &[&str] = &["bhd", "jod", "kwd", "omr", "tnd"];

impl Currency {
    /// Trims and lowercases a three-letter code; any three ASCII letters are accepted.
    pub fn parse(raw: &str) -> Result<Self, CurrencyError> {
        let lower = raw.trim().to_ascii_lowercase();
        if lower.len() == 3 && lower.bytes().all(|b| b.is_ascii_lowercase()) {
            Ok(Self(lower))
        } else {
            Err(CurrencyError(raw.to_owned()))
        }
    }

    /// The lowercase code.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Digits after the decimal point in this currency's minor unit.
    pub fn exponent(&self) -> u32 {
        if ZERO_DECIMAL.contains(&self.0.as_str()) {
            0
        } else if THREE_DECIMAL.contains(&self.0.as_str()) {
            3
        } else {
            2
        }
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for Currency {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// An amount in the currency's minor unit (cents, yen, fils). Money of different currencies
/// is never added: [`Money::checked_add`] refuses.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct Money {
    /// The amount in minor units.
    pub amount: i64,
    /// Its currency.
    pub currency: Currency,
}

impl Money {
    /// An amount of `currency` in minor units.
    pub fn new(amount: i64, currency: Currency) -> Self {
        Self { amount, currency }
    }

    /// Adds two amounts of the same currency; `None` on a currency mismatch or overflow.
    pub fn checked_add(&self, other: &Money) -> Option<Money> {
        (self.currency == other.currency)
            .then(|| self.amount.checked_add(other.amount))
            .flatten()
            .map(|amount| Money::new(amount, self.currency.clone()))
    }

    /// The amount in major units as a decimal string (`12.34`, `1500`, `1.234`).
    pub fn major_units(&self) -> String {
        let exp = self.currency.exponent();
        if exp == 0 {
            return self.amount.to_string();
        }
        let scale = 10i64.pow(exp);
        let sign = if self.amount < 0 { "-" } else { "" };
        let abs = self.amount.unsigned_abs();
        let scale = scale.unsigned_abs();
        format!(
            "{sign}{}.{:0width$}",
            abs / scale,
            abs % scale,
            width = exp as usize
        )
    }
}

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.major_units(), self.currency)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(s: &str) -> Currency {
        Currency::parse(s).unwrap()
    }

    #[test]
    fn exponents_follow_stripe() {
        assert_eq!(c("usd").exponent(), 2);
        assert_eq!(c("JPY").exponent(), 0);
        assert_eq!(c("kwd").exponent(), 3);
    }

    #[test]
    fn major_units_never_scale_zero_decimal() {
        assert_eq!(Money::new(1234, c("usd")).major_units(), "12.34");
        assert_eq!(Money::new(-5, c("eur")).major_units(), "-0.05");
        assert_eq!(Money::new(1500, c("jpy")).major_units(), "1500");
        assert_eq!(Money::new(1234, c("bhd")).major_units(), "1.234");
    }

    #[test]
    fn adding_refuses_mixed_currencies() {
        let a = Money::new(100, c("usd"));
        assert_eq!(a.checked_add(&Money::new(5, c("usd"))).unwrap().amount, 105);
        assert!(a.checked_add(&Money::new(5, c("eur"))).is_none());
        assert!(Money::new(i64::MAX, c("usd")).checked_add(&a).is_none());
    }

    #[test]
    fn currency_codes_are_three_letters() {
        assert!(Currency::parse("us").is_err());
        assert!(Currency::parse("usd1").is_err());
        assert!(Currency::parse("u$d").is_err());
        assert_eq!(c(" EUR ").as_str(), "eur");
    }
}
