//! `bandwidthLimit`: a byte rate written as text (`10MiB/s`, `500KiB/s`,
//! `100Mbit/s`), parsed into [`BandwidthLimit`] and printed back in its
//! shortest exact form.
//!
//! Grammar (units are case-sensitive, so a byte `B` is never mistaken for a
//! bit):
//!
//! ```text
//! limit  = number [" "] unit "/s"
//! number = digits ["." digits]          (no sign, at most 9 decimals)
//! unit   = "B" | "kB" | "KB" | "MB" | "GB"        bytes, powers of 1000
//!        | "KiB" | "MiB" | "GiB"                  bytes, powers of 1024
//!        | "bit" | "kbit" | "Kbit" | "Mbit" | "Gbit"   bits, powers of 1000
//! ```
//!
//! The rate is rounded down to whole bytes per second and must lie in
//! [`MIN_BYTES_PER_SECOND`]..=[`MAX_BYTES_PER_SECOND`]. Pure: no I/O, and
//! nothing about how the limit is enforced (see `app::throttle`).

use std::fmt;
use std::num::NonZeroU64;
use std::str::FromStr;

/// The smallest limit: 1 kB/s (8 kbit/s). Slower than this, one read of a
/// few kilobytes already waits for seconds.
pub const MIN_BYTES_PER_SECOND: u64 = 1_000;

/// The largest limit: 100 GiB/s, far beyond what one site forwards; a
/// larger value is a typo, not a limit.
pub const MAX_BYTES_PER_SECOND: u64 = 100 << 30;

/// The units of the grammar: (spelling, bytes per unit as a fraction).
/// Order breaks ties when printing (the first exact one with the smallest
/// number wins).
const UNITS: &[(&str, u64, u64)] = &[
    ("GiB", 1 << 30, 1),
    ("MiB", 1 << 20, 1),
    ("KiB", 1 << 10, 1),
    ("GB", 1_000_000_000, 1),
    ("MB", 1_000_000, 1),
    ("kB", 1_000, 1),
    ("Gbit", 1_000_000_000, 8),
    ("Mbit", 1_000_000, 8),
    ("kbit", 1_000, 8),
    ("B", 1, 1),
    ("bit", 1, 8),
    // Accepted when parsing, never printed (`kB`/`kbit` are printed instead).
    ("KB", 1_000, 1),
    ("Kbit", 1_000, 8),
];

/// The spellings listed in error messages.
const UNIT_LIST: &str = "B, kB, MB, GB, KiB, MiB, GiB, bit, kbit, Mbit, Gbit";

/// A bandwidth limit in bytes per second, within
/// [`MIN_BYTES_PER_SECOND`]..=[`MAX_BYTES_PER_SECOND`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BandwidthLimit(NonZeroU64);

impl BandwidthLimit {
    /// A limit of `bytes` per second, if inside the accepted range.
    pub fn from_bytes_per_second(bytes: u64) -> Option<Self> {
        if (MIN_BYTES_PER_SECOND..=MAX_BYTES_PER_SECOND).contains(&bytes) {
            NonZeroU64::new(bytes).map(Self)
        } else {
            None
        }
    }

    /// Bytes per second.
    pub fn bytes_per_second(self) -> u64 {
        self.0.get()
    }
}

impl FromStr for BandwidthLimit {
    type Err = String;

