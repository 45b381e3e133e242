//! The one place the CLI's tables format a measured number: fixed places, and never `-0.00`
//! (an idle host's demand can come back as a tiny negative from a subtraction of counters).

/// `v` with `places` decimals; a value that rounds to zero prints unsigned (`0.00`, not `-0.00`).
pub fn fixed(v: f64, places: usize) -> String {
    let s = format!("{v:.places$}");
    match s.strip_prefix('-') {
        Some(rest) if rest.chars().all(|c| c == '0' || c == '.') => rest.to_string(),
        _ => s,
    }
}

#[cfg(test)]
mod tests {
    use super::fixed;

    #[test]
    fn negative_zero_and_tiny_negatives_print_unsigned() {
        assert_eq!(fixed(-0.0, 2), "0.00");
        assert_eq!(fixed(-0.004, 2), "0.00");
        assert_eq!(fixed(-0.0, 0), "0");
        assert_eq!(fixed(-0.006, 2), "-0.01");
        assert_eq!(fixed(1.234, 1), "1.2");
        assert_eq!(fixed(f64::NAN, 2), "NaN");
    }
}
