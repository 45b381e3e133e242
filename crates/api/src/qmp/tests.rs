//! The forwarded set's parsing, refusals and replies.

use super::*;
use proptest::prelude::*;
use serde_json::json;

#[test]
fn the_drivers_commands_round_trip() {
    let caps = json!({"capabilities": [{"capability": "postcopy-ram", "state": true}]});
    let c = ForwardedQmp::from_parts("migrate-set-capabilities", Some(&caps)).expect("ok");
    assert_eq!(c.arguments(), Some(caps));
    let inc = json!({"uri": "tcp:198.18.0.3:4000"});
    let c = ForwardedQmp::from_parts("migrate-incoming", Some(&inc)).expect("ok");
    assert_eq!(c.arguments(), Some(inc));
    assert_eq!(
        ForwardedQmp::from_parts("query-status", None),
        Ok(ForwardedQmp::QueryStatus)
    );
    let pause = ForwardedQmp::from_parts("migrate-pause", None).expect("pause");
    assert_eq!((pause.name(), pause.arguments()), ("migrate-pause", None));
    assert!(ForwardedQmp::from_parts("migrate-pause", Some(&json!({"x": 1}))).is_err());
    let wire = serde_json::to_value(&c).expect("json");
    assert_eq!(wire["execute"], "migrate-incoming");
    let back: ForwardedQmp = serde_json::from_value(wire).expect("reads back");
    assert_eq!(back, c);
}

/// What `drover_qemu::storage` sends a destination, as `qmp::block` spells it.
#[test]
fn the_storage_commands_round_trip() {
    let start = json!({"addr": {"type": "inet", "data": {"host": "198.18.0.3", "port": "10809"}}});
    let c = ForwardedQmp::from_parts("nbd-server-start", Some(&start)).expect("start");
    assert_eq!(c.arguments(), Some(start));
    let ForwardedQmp::NbdServerStart(a) = &c else {
        panic!("{c:?}")
    };
    assert_eq!(
        a.addr.socket_addr(),
        Some("198.18.0.3:10809".parse().expect("addr"))
    );
    let export = json!({"type": "nbd", "id": "drover-disk0-export", "node-name": "drover-disk0",
                        "name": "drover-disk0", "writable": true});
    let c = ForwardedQmp::from_parts("block-export-add", Some(&export)).expect("export");
    assert_eq!(c.arguments(), Some(export));
    let stop = ForwardedQmp::from_parts("nbd-server-stop", None).expect("stop");
    assert_eq!((stop.name(), stop.arguments()), ("nbd-server-stop", None));
}

/// What `drover_qemu::storage_postcopy` sends a destination, as `qmp::block` spells it.
#[test]
fn the_stream_commands_round_trip() {
    let stream = json!({"job-id": "drover-disk0-stream", "device": "drover-disk0",
                        "on-error": "stop", "auto-dismiss": false});
    let mut capped = stream.clone();
    capped["speed"] = json!(16_777_216);
    for (cmd, args) in [
        ("block-stream", Some(stream.clone())),
        ("block-stream", Some(capped)),
        (
            "block-job-resume",
            Some(json!({"device": "drover-disk0-stream"})),
        ),
        ("job-dismiss", Some(json!({"id": "drover-disk0-stream"}))),
        ("query-block-jobs", None),
        ("cont", None),
    ] {
        let c = ForwardedQmp::from_parts(cmd, args.as_ref()).expect(cmd);
        assert_eq!((c.name(), c.arguments()), (cmd, args));
    }
    // A whole number written with a fraction of zero, as JSON allows (schemathesis did).
    let mut written = stream.clone();
    written["speed"] = json!(244.0);
    let c = ForwardedQmp::from_parts("block-stream", Some(&written)).expect("244.0");
    assert_eq!(c.arguments().expect("args")["speed"], json!(244));
    let jobs = json!([{"device": "drover-disk0-stream", "type": "stream", "offset": 4096,
                       "len": 8192, "ready": false, "status": "running", "busy": true,
                       "paused": false, "speed": 0, "io-status": "ok",
                       "auto-finalize": true, "auto-dismiss": false}]);
    let reply = ForwardedQmp::QueryBlockJobs.reply(jobs).expect("jobs");
    let QmpReturn::BlockJobs(list) = &reply else {
        panic!("{reply:?}")
    };
    assert_eq!((list[0].offset, list[0].len), (4096, 8192));
    // What crosses back reads as a job list again on the source's side.
    let wire = serde_json::to_value(QmpReply { ret: reply.clone() }).expect("json");
    let back: QmpReply = serde_json::from_value(wire).expect("reads back");
    assert_eq!(back.ret, reply);
}