    /// Parses the grammar of the module docs; the error quotes the input
    /// and says what is wrong with it.
    fn from_str(s: &str) -> Result<Self, String> {
        let t = s.trim();
        let example = "e.g. '10MiB/s', '500KiB/s' or '100Mbit/s'";
        if t.starts_with('-') {
            return Err(format!("'{s}' is negative; a limit must be above zero"));
        }
        let Some(body) = t.strip_suffix("/s") else {
            return Err(format!(
                "'{s}' is not a rate: write a number, a unit and '/s' ({example})"
            ));
        };
        let split = body
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(body.len());
        let (number, unit) = body.split_at(split);
        let (mantissa, decimals) = parse_number(number).ok_or_else(|| {
            format!("'{s}' needs a number before the unit (digits, at most 9 decimals; {example})")
        })?;
        let unit = unit.strip_prefix(' ').unwrap_or(unit);
        let Some(&(_, per_unit, divisor)) = UNITS.iter().find(|(name, ..)| *name == unit) else {
            let hint = if unit.is_empty() {
                "has no unit".to_owned()
            } else if UNITS.iter().any(|(n, ..)| n.eq_ignore_ascii_case(unit))
                || unit.eq_ignore_ascii_case("b")
            {
                format!(
                    "has the unit '{unit}', which is spelled wrong or ambiguous (units are case-sensitive: 'B' is a byte, 'bit' a bit)"
                )
            } else {
                format!("has an unknown unit '{unit}'")
            };
            return Err(format!(
                "'{s}' {hint}; expected one of {UNIT_LIST}, then '/s'"
            ));
        };
        if mantissa == 0 {
            return Err(format!(
                "'{s}' is zero; to leave an app unlimited, leave bandwidthLimit out"
            ));
        }
        // mantissa / 10^decimals units, each per_unit / divisor bytes; the
        // mantissa is a u64 and per_unit at most 2^30, so this fits in u128.
        let bytes = u128::from(mantissa) * u128::from(per_unit)
            / (10u128.pow(decimals) * u128::from(divisor));
        if bytes < u128::from(MIN_BYTES_PER_SECOND) {
            return Err(format!(
                "'{s}' is below the smallest limit, 1kB/s (8kbit/s)"
            ));
        }
        u64::try_from(bytes)
            .ok()
            .and_then(Self::from_bytes_per_second)
            .ok_or_else(|| format!("'{s}' is above the largest limit, 100GiB/s"))
    }
}

/// `digits ["." digits]` as (all digits as one integer, number of decimals);
/// `None` if malformed, or with more than 9 decimals or 20 digits.
fn parse_number(s: &str) -> Option<(u64, u32)> {
    let (int, frac) = match s.split_once('.') {
        Some((i, f)) => (i, f),
        None => (s, ""),
    };
    let digits_only = |p: &str| p.bytes().all(|b| b.is_ascii_digit());
    if int.is_empty() || !digits_only(int) || !digits_only(frac) || frac.len() > 9 {
        return None;
    }
    if s.ends_with('.') {
        return None;
    }
    let all: String = [int, frac].concat();
    let mantissa = all.parse::<u64>().ok()?;
    Some((mantissa, u32::try_from(frac.len()).ok()?))
}

