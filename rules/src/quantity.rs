//! Kubernetes resource quantities (`resource.Quantity`), read exactly as
//! apimachinery reads them.
//!
//! Grammar (apimachinery's `quantity.go`):
//!
//! ```text
//! <quantity>        ::= <signedNumber><suffix>
//! <signedNumber>    ::= <number> | <sign><number>
//! <number>          ::= <digits> | <digits>.<digits> | <digits>. | .<digits>
//! <sign>            ::= "+" | "-"
//! <suffix>          ::= <binarySI> | <decimalExponent> | <decimalSI>
//! <binarySI>        ::= Ki | Mi | Gi | Ti | Pi | Ei
//! <decimalSI>       ::= n | u | m | "" | k | M | G | T | P | E
//! <decimalExponent> ::= "e" <signedInteger> | "E" <signedInteger>
//! ```
//!
//! Values are exact (a digit string, a power of ten and a power of two; never a
//! float). Like apimachinery, a value is rounded *up* (away from zero) to the
//! requested scale: `MilliValue()` of `"0.0001"` is 1, `Value()` of `"100m"` is 1.
//!
//! Where this differs from Go, on purpose:
//! - Go's hand-written scanner accepts a bare suffix or sign (`"Mi"`, `"k"`, `"-"`)
//!   as zero (kubernetes/apimachinery#165); that contradicts the documented grammar,
//!   which needs at least one digit, and here it is an error.
//! - A value whose magnitude exceeds 2^63-1 units is an error here; Go caps binary
//!   quantities and wraps decimal ones in `Value()`.
//! - Surrounding whitespace is trimmed, as Go's `Quantity.UnmarshalJSON` does
//!   (manifests reach us through JSON/YAML); whitespace inside is an error.

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

/// The suffixes and exponents a quantity may carry, for error messages.
const EXPECTED: &str = "expected a number with an optional suffix (m, k, M, G, T, P, E, Ki, Mi, Gi, Ti, Pi, Ei) \
                        or decimal exponent (e3, E-3), e.g. \"500m\", \"0.5\", \"128Mi\", \"1e3\"";

/// Nano-units per unit: apimachinery keeps every parsed value rounded up to 1e-9.
pub const NANOS_PER_UNIT: i128 = 1_000_000_000;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuantityError {
    #[error("{value:?} is not a valid quantity: {reason}; {EXPECTED}")]
    Invalid { value: String, reason: String },
    #[error("{value:?} is out of range: a quantity may not exceed 2^63-1 in magnitude")]
    OutOfRange { value: String },
    #[error("{value:?} is negative: a resource amount must be greater than or equal to 0")]
    Negative { value: String },
}

/// A parsed quantity: `(-1)^negative × digits × 10^exp10 × 2^exp2`, exactly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedQuantity {
    negative: bool,
    /// Significant decimal digits (ASCII), no leading or trailing zeros; empty for zero.
    digits: Vec<u8>,
    exp10: i64,
    exp2: u32,
}

impl ParsedQuantity {
    pub fn is_zero(&self) -> bool {
        self.digits.is_empty()
    }

    pub fn is_negative(&self) -> bool {
        self.negative && !self.is_zero()
    }

    /// `ceil(|x| × 10^scale)` with the sign of `x`: apimachinery's `ScaledValue`
    /// rounding (up, away from zero). `None` if the magnitude doesn't fit an `i128`.
    fn scaled(&self, scale: i64) -> Option<i128> {
        if self.digits.is_empty() {
            return Some(0);
        }
        let t = self.exp10.checked_add(scale)?;
        // |x| × 10^scale >= 10^(len - 1 + t): anything past 10^38 overflows i128.
        if (self.digits.len() as i64 - 1).saturating_add(t) > 38 {
            return None;
        }
        let m = mul_pow2(&self.digits, self.exp2);
        let magnitude: u128 = if t >= 0 {
            let n = decimal_to_u128(&m)?;
            n.checked_mul(10u128.checked_pow(u32::try_from(t).ok()?)?)?
        } else {
            // Dividing by 10^s splits the digit string; any non-zero digit in the
            // dropped part rounds the result up.
            let s = usize::try_from(t.unsigned_abs()).unwrap_or(usize::MAX);
            if s >= m.len() {
                1 // 0 < |x| × 10^scale < 1
            } else {
                let (int, frac) = m.split_at(m.len() - s);
                let n = decimal_to_u128(int)?;
                n + u128::from(frac.iter().any(|&d| d != b'0'))
            }
        };
        let magnitude = i128::try_from(magnitude).ok()?;
        Some(if self.negative { -magnitude } else { magnitude })
    }
}

