//! The shapes of the strings the API takes: VM names, migration ids, disk file names, guest
//! addresses, workload specs and agent URLs.
//!
//! Each shape is one regular expression, used twice: by [`Shape::check`] when a request is
//! parsed and as the `pattern` of the OpenAPI schema. A schema-valid string is therefore never
//! refused for its shape. The patterns stay within the subset that ECMA-262 (what OpenAPI
//! tools use) and Rust's `regex` read alike: classes, groups, alternation, bounded repetition.

use regex::Regex;
use std::sync::LazyLock;

/// A VM name: what QEMU, file names and the kernel command line all carry safely.
pub const VM_NAME: &str = "^[A-Za-z0-9_][A-Za-z0-9_-]{0,63}$";

/// A migration id (made by the source agent from the VM name, a time stamp and a counter).
pub const MIGRATION_ID: &str = "^[A-Za-z0-9_][A-Za-z0-9_-]{0,127}$";

/// A disk: a file name inside the agent's storage directory, never a path.
pub const DISK_NAME: &str = "^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$";

// Pieces the patterns below share; macros so that each pattern stays one `&'static str`.

/// An IPv4 address as Rust's parser reads it: four decimal octets, 0-255, no leading zero.
macro_rules! ipv4 {
    () => {
        "(25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])(\\.(25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])){3}"
    };
}

/// An IPv4 address a host can be (first octet 1-223: not 0.x, multicast or broadcast).
macro_rules! unicast_ipv4 {
    () => {
        "(22[0-3]|2[01][0-9]|1[0-9]{2}|[1-9][0-9]?)(\\.(25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])){3}"
    };
}

/// A TCP port, 1-65535, no leading zero.
macro_rules! port {
    () => {
        "([1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])"
    };
}

/// One group of an IPv6 address: 1-4 hex digits (leading zeros allowed, as Rust reads them).
macro_rules! h16 {
    () => {
        "[0-9A-Fa-f]{1,4}"
    };
}

/// An IPv6 address exactly as Rust's `Ipv6Addr` parser reads it (RFC 4291 text forms): eight
/// groups; or six and an IPv4 address; or `::` standing for at least one zero group, with H
/// groups before it and at most 7 - H after it (an IPv4 address counting as two and only
/// last).
#[rustfmt::skip] // one line per form of the grammar
macro_rules! ipv6 {
    () => {
        concat!(
            "(",
            h16!(), "(:", h16!(), "){7}",
            "|(", h16!(), ":){6}", ipv4!(),
            "|::(", h16!(), "(:", h16!(), "){0,6}|(", h16!(), ":){0,5}", ipv4!(), ")?",
            "|", h16!(), "::(", h16!(), "(:", h16!(), "){0,5}|(", h16!(), ":){0,4}", ipv4!(), ")?",
            "|(", h16!(), ":){1}", h16!(), "::(", h16!(), "(:", h16!(), "){0,4}|(", h16!(), ":){0,3}", ipv4!(), ")?",
            "|(", h16!(), ":){2}", h16!(), "::(", h16!(), "(:", h16!(), "){0,3}|(", h16!(), ":){0,2}", ipv4!(), ")?",
            "|(", h16!(), ":){3}", h16!(), "::(", h16!(), "(:", h16!(), "){0,2}|(", h16!(), ":)?", ipv4!(), ")?",
            "|(", h16!(), ":){4}", h16!(), "::(", h16!(), "(:", h16!(), ")?|", ipv4!(), ")?",
            "|(", h16!(), ":){5}", h16!(), "::(", h16!(), ")?",
            "|(", h16!(), ":){6}", h16!(), "::",
            ")"
        )
    };
}

