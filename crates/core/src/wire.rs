//! Serde helpers for values that cross the wire (API bodies, config files, stored records).
//!
//! Two lenient readings, each strict about what it accepts:
//! - whole numbers: JSON has one number type, and generators and other languages write `1.0`
//!   for one. A count or duration accepts `1.0` but refuses `1.5`, negatives and overflow.
//! - sizes and rates: a number of bytes (or bytes/s), or a string with a unit as
//!   [`crate::units`] reads it (`"128M"`, `"50MB/s"`, `"300mbit"`).
//!
//! Values are always written back as plain integers, so a stored record reads the same way in
//! every language.

use crate::units::{parse_rate, parse_size};
use serde::de::{self, Deserializer, Unexpected, Visitor};
use std::fmt;
use std::marker::PhantomData;

/// An unsigned integer type a whole JSON number can be read into.
pub trait Whole: Sized + Copy + TryFrom<u64> {}

impl Whole for u32 {}

impl Whole for u64 {}

/// What a whole-number field expects. The carrier type's own range (0 to 4294967295) is no
/// rule of any setting, so it is never quoted: the setting's real limits are checked, and
/// worded, by its `validate`, and a request parser quotes them for numbers that do not even
/// fit the carrier (see `drover_api::request`).
const EXPECTED: &str = "a whole number";

/// A well-typed number that cannot be this setting's (negative, or beyond any limit).
const OUT_OF_RANGE: &str = "a whole number within the setting's limits";

fn from_u64<T: Whole, E: de::Error>(v: u64) -> Result<T, E> {
    T::try_from(v).map_err(|_| E::invalid_value(Unexpected::Unsigned(v), &OUT_OF_RANGE))
}

/// `3.0` is a whole number (JSON has one number type); `3.5` is the wrong type of number, and a
/// whole number too large or negative is a value out of range.
fn from_f64<T: Whole, E: de::Error>(v: f64) -> Result<T, E> {
    if v.is_finite() && v.fract() != 0.0 {
        return Err(E::invalid_type(Unexpected::Float(v), &EXPECTED));
    }
    // 2^64 is exactly representable; anything at or beyond it cannot be a u64.
    if !(0.0..18_446_744_073_709_551_616.0).contains(&v) {
        return Err(E::invalid_value(Unexpected::Float(v), &OUT_OF_RANGE));
    }
    from_u64(v as u64)
}

struct WholeVisitor<T>(PhantomData<T>);

impl<T: Whole> Visitor<'_> for WholeVisitor<T> {
    type Value = T;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(EXPECTED)
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<T, E> {
        from_u64(v)
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<T, E> {
        match u64::try_from(v) {
            Ok(v) => from_u64(v),
            Err(_) => Err(E::invalid_value(Unexpected::Signed(v), &OUT_OF_RANGE)),
        }
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<T, E> {
        from_f64(v)
    }
}

/// `deserialize_with` for a `u32`/`u64` field that also takes `3.0` (but not `3.5`).
pub fn whole<'de, D: Deserializer<'de>, T: Whole>(d: D) -> Result<T, D::Error> {
    d.deserialize_any(WholeVisitor(PhantomData))
}

/// `deserialize_with` for an optional whole number (`null` or absent is `None`).
pub fn whole_opt<'de, D: Deserializer<'de>, T: Whole>(d: D) -> Result<Option<T>, D::Error> {
    d.deserialize_option(OptVisitor(WholeVisitor::<T>(PhantomData)))
}

/// Which unit a string may carry.
#[derive(Clone, Copy)]
enum Quantity {
    Size,
    Rate,
}

struct QuantityVisitor(Quantity);

impl Visitor<'_> for QuantityVisitor {
    type Value = u64;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self.0 {
            Quantity::Size => f.write_str("a number of bytes or a size like \"128M\""),
            Quantity::Rate => f.write_str("a number of bytes/s or a rate like \"50MB/s\""),
        }
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<u64, E> {
        Ok(v)
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<u64, E> {
        WholeVisitor::<u64>(PhantomData).visit_i64(v)
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<u64, E> {
        from_f64(v)
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<u64, E> {
        let parsed = match self.0 {
            Quantity::Size => parse_size(v),
            Quantity::Rate => parse_rate(v),
        };
        parsed.map_err(|e| E::custom(e.to_string()))
    }
}

/// `deserialize_with` for a size in bytes: a number or a string with a unit.
pub fn size<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    d.deserialize_any(QuantityVisitor(Quantity::Size))
}

/// `deserialize_with` for an optional rate in bytes/s: a number, a string with a unit, or null.
pub fn rate_opt<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    d.deserialize_option(OptVisitor(QuantityVisitor(Quantity::Rate)))
}

/// `deserialize_with` for a rate in bytes/s: a number or a string with a unit.
pub fn rate<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    d.deserialize_any(QuantityVisitor(Quantity::Rate))
}

