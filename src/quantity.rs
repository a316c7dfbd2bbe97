//! Kubernetes resource quantities and PostgreSQL memory settings, parsed exactly.
//!
//! Quantities are kept as whole milli-units in an `i128`, so `1.5Gi`, `100m` and `1e3`
//! compare and convert without floating point. Parsing is total: malformed or absurdly large
//! input is an error, never a panic or an overflow.

use std::cmp::Ordering;

/// A parsed quantity in thousandths of the base unit (bytes for memory, cores for CPU).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Milli(pub i128);

const MAX_LEN: usize = 64;

impl Milli {
    /// The value in whole base units, rounded down.
    pub fn whole(self) -> i128 {
        self.0.div_euclid(1000)
    }
}

/// Parses a Kubernetes quantity (`128974848`, `129e6`, `129M`, `123Mi`, `0.5`, `100m`).
pub fn parse(s: &str) -> Result<Milli, String> {
    if s.is_empty() {
        return Err("must not be empty".into());
    }
    if s.len() > MAX_LEN {
        return Err(format!("must be at most {MAX_LEN} characters"));
    }
    let (sign, rest) = match s.as_bytes()[0] {
        b'+' => (1, &s[1..]),
        b'-' => (-1, &s[1..]),
        _ => (1, s),
    };
    let number_end = rest
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(rest.len());
    let (number, suffix) = rest.split_at(number_end);
    let (int_part, frac_part) = match number.split_once('.') {
        Some((i, f)) => (i, f),
        None => (number, ""),
    };
    if int_part.is_empty() && frac_part.is_empty() {
        return Err("must start with a number".into());
    }
    // Multiplier as (numerator, power of ten) applied to the decimal number.
    let (factor, exp10): (i128, i32) = match suffix {
        "" => (1, 0),
        "m" => (1, -3),
        "k" => (1, 3),
        "M" => (1, 6),
        "G" => (1, 9),
        "T" => (1, 12),
        "P" => (1, 15),
        "E" => (1, 18),
        "Ki" => (1 << 10, 0),
        "Mi" => (1 << 20, 0),
        "Gi" => (1 << 30, 0),
        "Ti" => (1 << 40, 0),
        "Pi" => (1 << 50, 0),
        "Ei" => (1 << 60, 0),
        e if e.starts_with(['e', 'E']) => {
            let exp: i32 = e[1..]
                .parse()
                .map_err(|_| format!("unknown suffix {suffix:?}"))?;
            if !(-18..=18).contains(&exp) {
                return Err("exponent out of range".into());
            }
            (1, exp)
        }
        _ => {
            return Err(format!(
                "unknown suffix {suffix:?}; use Ki, Mi, Gi, Ti, Pi, Ei, m, k, M, G, T, P or E"
            ));
        }
    };
    // digits * 10^(exp10 + 3 - frac_len) * factor, in milli-units.
    let digits: String = format!("{int_part}{frac_part}");
    let digits = digits.trim_start_matches('0');
    if digits.len() > 30 {
        return Err("is too large".into());
    }
    let mantissa: i128 = if digits.is_empty() {
        0
    } else {
        digits.parse().map_err(|_| "is not a number".to_string())?
    };
    let shift = exp10 + 3 - frac_part.len() as i32;
    let scaled = if shift >= 0 {
        10i128
            .checked_pow(shift as u32)
            .and_then(|p| mantissa.checked_mul(p))
            .and_then(|v| v.checked_mul(factor))
    } else {
        // Sub-milli precision is rounded up, as Kubernetes does.
        let p = 10i128.checked_pow((-shift) as u32);
        p.and_then(|p| {
            mantissa
                .checked_mul(factor)
                .map(|v| v / p + i128::from(v % p != 0))
        })
    };
    let value = scaled.ok_or_else(|| "is too large".to_string())?;
    if value > 1i128 << 100 {
        return Err("is too large".into());
    }
    Ok(Milli(sign * value))
}

