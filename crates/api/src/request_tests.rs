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
        (vm(r#","nic":{"tap":"t0","mac":"01:00:5e:00:00:01"}"#), 422),
        (vm(r#","nic":{"tap":"t0"}"#), 400),
        (vm(r#","nic":["t0","52:54:00:12:34:56"]"#), 400),
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
    for (body, code, wanted) in [
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
        (
            vm(r#","vcpus":"2""#),
            400,
            "vcpus: expected a whole number, got the string \"2\"",
        ),
        (
            br#"{"name":"a","memory_bytes":18446744073709551616}"#.to_vec(),
            422,
            "memory_bytes 18446744073709551616: expected 64 MiB to 1 TiB",
        ),
        (
            br#"{"name":"a","memory_bytes":5e7}"#.to_vec(),
            422,
            "memory_bytes 5e7: expected 64 MiB to 1 TiB",
        ),
        (
            vm(r#","nic":{"tap":"t0","mac":"x"}"#),
            422,
            "nic.mac 'x' is not valid",
        ),
        (
            vm(r#","nic":{"tap":"t0","mac":5}"#),
            400,
            "nic.mac: expected a string, got 5",
        ),
        (vm(r#","nic":{"tap":"t0"}"#), 400, "nic.mac is missing"),
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
            vm(r#","workload":"memtouch:wss=64M,rate=0""#),
            422,
            "bad value \"0\" for rate",
        ),
    ] {
        let text = String::from_utf8_lossy(&body).to_string();
        let r = parse_create_vm(&body);
        assert_eq!(status(r.clone()), code, "{text}: {r:?}");
        let msg = message(r);
        assert!(msg.contains(wanted), "{text}: {msg}");
        assert!(!msg.contains("4294967295") && !msg.contains("18446744073709551615"));
    }
}

#[test]
fn nested_fields_are_named_by_their_path() {
    let incoming =
        |config: &str| format!(r#"{{"config":{{{config}}},"migration_id":"m-1"}}"#).into_bytes();
    for (body, code, wanted) in [
        (incoming(VM), 200, ""),
        (
            incoming(r#""name":"a","memory_bytes":2.5"#),
            400,
            "config.memory_bytes: expected a whole number, got 2.5",
        ),
        (
            incoming(r#""name":"a","memory_bytes":1024"#),
            422,
            "config.memory_bytes 1024: expected 64 MiB to 1 TiB",
        ),
        (
            incoming(r#""name":"a","memory_bytes":-1"#),
            422,
            "config.memory_bytes -1: expected 64 MiB to 1 TiB",
        ),
        (
            incoming(r#""name":"a","memory_bytes":134217728,"workload":"memtouch:wss=100M""#),
            422,
            "config.workload 'memtouch:wss=100M': working set 100 MiB does not fit",
        ),
        (
            incoming(&format!(
                r#"{VM},"nic":{{"tap":"t/0","mac":"52:54:00:12:34:56"}}"#
            )),
            422,
            "config.nic.tap 't/0' is not valid",
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
    ] {
        let text = String::from_utf8_lossy(&body).to_string();
        let r = parse_incoming(&body);
        assert_eq!(status(r.clone()), code, "{text}: {r:?}");
        if code != 200 {
            let msg = message(r);
            assert!(msg.contains(wanted), "{text}: {msg}");
        }
    }
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
    for (body, code, wanted) in [
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
    ] {
        let text = String::from_utf8_lossy(&body).to_string();
        let r = parse_migration(&body);
        assert_eq!(status(r.clone()), code, "{text}: {r:?}");
        let msg = message(r);
        assert!(msg.contains(wanted), "{text}: {msg}");
        assert!(!msg.contains("18446744073709551615"), "{msg}");
    }
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
    for (body, code, wanted) in [
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
    ] {
        let text = String::from_utf8_lossy(body).to_string();
        let r = parse_qmp(body);
        assert_eq!(status(r.clone()), code, "{text}: {r:?}");
        let msg = message(r);
        assert!(msg.contains(wanted), "{text}: {msg}");
    }
    let seventeen = format!(
        r#"{{"execute":"migrate-set-capabilities","arguments":{{"capabilities":[{}]}}}}"#,
        vec![r#"{"capability":"events","state":true}"#; 17].join(",")
    );
    assert_eq!(status(parse_qmp(seventeen.as_bytes())), 422);
}
