//! Kubernetes resource quantities (`500m`, `2`, `16Gi`, `1e3`) as plain numbers.
//!
//! Planning needs arithmetic on CPU, memory and GPU amounts; the apiserver has already
//! canonicalised what it stores, but test fixtures and traces may not have been, so the full
//! suffix grammar is accepted.

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid quantity {0:?}: expected a number with an optional suffix (m, k, M, G, T, P, E, Ki, Mi, Gi, Ti, Pi, Ei, or an exponent like 1e3)"
)]
pub struct QuantityError(pub String);

/// Parses a quantity into base units (cores for CPU, bytes for memory, devices for GPUs).
pub fn parse(s: &str) -> Result<f64, QuantityError> {
    let t = s.trim();
    let err = || QuantityError(s.to_string());
    if t.is_empty() {
        return Err(err());
    }
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
        .unwrap_or(t.len());
    let (num, suffix) = t.split_at(split);
    if num.is_empty() || num == "+" || num == "-" {
        return Err(err());
    }
    let base: f64 = num.parse().map_err(|_| err())?;
    let mult = match suffix {
        "" => 1.0,
        "n" => 1e-9,
        "u" => 1e-6,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024.0,
        "Mi" => 1024.0 * 1024.0,
        "Gi" => 1024.0 * 1024.0 * 1024.0,
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        e if e.starts_with(['e', 'E']) => {
            let exp: i32 = e[1..].parse().map_err(|_| err())?;
            10f64.powi(exp)
        }
        _ => return Err(err()),
    };
    let v = base * mult;
    if v.is_finite() { Ok(v) } else { Err(err()) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_suffix_grammar() {
        let cases = [
            ("2", 2.0),
            ("500m", 0.5),
            ("1.5", 1.5),
            ("1k", 1000.0),
            ("16Gi", 16.0 * 1024.0 * 1024.0 * 1024.0),
            ("512Mi", 512.0 * 1024.0 * 1024.0),
            ("1e3", 1000.0),
            ("1E3", 1000.0),
            ("3G", 3e9),
        ];
        for (s, want) in cases {
            let got = parse(s).unwrap();
            assert!(
                (got - want).abs() < 1e-9 * want.max(1.0),
                "{s}: {got} != {want}"
            );
        }
    }

    #[test]
    fn rejects_garbage() {
        for s in ["", "Gi", "1.2.3", "12XB", "abc", "-", "1e"] {
            assert!(parse(s).is_err(), "{s:?} should fail");
        }
    }
}
