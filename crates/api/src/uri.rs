//! Addresses: agent base URLs and migration URIs.
//!
//! QEMU runs whatever a migration URI says (`exec:` runs a shell command), so a URI is never
//! passed through: the side that listens makes it from an address it owns ([`MigrationUri::tcp`]),
//! and both sides parse it back into this type, which only has the `tcp:` form, before anything
//! reaches QEMU. The source also checks that the destination's URI points at the destination
//! it chose ([`MigrationUri::check_host`]).

use crate::names::{Shape, ShapeError, AGENT_URL_SHAPE, MIGRATION_URI_SHAPE};
use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde::de::{self, Deserializer};
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;
use thiserror::Error;

/// The schema of a string of `shape`, with a description.
fn described(shape: &Shape, description: &str) -> Schema {
    let mut schema = shape.schema();
    schema["description"] = description.into();
    Schema::try_from(schema).unwrap_or_else(|_| json_schema!({"type": "string"}))
}

/// An agent's base URL: `http(s)://host:port`, validated, without a trailing `/`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(into = "String")]
pub struct AgentUrl(String);

/// Reads a string of `shape` into `T`. A string of another shape is a value that breaks a
/// rule (serde's `invalid_value`, which a request answers 422), not the wrong type of value
/// (a `try_from` failure would be an untyped custom error).
fn shaped<'de, D, T>(d: D, shape: &Shape, parse: impl Fn(&str) -> Option<T>) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
{
    let s = String::deserialize(d)?;
    parse(&s).ok_or_else(|| de::Error::invalid_value(de::Unexpected::Str(&s), &shape.expected))
}

impl<'de> Deserialize<'de> for AgentUrl {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        shaped(d, &AGENT_URL_SHAPE, |s| AgentUrl::parse(s).ok())
    }
}

impl JsonSchema for AgentUrl {
    fn schema_name() -> Cow<'static, str> {
        "AgentUrl".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        described(&AGENT_URL_SHAPE, "An agent base URL: http(s)://host:port")
    }
}

impl AgentUrl {
    /// Parses and normalises an agent URL.
    ///
    /// # Errors
    /// [`ShapeError`] when it is not `http(s)://host:port`.
    pub fn parse(url: &str) -> Result<Self, ShapeError> {
        AGENT_URL_SHAPE.check(url)?;
        Ok(AgentUrl(url.trim_end_matches('/').to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The host part (an IPv4 address or a DNS name).
    pub fn host(&self) -> &str {
        self.authority().rsplit_once(':').map_or("", |(h, _)| h)
    }

    /// The port (always present: the shape requires it).
    pub fn port(&self) -> u16 {
        self.authority()
            .rsplit_once(':')
            .and_then(|(_, p)| p.parse().ok())
            .unwrap_or(0)
    }

    fn authority(&self) -> &str {
        self.0.split_once("://").map_or("", |(_, rest)| rest)
    }
}

impl TryFrom<String> for AgentUrl {
    type Error = ShapeError;
    fn try_from(s: String) -> Result<Self, ShapeError> {
        AgentUrl::parse(&s)
    }
}

impl From<AgentUrl> for String {
    fn from(u: AgentUrl) -> String {
        u.0
    }
}

impl fmt::Display for AgentUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A migration URI Drover made: QEMU listens (or connects) on this IP address and TCP port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(into = "String")]
pub struct MigrationUri {
    pub ip: IpAddr,
    pub port: u16,
}

impl<'de> Deserialize<'de> for MigrationUri {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        shaped(d, &MIGRATION_URI_SHAPE, |s| s.parse().ok())
    }
}

impl JsonSchema for MigrationUri {
    fn schema_name() -> Cow<'static, str> {
        "MigrationUri".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        described(
            &MIGRATION_URI_SHAPE,
            "tcp:ADDRESS:PORT, made by the side that listens",
        )
    }
}

/// A migration URI that is not Drover's own.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum UriError {
    #[error("migration URI '{0}' is not {expected} (Drover makes no other kind)", expected = MIGRATION_URI_SHAPE.expected)]
    Malformed(String),
    #[error("migration URI '{uri}' does not point at the destination {host}")]
    WrongHost { uri: String, host: String },
}

impl MigrationUri {
    /// The URI for QEMU listening on `ip:port`.
    pub fn tcp(ip: IpAddr, port: u16) -> Self {
        MigrationUri { ip, port }
    }

    /// Checks that the URI points at one of `addresses` (what the destination's host name
    /// resolves to, as the source sees it).
    ///
    /// # Errors
    /// [`UriError::WrongHost`] otherwise.
    pub fn check_host(&self, host: &str, addresses: &[IpAddr]) -> Result<(), UriError> {
        if addresses.contains(&self.ip) {
            return Ok(());
        }
        Err(UriError::WrongHost {
            uri: self.to_string(),
            host: host.to_string(),
        })
    }
}

