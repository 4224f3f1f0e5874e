//! Rates and durations as people write them: `5M`, `2 Mbit/s`, `600s`, `12h`.

/// Parses a rate in bit/s: `5M`, `5 Mbit`, `5Mbit/s`, `2.5M`, `5000k`, `1G`, `100000` (bit/s).
pub fn parse_rate(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let value: f64 = num
        .parse()
        .map_err(|_| format!("`{text}` is not a rate (write e.g. `5M`, `2 Mbit`, `500k`)"))?;
    let unit = unit.trim();
    let lower = unit.to_ascii_lowercase();
    if unit.ends_with('B') || lower.ends_with("byte") || lower.ends_with("bytes") {
        return Err(format!(
            "`{text}`: rates are in bits (write `5M` or `5 Mbit`), not bytes"
        ));
    }
    // `5M`, `5Mbit`, `5 Mbit/s`, `5mbps`, `5Mbits`: the prefix is what is left.
    let stem = ["bits/s", "bit/s", "bps", "bits", "bit", "b/s"]
        .iter()
        .find_map(|suffix| lower.strip_suffix(suffix))
        .unwrap_or(&lower)
        .trim();
    let factor = match stem {
        "" | "b" => 1.0,
        "k" => 1e3,
        "m" => 1e6,
        "g" => 1e9,
        _ => {
            return Err(format!(
                "`{text}` has an unknown unit `{unit}` (use k, M or G, e.g. `5M`)"
            ))
        }
    };
    let bits = value * factor;
    if !(1.0..=1e12).contains(&bits) {
        return Err(format!("`{text}` is out of range (1 bit/s to 1 Tbit/s)"));
    }
    Ok(bits.round() as u64)
}

/// Formats bit/s the way tc and people read it: `2mbit`, `106kbit`, `1500bit`.
pub fn format_rate(bits: u64) -> String {
    if bits >= 1_000_000 && bits % 1_000_000 == 0 {
        format!("{}mbit", bits / 1_000_000)
    } else if bits >= 1_000 && bits % 1_000 == 0 {
        format!("{}kbit", bits / 1_000)
    } else {
        format!("{bits}bit")
    }
}

/// Parses a duration in whole seconds: `600s`, `10m`, `12h`, `1d`, `300` (seconds).
pub fn parse_duration(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let value: u64 = num
        .parse()
        .map_err(|_| format!("`{text}` is not a duration (write e.g. `600s`, `10m`, `12h`)"))?;
    let factor = match unit.trim() {
        "" | "s" => 1,
        "m" | "min" => 60,
        "h" => 3600,
        "d" => 86400,
        other => {
            return Err(format!(
                "`{text}` has an unknown unit `{other}` (use s, m, h or d)"
            ))
        }
    };
    value
        .checked_mul(factor)
        .filter(|s| *s > 0)
        .ok_or_else(|| format!("`{text}` is out of range"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates() {
        assert_eq!(parse_rate("5M"), Ok(5_000_000));
        assert_eq!(parse_rate("5 Mbit"), Ok(5_000_000));
        assert_eq!(parse_rate("2Mbit/s"), Ok(2_000_000));
        assert_eq!(parse_rate("2.5M"), Ok(2_500_000));
        assert_eq!(parse_rate("500k"), Ok(500_000));
        assert_eq!(parse_rate("500kbps"), Ok(500_000));
        assert_eq!(parse_rate("1G"), Ok(1_000_000_000));
        assert_eq!(parse_rate("100000"), Ok(100_000));
        assert!(parse_rate("fast").unwrap_err().contains("not a rate"));
        assert!(parse_rate("5MB").unwrap_err().contains("bytes"));
        assert!(parse_rate("5 furlongs")
            .unwrap_err()
            .contains("unknown unit"));
        assert!(parse_rate("0").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("600s"), Ok(600));
        assert_eq!(parse_duration("10m"), Ok(600));
        assert_eq!(parse_duration("12h"), Ok(43200));
        assert_eq!(parse_duration("300"), Ok(300));
        assert!(parse_duration("5 fortnights").is_err());
        assert!(parse_duration("0s").is_err());
    }

    #[test]
    fn rate_format() {
        assert_eq!(format_rate(2_000_000), "2mbit");
        assert_eq!(format_rate(106_000), "106kbit");
        assert_eq!(format_rate(1_500), "1500bit");
        assert_eq!(format_rate(1_999), "1999bit");
    }
}
