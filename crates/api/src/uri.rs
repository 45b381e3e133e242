//! Addresses: agent base URLs and migration URIs.
//!
//! QEMU runs whatever a migration URI says (`exec:` runs a shell command), so a URI is never
//! passed through: the side that listens makes it from an address it owns ([`MigrationUri::tcp`]),
//! and both sides parse it back into this type, which only has the `tcp:` form, before anything
//! reaches QEMU. The source also checks that the destination's URI points at the destination
//! it chose ([`MigrationUri::check_host`]).

use crate::names::{ShapeError, AGENT_URL_SHAPE};
use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;
use thiserror::Error;

/// An agent's base URL: `http(s)://host:port`, validated, without a trailing `/`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct AgentUrl(String);

impl JsonSchema for AgentUrl {
    fn schema_name() -> Cow<'static, str> {
        "AgentUrl".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({"type": "string", "pattern": crate::names::AGENT_URL,
            "description": "An agent base URL: http(s)://host:port"})
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

/// Pattern of a migration URI in the schema: `tcp:` an IP address and a port.
pub const MIGRATION_URI: &str = "^tcp:(\\[[0-9A-Fa-f:.]{2,45}\\]|[0-9.]{7,15}):[0-9]{1,5}$";

/// A migration URI Drover made: QEMU listens (or connects) on this IP address and TCP port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct MigrationUri {
    pub ip: IpAddr,
    pub port: u16,
}

impl JsonSchema for MigrationUri {
    fn schema_name() -> Cow<'static, str> {
        "MigrationUri".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({"type": "string", "pattern": MIGRATION_URI,
            "description": "tcp:ADDRESS:PORT, made by the side that listens"})
    }
}

/// A migration URI that is not Drover's own.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum UriError {
    #[error("migration URI '{0}' is not tcp:ADDRESS:PORT with an IP address and a port above 0 (Drover makes no other kind)")]
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
    fn from_str(s: &str) -> Result<Self, UriError> {
        let bad = || UriError::Malformed(s.chars().take(80).collect());
        let rest = s.strip_prefix("tcp:").ok_or_else(bad)?;
        let (host, port) = rest.rsplit_once(':').ok_or_else(bad)?;
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        let ip: IpAddr = host.parse().map_err(|_| bad())?;
        let port: u16 = port.parse().map_err(|_| bad())?;
        if port == 0 || ip.is_unspecified() || ip.is_multicast() {
            return Err(bad());
        }
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
}
