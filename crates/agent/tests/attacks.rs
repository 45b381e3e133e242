//! A caller with the token, or a peer posing as a destination agent, tries to make QEMU run a
//! command, open a host file, or connect somewhere Drover did not choose. Every attempt must be
//! refused with a 4xx (or end the migration with the VM safe on its source), and nothing may run:
//! each attack names a marker file that a successful `exec:` would create.
//!
//! Real QEMU (TCG) on loopback: an `exec:` URI only matters if a QEMU would obey it.

use axum::routing::{get, post};
use axum::{Json, Router};
use common::{client, image, run, send_json, tcg_config, QemuGuard};
use drover_agent::procfs;
use drover_api::{AgentUrl, MigrationRequest, MigrationState, VmConfig, VmStatus};
use drover_core::migration::{PlanKnobs, Technique};
use drover_testkit::{require, QEMU, QEMU_IMG};
use serde_json::{json, Value};
use std::path::Path;
use std::time::Duration;

mod common;

/// An idle VM.
fn vm(name: &str) -> VmConfig {
    common::vm(name, "idle")
}

/// POSTs raw JSON; returns the status and body.
async fn post_json(url: &str, body: &Value) -> (u16, Value) {
    send_json("POST", url, Some(body)).await
}

#[test]
fn no_caller_or_peer_can_make_qemu_run_a_command() {
    require!(QEMU, QEMU_IMG);
    procfs::become_subreaper();
    let image = image();
    let dir = tempfile::Builder::new()
        .prefix("drx")
        .tempdir_in("/tmp")
        .expect("tempdir");
    let marker = dir.path().join("pwned");
    let exec = format!("exec:touch {}", marker.display());
    let (state_a, state_b) = (dir.path().join("a"), dir.path().join("b"));
    let _guard = QemuGuard(vec![state_a.clone(), state_b.clone()]);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let (_a, url_a) = run(tcg_config(&state_a, &image)).await;
        let (_b, url_b) = run(tcg_config(&state_b, &image)).await;
        forwarded_commands_are_refused(&url_b, &exec).await;
        assert!(!marker.exists(), "a forwarded command ran");
        forwarded_storage_commands_are_refused(&url_b, &state_b).await;
        paths_stay_in_the_storage_directory(&url_a, &state_a).await;
        a_lying_destination_cannot_steer_the_source(&url_a, &exec).await;
        assert!(!marker.exists(), "a destination's URI ran");
    });
}

