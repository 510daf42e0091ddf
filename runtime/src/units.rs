//! Human units on the command line: `500ms`, `30s`, `2m`, `1h`, `7d`;
//! `64KiB`, `256MiB`, `1GiB` (or plain bytes).

use std::time::Duration;

use crate::ops::{OpError, OpResult};

/// Splits `30s` into (30, "s").
fn split(s: &str) -> (&str, &str) {
    s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()))
}

pub fn duration(s: &str) -> OpResult<Duration> {
    let bad = || OpError::Usage(format!("duration {s:?}: use e.g. 500ms, 30s, 2m, 1h or 7d"));
    let (num, unit) = split(s);
    let n: u64 = num.parse().map_err(|_| bad())?;
    let ms = match unit {
        "ms" => 1,
        "" | "s" => 1000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(bad()),
    };
    n.checked_mul(ms)
        .filter(|v| *v > 0)
        .map(Duration::from_millis)
        .ok_or_else(bad)
}

pub fn size(s: &str) -> OpResult<usize> {
    let bad = || OpError::Usage(format!("size {s:?}: use e.g. 64KiB, 256MiB or 1GiB"));
    let (num, unit) = split(s);
    let n: usize = num.parse().map_err(|_| bad())?;
    let scale = match unit {
        "" | "B" => 1,
        "KiB" | "K" | "k" => 1 << 10,
        "MiB" | "M" => 1 << 20,
        "GiB" | "G" => 1 << 30,
        _ => return Err(bad()),
    };
    n.checked_mul(scale).filter(|v| *v > 0).ok_or_else(bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_sizes_parse() {
        assert_eq!(duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(duration("45").unwrap(), Duration::from_secs(45));
        assert_eq!(duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(duration("7d").unwrap(), Duration::from_secs(604_800));
        for bad in ["", "1y", "h", "0s", "-5m", "1.5s"] {
            assert!(duration(bad).is_err(), "{bad}");
        }
        assert_eq!(size("64KiB").unwrap(), 65536);
        assert_eq!(size("256MiB").unwrap(), 256 << 20);
        assert_eq!(size("1G").unwrap(), 1 << 30);
        assert_eq!(size("4096").unwrap(), 4096);
        for bad in ["", "1TB", "0", "MiB"] {
            assert!(size(bad).is_err(), "{bad}");
        }
    }
}