impl fmt::Display for MigrationUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.ip {
            IpAddr::V4(ip) => write!(f, "tcp:{ip}:{}", self.port),
            IpAddr::V6(ip) => write!(f, "tcp:[{ip}]:{}", self.port),
        }
    }
}

impl FromStr for MigrationUri {
    type Err = UriError;
    /// Reads exactly the strings of [`MIGRATION_URI_SHAPE`], the pattern the schema carries.
    fn from_str(s: &str) -> Result<Self, UriError> {
        let bad = || UriError::Malformed(s.chars().take(80).collect());
        MIGRATION_URI_SHAPE.check(s).map_err(|_| bad())?;
        // The shape guarantees `tcp:`, a host Rust reads as an address and a port above 0;
        // the checks below only keep this function total.
        let rest = s.strip_prefix("tcp:").ok_or_else(bad)?;
        let (host, port) = rest.rsplit_once(':').ok_or_else(bad)?;
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        let ip: IpAddr = host.parse().map_err(|_| bad())?;
        let port: u16 = port.parse().map_err(|_| bad())?;
        Ok(MigrationUri { ip, port })
    }
}

impl TryFrom<String> for MigrationUri {
    type Error = UriError;
    fn try_from(s: String) -> Result<Self, UriError> {
        s.parse()
    }
}

