//! Parsing and printing of sizes (`256M`, `1GiB`) and rates (`50MB/s`, `300mbit`).
//!
//! Conventions, chosen to match what operators type, what `tc` reads and what QEMU reports:
//! - sizes: a bare suffix `K`, `M`, `G`, `T` and the `KiB`/`MiB`/`GiB`/`TiB` forms are binary
//!   (memory sizes are always meant that way); `kB`, `MB`, `GB`, `TB` are decimal.
//! - rates, in two notations:
//!   - tc's, exactly as tc(8) reads it and like tc in any letter case: `bit`, `kbit`, `mbit`,
//!     `gbit`, `tbit` are bits per second (decimal); `bps`, `kbps`, `mbps`, `gbps`, `tbps` are
//!     BYTES per second (tc's `mbps` is megabytes per second, so `800Mbps` is 800 MB/s, not
//!     800 Mbit/s); `kibit`, `mibps`, ... are tc's binary forms.
//!   - with `/s`: `B/s`, `kB/s`, `MB/s`, `GB/s`, `TB/s` decimal bytes; `KiB/s`, `MiB/s`,
//!     `GiB/s`, `TiB/s` binary bytes; `bit/s`, `kbit/s`, `Mbit/s`, `Gbit/s`, `Tbit/s` decimal
//!     bits. The prefix may be in either case; bytes are a capital `B` and bits are spelled
//!     `bit`, so a lone `b` (`Mb/s`) is refused as ambiguous rather than guessed.
//!
//!   A bare number is bytes per second (unlike tc, where it is bits: Drover's settings are all
//!   in bytes, `bandwidth_bps` included).
//!
//! [`read_size`] and [`read_rate`] also say whether reading rounded (`1bit/s` is 0.125 bytes/s),
//! so a refusal can quote what was typed and what it became ([`Reading::note`], [`refusal`]).

use thiserror::Error;

/// A size or rate that could not be understood. Every message starts with the text as typed,
/// so a caller can put the flag or field in front of it.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum UnitError {
    #[error("'' is not a {what}: expected a number followed by an optional unit ({hint})")]
    Empty {
        what: &'static str,
        hint: &'static str,
    },
    #[error("'{input}' is not a {what}: expected a number followed by an optional unit ({hint})")]
    Malformed {
        input: String,
        what: &'static str,
        hint: &'static str,
    },
    #[error("'{input}': unknown unit '{unit}' for a {what}; accepted: {hint}")]
    UnknownUnit {
        input: String,
        unit: String,
        what: &'static str,
        hint: &'static str,
    },
    #[error(
        "'{input}': '{unit}' could mean bits or bytes; write {prefix}B/s for bytes or \
         {prefix}bit/s for bits per second"
    )]
    Ambiguous {
        input: String,
        unit: String,
        prefix: String,
    },
    /// Beyond what any size or rate can be (2^64 bytes, or bytes/s): the message gives that
    /// range; the setting's own, narrower one is its rule's to state.
    #[error("'{input}' is out of range for a {what}: expected 0 to 16 EiB (below 18446744073709551616 {})", unit_of(what))]
    OutOfRange { input: String, what: &'static str },
}

/// The unit a reading of `what` ("size" or "rate") is in, for messages.
fn unit_of(what: &str) -> &'static str {
    if what == "rate" {
        "bytes/s"
    } else {
        "bytes"
    }
}

const SIZE_HINT: &str = "e.g. 256M, 1GiB, 4096, 500MB";

/// Every rate unit, for the message that refuses an unknown one.
const RATE_UNITS: &str = "bit, kbit, mbit, gbit, tbit (bits/s) and bps, kbps, mbps, gbps, tbps \
     (BYTES/s), in any case, as tc reads them (kibit, mibps, ... binary); B/s, kB/s, MB/s, GB/s, \
     TB/s, KiB/s, MiB/s, GiB/s, TiB/s (bytes/s); bit/s, kbit/s, Mbit/s, Gbit/s, Tbit/s (bits/s); \
     a bare number is bytes/s. Note: mbps is megabytes per second, as tc reads it; write \
     300mbit or 300Mbit/s for megabits";

