//! Go's `time.ParseDuration`, which kubelet flags and KubeletConfiguration
//! fields use (`20s`, `1m30s`): the agent and the user tools read the same.

use std::time::Duration;

/// Why a Go duration string did not parse; Display matches Go's `time`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GoDurationError {
    #[error("time: invalid duration {0:?}")]
    Invalid(String),
    #[error("time: missing unit in duration {0:?}")]
    MissingUnit(String),
    #[error("time: unknown unit {unit:?} in duration {input:?}")]
    UnknownUnit { unit: String, input: String },
    #[error("time: invalid duration {0:?}: must not be negative")]
    Negative(String),
}

/// Go's `time.ParseDuration` for non-negative durations: a sequence of
/// decimal numbers with units (`ns`, `us`/`µs`, `ms`, `s`, `m`, `h`), such
/// as `20s`, `1m30s`, `1.5h`; a bare `0` is zero.
pub fn parse_go_duration(input: &str) -> Result<Duration, GoDurationError> {
    let invalid = || GoDurationError::Invalid(input.to_owned());
    let (negative, mut rest) = match input.as_bytes().first() {
        Some(b'-') => (true, &input[1..]),
        Some(b'+') => (false, &input[1..]),
        _ => (false, input),
    };
    if rest == "0" {
        return Ok(Duration::ZERO);
    }
    if rest.is_empty() {
        return Err(invalid());
    }
    let mut total: u128 = 0;
    while !rest.is_empty() {
        let int_len = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        let (int, after) = rest.split_at(int_len);
        let (frac, after) = match after.strip_prefix('.') {
            Some(a) => a.split_at(a.find(|c: char| !c.is_ascii_digit()).unwrap_or(a.len())),
            None => ("", after),
        };
        if int.is_empty() && frac.is_empty() {
            return Err(invalid());
        }
        let unit_len = after
            .find(|c: char| c == '.' || c.is_ascii_digit())
            .unwrap_or(after.len());
        let (unit, after) = after.split_at(unit_len);
        let nanos_per_unit: u128 = match unit {
            "" => return Err(GoDurationError::MissingUnit(input.to_owned())),
            "ns" => 1,
            "us" | "\u{b5}s" | "\u{3bc}s" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60 * 1_000_000_000,
            "h" => 3600 * 1_000_000_000,
            other => {
                return Err(GoDurationError::UnknownUnit {
                    unit: other.to_owned(),
                    input: input.to_owned(),
                });
            }
        };
        // Like Go, the fraction is truncated to whole nanoseconds.
        let int: u128 = if int.is_empty() {
            0
        } else {
            int.parse().map_err(|_| invalid())?
        };
        let mut value = int.checked_mul(nanos_per_unit).ok_or_else(invalid)?;
        let frac = &frac[..frac.len().min(20)];
        if !frac.is_empty() {
            let digits: u128 = frac.parse().map_err(|_| invalid())?;
            value += digits * nanos_per_unit / 10u128.pow(frac.len() as u32);
        }
        total = total
            .checked_add(value)
            .filter(|t| *t <= i64::MAX as u128)
            .ok_or_else(invalid)?;
        rest = after;
    }
    if negative && total != 0 {
        return Err(GoDurationError::Negative(input.to_owned()));
    }
    let nanos = u64::try_from(total).map_err(|_| invalid())?;
    Ok(Duration::from_nanos(nanos))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations() {
        let d = |s: &str| parse_go_duration(s).unwrap();
        assert_eq!(d("20s"), Duration::from_secs(20));
        assert_eq!(d("1m30s"), Duration::from_secs(90));
        assert_eq!(d("1.5h"), Duration::from_secs(5400));
        assert_eq!(d("0"), Duration::ZERO);
        assert_eq!(d("+5m"), Duration::from_secs(300));
        assert_eq!(d("-0s"), Duration::ZERO);
        assert_eq!(d("300ms"), Duration::from_millis(300));
        assert_eq!(d("1h2m3s4ms5us6ns"), Duration::new(3723, 4_005_006));
        assert_eq!(d("2µs"), Duration::from_micros(2));
        assert_eq!(d(".5s"), Duration::from_millis(500));
        assert_eq!(d("1.0000000001s"), Duration::from_secs(1));
    }

    #[test]
    fn go_duration_errors_read_like_go() {
        let e = |s: &str| parse_go_duration(s).unwrap_err().to_string();
        assert_eq!(e(""), r#"time: invalid duration """#);
        assert_eq!(e("abc"), r#"time: invalid duration "abc""#);
        assert_eq!(e("20"), r#"time: missing unit in duration "20""#);
        assert_eq!(e("5d"), r#"time: unknown unit "d" in duration "5d""#);
        assert_eq!(
            e("-5s"),
            r#"time: invalid duration "-5s": must not be negative"#
        );
        assert_eq!(e("."), r#"time: invalid duration ".""#);
        assert_eq!(e("s"), r#"time: invalid duration "s""#);
        assert!(parse_go_duration("9999999999h").is_err());
    }
}