/// An agent base URL: http(s), a host (an IPv4 address, a bracketed IPv6 address as in a
/// migration URI, or a DNS name whose last label has a letter) and a port, nothing else (no
/// user, path, query or fragment).
pub const AGENT_URL: &str = concat!(
    "^https?://(",
    ipv4!(),
    "|\\[",
    ipv6!(),
    "\\]",
    "|([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\\.){0,8}[A-Za-z]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)",
    ":",
    port!(),
    "/?$"
);

/// An IP address as Rust's `IpAddr` parser reads it (an NBD server's host).
pub const IP_ADDRESS: &str = concat!("^(", ipv4!(), "|", ipv6!(), ")$");

/// A TCP port in decimal, 1-65535, no leading zero (an NBD server's port, a string in QMP).
pub const PORT_TEXT: &str = concat!("^", port!(), "$");

/// A migration URI as Drover makes it: `tcp:` an IPv4 address or a bracketed IPv6 address, and
/// a port. QEMU runs whatever a URI says, so no other form is ever read.
pub const MIGRATION_URI: &str = concat!("^tcp:(", ipv4!(), "|\\[", ipv6!(), "\\]):", port!(), "$");

/// A socket address as Rust reads it: an IPv4 address or a bracketed IPv6 address, and a
/// port from 1 (a storage post-copy's source export, `IncomingRequest::source_nbd`).
pub const SOCKET_ADDRESS: &str = concat!("^(", ipv4!(), "|\\[", ipv6!(), "\\]):", port!(), "$");

/// The migration URIs [`MIGRATION_URI`] admits but no QEMU can listen on or be reached at: the
/// unspecified address (an IPv6 one is spelled with zeros, colons and dots only) and multicast
/// (224.0.0.0/4, ff00::/8: a first group of four hex digits starting `ff`). The schema states
/// it as `not`.
pub const MIGRATION_URI_EXCLUDED: &str =
    "^tcp:(0\\.0\\.0\\.0|(22[4-9]|23[0-9])\\..*|\\[[0:.]*\\]|\\[[Ff][Ff][0-9A-Fa-f]{2}:.*):[0-9]+$";

/// One string shape: its name in messages, its pattern and a hint of what is expected.
#[derive(Debug)]
pub struct Shape {
    /// Field name as the API spells it.
    pub field: &'static str,
    /// The regular expression (also the schema's `pattern`).
    pub pattern: &'static str,
    /// Strings the pattern admits that are still refused (the schema's `not`), for the rare
    /// rule that a pattern alone cannot state readably.
    pub excluded: Option<&'static str>,
    /// What is expected, for error messages.
    pub expected: &'static str,
    regex: LazyLock<Regex>,
    excluded_regex: LazyLock<Option<Regex>>,
}

/// A guest's IPv4 address (a VM's NIC): unicast, first octet 1 to 223.
pub const GUEST_ADDRESS: &str = concat!("^", unicast_ipv4!(), "$");

/// A working set as the workload pattern takes it: whole M or G, 1-7 digits.
macro_rules! wss {
    () => {
        "wss=[1-9][0-9]{0,6}(M|G|MiB|GiB)"
    };
}

/// A paced memtouch or disk rate, ops a second (1-10 digits).
macro_rules! paced_rate {
    () => {
        "[1-9][0-9]{0,9}"
    };
}

/// An optional access pattern.
macro_rules! pattern {
    () => {
        "(,pattern=(random|seq))?"
    };
}

/// A disk workload's parameters after `disk:`; `$max` is `"max|"` where `rate=max` is allowed.
macro_rules! disk_tail {
    ($max:literal) => {
        concat!(
            wss!(),
            ",rate=(",
            $max,
            paced_rate!(),
            ")",
            pattern!(),
            "(,read=(100|[1-9]?[0-9]))?"
        )
    };
}