const RATE_HINT: &str = "e.g. 50MB/s, 300mbit, 1Gbit/s, 100MiB/s";

/// A size or rate as read from text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reading {
    /// Bytes (or bytes per second), rounded to the nearest whole one.
    pub value: u64,
    /// Whether the text named a fraction of a byte that rounding dropped or added.
    pub rounded: bool,
}

impl Reading {
    /// What the text `typed` was read as, for a message: `None` when it is the plain number
    /// itself, else `is <value> <unit>` or `rounds to <value> <unit>`.
    pub fn note(&self, typed: &str, unit: &str) -> Option<String> {
        if typed.trim() == self.value.to_string() {
            return None;
        }
        let verb = if self.rounded { "rounds to" } else { "is" };
        Some(format!("{verb} {} {unit}", self.value))
    }
}

/// A refusal of a value someone typed, naming it as they know it (a flag such as `--memory`, a
/// field such as `memory_bytes`) with the text as typed: `--memory 48M is 50331648 bytes;
/// expected ...` with a [`Reading::note`], `vcpus 0: expected ...` without.
pub fn refusal(name: &str, typed: &str, note: Option<&str>, expected: &str) -> String {
    match note {
        Some(note) => format!("{name} {typed} {note}; {expected}"),
        None => format!("{name} {typed}: {expected}"),
    }
}

/// Splits `"12.5 MB"` into `(12.5, "MB")`.
fn split_number(
    input: &str,
    what: &'static str,
    hint: &'static str,
) -> Result<(f64, String), UnitError> {
    let trimmed = input.trim();
    if trimmed.is_empty() {
        return Err(UnitError::Empty { what, hint });
    }
    let end = trimmed
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(trimmed.len());
    let number: f64 = trimmed[..end].parse().map_err(|_| UnitError::Malformed {
        input: input.to_string(),
        what,
        hint,
    })?;
    Ok((number, trimmed[end..].trim().to_string()))
}

fn reading(value: f64, input: &str, what: &'static str) -> Result<Reading, UnitError> {
    // 2^64 is exactly representable; anything at or beyond it is not a u64.
    if !(0.0..18_446_744_073_709_551_616.0).contains(&value) {
        return Err(UnitError::OutOfRange {
            input: input.to_string(),
            what,
        });
    }
    let whole = value.round();
    // Decimal fractions are inexact in binary (1.1 * 1e6 is 1100000.0000000002): only a
    // difference beyond that noise is a real rounding.
    let rounded = (value - whole).abs() > 1e-9 * value.max(1.0);
    Ok(Reading {
        value: whole as u64,
        rounded,
    })
}

/// Reads a size in bytes.
///
/// # Errors
/// [`UnitError`] quoting the input.
pub fn read_size(input: &str) -> Result<Reading, UnitError> {
    let what = "size";
    let (number, unit) = split_number(input, what, SIZE_HINT)?;
    let multiplier: f64 = match unit.as_str() {
        "" | "B" | "b" => 1.0,
        "K" | "k" | "KiB" | "Ki" => 1024.0,
        "M" | "m" | "MiB" | "Mi" => 1024.0 * 1024.0,
        "G" | "g" | "GiB" | "Gi" => 1024.0 * 1024.0 * 1024.0,
        "T" | "t" | "TiB" | "Ti" => 1024.0_f64.powi(4),
        "kB" | "KB" => 1e3,
        "MB" => 1e6,
        "GB" => 1e9,
        "TB" => 1e12,
        _ => {
            return Err(UnitError::UnknownUnit {
                input: input.to_string(),
                unit,
                what,
                hint: SIZE_HINT,
            })
        }
    };
    reading(number * multiplier, input, what)
}