/// The quantity as the API server stores it (`0.5` → `500m`, `1024Mi` → `1Gi`, `1000` →
/// `1k`), so that what admission writes, what the API server shows and what children are
/// rendered with agree. `None` for what does not parse, or carries more precision than a
/// thousandth (kept as written rather than rounded).
///
/// The rules are those of the API server's canonical form: a binary suffix stays binary
/// for whole byte counts of at least 1024 and takes the largest power of 1024 that divides
/// the value; everything else is decimal with an exponent that is a multiple of 3, as a
/// suffix (`m`, `k`, `M`, ...) or, when written with one, as `eN`.
pub fn canonical(s: &str) -> Option<String> {
    let Milli(value) = parse(s).ok()?;
    let digits_end = s
        .trim_start_matches(['+', '-'])
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .map_or(s.len(), |i| {
            i + (s.len() - s.trim_start_matches(['+', '-']).len())
        });
    let suffix = &s[digits_end..];
    let fraction = s[..digits_end].split_once('.').map_or(0, |(_, f)| f.len());
    let scale = match suffix {
        "" => 0,
        "m" => -3,
        _ if suffix.starts_with(['e', 'E']) => suffix[1..].parse::<i32>().ok()?,
        _ => 3,
    };
    // More than milli precision: parse rounded it up; keep what the user wrote.
    if fraction as i32 > scale + 3 {
        return None;
    }
    if suffix.ends_with('i') && value % 1000 == 0 && (value / 1000).abs() >= 1024 {
        let mut n = value / 1000;
        let mut power = 0;
        while n % 1024 == 0 && power < 6 {
            n /= 1024;
            power += 1;
        }
        return Some(format!(
            "{n}{}",
            ["", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"][power]
        ));
    }
    let (mut n, mut exponent) = (value, -3);
    while n != 0 && n % 1000 == 0 && exponent < 18 {
        n /= 1000;
        exponent += 3;
    }
    if n == 0 {
        return Some("0".into());
    }
    let suffix = if suffix.starts_with(['e', 'E']) {
        match exponent {
            0 => String::new(),
            e => format!("e{e}"),
        }
    } else {
        let decimal = ["m", "", "k", "M", "G", "T", "P", "E"];
        decimal[((exponent + 3) / 3) as usize].to_owned()
    };
    Some(format!("{n}{suffix}"))
}

/// Bytes of a memory quantity, rounded down.
pub fn bytes(s: &str) -> Result<i128, String> {
    parse(s).map(Milli::whole)
}

/// Compares two quantities; `None` when either is malformed.
pub fn compare(a: &str, b: &str) -> Option<Ordering> {
    Some(parse(a).ok()?.cmp(&parse(b).ok()?))
}

pub const KIB: i128 = 1 << 10;
pub const MIB: i128 = 1 << 20;
pub const GIB: i128 = 1 << 30;

/// The base unit of a PostgreSQL memory parameter, as `SHOW`'s plain numbers use it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PgUnit {
    /// Blocks of 8 kB (`shared_buffers`, `effective_cache_size`).
    Block,
    Kilobyte,
    Megabyte,
}

impl PgUnit {
    fn bytes(self) -> i128 {
        match self {
            PgUnit::Block => 8 * KIB,
            PgUnit::Kilobyte => KIB,
            PgUnit::Megabyte => MIB,
        }
    }
}

/// Parses a PostgreSQL memory setting (`128MB`, `4GB`, `512kB`, `16384` in the parameter's
/// base unit) into bytes. `-1` and other special values are not memory sizes.
pub fn pg_memory_bytes(value: &str, unit: PgUnit) -> Option<i128> {
    match pg_integer(value)? {
        PgInteger::Plain(n) if n >= 0 => Some(n * unit.bytes()),
        PgInteger::Bytes(b) if b >= 0 => Some(b),
        _ => None,
    }
}

/// A PostgreSQL integer setting with its unit applied, so that `1GB` and `1024MB` compare
/// equal. A bare number stays as written: its unit is the parameter's, unknown here.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PgInteger {
    Plain(i128),
    Bytes(i128),
    Micros(i128),
}

impl PgInteger {
    /// Orders two values of the same kind; `None` for a size against a time or a bare number.
    pub fn compare(self, other: PgInteger) -> Option<Ordering> {
        match (self, other) {
            (PgInteger::Plain(a), PgInteger::Plain(b))
            | (PgInteger::Bytes(a), PgInteger::Bytes(b))
            | (PgInteger::Micros(a), PgInteger::Micros(b)) => Some(a.cmp(&b)),
            _ => None,
        }
    }
}

/// Parses a PostgreSQL integer value with an optional memory (`B`, `kB`, `MB`, `GB`, `TB`)
/// or time (`us`, `ms`, `s`, `min`, `h`, `d`) unit, spelled as PostgreSQL does
/// (case-sensitive). Fractions, hexadecimal and anything else are `None`.
pub fn pg_integer(value: &str) -> Option<PgInteger> {
    let v = value.trim();
    let unsigned = v.strip_prefix(['-', '+']).unwrap_or(v);
    let end = unsigned
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(unsigned.len());
    let (digits, unit) = unsigned.split_at(end);
    // 18 digits times a terabyte still fits an i128 many times over.
    if digits.is_empty() || digits.len() > 18 {
        return None;
    }
    let n: i128 = digits.parse().ok()?;
    let n = if v.starts_with('-') { -n } else { n };
    let (kind, mult): (fn(i128) -> PgInteger, i128) = match unit.trim_start() {
        "" => (PgInteger::Plain, 1),
        "B" => (PgInteger::Bytes, 1),
        "kB" => (PgInteger::Bytes, KIB),
        "MB" => (PgInteger::Bytes, MIB),
        "GB" => (PgInteger::Bytes, GIB),
        "TB" => (PgInteger::Bytes, GIB * 1024),
        "us" => (PgInteger::Micros, 1),
        "ms" => (PgInteger::Micros, 1_000),
        "s" => (PgInteger::Micros, 1_000_000),
        "min" => (PgInteger::Micros, 60_000_000),
        "h" => (PgInteger::Micros, 3_600_000_000),
        "d" => (PgInteger::Micros, 86_400_000_000),
        _ => return None,
    };
    Some(kind(n * mult))
}