impl From<MigrationUri> for String {
    fn from(u: MigrationUri) -> String {
        u.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::net::Ipv4Addr;

    #[test]
    fn agent_urls_keep_host_and_port() {
        let u = AgentUrl::parse("http://198.18.0.2:7700/").expect("valid");
        assert_eq!(u.as_str(), "http://198.18.0.2:7700");
        assert_eq!((u.host(), u.port()), ("198.18.0.2", 7700));
        assert!(AgentUrl::parse("http://198.18.0.2").is_err());
        let json: Result<AgentUrl, _> = serde_json::from_str(r#""http://x""#);
        assert!(json.is_err());
    }

    #[test]
    fn only_drovers_own_uris_parse() {
        let u: MigrationUri = "tcp:198.18.0.3:49152".parse().expect("valid");
        assert_eq!(u.to_string(), "tcp:198.18.0.3:49152");
        let v6: MigrationUri = "tcp:[::1]:5".parse().expect("valid");
        assert_eq!(v6.to_string(), "tcp:[::1]:5");
        for bad in [
            "exec:touch /tmp/pwned",
            "exec:sh -c 'id'",
            "unix:/tmp/x",
            "fd:3",
            "file:/etc/passwd",
            "tcp:evil.example:1",
            "tcp:0.0.0.0:1",
            "tcp:198.18.0.3:0",
            "tcp:198.18.0.3:1,exec:x",
            "tcp:198.18.0.3",
            "rdma:1.2.3.4:5",
            // Schemathesis drew this from the old, looser pattern, which the parser refused.
            "tcp:[00]:0",
            "tcp:[::]:1",
            "tcp:[0:0::0.0.0.0]:1",
            "tcp:[ff02::1]:1",
            "tcp:239.1.2.3:1",
            "tcp:::1:5",
            "tcp:[1.2.3.4]:5",
            "tcp:1.2.3.4:05",
            "tcp:1.2.3.4:+5",
            "tcp:01.2.3.4:5",
        ] {
            assert!(bad.parse::<MigrationUri>().is_err(), "{bad}");
        }
    }

    #[test]
    fn a_uri_must_point_at_the_chosen_destination() {
        let u: MigrationUri = "tcp:198.18.0.3:49152".parse().expect("valid");
        let dest: IpAddr = "198.18.0.3".parse().expect("ip");
        let other: IpAddr = "198.18.0.9".parse().expect("ip");
        assert!(u.check_host("h2", &[dest]).is_ok());
        assert!(matches!(
            u.check_host("h2", &[other]),
            Err(UriError::WrongHost { .. })
        ));
    }

    /// The migration URI grammar alone (without the exclusions), to compare with Rust's parser.
    fn grammar() -> regex::Regex {
        regex::Regex::new(crate::names::MIGRATION_URI).expect("compiles")
    }

    #[test]
    fn every_spelling_of_an_address_is_read() {
        for ok in [
            "tcp:[1:2:3:4:5:6:7:8]:1",
            "tcp:[1:2:3:4:5:6:1.2.3.4]:1",
            "tcp:[::ffff:127.0.0.1]:65535",
            "tcp:[1::]:1",
            "tcp:[1:2:3:4:5:6:7::]:1",
            "tcp:[::2:3:4:5:6:7:8]:1",
            "tcp:[1:2:3:4:5::1.2.3.4]:1",
            "tcp:[0001:00AB::Ff]:1",
            "tcp:[0ff0::1]:1",
            "tcp:[ff::1]:1",
            "tcp:255.255.255.255:1",
            "tcp:0.0.0.1:1",
        ] {
            let u: MigrationUri = ok.parse().unwrap_or_else(|e| panic!("{ok}: {e}"));
            let again: MigrationUri = u.to_string().parse().expect("Display reads back");
            assert_eq!(again, u);
        }
    }

    fn address_ish() -> impl Strategy<Value = String> {
        let token = prop::sample::select(vec![
            "",
            "0",
            "00",
            "1",
            "7",
            "ab",
            "FFFF",
            "ff02",
            "0000",
            "12345",
            "g",
            ":",
            "::",
            ":::",
            ".",
            "1.2.3.4",
            "0.0.0.0",
            "255",
            "256",
            "01",
            "10.0.0.1",
            "1.2.3",
            "224.0.0.1",
        ]);
        prop::collection::vec(token, 0..12).prop_map(|t| t.concat())
    }

    /// A valid address spelled in one of the ways RFC 4291 allows: every group written out
    /// (with leading zeros and mixed case), a run of zero groups compressed, or an IPv4 tail.
    fn spelling(groups: [u16; 8], style: u8, zeros: usize, upper: bool) -> String {
        let hex = |g: u16| {
            let h = match zeros {
                0 => format!("{g:x}"),
                _ => format!("{g:04x}"),
            };
            if upper {
                h.to_uppercase()
            } else {
                h
            }
        };
        let all: Vec<String> = groups.iter().map(|&g| hex(g)).collect();
        match style % 3 {
            0 => all.join(":"),
            1 => {
                let v4 = Ipv4Addr::from(u32::from(groups[6]) << 16 | u32::from(groups[7]));
                format!("{}:{v4}", all[..6].join(":"))
            }
            _ => {
                // Compress groups[start..end] (zeroed) into `::`.
                let start = zeros % 8;
                let end = (start + 1 + zeros % 3).min(8);
                format!("{}::{}", all[..start].join(":"), all[end..].join(":"))
            }
        }
    }

    fn zero_run(mut groups: [u16; 8], style: u8, zeros: usize) -> [u16; 8] {
        if style % 3 == 2 {
            let start = zeros % 8;
            let end = (start + 1 + zeros % 3).min(8);
            groups[start..end].iter_mut().for_each(|g| *g = 0);
        }
        groups
    }

    proptest! {
        /// The pattern the schema carries admits exactly the addresses Rust's parser reads, so
        /// a schema-valid URI is never refused for its address and vice versa.
        #[test]
        fn the_pattern_reads_what_rusts_parser_reads(s in address_ish()) {
            let v6 = s.parse::<std::net::Ipv6Addr>().is_ok();
            prop_assert_eq!(grammar().is_match(&format!("tcp:[{s}]:1")), v6, "[{}]", s);
            let v4 = s.parse::<Ipv4Addr>().is_ok();
            prop_assert_eq!(grammar().is_match(&format!("tcp:{s}:1")), v4, "{}", s);
        }

        #[test]
        fn every_valid_address_is_read_unless_unspecified_or_multicast(
            groups in prop::array::uniform8(prop_oneof![Just(0u16), Just(0xff02), any::<u16>()]),
            style in any::<u8>(),
            zeros in any::<usize>(),
            upper in any::<bool>(),
            port in 1u16..,
        ) {
            let groups = zero_run(groups, style, zeros);
            let text = spelling(groups, style, zeros, upper);
            let ip = IpAddr::V6(text.parse().unwrap_or_else(|e| panic!("{text}: {e}")));
            prop_assert_eq!(ip, IpAddr::V6(std::net::Ipv6Addr::from(groups)));
            let uri = format!("tcp:[{text}]:{port}");
            prop_assert!(grammar().is_match(&uri), "{}", uri);
            let refused = ip.is_unspecified() || ip.is_multicast();
            prop_assert_eq!(uri.parse::<MigrationUri>().is_err(), refused, "{}", uri);
            let v4 = IpAddr::V4(Ipv4Addr::from(u32::from(groups[0]) << 16 | u32::from(groups[1])));
            let uri4 = format!("tcp:{v4}:{port}");
            let refused4 = v4.is_unspecified() || v4.is_multicast();
            prop_assert_eq!(uri4.parse::<MigrationUri>().is_err(), refused4, "{}", uri4);
            for ip in [ip, v4] {
                if !(ip.is_unspecified() || ip.is_multicast()) {
                    let made = MigrationUri::tcp(ip, port);
                    prop_assert_eq!(made.to_string().parse::<MigrationUri>(), Ok(made));
                }
            }
        }
    }
}
