//! Human-friendly sizes (`"64MiB"`), durations (`"250ms"`) and listen addresses
//! (`"0.0.0.0:1883"`, `"localhost:1883"`) in the config file.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use serde::{Deserialize, Deserializer, de};

/// A size in bytes, written in the config as an integer or a string such as `"64MiB"` or `"2GB"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ByteSize(pub u64);

impl ByteSize {
    /// Size in bytes.
    pub fn bytes(self) -> u64 {
        self.0
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [(&str, u64); 4] = [
            ("TiB", 1 << 40),
            ("GiB", 1 << 30),
            ("MiB", 1 << 20),
            ("KiB", 1 << 10),
        ];
        for (name, unit) in UNITS {
            if self.0 >= unit && self.0.is_multiple_of(unit) {
                return write!(f, "{}{name}", self.0 / unit);
            }
        }
        write!(f, "{}B", self.0)
    }
}

impl ByteSize {
    /// Rounded for people: `24 B`, `1.5 MiB`, `2.0 GiB`.
    pub fn human(self) -> String {
        const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
        if self.0 < 1024 {
            return format!("{} B", self.0);
        }
        let mut value = self.0 as f64 / 1024.0;
        let mut unit = 0;
        while value >= 1024.0 && unit + 1 < UNITS.len() {
            value /= 1024.0;
            unit += 1;
        }
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// Parses `"512"`, `"512B"`, `"64KiB"`, `"64MiB"`, `"2GiB"`, `"1TiB"` (binary) or `"10KB"`, `"10MB"`,
/// `"1GB"` (decimal). Whitespace between number and unit is allowed; units are case-sensitive
/// except for a lowercase `b`/`kb`/`mb`/`gb` spelling.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    if number.is_empty() {
        return Err(format!(
            "invalid size {text:?}: expected a number followed by B, KiB, MiB, GiB, TiB, KB, MB or GB"
        ));
    }
    let number: u64 = number
        .parse()
        .map_err(|_| format!("invalid size {text:?}: number too large"))?;
    let multiplier: u64 = match unit.trim() {
        "" | "B" | "b" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "TiB" => 1 << 40,
        "KB" | "kB" | "kb" => 1_000,
        "MB" | "mb" => 1_000_000,
        "GB" | "gb" => 1_000_000_000,
        "TB" | "tb" => 1_000_000_000_000,
        other => {
            return Err(format!(
                "invalid size {text:?}: unknown unit {other:?} (use B, KiB, MiB, GiB, TiB, KB, MB, GB or TB)"
            ));
        }
    };
    number
        .checked_mul(multiplier)
        .ok_or_else(|| format!("invalid size {text:?}: too large"))
}