/// The destination side: an incoming VM takes only the URIs its agent made.
async fn forwarded_commands_are_refused(url_b: &str, exec: &str) {
    let (s, reply) = post_json(
        &format!("{url_b}/v1/incoming"),
        &json!({"config": vm("in1"), "migration_id": "m-1"}),
    )
    .await;
    assert_eq!(s, 201, "{reply}");
    let own = reply["uri"].as_str().expect("uri").to_string();
    assert!(own.starts_with("tcp:127.0.0.1:"), "{own}");
    let qmp = format!("{url_b}/v1/vms/in1/qmp");
    for (args, want) in [
        (
            json!({"execute": "migrate-incoming", "arguments": {"uri": exec}}),
            422,
        ),
        (
            json!({"execute": "migrate-recover", "arguments": {"uri": exec}}),
            422,
        ),
        (
            json!({"execute": "migrate-incoming", "arguments": {"channels": [{"channel-type": "main",
                "addr": {"transport": "exec", "args": ["sh", "-c", "id"]}}]}}),
            400,
        ),
        (
            json!({"execute": "migrate-incoming", "arguments": {"uri": own, "exit-on-error": false}}),
            400,
        ),
        // Well-formed, but not the URI this agent made for in1: a value that breaks a rule
        // (422, naming arguments.uri), like a URI of another form.
        (
            json!({"execute": "migrate-incoming", "arguments": {"uri": "tcp:127.0.0.1:9"}}),
            422,
        ),
        (
            json!({"execute": "migrate-incoming", "arguments": {"uri": "tcp:8.8.8.8:4444"}}),
            422,
        ),
        (
            json!({"execute": "migrate-recover", "arguments": {"uri": own}}),
            422,
        ),
        (
            json!({"execute": "human-monitor-command", "arguments": {"command-line": "info"}}),
            422,
        ),
        (json!({"execute": "quit"}), 422),
        (
            json!({"execute": "migrate-set-parameters", "arguments": {"downtime-limit": 1}}),
            422,
        ),
    ] {
        let (s, body) = post_json(&qmp, &args).await;
        assert_eq!(s, want, "{args}: {body}");
        assert!(
            body["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{body}"
        );
        let uri = args["arguments"]["uri"].as_str();
        if want == 422 && uri.is_some_and(|u| u.starts_with("tcp:")) {
            assert!(
                body["error"]
                    .as_str()
                    .is_some_and(|e| e.starts_with("arguments.uri")),
                "{body}"
            );
        }
    }
    // The agent's own URI is accepted, and QEMU then really listens there.
    let (s, body) = post_json(
        &qmp,
        &json!({"execute": "migrate-incoming", "arguments": {"uri": own}}),
    )
    .await;
    assert_eq!(s, 200, "{body}");
    let v = client(url_b).get_vm("in1").await.expect("incoming VM");
    assert_eq!(v.status, VmStatus::Incoming);
    client(url_b).abort_incoming("in1").await.expect("abort");
}

/// The destination side of a storage pre-copy: an incoming VM with a disk gets a new target of
/// the source's size and an NBD address; its QEMU starts an NBD server only there and exports
/// only Drover's disk node, writable; aborting it removes the (incomplete) target.
async fn forwarded_storage_commands_are_refused(url_b: &str, state_b: &Path) {
    let target = state_b.join("disks").join("in2.qcow2");
    let mut config = vm("in2");
    config.disk_size_bytes = Some(8 << 20);
    let (s, reply) = post_json(
        &format!("{url_b}/v1/incoming"),
        &json!({"config": config, "migration_id": "m-2", "disk_virtual_bytes": 16 << 20}),
    )
    .await;
    assert_eq!(s, 201, "{reply}");
    assert!(target.is_file(), "no target disk made");
    let nbd: std::net::SocketAddr = reply["nbd"]
        .as_str()
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no NBD address in {reply}"));
    assert_eq!(nbd.ip().to_string(), "127.0.0.1", "{reply}");
    let start = |host: &str, port: Value| {
        json!({"execute": "nbd-server-start",
               "arguments": {"addr": {"type": "inet", "data": {"host": host, "port": port}}}})
    };
    let export = |field: &str, value: Value| {
        let mut args = json!({"type": "nbd", "id": "drover-disk0-export",
                              "node-name": "drover-disk0", "name": "drover-disk0", "writable": true});
        args[field] = value;
        json!({"execute": "block-export-add", "arguments": args})
    };
    let port = nbd.port().to_string();
    let qmp = format!("{url_b}/v1/vms/in2/qmp");
    for (args, want) in [
        // Another port, another address (QEMU would listen wherever it is told).
        (start("127.0.0.1", json!((nbd.port() ^ 1).to_string())), 422),
        (start("0.0.0.0", json!(port)), 422),
        (
            json!({"execute": "nbd-server-start",
                   "arguments": {"addr": {"type": "unix", "data": {"path": "/tmp/nbd.sock"}}}}),
            400,
        ),
        (
            json!({"execute": "nbd-server-start",
                   "arguments": {"addr": {"type": "inet", "data": {"host": "127.0.0.1", "port": port}},
                                 "tls-creds": "x"}}),
            400,
        ),
        // The raw file node, a read-only export, another type, an extra option.
        (export("node-name", json!("drover-disk0-file")), 422),
        (export("writable", json!(false)), 422),
        (export("type", json!("fuse")), 422),
        (export("allow-inactive", json!(true)), 400),
        (
            json!({"execute": "blockdev-add", "arguments": {"driver": "file",
                   "filename": "/etc/shadow", "node-name": "x"}}),
            422,
        ),
        // A storage post-copy's commands: not for a pre-copy destination.
        (
            json!({"execute": "block-stream", "arguments": {"job-id": "drover-disk0-stream",
                   "device": "drover-disk0", "on-error": "stop", "auto-dismiss": false}}),
            422,
        ),
        (json!({"execute": "cont"}), 422),
        (json!({"execute": "query-block-jobs"}), 422),
    ] {
        let (s, body) = post_json(&qmp, &args).await;
        assert_eq!(s, want, "{args}: {body}");
    }
    // The agent's own address and export are taken, and QEMU really serves it.
    for ok in [
        start("127.0.0.1", json!(port)),
        export("writable", json!(true)),
    ] {
        let (s, body) = post_json(&qmp, &ok).await;
        assert_eq!(s, 200, "{ok}: {body}");
    }
    tokio::net::TcpStream::connect(nbd)
        .await
        .expect("the NBD server listens on the address the agent made");
    // A diskless incoming VM takes no storage command.
    let (s, reply) = post_json(
        &format!("{url_b}/v1/incoming"),
        &json!({"config": vm("in3"), "migration_id": "m-3"}),
    )
    .await;
    assert_eq!(s, 201, "{reply}");
    assert!(reply.get("nbd").is_none(), "{reply}");
    let (s, body) = post_json(
        &format!("{url_b}/v1/vms/in3/qmp"),
        &json!({"execute": "nbd-server-stop"}),
    )
    .await;
    assert_eq!(s, 422, "{body}");
    for name in ["in2", "in3"] {
        client(url_b).abort_incoming(name).await.expect("abort");
    }
    assert!(
        !target.exists(),
        "the aborted incoming VM's target was kept"
    );
}

/// A VM's disk is a file name in the agent's storage directory, never a host path.
async fn paths_stay_in_the_storage_directory(url_a: &str, state_a: &Path) {
    let vms = format!("{url_a}/v1/vms");
    let body = |disk: &str| json!({"name": "d1", "memory_bytes": 128 << 20, "disk": disk});
    for disk in ["/etc/shadow", "../../etc/passwd", "a/b", ".."] {
        let (s, reply) = post_json(&vms, &body(disk)).await;
        assert_eq!(s, 422, "{disk}: {reply}");
        assert!(
            reply["error"].as_str().is_some_and(|e| e.contains("disk")),
            "{reply}"
        );
    }
    let (s, reply) = post_json(&vms, &body("absent.qcow2")).await;
    assert_eq!(s, 409, "{reply}");
    // A link planted in the storage directory that leads out of it is refused too.
    std::os::unix::fs::symlink("/etc/hostname", state_a.join("disks/escape.qcow2"))
        .expect("symlink");
    let (s, reply) = post_json(&vms, &body("escape.qcow2")).await;
    assert_eq!(s, 409, "{reply}");
    assert!(client(url_a).list_vms().await.expect("list").is_empty());
}

/// What a fake destination agent answers.
#[derive(Clone, Default)]
struct Lie {
    uri: String,
    /// Answer 201 with a body that is no incoming reply at all.
    garbage: bool,
    /// `DELETE /v1/incoming/{vm}` requests received (the source cleaning up).
    deletes: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

/// A fake destination: a different agent id, and the URIs `lie` says.
async fn fake_destination(lie: Lie) -> String {
    let app = Router::new()
        .route(
            "/v1/health",
            get(|| async {
                Json(json!({"status": "ok", "agent_id": "fake", "vms": 0, "version": "0"}))
            }),
        )
        .route(
            "/v1/incoming",
            post({
                let lie = lie.clone();
                move || {
                    let lie = lie.clone();
                    async move {
                        let body = if lie.garbage {
                            json!({"hello": "world"})
                        } else {
                            json!({"uri": lie.uri, "recover_uri": lie.uri})
                        };
                        (axum::http::StatusCode::CREATED, Json(body))
                    }
                }
            }),
        )
        .route(
            "/v1/incoming/{vm}",
            axum::routing::delete(move || {
                let lie = lie.clone();
                async move {
                    lie.deletes
                        .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    Json(json!({"deleted": "x"}))
                }
            }),
        )
        .fallback(|| async {
            (
                axum::http::StatusCode::NOT_FOUND,
                Json(json!({"error": "no"})),
            )
        });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    format!("http://{addr}")
}

/// The source side: the URI a destination returns is refused unless it is `tcp:` to that
/// destination; the VM stays running on the source.
async fn a_lying_destination_cannot_steer_the_source(url_a: &str, exec: &str) {
    let a = client(url_a);
    a.create_vm(&vm("src1")).await.expect("create");
    let lies = [
        (exec.to_string(), false),
        ("tcp:127.0.0.2:7".to_string(), false),
        ("unreadable reply".to_string(), true),
    ];
    for (n, (uri, garbage)) in lies.into_iter().enumerate() {
        let lie = Lie {
            uri: uri.clone(),
            garbage,
            ..Lie::default()
        };
        let deletes = lie.deletes.clone();
        let fake = fake_destination(lie).await;
        let started = a
            .migrate(
                "src1",
                &MigrationRequest {
                    id: Some(format!("lie-{n}")),
                    to: AgentUrl::parse(&fake).expect("url"),
                    technique: Technique::Precopy,
                    measure: false,
                    knobs: PlanKnobs::default(),
                },
            )
            .await
            .expect("accepted");
        let done = a
            .wait_migration(&started.id, Duration::from_secs(60))
            .await
            .expect("poll");
        assert_eq!(done.state, MigrationState::Failed, "{uri}: {done:?}");
        assert!(!done.vm_on_destination);
        assert_eq!(done.uri, None, "{uri}: the lie reached the record");
        // Refused or unreadable, the reply may stand for an incoming QEMU there: removed.
        assert_eq!(
            deletes.load(std::sync::atomic::Ordering::SeqCst),
            1,
            "{uri}: the destination's incoming VM was not cleaned up"
        );
        assert_eq!(
            done.id,
            format!("lie-{n}"),
            "the caller's id is the migration's"
        );
        // The same id again (a manager retrying after a crash) never starts a second one.
        let again = a
            .migrate(
                "src1",
                &MigrationRequest {
                    id: Some(format!("lie-{n}")),
                    to: AgentUrl::parse(&fake).expect("url"),
                    technique: Technique::Precopy,
                    measure: false,
                    knobs: PlanKnobs::default(),
                },
            )
            .await
            .expect_err("same id");
        assert_eq!(again.status(), Some(409), "{again}");
        let v = a.get_vm("src1").await.expect("still here");
        assert_eq!(v.status, VmStatus::Running, "{uri}");
        assert_eq!(v.qemu_status.as_deref(), Some("running"), "{uri}");
    }
    // A migration to this very agent is refused at once, naming it.
    let err = a
        .migrate(
            "src1",
            &MigrationRequest {
                id: None,
                to: a.base().clone(),
                technique: Technique::Postcopy,
                measure: false,
                knobs: PlanKnobs::default(),
            },
        )
        .await
        .expect_err("to itself");
    assert_eq!(err.status(), Some(409), "{err}");
    assert!(err.to_string().contains("this host"), "{err}");
    a.delete_vm("src1").await.expect("delete");
}