/// A storage hybrid reads the destination overlay's file size: the flat node list, its
/// reply reduced to names and sizes, read back as such on the source's side.
#[test]
fn the_node_list_is_reduced_to_names_and_sizes() {
    let flat = json!({"flat": true});
    let c = ForwardedQmp::from_parts("query-named-block-nodes", Some(&flat)).expect("nodes");
    assert_eq!(c.arguments(), Some(flat));
    for bad in [
        None,
        Some(json!({"flat": false})),
        Some(json!({"flat": true, "x": 1})),
    ] {
        assert!(
            ForwardedQmp::from_parts("query-named-block-nodes", bad.as_ref()).is_err(),
            "{bad:?}"
        );
    }
    let nodes = json!([{"node-name": "drover-disk0", "drv": "qcow2", "file": "/x",
                        "image": {"actual-size": 1_048_576, "virtual-size": 67_108_864,
                                  "filename": "/x"}},
                       {"node-name": "drover-disk0-file", "drv": "file"}]);
    let reply = c.reply(nodes).expect("nodes");
    let QmpReturn::BlockNodes(list) = &reply else {
        panic!("{reply:?}")
    };
    assert_eq!(list[0].node_name, "drover-disk0");
    assert_eq!(list[0].image.and_then(|i| i.actual_size), Some(1_048_576));
    assert_eq!(list[1].image, None);
    let wire = serde_json::to_value(QmpReply { ret: reply.clone() }).expect("json");
    assert!(
        wire.to_string().contains("\"actual-size\":1048576"),
        "{wire}"
    );
    assert!(!wire.to_string().contains("filename"), "{wire}");
    let back: QmpReply = serde_json::from_value(wire).expect("reads back");
    assert_eq!(back.ret, reply);
}

#[test]
fn stream_attacks_are_refused() {
    let stream = |extra: (&str, Value)| {
        let mut e = json!({"job-id": "drover-disk0-stream", "device": "drover-disk0",
                           "on-error": "stop", "auto-dismiss": false});
        e[extra.0] = extra.1;
        e
    };
    for (cmd, args) in [
        ("block-stream", stream(("on-error", json!("ignore")))),
        ("block-stream", stream(("on-error", json!("report")))),
        ("block-stream", stream(("auto-dismiss", json!(true)))),
        ("block-stream", stream(("base", json!("drover-disk0-file")))),
        (
            "block-stream",
            stream(("backing-file", json!("/etc/passwd"))),
        ),
        ("block-stream", stream(("bottom", json!("x")))),
        ("block-stream", stream(("device", json!("json:{}")))),
        ("block-stream", stream(("speed", json!(-1)))),
        // Drover's rates are 1 to 100 GB/s: 0 and beyond are none of its own.
        ("block-stream", stream(("speed", json!(0)))),
        ("block-stream", stream(("speed", json!(100_000_000_001u64)))),
        (
            "block-stream",
            stream(("speed", json!(198_320_810_655_014_912_524_288.0))),
        ),
        ("block-job-resume", json!({"device": "x", "force": true})),
        ("block-job-resume", json!({"device": "../x"})),
        ("job-dismiss", json!({"id": ""})),
        ("cont", json!({"x": 1})),
        ("query-block-jobs", json!({"x": 1})),
        ("block-job-cancel", json!({"device": "drover-disk0-stream"})),
        (
            "block-job-complete",
            json!({"device": "drover-disk0-stream"}),
        ),
        ("stop", json!({})),
    ] {
        assert!(
            ForwardedQmp::from_parts(cmd, Some(&args)).is_err(),
            "{cmd} {args}"
        );
    }
}