/// Parses a size in bytes (see [`read_size`]).
///
/// # Errors
/// [`UnitError`] quoting the input.
pub fn parse_size(input: &str) -> Result<u64, UnitError> {
    read_size(input).map(|r| r.value)
}

/// A decimal (SI) or binary (IEC) prefix in either case, as tc reads them.
fn prefix(p: &str) -> Option<f64> {
    Some(match p.to_ascii_lowercase().as_str() {
        "" => 1.0,
        "k" => 1e3,
        "m" => 1e6,
        "g" => 1e9,
        "t" => 1e12,
        "ki" => 1024.0,
        "mi" => 1024.0 * 1024.0,
        "gi" => 1024.0 * 1024.0 * 1024.0,
        "ti" => 1024.0_f64.powi(4),
        _ => return None,
    })
}

/// Bytes per second in one `unit` (see the module doc for the notations).
fn rate_multiplier(input: &str, unit: &str) -> Result<f64, UnitError> {
    let unknown = || UnitError::UnknownUnit {
        input: input.to_string(),
        unit: unit.to_string(),
        what: "rate",
        hint: RATE_UNITS,
    };
    let (quantity, per_s) = match unit.strip_suffix("/s") {
        Some(q) => (q, true),
        None => (unit, false),
    };
    let lower = quantity.to_ascii_lowercase();
    if let Some(p) = lower.strip_suffix("bit") {
        return prefix(p).map(|m| m / 8.0).ok_or_else(unknown);
    }
    // tc's `bps` is bytes per second; it takes no `/s` (`Mbps/s` means nothing).
    if let Some(p) = lower.strip_suffix("bps").filter(|_| !per_s) {
        return prefix(p).ok_or_else(unknown);
    }
    if let Some(p) = quantity.strip_suffix('B') {
        return prefix(p).ok_or_else(unknown);
    }
    if let Some(p) = quantity.strip_suffix('b').filter(|p| prefix(p).is_some()) {
        return Err(UnitError::Ambiguous {
            input: input.to_string(),
            unit: unit.to_string(),
            prefix: p.to_string(),
        });
    }
    if quantity.is_empty() && !per_s {
        return Ok(1.0);
    }
    Err(unknown())
}

/// Reads a rate in bytes per second.
///
/// # Errors
/// [`UnitError`] quoting the input; an unknown unit's lists every accepted one.
pub fn read_rate(input: &str) -> Result<Reading, UnitError> {
    let what = "rate";
    let (number, unit) = split_number(input, what, RATE_HINT)?;
    let multiplier = rate_multiplier(input, &unit)?;
    reading(number * multiplier, input, what)
}

/// Parses a rate in bytes per second (see [`read_rate`]).
///
/// # Errors
/// [`UnitError`] quoting the input.
pub fn parse_rate(input: &str) -> Result<u64, UnitError> {
    read_rate(input).map(|r| r.value)
}

/// Prints a byte count with a binary unit, e.g. `256MiB`.
pub fn format_size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if value.fract() == 0.0 {
        format!("{value:.0}{}", UNITS[unit])
    } else {
        format!("{value:.1}{}", UNITS[unit])
    }
}

/// Prints a rate in decimal megabytes per second, e.g. `50.0MB/s`.
pub fn format_rate(bytes_per_s: u64) -> String {
    format!("{:.1}MB/s", bytes_per_s as f64 / 1e6)
}

/// `v` with `places` decimals, as every table prints a measured number; a value that rounds
/// to zero prints unsigned (`0.00`, not `-0.00`: a difference of counters, or a loss measured
/// as a tiny gain, can come back as a tiny negative).
pub fn fixed(v: f64, places: usize) -> String {
    let s = format!("{v:.places$}");
    match s.strip_prefix('-') {
        Some(rest) if rest.chars().all(|c| c == '0' || c == '.') => rest.to_string(),
        _ => s,
    }
}