/// Formats bytes as a PostgreSQL memory setting in whole megabytes, or kilobytes below 1 MB.
pub fn pg_memory(bytes: i128) -> String {
    if bytes >= MIB {
        format!("{}MB", bytes / MIB)
    } else {
        format!("{}kB", (bytes / KIB).max(64))
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn canonical_forms_are_the_api_servers() {
        for (written, stored) in [
            ("0.5", Some("500m")),
            ("1024Mi", Some("1Gi")),
            ("1536Mi", Some("1536Mi")),
            ("0.5Gi", Some("512Mi")),
            ("512", Some("512")),
            ("1000", Some("1k")),
            ("1500", Some("1500")),
            ("1000m", Some("1")),
            ("100m", Some("100m")),
            ("2000000", Some("2M")),
            ("1.5k", Some("1500")),
            ("1e3", Some("1e3")),
            ("1000e0", Some("1e3")),
            ("0", Some("0")),
            ("0Gi", Some("0")),
            ("1Gi", Some("1Gi")),
            ("1048576Ki", Some("1Gi")),
            ("128974848", Some("128974848")),
            ("129M", Some("129M")),
            ("0.0001", None),
            ("abc", None),
        ] {
            assert_eq!(canonical(written).as_deref(), stored, "{written}");
            if let Some(stored) = stored {
                assert_eq!(parse(stored), parse(written), "{written} keeps its value");
            }
        }
    }
    use super::*;

    #[test]
    fn parses_kubernetes_quantities() {
        assert_eq!(bytes("1Gi").unwrap(), GIB);
        assert_eq!(bytes("1.5Gi").unwrap(), GIB + GIB / 2);
        assert_eq!(bytes("129M").unwrap(), 129_000_000);
        assert_eq!(bytes("129e6").unwrap(), 129_000_000);
        assert_eq!(bytes("128974848").unwrap(), 128_974_848);
        assert_eq!(parse("100m").unwrap(), Milli(100));
        assert_eq!(parse("0.5").unwrap(), Milli(500));
        assert_eq!(parse("1.0001m").unwrap(), Milli(2));
        assert_eq!(parse("-1").unwrap(), Milli(-1000));
    }

    #[test]
    fn rejects_malformed_quantities() {
        for bad in [
            "",
            "Gi",
            "1GiB",
            "1 Gi",
            "abc",
            "1..2",
            "1e99",
            "99999999999999999999999999999999Ei",
            ".",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn compares() {
        assert_eq!(compare("1Gi", "1024Mi"), Some(Ordering::Equal));
        assert_eq!(compare("1G", "1Gi"), Some(Ordering::Less));
        assert_eq!(compare("x", "1Gi"), None);
    }

    #[test]
    fn postgres_memory_units() {
        assert_eq!(pg_memory_bytes("128MB", PgUnit::Block), Some(128 * MIB));
        assert_eq!(pg_memory_bytes("16384", PgUnit::Block), Some(128 * MIB));
        assert_eq!(pg_memory_bytes("4096", PgUnit::Kilobyte), Some(4 * MIB));
        assert_eq!(pg_memory_bytes("-1", PgUnit::Kilobyte), None);
        assert_eq!(pg_memory(256 * MIB), "256MB");
        assert_eq!(pg_memory(300 * KIB), "300kB");
    }

    #[test]
    fn postgres_integers_with_units() {
        assert_eq!(pg_integer("200"), Some(PgInteger::Plain(200)));
        assert_eq!(pg_integer(" -1 "), Some(PgInteger::Plain(-1)));
        assert_eq!(pg_integer("1GB"), Some(PgInteger::Bytes(GIB)));
        assert_eq!(pg_integer("512 kB"), Some(PgInteger::Bytes(512 * KIB)));
        assert_eq!(pg_integer("5min"), Some(PgInteger::Micros(300_000_000)));
        assert_eq!(pg_integer("250ms"), Some(PgInteger::Micros(250_000)));
        for bad in [
            "",
            "MB",
            "1.5GB",
            "0x10",
            "1 gb",
            "1Mi",
            "1_000",
            "9999999999999999999",
        ] {
            assert_eq!(pg_integer(bad), None, "{bad:?} parsed");
        }
        let (a, b) = (pg_integer("1GB").unwrap(), pg_integer("1024MB").unwrap());
        assert_eq!(a.compare(b), Some(Ordering::Equal));
        let (s, n) = (pg_integer("1s").unwrap(), pg_integer("1000").unwrap());
        assert_eq!(s.compare(n), None);
    }
}