#[test]
fn storage_attacks_are_refused() {
    let inet = |host: Value, port: Value| json!({"addr": {"type": "inet", "data": {"host": host, "port": port}}});
    let export = |extra: (&str, Value)| {
        let mut e = json!({"type": "nbd", "id": "drover-disk0-export",
                           "node-name": "drover-disk0", "name": "drover-disk0", "writable": true});
        e[extra.0] = extra.1;
        e
    };
    for (cmd, args) in [
        // A unix socket, an fd, a vsock: only inet.
        (
            "nbd-server-start",
            json!({"addr": {"type": "unix", "data": {"path": "/tmp/x"}}}),
        ),
        (
            "nbd-server-start",
            json!({"addr": {"type": "fd", "data": {"str": "3"}}}),
        ),
        ("nbd-server-start", inet(json!("not-an-ip"), json!("10809"))),
        ("nbd-server-start", inet(json!("198.18.0.3"), json!("0"))),
        (
            "nbd-server-start",
            inet(json!("198.18.0.3"), json!("010809")),
        ),
        (
            "nbd-server-start",
            inet(json!("198.18.0.3"), json!("65536")),
        ),
        ("nbd-server-start", inet(json!("198.18.0.3"), json!(10809))),
        ("nbd-server-start", inet(json!("198.18.0.3"), json!("nbd"))),
        (
            "nbd-server-start",
            json!({"addr": {"type": "inet", "data": {"host": "198.18.0.3", "port": "10809", "ipv6": true}}}),
        ),
        (
            "nbd-server-start",
            json!({"addr": {"type": "inet", "data": {"host": "198.18.0.3", "port": "10809"}}, "tls-creds": "x"}),
        ),
        (
            "nbd-server-start",
            json!({"addr": {"type": "inet", "data": {"host": "198.18.0.3", "port": "10809"}}, "max-connections": 0}),
        ),
        ("block-export-add", export(("writable", json!(false)))),
        ("block-export-add", export(("type", json!("fuse")))),
        (
            "block-export-add",
            export(("type", json!("vhost-user-blk"))),
        ),
        ("block-export-add", export(("node-name", json!("json:{}")))),
        ("block-export-add", export(("name", json!("")))),
        ("block-export-add", export(("id", json!("A".repeat(65))))),
        ("block-export-add", export(("bitmaps", json!(["b"])))),
        ("block-export-add", export(("allow-inactive", json!(true)))),
        ("block-export-add", export(("iothread", json!("io0")))),
        ("block-export-add", export(("mountpoint", json!("/etc")))),
        ("nbd-server-stop", json!({"x": 1})),
        (
            "nbd-server-add",
            json!({"device": "drover-disk0", "writable": true}),
        ),
        ("block-export-del", json!({"id": "drover-disk0-export"})),
        (
            "blockdev-add",
            json!({"driver": "file", "filename": "/etc/shadow", "node-name": "x"}),
        ),
        (
            "blockdev-mirror",
            json!({"device": "drover-disk0", "target": "x", "sync": "full"}),
        ),
    ] {
        assert!(
            ForwardedQmp::from_parts(cmd, Some(&args)).is_err(),
            "{cmd} {args}"
        );
    }
}

#[test]
fn the_forwardable_list_is_the_message() {
    assert_eq!(FORWARDABLE.join(", "), ALLOWED);
}