impl fmt::Display for BandwidthLimit {
    /// The exact form with the smallest number (`10MiB/s`, `100Mbit/s`,
    /// `1536KiB/s`), which parses back to the same limit.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let bytes = u128::from(self.bytes_per_second());
        let best = UNITS
            .iter()
            .take_while(|(name, ..)| *name != "KB")
            .filter_map(|&(name, per_unit, divisor)| {
                let scaled = bytes * u128::from(divisor);
                (scaled % u128::from(per_unit) == 0).then(|| (scaled / u128::from(per_unit), name))
            })
            .min_by_key(|&(n, _)| n);
        match best {
            Some((n, name)) => write!(f, "{n}{name}/s"),
            // "B" always divides, so this is not reached.
            None => write!(f, "{bytes}B/s"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn bytes(s: &str) -> u64 {
        s.parse::<BandwidthLimit>()
            .unwrap_or_else(|e| panic!("{e}"))
            .bytes_per_second()
    }

    fn error(s: &str) -> String {
        match s.parse::<BandwidthLimit>() {
            Ok(l) => panic!("'{s}' parsed as {l:?}"),
            Err(e) => e,
        }
    }

    #[test]
    fn binary_byte_units_are_powers_of_1024() {
        assert_eq!(bytes("10MiB/s"), 10 << 20);
        assert_eq!(bytes("500KiB/s"), 500 << 10);
        assert_eq!(bytes("2GiB/s"), 2 << 30);
        assert_eq!(bytes("1.5MiB/s"), 3 << 19);
    }

    #[test]
    fn decimal_byte_units_are_powers_of_1000() {
        assert_eq!(bytes("1kB/s"), 1_000);
        assert_eq!(bytes("1KB/s"), 1_000);
        assert_eq!(bytes("2.5MB/s"), 2_500_000);
        assert_eq!(bytes("1GB/s"), 1_000_000_000);
        assert_eq!(bytes("4096B/s"), 4096);
    }

    #[test]
    fn bit_units_are_divided_by_eight() {
        assert_eq!(bytes("100Mbit/s"), 12_500_000);
        assert_eq!(bytes("1Gbit/s"), 125_000_000);
        assert_eq!(bytes("8kbit/s"), 1_000);
        assert_eq!(bytes("64Kbit/s"), 8_000);
        assert_eq!(bytes("80000bit/s"), 10_000);
    }

    #[test]
    fn spaces_around_and_before_the_unit_are_tolerated() {
        assert_eq!(bytes(" 10 MiB/s "), 10 << 20);
    }

    #[test]
    fn fractions_of_a_byte_are_rounded_down() {
        // 1.0001 kbit/s = 125.0125 B/s... scaled up to stay in range:
        assert_eq!(bytes("10.001kbit/s"), 1_250);
        assert_eq!(bytes("1.0009kB/s"), 1_000);
    }

    #[test]
    fn zero_negative_and_out_of_range_values_are_refused_with_the_reason() {
        assert!(error("0MiB/s").contains("is zero"), "{}", error("0MiB/s"));
        assert!(error("0.0kB/s").contains("is zero"));
        assert!(error("-5MiB/s").contains("negative"));
        assert!(error("999B/s").contains("below the smallest limit"));
        assert!(error("7kbit/s").contains("below the smallest limit"));
        assert!(error("101GiB/s").contains("above the largest limit"));
        assert!(error("9999999999GiB/s").contains("above the largest limit"));
        assert_eq!(bytes("100GiB/s"), MAX_BYTES_PER_SECOND);
    }

    #[test]
    fn unknown_missing_and_ambiguous_units_are_refused() {
        let e = error("10Mbps/s");
        assert!(
            e.contains("unknown unit 'Mbps'") && e.contains("MiB"),
            "{e}"
        );
        assert!(
            error("10Mb/s").contains("case-sensitive"),
            "{}",
            error("10Mb/s")
        );
        assert!(error("10mib/s").contains("case-sensitive"));
        assert!(error("10/s").contains("has no unit"));
        assert!(error("10MiB").contains("is not a rate"));
        assert!(error("MiB/s").contains("needs a number"));
        assert!(error("1.2.3MiB/s").contains("needs a number"));
        assert!(error("1.MiB/s").contains("needs a number"));
        assert!(error("0.0000000001GiB/s").contains("needs a number"));
        assert!(error("").contains("is not a rate"));
        assert!(error("+5MiB/s").contains("needs a number"));
        assert!(error("99999999999999999999GiB/s").contains("needs a number"));
        assert!(error("10 MiB /s").contains("unknown unit"));
    }

    #[test]
    fn limits_print_in_their_shortest_exact_unit() {
        let shown = |s: &str| s.parse::<BandwidthLimit>().unwrap().to_string();
        assert_eq!(shown("10MiB/s"), "10MiB/s");
        assert_eq!(shown("10240KiB/s"), "10MiB/s");
        assert_eq!(shown("100Mbit/s"), "100Mbit/s");
        assert_eq!(shown("12.5MB/s"), "100Mbit/s");
        assert_eq!(shown("1MB/s"), "1MB/s");
        assert_eq!(shown("1KB/s"), "1kB/s");
        assert_eq!(shown("1.5MiB/s"), "1536KiB/s");
        assert_eq!(shown("1001B/s"), "1001B/s");
    }

    proptest! {
        #[test]
        fn printing_then_parsing_gives_the_same_limit(
            bytes in MIN_BYTES_PER_SECOND..=MAX_BYTES_PER_SECOND,
        ) {
            let limit = BandwidthLimit::from_bytes_per_second(bytes).unwrap();
            prop_assert_eq!(limit.to_string().parse::<BandwidthLimit>(), Ok(limit));
        }

        #[test]
        fn any_text_either_parses_into_the_range_or_is_refused_naming_it(s in ".{0,24}") {
            match s.parse::<BandwidthLimit>() {
                Ok(l) => prop_assert!(
                    (MIN_BYTES_PER_SECOND..=MAX_BYTES_PER_SECOND).contains(&l.bytes_per_second())
                ),
                Err(e) => {
                    let quoted = format!("'{s}'");
                    prop_assert!(e.starts_with(&quoted), "{}", e);
                }
            }
        }

        #[test]
        fn whole_numbers_of_each_unit_scale_exactly(n in 1u64..1000, unit in 0usize..UNITS.len()) {
            let (name, per_unit, divisor) = UNITS[unit];
            let want = n * per_unit / divisor;
            let got = format!("{n}{name}/s").parse::<BandwidthLimit>();
            if (MIN_BYTES_PER_SECOND..=MAX_BYTES_PER_SECOND).contains(&want) {
                prop_assert_eq!(got.map(BandwidthLimit::bytes_per_second), Ok(want));
            } else {
                prop_assert!(got.is_err());
            }
        }
    }
}