/// A workload spec as the agent accepts it: the guest's grammar in its canonical order, with a
/// working set of at least 1 MiB (the guest needs at least one page; a unit keeps typos out).
/// A net workload's peer is a unicast IPv4 address (first octet 1 to 223), its rate 1K to 1G.
/// A memtouch+disk workload is a memtouch spec with a rate (never max), `+`, a disk spec with
/// a rate other than max.
/// It goes onto the kernel command line, so nothing else may appear in it.
pub const WORKLOAD: &str = concat!(
    "^(idle",
    "|cpu:demand=(100|[1-9]?[0-9])",
    "|memtouch:",
    wss!(),
    "(,rate=(max|",
    paced_rate!(),
    "))?",
    pattern!(),
    "|disk:",
    disk_tail!("max|"),
    // Both at once: each part as alone, but paced (no max) and memtouch's rate required.
    "|memtouch:",
    wss!(),
    ",rate=",
    paced_rate!(),
    pattern!(),
    "\\+disk:",
    disk_tail!(""),
    "|net:dir=(in|out|both),rate=([1-9][0-9]{0,5}K|[1-9][0-9]{0,2}M|1G),peer=",
    unicast_ipv4!(),
    "(,port=",
    port!(),
    ")?",
    ")$"
);

macro_rules! shape {
    ($id:ident, $field:literal, $pattern:expr, $expected:literal) => {
        shape!($id, $field, $pattern, None, $expected);
    };
    ($id:ident, $field:literal, $pattern:expr, $excluded:expr, $expected:literal) => {
        #[doc = concat!("The shape of `", $field, "`.")]
        pub static $id: Shape = Shape {
            field: $field,
            pattern: $pattern,
            excluded: $excluded,
            expected: $expected,
            // Constants, compiled by this module's tests: they cannot fail at run time.
            regex: LazyLock::new(|| Regex::new($pattern).expect("pattern compiles")),
            excluded_regex: LazyLock::new(|| {
                let excluded: Option<&str> = $excluded;
                excluded.map(|p| Regex::new(p).expect("pattern compiles"))
            }),
        };
    };
}

shape!(
    VM_NAME_SHAPE,
    "name",
    VM_NAME,
    "1-64 letters, digits, '-' or '_', not starting with '-'"
);
shape!(
    MIGRATION_ID_SHAPE,
    "migration_id",
    MIGRATION_ID,
    "1-128 letters, digits, '-' or '_', not starting with '-'"
);
shape!(
    DISK_SHAPE,
    "disk",
    DISK_NAME,
    "a file name in the agent's storage directory: 1 to 128 letters, digits, '.', '-', '_', not starting with '.' or '-', no '/'"
);
shape!(
    DISK_BASE_SHAPE,
    "disk_base",
    DISK_NAME,
    "a file name in the agent's storage directory: 1 to 128 letters, digits, '.', '-', '_', not starting with '.' or '-', no '/'"
);
shape!(
    GUEST_ADDRESS_SHAPE,
    "nic.address",
    GUEST_ADDRESS,
    "a unicast IPv4 address like 198.18.0.200"
);
shape!(
    WORKLOAD_SHAPE,
    "workload",
    WORKLOAD,
    "idle, cpu:demand=PCT (0-100), memtouch:wss=SIZE[,rate=N|max][,pattern=random|seq], disk:wss=SIZE,rate=N|max[,pattern=random|seq][,read=PCT], net:dir=in|out|both,rate=RATE,peer=IPV4[,port=P] or both memory and disk, memtouch:wss=SIZE,rate=N[,pattern=random|seq]+disk:wss=SIZE,rate=N[,pattern=random|seq][,read=PCT], parameters in this order, with SIZE a whole number of M, G, MiB or GiB (1-7 digits, e.g. 64M), N pages (memtouch) or 4 KiB block operations (disk) per second (1-10 digits), RATE bytes/s as K, M or G (1K to 1G) and IPV4 a unicast address"
);
shape!(
    AGENT_URL_SHAPE,
    "to",
    AGENT_URL,
    "an agent URL with host and port, like http://198.18.0.2:7700 or http://[fd00::2]:7700"
);
shape!(
    MIGRATION_URI_SHAPE,
    "uri",
    MIGRATION_URI,
    Some(MIGRATION_URI_EXCLUDED),
    "tcp:ADDRESS:PORT with an IPv4 address or a bracketed IPv6 address (neither unspecified nor multicast) and a port from 1 to 65535"
);

