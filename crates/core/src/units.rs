//! Parsing and printing of sizes (`256M`, `1GiB`) and rates (`50MB/s`, `1Gbit/s`).
//!
//! Conventions, chosen to match what operators type and what QEMU reports:
//! - sizes: a bare suffix `K`, `M`, `G`, `T` and the `KiB`/`MiB`/`GiB`/`TiB` forms are binary
//!   (memory sizes are always meant that way); `kB`, `MB`, `GB`, `TB` are decimal.
//! - rates: `B/s`, `kB/s`, `MB/s`, `GB/s` are decimal bytes per second (as network links are sold);
//!   `KiB/s`, `MiB/s`, `GiB/s` binary; `bit/s`, `kbit/s`, `Mbit/s`, `Gbit/s` decimal bits.
//!   A bare number is bytes per second.

use thiserror::Error;

/// A size or rate that could not be understood.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum UnitError {
    #[error("empty {what}")]
    Empty { what: &'static str },
    #[error("'{input}' is not a {what}: expected a number followed by an optional unit ({hint})")]
    Malformed {
        input: String,
        what: &'static str,
        hint: &'static str,
    },
    #[error("'{input}': unknown unit '{unit}' for a {what} ({hint})")]
    UnknownUnit {
        input: String,
        unit: String,
        what: &'static str,
        hint: &'static str,
    },
    #[error("'{input}' is out of range for a {what}")]
    OutOfRange { input: String, what: &'static str },
}

const SIZE_HINT: &str = "e.g. 256M, 1GiB, 4096, 500MB";
const RATE_HINT: &str = "e.g. 50MB/s, 100MiB/s, 1Gbit/s";

/// Splits `"12.5 MB"` into `(12.5, "MB")`.
fn split_number(
    input: &str,
    what: &'static str,
    hint: &'static str,
) -> Result<(f64, String), UnitError> {
    let trimmed = input.trim();
    if trimmed.is_empty() {
        return Err(UnitError::Empty { what });
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

fn to_u64(value: f64, input: &str, what: &'static str) -> Result<u64, UnitError> {
    if !value.is_finite() || value < 0.0 || value > u64::MAX as f64 {
        return Err(UnitError::OutOfRange {
            input: input.to_string(),
            what,
        });
    }
    Ok(value.round() as u64)
}

/// Parses a size in bytes.
pub fn parse_size(input: &str) -> Result<u64, UnitError> {
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
    to_u64(number * multiplier, input, what)
}

/// Parses a rate in bytes per second.
pub fn parse_rate(input: &str) -> Result<u64, UnitError> {
    let what = "rate";
    let (number, unit) = split_number(input, what, RATE_HINT)?;
    let unit = unit
        .strip_suffix("/s")
        .or_else(|| unit.strip_suffix("ps"))
        .unwrap_or(&unit);
    let multiplier: f64 = match unit {
        "" | "B" => 1.0,
        "kB" | "KB" => 1e3,
        "MB" => 1e6,
        "GB" => 1e9,
        "KiB" => 1024.0,
        "MiB" => 1024.0 * 1024.0,
        "GiB" => 1024.0 * 1024.0 * 1024.0,
        "bit" | "b" => 1.0 / 8.0,
        "kbit" | "Kbit" | "kb" => 1e3 / 8.0,
        "Mbit" | "Mb" => 1e6 / 8.0,
        "Gbit" | "Gb" => 1e9 / 8.0,
        _ => {
            return Err(UnitError::UnknownUnit {
                input: input.to_string(),
                unit: unit.to_string(),
                what,
                hint: RATE_HINT,
            })
        }
    };
    to_u64(number * multiplier, input, what)
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

#[cfg(test)]
mod tests {
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
        assert_eq!(parse_rate("800Mbps"), Ok(100_000_000));
        assert_eq!(parse_rate("1000"), Ok(1000));
    }

    #[test]
    fn bad_input_is_a_clear_error() {
        assert_eq!(parse_size(""), Err(UnitError::Empty { what: "size" }));
        assert!(matches!(
            parse_size("abc"),
            Err(UnitError::Malformed { .. })
        ));
        assert!(matches!(
            parse_size("12XB"),
            Err(UnitError::UnknownUnit { .. })
        ));
        assert!(matches!(
            parse_rate("5 furlongs/s"),
            Err(UnitError::UnknownUnit { .. })
        ));
        assert!(matches!(
            parse_size("1.2.3M"),
            Err(UnitError::Malformed { .. })
        ));
        let msg = parse_rate("fast").unwrap_err().to_string();
        assert!(msg.contains("50MB/s"), "{msg}");
    }

    #[test]
    fn formatting() {
        assert_eq!(format_size(256 << 20), "256MiB");
        assert_eq!(format_size(1536), "1.5KiB");
        assert_eq!(format_rate(50_000_000), "50.0MB/s");
    }
}
