//! Human units for link settings, shared by scenario files and command-line
//! flags: sizes (`64MiB`), rates (`200mbit`, `25MB/s`), durations (`20ms`)
//! and percentages (`5%`). Every error names the value and an example.

use std::time::Duration;

/// Splits `"200mbit"` into `(200.0, "mbit")`, lower-cased; NaN if no number.
fn split(s: &str) -> (f64, String) {
    let t = s.trim().to_ascii_lowercase();
    let at = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '-'))
        .unwrap_or(t.len());
    (
        t[..at].parse().unwrap_or(f64::NAN),
        t[at..].trim().to_owned(),
    )
}

/// Bytes: `4096`, `64KiB`, `1M`, `1.5G` (K, M, G are binary: 1K = 1024).
pub fn size(s: &str) -> Result<u64, String> {
    let (n, unit) = split(s);
    let mult: u64 = match unit.as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        _ => return Err(format!("{s:?} is not a size (try 64MiB)")),
    };
    if n.is_nan() || n < 0.0 {
        return Err(format!("{s:?} is not a size (try 64MiB)"));
    }
    Ok((n * mult as f64).round() as u64)
}

/// Bits per second: `200mbit`, `1gbit`, `500kbit`, `100bit` (decimal), or
/// bytes per second: `25MB/s`, `25M` (binary, as [`size`]). Must be positive.
pub fn rate_bits(s: &str) -> Result<u64, String> {
    let (n, unit) = split(s);
    let bits = match unit.trim_end_matches("/s").trim_end_matches("ps") {
        "bit" | "b" if unit.starts_with("bit") => n,
        "kbit" => n * 1e3,
        "mbit" => n * 1e6,
        "gbit" => n * 1e9,
        bytes => {
            let per_sec = size(&format!("{n}{bytes}"))
                .map_err(|_| format!("{s:?} is not a rate (try 200mbit or 25MB/s)"))?;
            per_sec as f64 * 8.0
        }
    };
    if bits.is_nan() || bits < 1.0 {
        return Err(format!("{s:?} must be a positive rate (try 200mbit)"));
    }
    Ok(bits as u64)
}

/// `20ms`, `1.5s`, `500us`; a bare number is milliseconds. Not negative.
pub fn duration(s: &str) -> Result<Duration, String> {
    let (n, unit) = split(s);
    let secs = match unit.as_str() {
        "" | "ms" => n / 1e3,
        "us" | "µs" => n / 1e6,
        "s" => n,
        _ => return Err(format!("{s:?} is not a duration (try 20ms)")),
    };
    if secs.is_nan() || secs < 0.0 {
        return Err(format!("{s:?} is not a non-negative duration (try 20ms)"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// A probability written as `5%` or as a fraction `0.05`; within 0..=1.
pub fn percent(s: &str) -> Result<f64, String> {
    let t = s.trim();
    let p = match t.strip_suffix('%') {
        Some(num) => num.trim().parse::<f64>().map(|v| v / 100.0),
        None => t.parse::<f64>(),
    }
    .map_err(|_| format!("{s:?} is not a percentage (try 5%)"))?;
    if !(0.0..=1.0).contains(&p) {
        return Err(format!("{s:?} is outside 0%..100%"));
    }
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(size("64KiB"), Ok(65536));
        assert_eq!(size("1m"), Ok(1 << 20));
        assert_eq!(size("4096"), Ok(4096));
        assert_eq!(size("1.5G"), Ok(3 << 29));
        for bad in ["lots", "3 parsecs", "-1M"] {
            assert!(size(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn rates() {
        assert_eq!(rate_bits("200mbit"), Ok(200_000_000));
        assert_eq!(rate_bits("1gbit"), Ok(1_000_000_000));
        assert_eq!(rate_bits("25MB/s"), Ok(25 << 23));
        assert_eq!(rate_bits("100bit"), Ok(100));
        for bad in ["0bit", "-5mbit", "fast", "0.1bit"] {
            assert!(rate_bits(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn durations_and_percentages() {
        assert_eq!(duration("20ms"), Ok(Duration::from_millis(20)));
        assert_eq!(duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(duration("500us"), Ok(Duration::from_micros(500)));
        assert_eq!(duration("7"), Ok(Duration::from_millis(7)));
        assert!(duration("soon").is_err());
        assert!(duration("-1ms").is_err());
        assert_eq!(percent("5%"), Ok(0.05));
        assert_eq!(percent("0.2"), Ok(0.2));
        assert!(percent("150%").unwrap_err().contains("outside"));
        assert!(percent("lots").is_err());
    }
}