/// A string that does not have its field's shape.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.named(self.field))]
pub struct ShapeError {
    pub field: &'static str,
    /// The value as given, cut to [`SHOWN_CHARS`] characters.
    pub value: String,
    /// The value's length in characters (more than `value` holds when it was cut).
    pub chars: usize,
    pub expected: &'static str,
}

/// The most of a refused value a message quotes, characters: a client may send kilobytes, and
/// a message stays readable; a longer value is cut and the message says so.
pub const SHOWN_CHARS: usize = 80;

impl ShapeError {
    /// The refusal naming the value as `name`: a field's path (`config.nic.mac`) or the flag
    /// that gave it (`--agent`).
    /// A value longer than [`SHOWN_CHARS`] is quoted cut, with its length: `--disk 'aaa...'
    /// (200 characters, first 80 shown) is not valid: ...`.
    pub fn named(&self, name: &str) -> String {
        let cut = if self.chars > SHOWN_CHARS {
            format!("... ({} characters, first {SHOWN_CHARS} shown)", self.chars)
        } else {
            String::new()
        };
        format!(
            "{name} '{}'{cut} is not valid: expected {}",
            self.value, self.expected
        )
    }
}

impl Shape {
    /// Whether `value` has this shape.
    pub fn matches(&self, value: &str) -> bool {
        self.regex.is_match(value)
            && !self
                .excluded_regex
                .as_ref()
                .is_some_and(|r| r.is_match(value))
    }

    /// The JSON Schema of a string of this shape, as the parser checks it.
    pub fn schema(&self) -> serde_json::Value {
        let mut schema = serde_json::json!({"type": "string", "pattern": self.pattern});
        if let Some(excluded) = self.excluded {
            schema["not"] = serde_json::json!({"pattern": excluded});
        }
        schema
    }

