//! Durations as the CRDs and flags write them (`30s`, `1m`, `1h30m`): the Go syntax that
//! Kubernetes and Argo CD users already know.

/// Parses a Go-style duration (`1h30m`, `45s`, `1.5m`, `500ms`).
pub fn parse_duration(value: &str) -> Option<std::time::Duration> {
    let mut total = 0f64;
    let mut rest = value;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let num_len = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
        // As the CRD's pattern: digits, optionally `.` and more digits (not `.5` or `1.`).
        let (whole, fraction) = rest[..num_len].split_once('.').unwrap_or((&rest[..num_len], "0"));
        if whole.is_empty() || fraction.is_empty() || fraction.contains('.') {
            return None;
        }
        let number: f64 = rest[..num_len].parse().ok()?;
        rest = &rest[num_len..];
        let (unit, seconds) = if rest.starts_with("ms") {
            ("ms", 0.001)
        } else if rest.starts_with('s') {
            ("s", 1.0)
        } else if rest.starts_with('m') {
            ("m", 60.0)
        } else if rest.starts_with('h') {
            ("h", 3600.0)
        } else {
            return None;
        };
        rest = &rest[unit.len()..];
        total += number * seconds;
    }
    // try_: a huge value (`99999999999999999999h`) is not a duration rather than a panic.
    std::time::Duration::try_from_secs_f64(total).ok()
}