/// A number quoted back in an error: as typed when it is of everyday size, in e-notation
/// when huge or tiny (`{}` prints 1e308 as 309 digits).
pub fn shown(v: f64) -> String {
    if v != 0.0 && v.is_finite() && !(1e-6..1e15).contains(&v.abs()) {
        format!("{v:e}")
    } else {
        v.to_string()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn huge_and_tiny_numbers_are_shown_in_e_notation() {
        use super::shown;
        assert_eq!(shown(1e308), "1e308");
        assert_eq!(shown(-1e300), "-1e300");
        assert_eq!(shown(1.7e-10), "1.7e-10");
        assert_eq!(shown(0.9), "0.9");
        assert_eq!(shown(-1.0), "-1");
        assert_eq!(shown(123456789.5), "123456789.5");
        assert_eq!(shown(f64::NAN), "NaN");
    }

    #[test]
    fn fixed_never_prints_negative_zero() {
        use super::fixed;
        assert_eq!(fixed(-0.0, 2), "0.00");
        assert_eq!(fixed(-0.004, 2), "0.00");
        assert_eq!(fixed(-0.0, 0), "0");
        assert_eq!(fixed(-0.006, 2), "-0.01");
        assert_eq!(fixed(1.234, 1), "1.2");
        assert_eq!(fixed(f64::NAN, 2), "NaN");
    }

    use super::*;

    #[test]
    fn sizes_binary_and_decimal() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("256M"), Ok(256 << 20));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("1.5G"), Ok(3 << 29));
        assert_eq!(parse_size("500MB"), Ok(500_000_000));
        assert_eq!(parse_size(" 128 MiB "), Ok(128 << 20));
    }

    #[test]
    fn rates_bytes_and_bits() {
        assert_eq!(parse_rate("50MB/s"), Ok(50_000_000));
        assert_eq!(parse_rate("100MiB/s"), Ok(100 << 20));
        assert_eq!(parse_rate("1Gbit/s"), Ok(125_000_000));
        assert_eq!(parse_rate("1000"), Ok(1000));
        for (text, bytes_per_s) in [
            ("8B/s", 8),
            ("8kB/s", 8_000),
            ("8KB/s", 8_000),
            ("8MB/s", 8_000_000),
            ("8GB/s", 8_000_000_000),
            ("8KiB/s", 8 << 10),
            ("8MiB/s", 8 << 20),
            ("8GiB/s", 8 << 30),
            ("8bit/s", 1),
            ("8kbit/s", 1_000),
            ("8Mbit/s", 1_000_000),
            ("8Gbit/s", 1_000_000_000),
            ("8 MB/s", 8_000_000),
            ("8MB", 8_000_000),
        ] {
            assert_eq!(parse_rate(text), Ok(bytes_per_s), "{text}");
        }
    }

    /// tc(8)'s units, read exactly as tc reads them and in any case: `bit` forms are bits per
    /// second, `bps` forms BYTES per second.
    #[test]
    fn rates_in_tcs_notation() {
        for (text, bytes_per_s) in [
            ("300mbit", 37_500_000),
            ("300Mbit", 37_500_000),
            ("300MBIT", 37_500_000),
            ("8bit", 1),
            ("8kbit", 1_000),
            ("8gbit", 1_000_000_000),
            ("8tbit", 1_000_000_000_000),
            ("8bps", 8),
            ("8kbps", 8_000),
            ("800mbps", 800_000_000),
            ("800Mbps", 800_000_000),
            ("800MBps", 800_000_000),
            ("8gbps", 8_000_000_000),
            ("8tbps", 8_000_000_000_000),
            ("8kibit", 1_024),
            ("8MiBps", 8 << 20),
        ] {
            assert_eq!(parse_rate(text), Ok(bytes_per_s), "{text}");
        }
    }

    #[test]
    fn an_unknown_rate_unit_lists_the_accepted_ones_and_says_what_mbps_is() {
        let msg = parse_rate("5 furlongs/s").unwrap_err().to_string();
        for unit in [
            "kbit",
            "mbps",
            "MB/s",
            "MiB/s",
            "Mbit/s",
            "bare number is bytes/s",
        ] {
            assert!(msg.contains(unit), "{unit}: {msg}");
        }
        assert!(
            msg.contains(
                "mbps is megabytes per second, as tc reads it; write 300mbit or 300Mbit/s for megabits"
            ),
            "{msg}"
        );
        for bad in ["8Mbps/s", "8/s", "8MB/h", "8xbit"] {
            assert!(
                matches!(parse_rate(bad), Err(UnitError::UnknownUnit { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn a_lone_b_is_ambiguous_not_guessed() {
        for bad in ["800Mb/s", "8kb", "8b/s", "1Gb"] {
            let err = parse_rate(bad).unwrap_err();
            assert!(matches!(err, UnitError::Ambiguous { .. }), "{bad}: {err}");
        }
        let msg = parse_rate("800Mb/s").unwrap_err().to_string();
        assert!(msg.contains("MB/s") && msg.contains("Mbit/s"), "{msg}");
    }

    #[test]
    fn readings_say_when_they_round() {
        assert_eq!(
            read_rate("1bit/s"),
            Ok(Reading {
                value: 0,
                rounded: true
            })
        );
        assert_eq!(read_rate("1.1MB/s").map(|r| r.rounded), Ok(false));
        assert_eq!(
            read_size("1.5"),
            Ok(Reading {
                value: 2,
                rounded: true
            })
        );
        let r = read_rate("1bit/s").expect("reads");
        assert_eq!(
            r.note("1bit/s", "bytes/s").as_deref(),
            Some("rounds to 0 bytes/s")
        );
        let r = read_size("48M").expect("reads");
        assert_eq!(r.note("48M", "bytes").as_deref(), Some("is 50331648 bytes"));
        assert_eq!(
            read_size("4096").expect("reads").note("4096", "bytes"),
            None
        );
        assert_eq!(
            refusal(
                "--bandwidth",
                "1bit/s",
                Some("rounds to 0 bytes/s"),
                "expected at least 125000 bytes/s (1 Mbit/s)"
            ),
            "--bandwidth 1bit/s rounds to 0 bytes/s; expected at least 125000 bytes/s (1 Mbit/s)"
        );
        assert_eq!(
            refusal("vcpus", "0", None, "expected 1 to 64"),
            "vcpus 0: expected 1 to 64"
        );
        assert!(matches!(
            parse_size("18446744073709551616"),
            Err(UnitError::OutOfRange { .. })
        ));
        // Out of range says which range.
        assert_eq!(
            parse_size("99999999999999999999").unwrap_err().to_string(),
            "'99999999999999999999' is out of range for a size: expected 0 to 16 EiB (below \
             18446744073709551616 bytes)"
        );
    }

    #[test]
    fn bad_input_is_a_clear_error() {
        assert!(matches!(
            parse_size(""),
            Err(UnitError::Empty { what: "size", .. })
        ));
        assert!(matches!(
            parse_size("abc"),
            Err(UnitError::Malformed { .. })
        ));
        assert!(matches!(
            parse_size("12XB"),
            Err(UnitError::UnknownUnit { .. })
        ));
        assert!(matches!(
            parse_size("1.2.3M"),
            Err(UnitError::Malformed { .. })
        ));
        let msg = parse_rate("fast").unwrap_err().to_string();
        assert!(msg.starts_with("'fast' is not a rate"), "{msg}");
        assert!(msg.contains("300mbit"), "{msg}");
    }

    #[test]
    fn formatting() {
        assert_eq!(format_size(256 << 20), "256MiB");
        assert_eq!(format_size(1536), "1.5KiB");
        assert_eq!(format_rate(50_000_000), "50.0MB/s");
    }
}