/// Multiplies a decimal digit string by 2^exp2 (exp2 <= 60).
fn mul_pow2(digits: &[u8], exp2: u32) -> Vec<u8> {
    if exp2 == 0 {
        return digits.to_vec();
    }
    let factor: u128 = 1u128 << exp2;
    let mut out = Vec::with_capacity(digits.len() + 20);
    let mut carry: u128 = 0;
    for &d in digits.iter().rev() {
        let v = u128::from(d - b'0') * factor + carry;
        out.push(b'0' + (v % 10) as u8);
        carry = v / 10;
    }
    while carry > 0 {
        out.push(b'0' + (carry % 10) as u8);
        carry /= 10;
    }
    out.reverse();
    out
}

fn decimal_to_u128(digits: &[u8]) -> Option<u128> {
    digits.iter().try_fold(0u128, |acc, &d| {
        acc.checked_mul(10)?.checked_add(u128::from(d - b'0'))
    })
}

/// Parses a quantity string (see the module docs for the grammar).
pub fn parse(input: &str) -> Result<ParsedQuantity, QuantityError> {
    let invalid = |reason: String| QuantityError::Invalid {
        value: input.to_string(),
        reason,
    };
    let s = input.trim_ascii();
    if s.is_empty() {
        return Err(invalid("it is empty".into()));
    }
    let bytes = s.as_bytes();
    let mut pos = 0;
    let negative = match bytes[0] {
        b'-' => {
            pos = 1;
            true
        }
        b'+' => {
            pos = 1;
            false
        }
        _ => false,
    };
    let int_start = pos;
    while pos < bytes.len() && bytes[pos].is_ascii_digit() {
        pos += 1;
    }
    let int_part = &bytes[int_start..pos];
    let mut frac_part: &[u8] = &[];
    if pos < bytes.len() && bytes[pos] == b'.' {
        pos += 1;
        let frac_start = pos;
        while pos < bytes.len() && bytes[pos].is_ascii_digit() {
            pos += 1;
        }
        frac_part = &bytes[frac_start..pos];
    }
    if int_part.is_empty() && frac_part.is_empty() {
        return Err(invalid("it has no digits before its suffix".into()));
    }
    let suffix = &s[pos..];
    let (exp10, exp2) = interpret_suffix(suffix).map_err(invalid)?;

    // digits × 10^(exp10 - len(frac)), with leading and trailing zeros dropped.
    let mut digits: Vec<u8> = int_part.iter().chain(frac_part).copied().collect();
    let leading = digits.iter().take_while(|&&d| d == b'0').count();
    digits.drain(..leading);
    let trailing = digits.iter().rev().take_while(|&&d| d == b'0').count();
    digits.truncate(digits.len() - trailing);
    let exp10 = exp10 - frac_part.len() as i64 + trailing as i64;
    Ok(ParsedQuantity {
        negative,
        digits,
        exp10,
        exp2,
    })
}

/// apimachinery's suffixer: returns (power of ten, power of two).
fn interpret_suffix(suffix: &str) -> Result<(i64, u32), String> {
    Ok(match suffix {
        "" => (0, 0),
        "n" => (-9, 0),
        "u" => (-6, 0),
        "m" => (-3, 0),
        "k" => (3, 0),
        "M" => (6, 0),
        "G" => (9, 0),
        "T" => (12, 0),
        "P" => (15, 0),
        "E" => (18, 0),
        "Ki" => (0, 10),
        "Mi" => (0, 20),
        "Gi" => (0, 30),
        "Ti" => (0, 40),
        "Pi" => (0, 50),
        "Ei" => (0, 60),
        _ => {
            let exponent = suffix
                .strip_prefix(['e', 'E'])
                .filter(|rest| !rest.is_empty());
            match exponent {
                // A signed integer exponent; apimachinery keeps it as an int32.
                Some(rest)
                    if rest
                        .bytes()
                        .all(|b| b.is_ascii_digit() || b == b'+' || b == b'-') =>
                {
                    let e: i32 = rest
                        .parse()
                        .map_err(|_| format!("exponent {rest:?} is not a 32-bit integer"))?;
                    (i64::from(e), 0)
                }
                _ => return Err(format!("unknown suffix {suffix:?}")),
            }
        }
    })
}

