//! Exact amounts: money in cents, ratios and weighted patronage in ten-thousandths.
//! Arithmetic on them is integer arithmetic (`i128`), so nothing is ever rounded by accident.

use std::{fmt, str::FromStr};

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

/// Why a value is not a valid amount.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    #[error("{value} has more than {scale} decimals")]
    TooPrecise { value: Decimal, scale: u32 },
    #[error("{value} is out of range")]
    OutOfRange { value: Decimal },
    #[error("{0} is not a number")]
    NotANumber(String),
}

fn units(value: Decimal, scale: u32) -> Result<i128, MoneyError> {
    let mut normalized = value.normalize();
    if normalized.scale() > scale {
        return Err(MoneyError::TooPrecise { value, scale });
    }
    normalized.rescale(scale);
    let units = normalized.mantissa();
    // decimal(18, s): at most 18 digits in all.
    if units.abs() >= 10_i128.pow(18) {
        return Err(MoneyError::OutOfRange { value });
    }
    Ok(units)
}

fn decimal(units: i128, scale: u32) -> Decimal {
    Decimal::from_i128_with_scale(units, scale)
}

/// An amount of money, exact to the cent (Avro `decimal(18,2)`).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(try_from = "Decimal", into = "Decimal")]
pub struct Money(i128);

impl Money {
    pub const ZERO: Money = Money(0);

    pub fn from_cents(cents: i128) -> Self {
        Self(cents)
    }

    pub fn cents(self) -> i128 {
        self.0
    }

    pub fn to_decimal(self) -> Decimal {
        decimal(self.0, 2)
    }

    pub fn is_negative(self) -> bool {
        self.0 < 0
    }

    pub fn checked_add(self, other: Money) -> Option<Money> {
        self.0.checked_add(other.0).map(Money)
    }

    pub fn checked_sub(self, other: Money) -> Option<Money> {
        self.0.checked_sub(other.0).map(Money)
    }
}

impl TryFrom<Decimal> for Money {
    type Error = MoneyError;

    fn try_from(value: Decimal) -> Result<Self, MoneyError> {
        units(value, 2).map(Money)
    }
}

impl From<Money> for Decimal {
    fn from(money: Money) -> Decimal {
        money.to_decimal()
    }
}

impl FromStr for Money {
    type Err = MoneyError;

    fn from_str(text: &str) -> Result<Self, MoneyError> {
        let value = Decimal::from_str(text).map_err(|_| MoneyError::NotANumber(text.to_owned()))?;
        Money::try_from(value)
    }
}

/// Exactly two decimals, no separators: `3333.34`, `-0.05`.
impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.to_decimal())
    }
}

/// Defines a four-decimal quantity.
macro_rules! ten_thousandths {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "Decimal", into = "Decimal")]
        pub struct $name(i128);

        impl $name {
            pub const ZERO: $name = $name(0);

            /// From ten-thousandths: `from_units(2_000)` is 0.2000.
            pub const fn from_units(units: i128) -> Self {
                Self(units)
            }

            /// In ten-thousandths.
            pub fn units(self) -> i128 {
                self.0
            }

            pub fn to_decimal(self) -> Decimal {
                decimal(self.0, 4)
            }
        }

        impl TryFrom<Decimal> for $name {
            type Error = MoneyError;

            fn try_from(value: Decimal) -> Result<Self, MoneyError> {
                units(value, 4).map($name)
            }
        }

        impl From<$name> for Decimal {
            fn from(value: $name) -> Decimal {
                value.to_decimal()
            }
        }

        impl FromStr for $name {
            type Err = MoneyError;

            fn from_str(text: &str) -> Result<Self, MoneyError> {
                let value = Decimal::from_str(text).map_err(|_| MoneyError::NotANumber(text.to_owned()))?;
                $name::try_from(value)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}", self.to_decimal())
            }
        }
    };
}

ten_thousandths!(
    /// A ratio or weight (Avro `decimal(9,4)`): `cash_ratio`, a kind's weight.
    Ratio
);

ten_thousandths!(
    /// Weighted patronage (Avro `decimal(18,4)`): Σ weight × value.
    Weighted
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn money_is_exact_cents() {
        let m: Money = "3333.34".parse().expect("valid");
        assert_eq!(m.cents(), 333_334);
        assert_eq!(m.to_string(), "3333.34");
        assert_eq!(Money::from_cents(5).to_string(), "0.05");
        assert_eq!("10".parse::<Money>().expect("valid").to_string(), "10.00");
        assert_eq!(
            "1.230".parse::<Money>().expect("trailing zero").cents(),
            123
        );
        assert!(matches!(
            "1.234".parse::<Money>(),
            Err(MoneyError::TooPrecise { .. })
        ));
        assert!(matches!(
            "1e20".parse::<Money>(),
            Err(MoneyError::NotANumber(_)) | Err(MoneyError::OutOfRange { .. })
        ));
        assert!(matches!(
            "10000000000000000".parse::<Money>(),
            Err(MoneyError::OutOfRange { .. })
        ));
    }

    #[test]
    fn ratios_have_four_decimals() {
        let r: Ratio = "0.2".parse().expect("valid");
        assert_eq!(r.units(), 2_000);
        assert_eq!(r.to_string(), "0.2000");
        assert!("0.12345".parse::<Ratio>().is_err());
    }

    #[test]
    fn serde_goes_through_decimal_strings() {
        let m: Money = serde_json::from_str("\"12.50\"").expect("valid");
        assert_eq!(m.cents(), 1_250);
        assert_eq!(serde_json::to_string(&m).expect("serializes"), "\"12.50\"");
        assert!(serde_json::from_str::<Money>("\"12.505\"").is_err());
    }
}