    /// `value` if it has this shape.
    ///
    /// # Errors
    /// [`ShapeError`] naming the field and what is expected.
    pub fn check(&self, value: &str) -> Result<(), ShapeError> {
        if self.matches(value) {
            return Ok(());
        }
        Err(ShapeError {
            field: self.field,
            value: value.chars().take(SHOWN_CHARS).collect(),
            chars: value.chars().count(),
            expected: self.expected,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use proptest::prelude::*;
    use proptest::string::string_regex;

    const ALL: [&Shape; 8] = [
        &VM_NAME_SHAPE,
        &MIGRATION_ID_SHAPE,
        &DISK_SHAPE,
        &DISK_BASE_SHAPE,
        &WORKLOAD_SHAPE,
        &GUEST_ADDRESS_SHAPE,
        &AGENT_URL_SHAPE,
        &MIGRATION_URI_SHAPE,
    ];

    #[test]
    fn every_pattern_compiles() {
        for s in ALL {
            assert!(Regex::new(s.pattern).is_ok(), "{}", s.field);
            if let Some(excluded) = s.excluded {
                assert!(Regex::new(excluded).is_ok(), "{} excluded", s.field);
            }
        }
    }

    /// Strings drawn from a pattern, as a schema-driven generator draws them (proptest reads
    /// no anchors; every pattern here is anchored at both ends as a whole).
    fn drawn(pattern: &'static str) -> impl Strategy<Value = String> {
        let inner = pattern
            .strip_prefix('^')
            .and_then(|p| p.strip_suffix('$'))
            .expect("anchored");
        string_regex(inner).expect("proptest reads the pattern")
    }

    proptest! {
        /// What the workload pattern admits, the guest's grammar reads: the only refusal left
        /// is the documented one, a working set that does not fit the memory.
        #[test]
        fn schema_valid_workloads_parse(w in drawn(WORKLOAD)) {
            prop_assert!(WORKLOAD_SHAPE.matches(&w));
            match drover_guest::fit::check_fits(&w, crate::vm::MAX_MEMORY_BYTES) {
                Ok(_) | Err(drover_guest::fit::FitError::DoesNotFit { .. }) => {}
                Err(e) => prop_assert!(false, "{w}: {e}"),
            }
        }

        #[test]
        fn schema_valid_agent_urls_parse(u in drawn(AGENT_URL)) {
            prop_assert!(crate::uri::AgentUrl::parse(&u).is_ok(), "{}", u);
        }

        /// A migration URI drawn from the pattern parses unless the schema's `not` excludes it,
        /// and then the parser refuses it too.
        #[test]
        fn schema_valid_migration_uris_parse(u in drawn(MIGRATION_URI)) {
            let excluded = Regex::new(MIGRATION_URI_EXCLUDED).expect("compiles").is_match(&u);
            let parsed = u.parse::<crate::uri::MigrationUri>();
            prop_assert_eq!(parsed.is_err(), excluded, "{}", u);
            if let Ok(uri) = parsed {
                let ip = uri.ip;
                prop_assert!(!ip.is_unspecified() && !ip.is_multicast(), "{}", u);
            }
        }

        /// A socket address drawn from the pattern is one Rust reads, with a port.
        #[test]
        fn schema_valid_socket_addresses_parse(a in drawn(SOCKET_ADDRESS)) {
            let parsed = a.parse::<std::net::SocketAddr>();
            prop_assert!(parsed.is_ok_and(|s| s.port() > 0), "{}", a);
        }
    }

    /// A refused value is quoted whole up to [`SHOWN_CHARS`] characters; a longer one is cut
    /// and the message says how long it was.
    #[test]
    fn a_long_refused_value_says_it_was_cut() {
        let long = "d".repeat(200);
        let e = DISK_SHAPE.check(&long).expect_err("too long");
        let text = e.named("--disk");
        let shown = "d".repeat(SHOWN_CHARS);
        assert!(
            text.starts_with(&format!(
                "--disk '{shown}'... (200 characters, first 80 shown) is not valid: expected"
            )),
            "{text}"
        );
        let e = DISK_SHAPE.check("a,b").expect_err("comma");
        assert!(
            e.named("--disk").starts_with("--disk 'a,b' is not valid"),
            "{e}"
        );
    }

    #[test]
    fn names_and_paths() {
        assert!(VM_NAME_SHAPE.matches("vm-1_a"));
        for bad in ["", "-x", "a b", "a/b", &"x".repeat(65)] {
            assert!(!VM_NAME_SHAPE.matches(bad), "{bad}");
        }
        assert!(DISK_SHAPE.matches("vm1.qcow2"));
        for bad in [
            "..",
            "../etc/passwd",
            "/etc/passwd",
            ".hidden",
            "a/b",
            "a,b",
        ] {
            assert!(!DISK_SHAPE.matches(bad), "{bad}");
        }
        assert!(GUEST_ADDRESS_SHAPE.matches("198.18.0.110"));
        for bad in [
            "0.1.2.3",
            "224.0.0.1",
            "255.255.255.255",
            "198.18.0",
            "198.18.0.256",
        ] {
            assert!(!GUEST_ADDRESS_SHAPE.matches(bad), "{bad}");
        }
    }

    #[test]
    fn workloads_keep_to_the_grammar() {
        for ok in [
            "idle",
            "cpu:demand=0",
            "cpu:demand=100",
            "memtouch:wss=64M",
            "memtouch:wss=1G,rate=max,pattern=seq",
            "memtouch:wss=128MiB,rate=5000",
            "disk:wss=16M,rate=200",
            "disk:wss=1G,rate=max,pattern=seq,read=0",
            "disk:wss=64MiB,rate=5,read=100",
            "net:dir=out,rate=1M,peer=198.18.0.250",
            "net:dir=both,rate=1536K,peer=198.18.0.250,port=7900",
            "memtouch:wss=64M,rate=2000+disk:wss=16M,rate=200,read=50",
            "memtouch:wss=64M,rate=1,pattern=seq+disk:wss=1G,rate=9,pattern=random,read=0",
        ] {
            assert!(WORKLOAD_SHAPE.matches(ok), "{ok}");
            assert!(drover_guest::spec::parse_workload(ok).is_ok(), "{ok}");
        }
        for bad in [
            "cpu:demand=101",
            "memtouch:wss=100",
            "memtouch:wss=0M",
            "idle quiet",
            "idle panic=1",
            "memtouch:wss=1M,rate=0",
            "disk:wss=16M",
            "disk:wss=16M,rate=1,read=101",
            "disk:wss=16K,rate=1",
            "disk:wss=16M,read=5,rate=1",
            "net:dir=out,rate=1M,peer=224.0.0.1",
            "net:dir=out,rate=1M,peer=0.0.0.0",
            "net:dir=out,rate=2G,peer=198.18.0.250",
            "net:dir=out,rate=1M,peer=198.18.0.250,port=0",
            "net:dir=out,rate=1M,peer=198.18.0.250 init=/bin/sh",
            "",
        ] {
            assert!(!WORKLOAD_SHAPE.matches(bad), "{bad}");
        }
        // The order the pattern fixes, and each parameter once, the guest's grammar states
        // too, naming the parameter (so its refusal, checked first, is the one users see).
        for bad in [
            "disk:wss=16M,read=5,rate=1",
            "disk:wss=16M,rate=1,read=5,read=5",
            "memtouch:wss=16M,pattern=seq,rate=5",
            "net:rate=1M,dir=out,peer=198.18.0.250",
            "memtouch:wss=64M+disk:wss=16M,rate=200",
            "memtouch:wss=64M,rate=max+disk:wss=16M,rate=200",
            "memtouch:wss=64M,rate=5+disk:wss=16M,rate=max",
            "disk:wss=16M,rate=5+memtouch:wss=64M,rate=5",
            "memtouch:wss=64M,rate=5+disk:wss=16M,rate=5+disk:wss=16M,rate=5",
            "memtouch:wss=64M,rate=5+cpu:demand=5",
        ] {
            assert!(!WORKLOAD_SHAPE.matches(bad), "{bad}");
            assert!(drover_guest::spec::parse_workload(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn agent_urls_need_host_and_port() {
        for ok in [
            "http://198.18.0.2:7700",
            "http://198.18.0.2:7700/",
            "https://agent.example:443",
            "http://h1:1",
            "http://[::1]:7700",
            "https://[fd00::2]:443/",
            "http://[::ffff:198.18.0.2]:7700",
        ] {
            assert!(AGENT_URL_SHAPE.matches(ok), "{ok}");
        }
        for bad in [
            "http://198.18.0.2",
            "http://198.18.0.2:0",
            "http://198.18.0.2:65536",
            "http://999.1.1.1:80",
            "http://1.2.3:80",
            "ftp://x:1",
            "http://user@x:1",
            "http://x:1/path",
            "http://x:1?q",
            "http://:1",
            "http://[::1]",
            "http://[::1]:0",
            "http://[::1]:65536",
            "http://::1:7700",
            "http://[1.2.3.4]:1",
            "http://[fe80::1%eth0]:1",
            "http://[:::1]:1",
            "http://user@[::1]:1",
            "http://[::1]:1/path",
            "http://[::1]:1?q",
            "http://[::1]:1#f",
        ] {
            assert!(!AGENT_URL_SHAPE.matches(bad), "{bad}");
        }
    }
}
