//! Parsing of human sizes (`64KiB`, `1M`) and rates (`200mbit`, `25MB/s`).

/// Parses a byte size: a number with an optional suffix K/KB/KiB, M, G
/// (all binary: 1K = 1024), case-insensitive.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim().to_ascii_lowercase();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a size (try 64KiB, 1MiB)"))?;
    let mult = match unit.trim() {
        "" | "b" => 1u64,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        other => {
            return Err(format!(
                "unknown size unit {other:?} in {s:?} (use K, M or G)"
            ));
        }
    };
    Ok((n * mult as f64).round() as u64)
}

/// Parses a rate into bytes per second: `200mbit`, `1gbit`, `500kbit`
/// (decimal bits), or `25MB/s`, `25M` (binary bytes per second).
pub fn parse_rate(s: &str) -> Result<u64, String> {
    let t = s.trim().to_ascii_lowercase();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a rate (try 200mbit or 25MB/s)"))?;
    let unit = unit.trim().trim_end_matches("/s").trim_end_matches("ps");
    let bytes_per_sec = match unit {
        "bit" => n / 8.0,
        "kbit" => n * 1e3 / 8.0,
        "mbit" => n * 1e6 / 8.0,
        "gbit" => n * 1e9 / 8.0,
        _ => parse_size(&format!("{n}{unit}"))? as f64,
    };
    if bytes_per_sec < 1.0 {
        return Err(format!("rate {s:?} is below 1 byte per second"));
    }
    Ok(bytes_per_sec as u64)
}

/// Parses a duration: `20ms`, `1.5s`, `500us`, `0` (a bare number is ms).
pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let t = s.trim().to_ascii_lowercase();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration (try 20ms or 1.5s)"))?;
    let secs = match unit.trim() {
        "" | "ms" => n / 1e3,
        "us" | "µs" => n / 1e6,
        "s" => n,
        other => {
            return Err(format!(
                "unknown duration unit {other:?} in {s:?} (use us, ms or s)"
            ));
        }
    };
    Ok(std::time::Duration::from_secs_f64(secs))
}

/// Parses a probability written as a percentage (`5%`) or a fraction (`0.05`).
pub fn parse_percent(s: &str) -> Result<f64, String> {
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
        assert_eq!(parse_size("64KiB"), Ok(65536));
        assert_eq!(parse_size("1m"), Ok(1 << 20));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("1.5G"), Ok(3 << 29));
        assert!(parse_size("lots").is_err());
        assert!(parse_size("3 parsecs").is_err());
    }

    #[test]
    fn durations_and_percentages() {
        assert_eq!(
            parse_duration("20ms"),
            Ok(std::time::Duration::from_millis(20))
        );
        assert_eq!(
            parse_duration("1.5s"),
            Ok(std::time::Duration::from_millis(1500))
        );
        assert_eq!(
            parse_duration("500us"),
            Ok(std::time::Duration::from_micros(500))
        );
        assert!(parse_duration("soon").is_err());
        assert_eq!(parse_percent("5%"), Ok(0.05));
        assert_eq!(parse_percent("0.2"), Ok(0.2));
        assert!(parse_percent("150%").unwrap_err().contains("outside"));
    }

    #[test]
    fn rates() {
        assert_eq!(parse_rate("200mbit"), Ok(25_000_000));
        assert_eq!(parse_rate("1gbit"), Ok(125_000_000));
        assert_eq!(parse_rate("25MB/s"), Ok(25 << 20));
        assert!(parse_rate("0bit").is_err());
        assert!(parse_rate("fast").is_err());
    }
}
