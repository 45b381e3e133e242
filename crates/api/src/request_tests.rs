//! Tests of the request parsers (`request.rs`).

use super::*;
use drover_core::migration::Technique;

fn status<T>(r: Result<T, RequestError>) -> u16 {
    match r {
        Ok(_) => 200,
        Err(RequestError::Syntax(_)) => 400,
        Err(RequestError::Invalid(_)) => 422,
    }
}

fn message<T: std::fmt::Debug>(r: Result<T, RequestError>) -> String {
    r.expect_err("refused").to_string()
}

/// Runs each case's body through `parse` and checks its status and, when refused, that the
/// message says the case's words and never quotes the range of a Rust integer type.
fn check<T: Clone + std::fmt::Debug, B: AsRef<[u8]>>(
    parse: impl Fn(&[u8]) -> Result<T, RequestError>,
    cases: impl IntoIterator<Item = (B, u16, &'static str)>,
) {
    for (body, code, wanted) in cases {
        let text = String::from_utf8_lossy(body.as_ref()).to_string();
        let r = parse(body.as_ref());
        assert_eq!(status(r.clone()), code, "{text}: {r:?}");
        if code != 200 {
            let msg = message(r);
            assert!(msg.contains(wanted), "{text}: {msg}");
            for range in ["4294967295", "18446744073709551615"] {
                assert!(!msg.contains(range), "{text}: {msg}");
            }
        }
    }
}

const VM: &str = r#""name":"a","memory_bytes":268435456"#;

fn vm(extra: &str) -> Vec<u8> {
    format!("{{{VM}{extra}}}").into_bytes()
}

#[test]
fn create_vm() {
    assert_eq!(status(parse_create_vm(&vm(""))), 200);
    for (body, code) in [
        (b"".to_vec(), 400),
        (b"[]".to_vec(), 400),
        (b"{not json".to_vec(), 400),
        (vm(r#","x":1"#), 400),
        (br#"{"name":"","memory_bytes":268435456}"#.to_vec(), 422),
        (vm(r#","disk":"/etc/passwd""#), 422),
        (vm(r#","workload":"idle panic=1""#), 422),
        (vm(r#","nic":{"address":"224.0.0.1"}"#), 422),
        (vm(r#","nic":{"tap":"t0"}"#), 400),
        (vm(r#","nic":["198.18.0.200"]"#), 400),
    ] {
        assert_eq!(
            status(parse_create_vm(&body)),
            code,
            "{}",
            String::from_utf8_lossy(&body)
        );
    }
}

/// serde's derived structs read a JSON array field by field; a request is an object.
#[test]
fn every_body_must_be_an_object() {
    let array = br#"["f29",1,268435456,"idle",null,null]"#;
    let msg = message(parse_create_vm(array));
    assert!(msg.contains("must be a JSON object, not an array"), "{msg}");
    assert_eq!(status(parse_create_vm(array)), 400);
    assert_eq!(
        status(parse_migration(br#"["http://127.0.0.1:1","precopy"]"#)),
        400
    );
    assert_eq!(
        status(parse_incoming(
            br#"[{"name":"a","memory_bytes":268435456},"m-1"]"#
        )),
        400
    );
    assert_eq!(
        status(parse_incoming(
            br#"{"config":["a",1,268435456],"migration_id":"m-1"}"#
        )),
        400
    );
    assert_eq!(status(parse_qmp(br#"["query-status"]"#)), 400);
    for scalar in [&b"1"[..], b"\"x\"", b"null", b"true"] {
        assert_eq!(status(parse_create_vm(scalar)), 400);
    }
}

/// Every refusal names the field's path and what it expects, in the setting's own
/// limits, never the range of the Rust type behind it.
#[test]
fn refusals_name_the_field_and_the_real_limits() {
    check(
        parse_create_vm,
        [
            (
                vm(r#","vcpus":2.5"#),
                400,
                "vcpus: expected a whole number, got 2.5",
            ),
            (vm(r#","vcpus":-1"#), 422, "vcpus -1: expected 1 to 64"),
            (
                vm(r#","vcpus":4294967296"#),
                422,
                "vcpus 4294967296: expected 1 to 64",
            ),
            (vm(r#","vcpus":0"#), 422, "vcpus 0: expected 1 to 64"),
            // A size the guest refuses for its spelling is told the wire's rule, which is
            // narrower than the guest's (it would offer `16MB`, which the wire refuses too).
            (
                vm(r#","workload":"disk:wss=1.5M,rate=5""#),
                422,
                "with SIZE a whole number of M, G, MiB or GiB",
            ),
            (
                vm(r#","workload":"disk:wss=16MB,rate=5""#),
                422,
                "with SIZE a whole number of M, G, MiB or GiB",
            ),
            (
                vm(r#","vcpus":"2""#),
                400,
                "vcpus: expected a whole number, got the string \"2\"",
            ),
            (
                br#"{"name":"a","memory_bytes":18446744073709551616}"#.to_vec(),
                422,
                "memory_bytes 18446744073709551616: expected 128 MiB to 1 TiB",
            ),
            (
                br#"{"name":"a","memory_bytes":5e7}"#.to_vec(),
                422,
                "memory_bytes 5e7: expected 128 MiB to 1 TiB",
            ),
            (
                vm(r#","nic":{"address":"x"}"#),
                422,
                "nic.address 'x' is not valid",
            ),
            (
                vm(r#","nic":{"address":5}"#),
                400,
                "nic.address: expected a string, got 5",
            ),
            (vm(r#","nic":{}"#), 400, "nic.address is missing"),
            (
                vm(r#","bogus":1"#),
                400,
                "unknown field bogus; expected one of name",
            ),
            (vm(r#","name":"b""#), 400, "name is given twice"),
            (
                br#"{"memory_bytes":268435456}"#.to_vec(),
                400,
                "name is missing",
            ),
            (vm(r#","disk":"a/b""#), 422, "disk 'a/b' is not valid"),
            (
                vm(r#","disk_size_bytes":0"#),
                422,
                "disk_size_bytes 0: expected 1 MiB to 16 TiB",
            ),
            (
                vm(r#","disk_size_bytes":1.5"#),
                400,
                "disk_size_bytes: expected a whole number, got 1.5",
            ),
            (
                vm(r#","disk_base":"/etc/passwd""#),
                422,
                "disk_base '/etc/passwd' is not valid",
            ),
            (
                vm(r#","workload":"disk:wss=16M,rate=200,read=101""#),
                422,
                "bad value \"101\" for read",
            ),
            (
                vm(r#","workload":"memtouch:wss=64M,rate=0""#),
                422,
                "bad value \"0\" for rate",
            ),
        ],
    );
}

#[test]
fn nested_fields_are_named_by_their_path() {
    let incoming =
        |config: &str| format!(r#"{{"config":{{{config}}},"migration_id":"m-1"}}"#).into_bytes();
    check(
        parse_incoming,
        [
            (incoming(VM), 200, ""),
            (
                incoming(r#""name":"a","memory_bytes":2.5"#),
                400,
                "config.memory_bytes: expected a whole number, got 2.5",
            ),
            (
                incoming(r#""name":"a","memory_bytes":1024"#),
                422,
                "config.memory_bytes 1024: expected 128 MiB to 1 TiB",
            ),
            (
                incoming(r#""name":"a","memory_bytes":-1"#),
                422,
                "config.memory_bytes -1: expected 128 MiB to 1 TiB",
            ),
            (
                incoming(r#""name":"a","memory_bytes":134217728,"workload":"memtouch:wss=100M""#),
                422,
                "config.workload 'memtouch:wss=100M': working set 100 MiB does not fit",
            ),
            (
                incoming(&format!(r#"{VM},"nic":{{"address":"198.18.0/24"}}"#)),
                422,
                "config.nic.address '198.18.0/24' is not valid",
            ),
            (
                incoming(r#""name":"a""#),
                400,
                "config.memory_bytes is missing",
            ),
            (
                br#"{"config":{"name":"a","memory_bytes":268435456},"migration_id":"-x"}"#.to_vec(),
                422,
                "migration_id '-x' is not valid",
            ),
            (
                br#"{"config":{"name":"a","memory_bytes":268435456}}"#.to_vec(),
                400,
                "migration_id is missing",
            ),
        ],
    );
}

/// An incoming VM with a disk says its disk's virtual size (the destination's target is made
/// that size); a diskless one must not.
#[test]
fn incoming_disks_carry_their_virtual_size() {
    let body = |config: &str, size: &str| {
        format!(r#"{{"config":{{{config}}},"migration_id":"m-1"{size}}}"#).into_bytes()
    };
    let disk = format!(r#"{VM},"disk_size_bytes":67108864"#);
    let req = parse_incoming(&body(&disk, r#","disk_virtual_bytes":67108864"#)).expect("valid");
    assert_eq!(req.disk_virtual_bytes, Some(64 << 20));
    check(
        parse_incoming,
        [
            (body(VM, ""), 200, ""),
            (
                body(&disk, ""),
                422,
                "disk_virtual_bytes is missing: config has disk 'a.qcow2'",
            ),
            (
                body(VM, r#","disk_virtual_bytes":67108864"#),
                422,
                "disk_virtual_bytes is given but config has no disk",
            ),
            (
                body(&disk, r#","disk_virtual_bytes":-1"#),
                422,
                "disk_virtual_bytes -1: expected 1 MiB to 16 TiB",
            ),
            (
                body(&disk, r#","disk_virtual_bytes":4096"#),
                422,
                "disk_virtual_bytes 4096: expected 1 MiB to 16 TiB",
            ),
            (
                body(&disk, r#","disk_virtual_bytes":1048577"#),
                422,
                "disk_virtual_bytes 1048577: expected a multiple of 512",
            ),
            (
                body(&disk, r#","disk_virtual_bytes":"64M""#),
                400,
                "disk_virtual_bytes",
            ),
        ],
    );
}

#[test]
fn migration_requests() {
    let m = parse_migration(
        br#"{"to":"http://127.0.0.1:7701/","technique":"postcopy","bandwidth_bps":50000000,"deadline_s":30.0}"#,
    )
    .expect("valid");
    assert_eq!(m.to.as_str(), "http://127.0.0.1:7701");
    assert_eq!(m.technique, Technique::Postcopy);
    assert_eq!(
        (m.knobs.bandwidth_bps, m.knobs.deadline_s),
        (Some(50_000_000), 30)
    );
    assert!(m.measure);
    let to = r#""to":"http://x:1","technique":"precopy""#;
    let with = |extra: &str| format!("{{{to}{extra}}}").into_bytes();
    check(
        parse_migration,
        [
            (
                br#"{"to":"ftp://x:1","technique":"precopy"}"#.to_vec(),
                422,
                "to 'ftp://x:1' is not valid: expected an agent URL",
            ),
            (
                br#"{"to":"http://x","technique":"precopy"}"#.to_vec(),
                422,
                "to 'http://x'",
            ),
            (
                br#"{"to":"http://x:1/a","technique":"precopy"}"#.to_vec(),
                422,
                "to ",
            ),
            (
                br#"{"to":5,"technique":"precopy"}"#.to_vec(),
                400,
                "to: expected a string, got 5",
            ),
            (
                br#"{"to":"http://x:1","technique":"teleport"}"#.to_vec(),
                422,
                "technique 'teleport' is not valid: expected one of precopy",
            ),
            (
                br#"{"to":"http://x:1","technique":1}"#.to_vec(),
                400,
                "technique: expected a string",
            ),
            (
                with(r#","deadline_ms":5"#),
                400,
                "unknown field deadline_ms",
            ),
            (
                br#"{"to":"http://x:1"}"#.to_vec(),
                400,
                "technique is missing",
            ),
            (with(r#","id":"a b""#), 422, "id 'a b' is not valid"),
            (with(r#","id":7"#), 400, "id: expected a string"),
            (
                with(r#","measure":"yes""#),
                400,
                "measure: expected a boolean",
            ),
            (
                with(r#","hybrid_fraction":2"#),
                422,
                "hybrid_fraction 2: expected a fraction",
            ),
            (
                with(r#","bandwidth_bps":100"#),
                422,
                "bandwidth_bps 100: expected at least 125000 bytes/s (1 Mbit/s)",
            ),
            (
                with(r#","bandwidth_bps":125000.5"#),
                400,
                "bandwidth_bps: expected a whole number, got 125000.5",
            ),
            (
                with(r#","bandwidth_bps":-1"#),
                422,
                "bandwidth_bps -1: expected 125000 (1 Mbit/s) to 100000000000",
            ),
            (
                with(r#","deadline_s":1e30"#),
                422,
                "deadline_s 1e30: expected 1 to 86400 s",
            ),
            (
                with(r#","hybrid_rounds":0"#),
                422,
                "hybrid_rounds 0: expected 1 to 1000",
            ),
            (
                with(r#","deadline_s":30,"deadline_s":40"#),
                400,
                "deadline_s is given twice",
            ),
        ],
    );
}

#[test]
fn path_parameters_are_rules() {
    assert_eq!(status(parse_name("vm-1")), 200);
    assert_eq!(message(parse_name("a b")).split(' ').next(), Some("name"));
    assert_eq!(
        message(parse_migration_id("-x")).split(' ').next(),
        Some("id")
    );
}

#[test]
fn workload_changes() {
    let c = parse_workload_change(br#"{"workload":"cpu:demand=90"}"#).expect("valid");
    assert_eq!(c.workload, "cpu:demand=90");
    assert_eq!(status(parse_workload_change(b"")), 400);
    assert_eq!(status(parse_workload_change(br#"{"spec":"idle"}"#)), 400);
    assert_eq!(
        status(parse_workload_change(br#"{"workload":"idle","extra":1}"#)),
        400
    );
    for bad in ["cpu:demand=101", "idle panic=1", "", "memtouch:wss=64"] {
        let body = serde_json::json!({ "workload": bad }).to_string();
        assert_eq!(status(parse_workload_change(body.as_bytes())), 422, "{bad}");
    }
    assert_eq!(status(parse_workload_change(br#"["idle"]"#)), 400);
    assert_eq!(
        message(parse_workload_change(br#"{"workload":5}"#)),
        "workload: expected a string, got 5"
    );
    assert!(
        message(parse_workload_change(br#"{"workload":"cpu:demand=101"}"#))
            .starts_with("workload 'cpu:demand=101' is not valid: expected "),
        "named by its field, quoted as written"
    );
    assert!(message(parse_workload_change(br#"{"spec":"idle"}"#))
        .starts_with("unknown field spec; expected one of workload"));
}

#[test]
fn qmp_commands() {
    assert_eq!(status(parse_qmp(br#"{"execute":"query-status"}"#)), 200);
    assert_eq!(
        status(parse_qmp(br#"{"execute":"query-status","arguments":null}"#)),
        400,
        "the document admits no arguments for a query, not even null"
    );
    assert_eq!(
        status(parse_qmp(
            br#"{"execute":"migrate-incoming","arguments":null}"#
        )),
        400
    );
    check(
        parse_qmp,
        [
        (&br#"{"execute":"quit"}"#[..], 422, "execute 'quit' is not valid"),
        (
            br#"{"execute":"migrate-incoming","arguments":{"uri":"exec:touch /tmp/x"}}"#,
            422,
            "arguments.uri 'exec:touch /tmp/x' is not valid: expected tcp:",
        ),
        (
            br#"{"execute":"migrate-recover","arguments":{"uri":"tcp:0.0.0.0:1"}}"#,
            422,
            "arguments.uri 'tcp:0.0.0.0:1'",
        ),
        (
            br#"{"execute":"migrate-incoming","arguments":{"uri":"tcp:1.2.3.4:5","exit-on-error":false}}"#,
            400,
            "unknown field arguments.exit-on-error",
        ),
        (
            br#"{"execute":"migrate-incoming","arguments":{"uri":5}}"#,
            400,
            "arguments.uri: expected a string",
        ),
        (br#"{"execute":"migrate-incoming"}"#, 400, "arguments is missing"),
        (
            br#"{"execute":"migrate-set-capabilities","arguments":{"capabilities":[{"capability":"x-colo","state":true}]}}"#,
            422,
            "arguments.capabilities[0].capability 'x-colo' is not valid",
        ),
        (
            br#"{"execute":"migrate-set-capabilities","arguments":{"capabilities":[{"capability":"events","state":1}]}}"#,
            400,
            "arguments.capabilities[0].state: expected a boolean",
        ),
        (br#"{"execute":"query-status","arguments":{}}"#, 400, "takes none"),
        (br#"{"execute":"query-status","x":1}"#, 400, "unknown field x"),
        (br#"{"execute":5}"#, 400, "execute: expected a string"),
        (br#"{"arguments":{}}"#, 400, "execute is missing"),
        ],
    );
    let seventeen = format!(
        r#"{{"execute":"migrate-set-capabilities","arguments":{{"capabilities":[{}]}}}}"#,
        vec![r#"{"capability":"events","state":true}"#; 17].join(",")
    );
    assert_eq!(status(parse_qmp(seventeen.as_bytes())), 422);
}

/// A body nested beyond `body::MAX_DEPTH` is the request's structure (400) on every body,
/// named at the path where the limit was hit.
#[test]
fn deep_nesting_is_refused_on_every_body() {
    let deep = |field: &str| {
        let depth = 100_000;
        format!(
            r#"{{"{field}":{}{}}}"#,
            "[".repeat(depth),
            "]".repeat(depth)
        )
        .into_bytes()
    };
    type Parse = fn(&[u8]) -> Result<(), RequestError>;
    let parsers: [(&str, Parse); 5] = [
        ("name", |b| parse_create_vm(b).map(drop)),
        ("to", |b| parse_migration(b).map(drop)),
        ("config", |b| parse_incoming(b).map(drop)),
        ("workload", |b| parse_workload_change(b).map(drop)),
        ("arguments", |b| parse_qmp(b).map(drop)),
    ];
    for (field, parse) in parsers {
        let r = parse(&deep(field));
        assert_eq!(status(r.clone()), 400, "{field}");
        let m = message(r);
        let at = format!("{field}{}: ", "[0]".repeat(crate::body::MAX_DEPTH - 1));
        assert!(m.starts_with(&at), "{field}: {m}");
        assert!(m.contains("deeper than the 32 levels"), "{m}");
    }
}

/// `"hybrid_fraction": -0.0` is read as 0.0 (it was stored and echoed as -0.0).
#[test]
fn a_negative_zero_fraction_is_read_as_zero() {
    for zero in ["-0.0", "-0", "-0e5"] {
        let body = format!(
            r#"{{"to":"http://198.18.0.2:7700","technique":"hybrid","hybrid_fraction":{zero}}}"#
        );
        let req = parse_migration(body.as_bytes()).expect("valid");
        assert!(req.knobs.hybrid_fraction.is_sign_positive(), "{zero}");
    }
}

/// An agent URL may be a bracketed IPv6 address, as the agent listens there.
#[test]
fn migration_requests_take_ipv6_agent_urls() {
    let req =
        parse_migration(br#"{"to":"http://[::1]:7700","technique":"precopy"}"#).expect("valid");
    assert_eq!(req.to.host(), "::1");
    for bad in [
        "http://[::1]",
        "http://[::1]:0",
        "http://user@[::1]:1",
        "http://[::1]:1/x",
    ] {
        let body = format!(r#"{{"to":"{bad}","technique":"precopy"}}"#);
        assert_eq!(status(parse_migration(body.as_bytes())), 422, "{bad}");
    }
}

/// A WAN plan's number that cannot even be read (negative, beyond the type, infinite) is
/// refused with the field's own limits, as one that reads but is out of range.
#[test]
fn wan_plan_numbers_state_their_limits() {
    let body = |fields: &str| format!("{{{fields}}}").into_bytes();
    let ok = r#""link_bytes_per_s":12500000,"rtt_ms":50"#;
    check(
        parse_wan_plan,
        [
            (body(ok), 200, ""),
            (
                body(r#""link_bytes_per_s":12500000,"rtt_ms":-1"#),
                422,
                "rtt_ms -1: expected 0 to 10000 ms",
            ),
            (
                body(r#""link_bytes_per_s":12500000,"rtt_ms":1e400"#),
                422,
                "rtt_ms 1e400: expected 0 to 10000 ms",
            ),
            (
                body(r#""link_bytes_per_s":1e23,"rtt_ms":50"#),
                422,
                "link_bytes_per_s 1e23: expected 125000 to 12500000000 bytes/s",
            ),
            (
                body(&format!(r#"{ok},"budget_s":4294967296"#)),
                422,
                "budget_s 4294967296: expected 1 to 86400 seconds",
            ),
            (
                body(&format!(r#"{ok},"window_s":-3"#)),
                422,
                "window_s -3: expected 1 to 20 seconds",
            ),
            (
                body(&format!(r#"{ok},"window_s":0"#)),
                422,
                "window_s: expected 1 to 20 seconds, got 0",
            ),
        ],
    );
}

/// A request that carries nothing takes no body or `{}`; anything else is refused (400), not
/// silently ignored.
#[test]
fn a_request_without_fields_refuses_a_body_with_some() {
    let parse = |b: &[u8]| parse_no_fields(b, "resume request");
    check(
        parse,
        [
            (&b""[..], 200, ""),
            (b" \n", 200, ""),
            (b"{}", 200, ""),
            (b" { } ", 200, ""),
            (b"{not json", 400, "the resume request is not JSON"),
            (
                b"[]",
                400,
                "the resume request must be a JSON object, not an array",
            ),
            (
                br#"{"resume_window_s":60}"#,
                400,
                "unknown field resume_window_s; the resume request takes no fields: send no \
                 body or {}",
            ),
        ],
    );
}