fn out_of_range(q: &Quantity) -> QuantityError {
    QuantityError::OutOfRange { value: q.0.clone() }
}

/// The value in nano-units (1e-9), signed: apimachinery's internal precision, so
/// sums and comparisons made on these are exactly Go's `Add` and `Cmp`.
pub fn nano_value(q: &Quantity) -> Result<i128, QuantityError> {
    let v = parse(&q.0)?.scaled(9).ok_or_else(|| out_of_range(q))?;
    if v.unsigned_abs() > i64::MAX as u128 * NANOS_PER_UNIT as u128 {
        return Err(out_of_range(q));
    }
    Ok(v)
}

/// `Quantity.MilliValue()`: value × 1000, rounded up (away from zero).
pub fn milli_value(q: &Quantity) -> Result<i64, QuantityError> {
    let v = parse(&q.0)?.scaled(3).ok_or_else(|| out_of_range(q))?;
    i64::try_from(v).map_err(|_| out_of_range(q))
}

/// `Quantity.Value()`: the value rounded up (away from zero) to an integer.
pub fn value(q: &Quantity) -> Result<i64, QuantityError> {
    let v = parse(&q.0)?.scaled(0).ok_or_else(|| out_of_range(q))?;
    i64::try_from(v).map_err(|_| out_of_range(q))
}

fn non_negative(q: &Quantity, v: i64) -> Result<i64, QuantityError> {
    if v < 0 {
        return Err(QuantityError::Negative { value: q.0.clone() });
    }
    Ok(v)
}

/// A CPU amount in millicores (`MilliValue()`, rounded up: `"0.0001"` → 1).
/// Negative amounts are rejected, as the API server's validation does.
pub fn cpu_millis(q: &Quantity) -> Result<i64, QuantityError> {
    non_negative(q, milli_value(q)?)
}

/// A byte amount (`Value()`, rounded up: `"100m"` → 1). Negative amounts are rejected.
pub fn bytes(q: &Quantity) -> Result<i64, QuantityError> {
    non_negative(q, value(q)?)
}

/// `ceil(nanos / per)` for non-negative `nanos`, saturated to `i64`; converts an
/// exact sum of nano-values to milli (`per` = 1e6) or units (`per` = 1e9).
pub fn nanos_to_ceil(nanos: i128, per: i128) -> i64 {
    let v = if nanos <= 0 {
        nanos / per
    } else {
        (nanos + per - 1) / per
    };
    i64::try_from(v).unwrap_or(if v < 0 { i64::MIN } else { i64::MAX })
}

/// An exact amount written as apimachinery's canonical form would write a
/// sum: CPU in cores or millicores (`1500m`, `2`); other resources with a
/// binary suffix when a multiple of 1024 (`1280Mi`), else a decimal one
/// (`500M`).
pub fn format_nanos(nanos: i128, resource: &str) -> String {
    if nanos % NANOS_PER_UNIT != 0 || resource == "cpu" {
        let milli = nanos_to_ceil(nanos, 1_000_000);
        return if milli % 1000 == 0 {
            (milli / 1000).to_string()
        } else {
            format!("{milli}m")
        };
    }
    let units = i64::try_from(nanos / NANOS_PER_UNIT).unwrap_or(i64::MAX);
    if units % 1024 == 0 {
        format_binary_si(units)
    } else {
        format_decimal_si(units)
    }
}