struct OptVisitor<V>(V);

impl<'de, V: Visitor<'de> + Copy> Visitor<'de> for OptVisitor<V> {
    type Value = Option<V::Value>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        self.0.expecting(f)?;
        f.write_str(", or null")
    }
    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self.0).map(Some)
    }
}

impl<T> Clone for WholeVisitor<T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for WholeVisitor<T> {}
impl Clone for QuantityVisitor {
    fn clone(&self) -> Self {
        *self
    }
}
impl Copy for QuantityVisitor {}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize, PartialEq)]
    struct T {
        #[serde(deserialize_with = "whole")]
        n: u32,
        #[serde(default, deserialize_with = "whole_opt")]
        o: Option<u64>,
        #[serde(default, deserialize_with = "rate_opt")]
        r: Option<u64>,
        #[serde(default, deserialize_with = "size")]
        s: u64,
    }

    fn read(json: &str) -> Result<T, String> {
        serde_json::from_str(json).map_err(|e| e.to_string())
    }

    #[test]
    fn whole_numbers_accept_dot_zero_and_refuse_fractions() {
        assert_eq!(read(r#"{"n": 2.0}"#).map(|t| t.n), Ok(2));
        assert_eq!(read(r#"{"n": 2}"#).map(|t| t.n), Ok(2));
        for bad in [
            r#"{"n": 2.5}"#,
            r#"{"n": -1}"#,
            r#"{"n": 4294967296}"#,
            r#"{"n": "2"}"#,
        ] {
            assert!(read(bad).is_err(), "{bad} accepted");
        }
        assert_eq!(read(r#"{"n": 1, "o": 3.0}"#).map(|t| t.o), Ok(Some(3)));
        assert_eq!(read(r#"{"n": 1, "o": null}"#).map(|t| t.o), Ok(None));
        assert!(read(r#"{"n": 1, "o": 1e300}"#).is_err());
    }

    /// The carrier type's range is never quoted: it is no setting's rule.
    #[test]
    fn messages_never_quote_the_carriers_range() {
        for bad in [
            r#"{"n": 2.5}"#,
            r#"{"n": -1}"#,
            r#"{"n": 4294967296}"#,
            r#"{"n": 1, "o": 18446744073709551616}"#,
        ] {
            let err = read(bad).unwrap_err();
            assert!(
                !err.contains("4294967295") && !err.contains("18446744073709551615"),
                "{bad}: {err}"
            );
            assert!(err.contains("whole number"), "{bad}: {err}");
        }
    }

    #[test]
    fn sizes_and_rates_take_numbers_or_units() {
        let t = read(r#"{"n": 1, "r": "50MB/s", "s": "128M"}"#).expect("parses");
        assert_eq!((t.r, t.s), (Some(50_000_000), 128 << 20));
        let t = read(r#"{"n": 1, "r": 1000, "s": 4096.0}"#).expect("parses");
        assert_eq!((t.r, t.s), (Some(1000), 4096));
        let err = read(r#"{"n": 1, "r": "fast"}"#).unwrap_err();
        assert!(err.contains("50MB/s"), "{err}");
        assert!(read(r#"{"n": 1, "s": true}"#).is_err());
    }
}