#[test]
fn attacks_are_refused() {
    for (cmd, args) in [
        ("migrate-incoming", json!({"uri": "exec:touch /tmp/pwned"})),
        ("migrate-recover", json!({"uri": "exec:id"})),
        (
            "migrate-incoming",
            json!({"uri": "tcp:1.2.3.4:5", "exit-on-error": false}),
        ),
        (
            "migrate-incoming",
            json!({"channels": [{"channel-type": "main", "addr": {"transport": "exec", "args": ["sh"]}}]}),
        ),
        (
            "migrate-set-capabilities",
            json!({"capabilities": [{"capability": "x-colo", "state": true}]}),
        ),
        ("migrate-set-parameters", json!({"downtime-limit": 1})),
        ("human-monitor-command", json!({"command-line": "info"})),
        ("quit", json!({})),
        ("query-status", json!({"x": 1})),
    ] {
        assert!(
            ForwardedQmp::from_parts(cmd, Some(&args)).is_err(),
            "{cmd} {args}"
        );
    }
}

fn json_leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        "(exec:|tcp:|unix:|fd:)?[ -~]{0,24}".prop_map(Value::from),
        prop::sample::select(vec![
            "postcopy-ram",
            "events",
            "x-colo",
            "tcp:127.0.0.1:1",
            "exec:sh"
        ])
        .prop_map(Value::from),
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    json_leaf().prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            prop::collection::btree_map(
                prop::sample::select(vec![
                    "uri",
                    "capabilities",
                    "capability",
                    "state",
                    "channels",
                    "exit-on-error",
                    "resume",
                    "x"
                ]),
                inner,
                0..4
            )
            .prop_map(|m| Value::Object(m.into_iter().map(|(k, v)| (k.to_string(), v)).collect())),
        ]
    })
}

proptest! {
    /// Whatever arguments come in, what goes out to QEMU is only ever a tcp URI or a list
    /// of Drover's capabilities, under the command's own keys.
    #[test]
    fn only_allowed_arguments_ever_reach_qemu(
        cmd in prop::sample::select(vec![
            "migrate-set-capabilities", "migrate-incoming", "migrate-recover",
            "migrate-pause", "query-migrate", "query-status", "query-migrate-capabilities",
            "migrate", "quit", "migrate-set-parameters", "nbd-server-start",
            "block-export-add", "nbd-server-stop", "block-stream", "block-job-resume",
            "job-dismiss", "query-block-jobs", "cont",
        ]),
        args in json_value(),
    ) {
        if let Ok(c) = ForwardedQmp::from_parts(cmd, Some(&args)) {
            prop_assert_eq!(c.name(), cmd);
            match c.arguments() {
                None => prop_assert!(
                    cmd.starts_with("query-")
                        || ["migrate-pause", "nbd-server-stop", "cont"].contains(&cmd)
                ),
                Some(Value::Object(m)) => {
                    let keys: Vec<&str> = m.keys().map(String::as_str).collect();
                    match cmd {
                        "migrate-set-capabilities" => prop_assert_eq!(keys, vec!["capabilities"]),
                        "nbd-server-start" => prop_assert_eq!(keys, vec!["addr"]),
                        "block-stream" => {
                            prop_assert_eq!(&m["on-error"], &Value::from("stop"));
                            prop_assert_eq!(&m["auto-dismiss"], &Value::Bool(false));
                        }
                        "block-job-resume" => prop_assert_eq!(keys, vec!["device"]),
                        "job-dismiss" => prop_assert_eq!(keys, vec!["id"]),
                        "block-export-add" => {
                            prop_assert_eq!(keys, vec!["id", "name", "node-name", "type", "writable"]);
                            prop_assert_eq!(&m["writable"], &Value::Bool(true));
                        }
                        _ => {
                            prop_assert_eq!(keys, vec!["uri"]);
                            let uri = m["uri"].as_str().unwrap_or_default();
                            prop_assert!(uri.starts_with("tcp:"), "{}", uri);
                            prop_assert!(uri.parse::<MigrationUri>().is_ok());
                        }
                    }
                }
                Some(other) => prop_assert!(false, "arguments {other} are not an object"),
            }
        }
    }
}