/// Parses `"250ms"`, `"5s"`, `"2m"`, `"1h"`, `"7d"`, `"100us"`; a bare `"0"` is zero.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if text == "0" {
        return Ok(Duration::ZERO);
    }
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number.parse().map_err(|_| {
        format!("invalid duration {text:?}: expected a number followed by us, ms, s, m, h or d")
    })?;
    let duration = match unit.trim() {
        "us" => Duration::from_micros(number),
        "ms" => Duration::from_millis(number),
        "s" => Duration::from_secs(number),
        "m" | "min" => Duration::from_secs(number.saturating_mul(60)),
        "h" => Duration::from_secs(number.saturating_mul(3600)),
        "d" => Duration::from_secs(number.saturating_mul(86_400)),
        "" => {
            return Err(format!(
                "invalid duration {text:?}: missing unit (us, ms, s, m, h or d)"
            ));
        }
        other => {
            return Err(format!(
                "invalid duration {text:?}: unknown unit {other:?} (use us, ms, s, m, h or d)"
            ));
        }
    };
    Ok(duration)
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl de::Visitor<'_> for Visitor {
            type Value = ByteSize;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a size such as 64MiB or a number of bytes")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<ByteSize, E> {
                Ok(ByteSize(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<ByteSize, E> {
                u64::try_from(v)
                    .map(ByteSize)
                    .map_err(|_| E::custom(format!("invalid size {v}: must not be negative")))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<ByteSize, E> {
                parse_size(v).map(ByteSize).map_err(E::custom)
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

/// A duration written in the config as a string such as `"250ms"` or `"5s"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct HumanDuration(pub Duration);

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        parse_duration(&text)
            .map(HumanDuration)
            .map_err(de::Error::custom)
    }
}

/// Parses a listen address: `IP:PORT` (`"0.0.0.0:1883"`, `"[::]:1883"`), or
/// `localhost:PORT` for 127.0.0.1. Anything else is refused with what to write instead, using
/// `default_port` (the field's usual port) in the example. Other host names are not resolved:
/// at boot the network (and DNS) may not be up yet, and a name can resolve to several addresses.
pub fn parse_listen(text: &str, default_port: u16) -> Result<SocketAddr, String> {
    let text = text.trim();
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok(addr);
    }
    let examples = format!(
        "e.g. \"0.0.0.0:{default_port}\" (every interface) or \"127.0.0.1:{default_port}\" (this machine only)"
    );
    if let Ok(ip) = text.parse::<IpAddr>() {
        let with_port = match ip {
            IpAddr::V4(ip) => format!("{ip}:{default_port}"),
            IpAddr::V6(ip) => format!("[{ip}]:{default_port}"),
        };
        return Err(format!(
            "{text:?} has no port: write \"{with_port}\" (IPv6 addresses go in brackets)"
        ));
    }
    match text.rsplit_once(':') {
        Some((host, port)) => {
            let Ok(port) = port.parse::<u16>() else {
                return Err(format!(
                    "{text:?}: {port:?} is not a port (0-65535; 0 picks a free one): {examples}"
                ));
            };
            if host.eq_ignore_ascii_case("localhost") {
                return Ok(SocketAddr::from((Ipv4Addr::LOCALHOST, port)));
            }
            if host.is_empty() {
                return Err(format!(
                    "{text:?} has no address: write \"0.0.0.0:{port}\" (every interface) or \"127.0.0.1:{port}\" (this machine only)"
                ));
            }
            Err(format!(
                "{text:?}: host names other than localhost are not resolved: write an IP address, {examples}"
            ))
        }
        None if text.eq_ignore_ascii_case("localhost") => Err(format!(
            "{text:?} has no port: write \"localhost:{default_port}\" or \"127.0.0.1:{default_port}\""
        )),
        None => Err(format!(
            "{text:?} is not an address: expected IP:PORT, {examples}"
        )),
    }
}

/// `deserialize_with` for a listen address whose usual port is `PORT`.
pub fn listen<'de, const PORT: u16, D: Deserializer<'de>>(d: D) -> Result<SocketAddr, D::Error> {
    parse_listen(&String::deserialize(d)?, PORT).map_err(de::Error::custom)
}

/// `deserialize_with` for an optional listen address whose usual port is `PORT`.
pub fn listen_opt<'de, const PORT: u16, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<SocketAddr>, D::Error> {
    parse_listen(&String::deserialize(d)?, PORT)
        .map(Some)
        .map_err(de::Error::custom)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_addresses_say_what_to_write() {
        assert_eq!(
            parse_listen("0.0.0.0:1883", 1883),
            Ok("0.0.0.0:1883".parse().unwrap())
        );
        assert_eq!(
            parse_listen("[::1]:0", 1883),
            Ok("[::1]:0".parse().unwrap())
        );
        assert_eq!(
            parse_listen("localhost:1884", 1883),
            Ok("127.0.0.1:1884".parse().unwrap())
        );
        let cases = [
            ("127.0.0.1", "has no port: write \"127.0.0.1:1883\""),
            ("::1", "write \"[::1]:1883\""),
            ("localhost", "write \"localhost:1883\""),
            (":1883", "write \"0.0.0.0:1883\""),
            (
                "gateway.local:1883",
                "host names other than localhost are not resolved",
            ),
            ("127.0.0.1:http", "is not a port"),
            ("anything", "expected IP:PORT, e.g. \"0.0.0.0:1883\""),
        ];
        for (text, want) in cases {
            let err = parse_listen(text, 1883).unwrap_err();
            assert!(err.contains(want), "{text}: {err}");
        }
    }

    #[test]
    fn sizes_parse_binary_and_decimal_units() {
        assert_eq!(parse_size("512"), Ok(512));
        assert_eq!(parse_size("64MiB"), Ok(64 << 20));
        assert_eq!(parse_size("2GiB"), Ok(2 << 30));
        assert_eq!(parse_size("10 KB"), Ok(10_000));
        assert_eq!(parse_size("1GB"), Ok(1_000_000_000));
    }

    #[test]
    fn sizes_reject_unknown_units_and_overflow() {
        assert!(parse_size("64XB").unwrap_err().contains("unknown unit"));
        assert!(parse_size("MiB").unwrap_err().contains("expected a number"));
        assert!(
            parse_size("99999999999TiB")
                .unwrap_err()
                .contains("too large")
        );
    }

    #[test]
    fn human_sizes_round() {
        assert_eq!(ByteSize(24).human(), "24 B");
        assert_eq!(ByteSize(1536).human(), "1.5 KiB");
        assert_eq!(ByteSize(2 << 30).human(), "2.0 GiB");
    }

    #[test]
    fn sizes_display_in_the_largest_exact_unit() {
        assert_eq!(ByteSize(64 << 20).to_string(), "64MiB");
        assert_eq!(ByteSize(1000).to_string(), "1000B");
    }

    #[test]
    fn durations_parse_all_units() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("100us"), Ok(Duration::from_micros(100)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
    }

    #[test]
    fn durations_require_a_known_unit() {
        assert!(parse_duration("250").unwrap_err().contains("missing unit"));
        assert!(
            parse_duration("3days")
                .unwrap_err()
                .contains("unknown unit")
        );
        assert!(parse_duration("ms").is_err());
    }
}
