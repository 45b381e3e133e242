use super::*;

fn status(r: Result<impl std::fmt::Debug, ApiError>) -> u16 {
    r.err().map(|e| e.status().as_u16()).unwrap_or(200)
}

#[test]
fn create_vm_accepts_units_and_defaults() {
    let c = parse_create_vm(
        br#"{"name":"vm-1","memory":"128M","workload":"memtouch:wss=32M,rate=max"}"#,
    )
    .expect("ok");
    assert_eq!(
        (c.name.as_str(), c.vcpus, c.memory_bytes),
        ("vm-1", 1, 128 << 20)
    );
    assert_eq!(c.workload, "memtouch:wss=32M,rate=max");
    let c = parse_create_vm(br#"{"name":"b","memory":268435456,"vcpus":2,"nic":{"tap":"tap0","mac":"52:54:00:00:00:01"},"disk":"/d.qcow2"}"#)
        .expect("ok");
    assert_eq!(
        (c.vcpus, c.memory_bytes, c.workload.as_str()),
        (2, 256 << 20, "idle")
    );
    assert_eq!(c.nic.map(|n| n.tap), Some("tap0".into()));
}

#[test]
fn create_vm_syntax_errors_are_400() {
    assert_eq!(status(parse_create_vm(b"")), 400);
    assert_eq!(status(parse_create_vm(b"{not json")), 400);
    assert_eq!(status(parse_create_vm(b"[]")), 400);
    assert_eq!(status(parse_create_vm(br#"{"name":5,"memory":"1G"}"#)), 400);
    assert_eq!(
        status(parse_create_vm(
            br#"{"name":"a","memory":"1G","vcpus":"two"}"#
        )),
        400
    );
    assert_eq!(
        status(parse_create_vm(br#"{"name":"a","memory":true}"#)),
        400
    );
    assert_eq!(status(parse_create_vm(br#"{"name":"a"}"#)), 400);
    assert_eq!(
        status(parse_create_vm(br#"{"name":"a","memory":"1G","cpus":2}"#)),
        400
    );
}

#[test]
fn create_vm_bad_values_are_422() {
    assert_eq!(
        status(parse_create_vm(br#"{"name":"a b","memory":"1G"}"#)),
        422
    );
    assert_eq!(
        status(parse_create_vm(br#"{"name":"../etc","memory":"1G"}"#)),
        422
    );
    assert_eq!(
        status(parse_create_vm(br#"{"name":"-x","memory":"1G"}"#)),
        422
    );
    assert_eq!(
        status(parse_create_vm(br#"{"name":"a","memory":"1G","vcpus":0}"#)),
        422
    );
    assert_eq!(
        status(parse_create_vm(br#"{"name":"a","memory":"1K"}"#)),
        422
    );
    assert_eq!(
        status(parse_create_vm(br#"{"name":"a","memory":"lots"}"#)),
        422
    );
    assert_eq!(status(parse_create_vm(br#"{"name":"a","memory":-5}"#)), 422);
    assert_eq!(
        status(parse_create_vm(
            br#"{"name":"a","memory":"1G","workload":"idle init=/bin/sh"}"#
        )),
        422
    );
    assert_eq!(
        status(parse_create_vm(
            br#"{"name":"a","memory":"1G","workload":"mine"}"#
        )),
        422
    );
    // Valid characters, but not the guest's grammar, or a working set that cannot fit.
    assert_eq!(
        status(parse_create_vm(
            br#"{"name":"a","memory":"1G","workload":"memtouch:wss=bogus"}"#
        )),
        422
    );
    assert_eq!(
        status(parse_create_vm(
            br#"{"name":"a","memory":"128M","workload":"memtouch:wss=128M"}"#
        )),
        422
    );
    assert_eq!(
        status(parse_create_vm(
            br#"{"name":"a","memory":"1G","disk":"rel.qcow2"}"#
        )),
        422
    );
    assert_eq!(
        status(parse_create_vm(
            br#"{"name":"a","memory":"1G","nic":{"tap":"t","mac":"zz"}}"#
        )),
        422
    );
}

#[test]
fn migration_request_parsing() {
    let m = parse_migration(br#"{"to":"http://127.0.0.1:7701/","technique":"postcopy","bandwidth_bps":50000000,"deadline_s":30.0}"#)
        .expect("ok");
    assert_eq!(m.to, "http://127.0.0.1:7701");
    assert_eq!(m.technique, drover_core::migration::Technique::Postcopy);
    assert_eq!(m.knobs.bandwidth_bps, Some(50_000_000));
    assert_eq!(m.knobs.deadline_s, 30);
    assert!(m.measure);
    assert_eq!(
        status(parse_migration(
            br#"{"to":"ftp://x","technique":"precopy"}"#
        )),
        422
    );
    assert_eq!(
        status(parse_migration(
            br#"{"to":"http://x/a/b","technique":"precopy"}"#
        )),
        422
    );
    assert_eq!(
        status(parse_migration(
            br#"{"to":"http://x","technique":"teleport"}"#
        )),
        400
    );
    assert_eq!(
        status(parse_migration(
            br#"{"to":"http://x","technique":"precopy","hybrid_fraction":2}"#
        )),
        422
    );
    assert_eq!(
        status(parse_migration(
            br#"{"to":"http://x","technique":"precopy","bandwidth_bps":0}"#
        )),
        422
    );
    assert_eq!(
        status(parse_migration(
            br#"{"to":"http://x","technique":"precopy","deadline_ms":5}"#
        )),
        400
    );
    assert_eq!(status(parse_migration(br#"{"to":"http://x"}"#)), 400);
    assert_eq!(
        status(parse_migration(br#"{"to":"http://x","technique":1}"#)),
        400
    );
}

#[test]
fn url_hosts() {
    assert_eq!(
        url_host("http://198.18.0.2:7700"),
        Some("198.18.0.2".into())
    );
    assert_eq!(url_host("https://h2/"), Some("h2".into()));
    assert_eq!(url_host("http://[::1]:7700"), Some("[::1]".into()));
    assert_eq!(url_host("nope"), None);
}

#[test]
fn incoming_is_validated_like_create() {
    let ok = br#"{"config":{"name":"vm1","vcpus":1,"memory_bytes":134217728,"workload":"idle"},"migration_id":"vm1-1","listen_host":"127.0.0.1"}"#;
    assert_eq!(
        parse_incoming(ok).expect("ok").config.memory_bytes,
        128 << 20
    );
    let bad_id = br#"{"config":{"name":"vm1","vcpus":1,"memory_bytes":134217728,"workload":"idle"},"migration_id":"../x","listen_host":"127.0.0.1"}"#;
    assert_eq!(status(parse_incoming(bad_id)), 422);
    let bad_host = br#"{"config":{"name":"vm1","vcpus":1,"memory_bytes":134217728,"workload":"idle"},"migration_id":"m","listen_host":"a,b"}"#;
    assert_eq!(status(parse_incoming(bad_host)), 422);
    let bad_mem = br#"{"config":{"name":"vm1","vcpus":1,"memory_bytes":5,"workload":"idle"},"migration_id":"m","listen_host":"h"}"#;
    assert_eq!(status(parse_incoming(bad_mem)), 422);
}

#[test]
fn qmp_forwarding_is_allowlisted() {
    let c = parse_qmp(br#"{"execute":"migrate-incoming","arguments":{"uri":"tcp:1.2.3.4:5"}}"#)
        .expect("ok");
    assert_eq!(c.execute, "migrate-incoming");
    assert!(parse_qmp(br#"{"execute":"query-status","arguments":null}"#)
        .expect("ok")
        .arguments
        .is_none());
    assert_eq!(status(parse_qmp(br#"{"execute":"quit"}"#)), 422);
    assert_eq!(
        status(parse_qmp(
            br#"{"execute":"human-monitor-command","arguments":{"command-line":"q"}}"#
        )),
        422
    );
    assert_eq!(
        status(parse_qmp(br#"{"execute":"query-status","arguments":[1]}"#)),
        400
    );
    assert_eq!(status(parse_qmp(br#"{"arguments":{}}"#)), 400);
}