/// How apimachinery prints a whole number of a `BinarySI` quantity
/// (`resource.NewQuantity(n, BinarySI).String()`): below 1024 in magnitude
/// as a plain number, else with the largest binary suffix that divides it.
pub fn format_binary_si(value: i64) -> String {
    if value.unsigned_abs() < 1024 {
        return value.to_string();
    }
    format_with_factors(value, 1024, &["", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"])
}

/// The same for a `DecimalSI` quantity: `5000` is `5k`.
pub fn format_decimal_si(value: i64) -> String {
    format_with_factors(value, 1000, &["", "k", "M", "G", "T", "P", "E"])
}

fn format_with_factors(value: i64, base: i64, suffixes: &[&str]) -> String {
    let mut n = value;
    let mut exp = 0;
    while n != 0 && n % base == 0 && exp + 1 < suffixes.len() {
        n /= base;
        exp += 1;
    }
    format!("{n}{}", suffixes[exp])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(s: &str) -> Quantity {
        Quantity(s.to_string())
    }

    #[test]
    fn sums_are_written_in_canonical_form() {
        let n = |s: &str| nano_value(&q(s)).unwrap();
        assert_eq!(format_nanos(n("768Mi") + n("512Mi"), "memory"), "1280Mi");
        assert_eq!(format_nanos(n("1") + n("500m"), "cpu"), "1500m");
        assert_eq!(format_nanos(n("500m") + n("500m"), "cpu"), "1");
        assert_eq!(format_nanos(n("250M") + n("250M"), "memory"), "500M");
        assert_eq!(format_nanos(n("3"), "pods"), "3");
        assert_eq!(format_nanos(0, "memory"), "0");
    }

    #[test]
    fn cpu_millis_of_literals() {
        let cases: &[(&str, i64)] = &[
            ("500m", 500),
            ("0.5", 500),
            ("2", 2000),
            ("1", 1000),
            ("0", 0),
            ("0m", 0),
            ("100m", 100),
            ("1.5", 1500),
            (".5", 500),
            ("5.", 5000),
            ("+1", 1000),
            ("0.0001", 1), // rounds up to the next milli
            ("0.0011", 2), // rounds up
            ("0.1m", 1),   // sub-milli rounds up
            ("1n", 1),     // nano rounds up to 1m
            ("1u", 1),
            ("1000u", 1),
            ("1001u", 2),
            ("250000000n", 250),
            ("1e3", 1_000_000),
            ("1E-3", 1),
            ("1e-1", 100),
            ("1e+2", 100_000),
            ("12e-1", 1200),
            ("1k", 1_000_000),
            ("0.001k", 1000),
            ("000.5", 500),
            ("0.500", 500),
            ("1Ki", 1_024_000),
            ("0.5Ki", 512_000),
        ];
        for (s, want) in cases {
            assert_eq!(cpu_millis(&q(s)), Ok(*want), "cpu_millis({s:?})");
        }
    }

    #[test]
    fn bytes_of_literals() {
        let cases: &[(&str, i64)] = &[
            ("128Mi", 134_217_728),
            ("1Ki", 1024),
            ("1Mi", 1_048_576),
            ("1Gi", 1_073_741_824),
            ("1Ti", 1_099_511_627_776),
            ("1Pi", 1_125_899_906_842_624),
            ("1Ei", 1_152_921_504_606_846_976),
            ("1.5Gi", 1_610_612_736),
            ("0.5Gi", 536_870_912),
            ("2.5Mi", 2_621_440),
            ("1G", 1_000_000_000),
            ("1.5G", 1_500_000_000),
            ("128M", 128_000_000),
            ("1k", 1000),
            ("1M", 1_000_000),
            ("1T", 1_000_000_000_000),
            ("1P", 1_000_000_000_000_000),
            ("1E", 1_000_000_000_000_000_000),
            ("1e3", 1000),
            ("1E3", 1000),
            ("1e0", 1),
            ("100m", 1),  // 0.1 byte rounds up to 1
            ("1500m", 2), // 1.5 bytes rounds up to 2
            ("1000m", 1),
            ("0.1", 1),
            ("1.0001Ki", 1025), // 1024.1024 rounds up
            ("123", 123),
            ("0", 0),
            ("9223372036854775807", i64::MAX),
            ("7Ei", 8_070_450_532_247_928_832),
            ("  64Mi\n", 67_108_864), // surrounding whitespace, as Go's UnmarshalJSON
        ];
        for (s, want) in cases {
            assert_eq!(bytes(&q(s)), Ok(*want), "bytes({s:?})");
        }
    }

    #[test]
    fn signed_values_round_away_from_zero() {
        assert_eq!(milli_value(&q("-1")), Ok(-1000));
        assert_eq!(milli_value(&q("-0.0001")), Ok(-1));
        assert_eq!(value(&q("-100m")), Ok(-1));
        assert_eq!(value(&q("-1Ki")), Ok(-1024));
        assert_eq!(value(&q("-0")), Ok(0));
        assert_eq!(nano_value(&q("1n")), Ok(1));
        assert_eq!(nano_value(&q("0.1n")), Ok(1));
        assert_eq!(nano_value(&q("1.5")), Ok(1_500_000_000));
    }

    #[test]
    fn negative_resource_amounts_are_rejected() {
        for s in ["-1", "-500m", "-1Mi"] {
            assert_eq!(
                cpu_millis(&q(s)),
                Err(QuantityError::Negative { value: s.into() })
            );
            assert_eq!(
                bytes(&q(s)),
                Err(QuantityError::Negative { value: s.into() })
            );
        }
        assert_eq!(cpu_millis(&q("-0")), Ok(0));
    }

    #[test]
    fn garbage_is_rejected_with_what_was_expected() {
        for s in [
            "",
            " ",
            "1.2.3",
            "5 Mi",
            "Mi",
            "k",
            "-",
            "+",
            ".",
            "abc",
            "1i",
            "1K",
            "1ki",
            "1mi",
            "0.1am",
            "1KiB",
            "1MB",
            "1e",
            "1e+",
            "-3.01e-",
            "1e3.5",
            "1e99999999999",
            "1.1.M",
            "1+1.0M",
            "0x10",
            "1_000",
            "1,5",
            "--1",
            "1 k",
        ] {
            let err = bytes(&q(s)).expect_err(s);
            assert!(
                matches!(err, QuantityError::Invalid { .. }),
                "{s:?}: {err:?}"
            );
            let msg = err.to_string();
            assert!(
                msg.contains("is not a valid quantity") && msg.contains("expected"),
                "{msg}"
            );
        }
        assert_eq!(
            bytes(&q("5 Mi")).unwrap_err().to_string(),
            format!("\"5 Mi\" is not a valid quantity: unknown suffix \" Mi\"; {EXPECTED}")
        );
        assert_eq!(
            bytes(&q("Mi")).unwrap_err().to_string(),
            format!(
                "\"Mi\" is not a valid quantity: it has no digits before its suffix; {EXPECTED}"
            )
        );
    }

    #[test]
    fn out_of_range_is_an_error() {
        for s in [
            "9223372036854775808",
            "8Ei",
            "10E",
            "1e19",
            "1e300",
            "99999999999999999999999999999999999999999",
        ] {
            assert_eq!(
                bytes(&q(s)),
                Err(QuantityError::OutOfRange { value: s.into() }),
                "{s}"
            );
        }
        // Fits as bytes but not as millis.
        assert_eq!(
            cpu_millis(&q("1E")),
            Err(QuantityError::OutOfRange { value: "1E".into() })
        );
        // Tiny values are not out of range: they round up.
        assert_eq!(bytes(&q("1e-300")), Ok(1));
        assert_eq!(
            cpu_millis(&q("0.00000000000000000000000000000000000000000000001")),
            Ok(1)
        );
        // Long digit strings with many zeros are exact.
        assert_eq!(
            bytes(&q("000000000000000000000000000000000000000000000000001Ki")),
            Ok(1024)
        );
        assert_eq!(
            bytes(&q("1.000000000000000000000000000000000000000000000000")),
            Ok(1)
        );
        assert_eq!(
            bytes(&q("1.000000000000000000000000000000000000000000000001")),
            Ok(2)
        );
    }

    #[test]
    fn nanos_to_ceil_rounds_up() {
        assert_eq!(nanos_to_ceil(1, 1_000_000), 1);
        assert_eq!(nanos_to_ceil(1_000_000, 1_000_000), 1);
        assert_eq!(nanos_to_ceil(1_000_001, 1_000_000), 2);
        assert_eq!(nanos_to_ceil(0, 1_000_000), 0);
        assert_eq!(nanos_to_ceil(i128::MAX / 2, 1), i64::MAX);
    }

    #[test]
    fn whole_numbers_print_as_apimachinery_prints_them() {
        assert_eq!(format_binary_si(0), "0");
        assert_eq!(format_binary_si(1000), "1000");
        assert_eq!(format_binary_si(104_857_600), "100Mi");
        assert_eq!(format_binary_si(83_886_080), "80Mi");
        assert_eq!(format_binary_si(524_292_096), "512004Ki");
        assert_eq!(format_binary_si(1500), "1500");
        assert_eq!(format_binary_si(-2048), "-2Ki");
        assert_eq!(format_decimal_si(5000), "5k");
        assert_eq!(format_decimal_si(1234), "1234");
        assert_eq!(format_decimal_si(0), "0");
    }
}
