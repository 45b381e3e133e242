//! What the agent refuses before any QEMU could be hurt, without QEMU: memory admission (with a
//! stand-in QEMU that takes a moment and fails, so admitted creates are told from refused ones),
//! the migration rules on VMs recorded in the state directory (their QEMU long gone), and the
//! disks the agent creates (with the real qemu-img).

use common::{ghost, send_json, stand_in_config};
use drover_agent::model::{VmRecord, VmRole};
use drover_agent::{AgentConfig, RunningAgent};
use serde_json::{json, Value};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

mod common;

const MIB: u64 = 1 << 20;

/// An agent reporting `memory` bytes, whose "QEMU" waits half a second and fails.
fn config(dir: &Path, memory: u64) -> AgentConfig {
    let qemu = dir.join("qemu-stand-in");
    std::fs::write(&qemu, "#!/bin/sh\nsleep 0.5\nexit 1\n").expect("write");
    std::fs::set_permissions(&qemu, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let mut c = stand_in_config(dir);
    c.qemu_binary = qemu.display().to_string();
    c.memory_bytes = Some(memory);
    c
}

async fn agent(c: AgentConfig) -> (RunningAgent, String) {
    common::run(c).await
}

async fn send(method: &str, url: &str, body: Option<Value>) -> (u16, Value) {
    send_json(method, url, body.as_ref()).await
}

fn error(v: &Value) -> String {
    v["error"].as_str().unwrap_or_default().to_string()
}

/// The reviewer's lab host: `--host-memory 512M`, six parallel creates of 128 MiB all got 201
/// (768 MiB admitted) and the OOM killer took VMs. A 128 MiB VM under TCG takes ~215 MB:
/// only two fit, and the check and the claim are one step.
#[tokio::test]
async fn memory_admission_counts_qemu_and_is_atomic() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_a, url) = agent(config(dir.path(), 512 * MIB)).await;
    let creates = (0..6).map(|i| {
        let url = url.clone();
        async move {
            let body = json!({"name": format!("vm{i}"), "memory_bytes": 128 * MIB});
            send("POST", &format!("{url}/v1/vms"), Some(body)).await
        }
    });
    let answers = futures_join_all(creates).await;
    let admitted = answers.iter().filter(|(s, _)| *s == 500).count();
    let refused: Vec<&Value> = answers
        .iter()
        .filter(|(s, _)| *s == 409)
        .map(|(_, v)| v)
        .collect();
    assert_eq!((admitted, refused.len()), (2, 4), "{answers:?}");
    assert!(
        error(refused[0]).contains("QEMU's own overhead"),
        "{}",
        error(refused[0])
    );

    // One 256 MiB VM does not fit a 300 MiB host once its QEMU is counted (364 MiB).
    let dir = tempfile::tempdir().expect("tempdir");
    let (_b, url) = agent(config(dir.path(), 300 * MIB)).await;
    let body = json!({"name": "big", "memory_bytes": 256 * MIB});
    let (s, v) = send("POST", &format!("{url}/v1/vms"), Some(body)).await;
    assert_eq!(s, 409, "{v}");
}

/// Runs futures concurrently (the agent's own dependencies have no `join_all`).
async fn futures_join_all<F: std::future::Future + Send + 'static>(
    fs: impl Iterator<Item = F>,
) -> Vec<F::Output>
where
    F::Output: Send + 'static,
{
    let handles: Vec<_> = fs.map(tokio::spawn).collect();
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.expect("task"));
    }
    out
}

fn record(name: &str, role: VmRole, disk: Option<&str>) -> VmRecord {
    let mut config = common::vm(name, "idle");
    config.disk = disk.map(str::to_string);
    let run_dir = std::env::temp_dir().join(format!("drover-refusals-{name}"));
    ghost(config, role, run_dir)
}

/// Commit, delete and incoming on VMs whose state says what they are: an ordinary VM is never
/// committed, an incoming VM is never deleted through `/v1/vms`, a migration id delivers one
/// VM, and a VM with a disk migrates by pre-copy only, never onto a file the destination has.
#[tokio::test]
async fn migration_rules_hold_for_recorded_vms() {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = config(dir.path(), 4096 * MIB);
    let store = drover_agent::store::Store::open(&c.state_dir).expect("store");
    let incoming = VmRole::Incoming {
        migration_id: "m-7".into(),
        uri: None,
        recover_uri: None,
        nbd: None,
        source_nbd: None,
    };
    store
        .save_vm(&record("plain", VmRole::Running, None))
        .expect("save");
    store
        .save_vm(&record("arriving", incoming, None))
        .expect("save");
    store
        .save_vm(&record("db", VmRole::Running, Some("db.qcow2")))
        .expect("save");
    std::fs::write(store.disk_dir().join("db.qcow2"), b"disk").expect("disk");
    let (_a, url) = agent(c).await;
    let u = |p: &str| format!("{url}{p}");

    // Commit on a VM that never was incoming: 409, not 200.
    let (s, v) = send("POST", &u("/v1/incoming/plain/commit"), None).await;
    assert_eq!(s, 409, "{v}");
    assert!(error(&v).contains("never was an incoming"), "{v}");
    // Commit on an incoming VM with no guest (its QEMU is gone): 409.
    let (s, v) = send("POST", &u("/v1/incoming/arriving/commit"), None).await;
    assert_eq!(s, 409, "{v}");

    // An incoming VM is not deleted through /v1/vms: its migration's source aborts it.
    let (s, v) = send("DELETE", &u("/v1/vms/arriving"), None).await;
    assert_eq!(s, 409, "{v}");
    assert!(error(&v).contains("migration m-7"), "{v}");

    // A second incoming VM for migration m-7 is refused before any QEMU starts.
    let body =
        json!({"config": {"name": "twin", "memory_bytes": 128 * MIB}, "migration_id": "m-7"});
    let (s, v) = send("POST", &u("/v1/incoming"), Some(body)).await;
    assert_eq!(s, 409, "{v}");
    assert!(
        error(&v).contains("migration 'm-7' already has VM 'arriving'"),
        "{v}"
    );

    // A VM with a disk migrates by storage pre-copy with memory pre-copy only (auto picks
    // it): any other technique is refused at the request...
    for technique in ["postcopy", "hybrid"] {
        let req = json!({"to": "http://127.0.0.1:9", "technique": technique});
        let (s, v) = send("POST", &u("/v1/vms/db/migrations"), Some(req)).await;
        assert_eq!(s, 409, "{v}");
        assert!(
            error(&v).contains("'db.qcow2'")
                && error(&v).contains("with storage postcopy any technique moves it"),
            "{v}"
        );
    }
    // ...a storage post-copy's source export must be on the requesting peer (loopback
    // here), never elsewhere...
    let body = json!({"config": {"name": "db3", "memory_bytes": 128 * MIB, "disk": "db3.qcow2"},
                      "migration_id": "m-9", "disk_virtual_bytes": 64 * MIB,
                      "storage": "postcopy", "source_nbd": "198.18.0.77:10809"});
    let (s, v) = send("POST", &u("/v1/incoming"), Some(body)).await;
    assert_eq!(s, 422, "{v}");
    assert!(
        error(&v).contains(
            "source_nbd 198.18.0.77:10809 is not valid: expected an address of the requesting \
             source, 127.0.0.1"
        ),
        "{v}"
    );
    for (body, words) in [
        (
            json!({"config": {"name": "db3", "memory_bytes": 128 * MIB},
                   "migration_id": "m-9", "storage": "postcopy",
                   "source_nbd": "127.0.0.1:10809"}),
            "storage postcopy is given but config has no disk",
        ),
        // A storage hybrid's destination: as a post-copy's, its source export on the peer.
        (
            json!({"config": {"name": "db3", "memory_bytes": 128 * MIB},
                   "migration_id": "m-9", "storage": "hybrid",
                   "source_nbd": "127.0.0.1:10809"}),
            "storage hybrid is given but config has no disk",
        ),
        (
            json!({"config": {"name": "db3", "memory_bytes": 128 * MIB, "disk": "db3.qcow2"},
                   "migration_id": "m-9", "disk_virtual_bytes": 64 * MIB,
                   "storage": "hybrid"}),
            "source_nbd is missing: storage hybrid needs the source's NBD address",
        ),
        (
            json!({"config": {"name": "db3", "memory_bytes": 128 * MIB, "disk": "db3.qcow2"},
                   "migration_id": "m-9", "disk_virtual_bytes": 64 * MIB,
                   "storage": "hybrid", "source_nbd": "198.18.0.77:10809"}),
            "source_nbd 198.18.0.77:10809 is not valid: expected an address of the requesting \
             source, 127.0.0.1",
        ),
        (
            json!({"config": {"name": "db3", "memory_bytes": 128 * MIB, "disk": "db3.qcow2"},
                   "migration_id": "m-9", "disk_virtual_bytes": 64 * MIB,
                   "storage": "postcopy"}),
            "source_nbd is missing",
        ),
        (
            json!({"config": {"name": "db3", "memory_bytes": 128 * MIB, "disk": "db3.qcow2"},
                   "migration_id": "m-9", "disk_virtual_bytes": 64 * MIB,
                   "source_nbd": "127.0.0.1:10809"}),
            "source_nbd 127.0.0.1:10809 is given with storage precopy",
        ),
        (
            json!({"config": {"name": "db3", "memory_bytes": 128 * MIB, "disk": "db3.qcow2"},
                   "migration_id": "m-9", "disk_virtual_bytes": 64 * MIB,
                   "storage": "postcopy", "source_nbd": "0.0.0.0:10809"}),
            "source_nbd 0.0.0.0:10809 is not valid: expected an address of the requesting source",
        ),
        (
            json!({"config": {"name": "db3", "memory_bytes": 128 * MIB, "disk": "db3.qcow2"},
                   "migration_id": "m-9", "disk_virtual_bytes": 64 * MIB,
                   "storage": "postcopy", "source_nbd": "127.0.0.1:0"}),
            "expected a port from 1 to 65535",
        ),
    ] {
        let (s, v) = send("POST", &u("/v1/incoming"), Some(body)).await;
        assert_eq!(s, 422, "{v}");
        assert!(error(&v).contains(words), "{words}: {v}");
    }
    // ...and a destination never runs on (or overwrites) a file of that name already in its
    // storage directory: the target is a new file of its own.
    let body = json!({"config": {"name": "db2", "memory_bytes": 128 * MIB, "disk": "db.qcow2"},
                      "migration_id": "m-8", "disk_virtual_bytes": 64 * MIB});
    let (s, v) = send("POST", &u("/v1/incoming"), Some(body)).await;
    assert_eq!(s, 409, "{v}");
    assert!(error(&v).contains("'db.qcow2' already exists"), "{v}");
    assert_eq!(
        std::fs::read(store.disk_dir().join("db.qcow2")).expect("disk"),
        b"disk"
    );

    // Its QEMU gone, the aborted incoming VM may go; so may the ordinary one.
    let (s, v) = send("DELETE", &u("/v1/incoming/arriving"), None).await;
    assert_eq!(s, 200, "{v}");
    let (s, v) = send("DELETE", &u("/v1/vms/plain"), None).await;
    assert_eq!(s, 200, "{v}");
}

/// Names of the files in `dir`, hidden ones too (a half-made disk would show), sorted.
fn files(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .expect("read dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// The disks the agent creates: a VM that does not start, or whose workload does not fit its
/// disk, leaves no disk behind; a base that is a VM's disk is refused; deleting a VM deletes the
/// disk the agent made for it and never an operator's.
#[tokio::test]
async fn created_disks_belong_to_their_vm() {
    drover_testkit::require!(drover_testkit::QEMU_IMG);
    let dir = tempfile::tempdir().expect("tempdir");
    let c = config(dir.path(), 4096 * MIB);
    let store = drover_agent::store::Store::open(&c.state_dir).expect("store");
    let disks = store.disk_dir();
    let mut own = record("own", VmRole::Running, Some("own.qcow2"));
    own.config.disk_size_bytes = Some(8 * MIB);
    store.save_vm(&own).expect("save");
    store
        .save_vm(&record("op", VmRole::Running, Some("op.qcow2")))
        .expect("save");
    let mut overlay = record("ov", VmRole::Running, Some("ov.qcow2"));
    overlay.config.disk_base = Some("base.qcow2".into());
    store.save_vm(&overlay).expect("save");
    std::fs::write(disks.join("own.qcow2"), b"made by the agent").expect("disk");
    std::fs::write(disks.join("op.qcow2"), b"the operator's").expect("disk");
    let (_a, url) = agent(c).await;
    let u = |p: &str| format!("{url}{p}");
    let create = |body: Value| {
        let url = u("/v1/vms");
        async move { send("POST", &url, Some(body)).await }
    };
    let vm = |name: &str, workload: &str| json!({"name": name, "memory_bytes": 128 * MIB, "workload": workload});

    // Made, then QEMU (the stand-in) fails: 500, and the disk is gone again.
    let mut body = vm("d1", "idle");
    body["disk_size_bytes"] = json!(8 * MIB);
    let (s, v) = create(body).await;
    assert_eq!(s, 500, "{v}");
    // A disk workload larger than the disk, or without one: 409 naming the rule.
    let mut body = vm("d2", "disk:wss=16M,rate=1");
    body["disk_size_bytes"] = json!(8 * MIB);
    let (s, v) = create(body).await;
    assert_eq!(s, 409, "{v}");
    assert!(
        error(&v).contains("does not fit the VM's 8388608 byte disk"),
        "{v}"
    );
    let (s, v) = create(vm("d3", "disk:wss=16M,rate=1")).await;
    assert_eq!(s, 409, "{v}");
    assert!(error(&v).contains("needs a disk"), "{v}");
    // Bases: absent, or a VM's disk.
    let mut body = vm("d4", "idle");
    body["disk_base"] = json!("nope.qcow2");
    let (s, v) = create(body).await;
    assert_eq!(s, 409, "{v}");
    assert!(
        error(&v).starts_with("disk_base 'nope.qcow2': no such file"),
        "{v}"
    );
    let mut body = vm("d5", "idle");
    body["disk_base"] = json!("op.qcow2");
    let (s, v) = create(body).await;
    assert_eq!(s, 409, "{v}");
    assert!(error(&v).contains("is the disk of VM 'op'"), "{v}");
    // A disk to create under a name taken: 409, the file untouched.
    let mut body = vm("d6", "idle");
    body["disk"] = json!("op.qcow2");
    body["disk_size_bytes"] = json!(8 * MIB);
    let (s, v) = create(body).await;
    assert_eq!(s, 409, "{v}");
    assert!(
        error(&v).starts_with("disk 'op.qcow2' already exists"),
        "{v}"
    );
    assert_eq!(files(&disks), ["op.qcow2", "own.qcow2"]);
    // An operator's disk that another VM uses, as its disk or its disk's base, or that is no
    // qcow2 image: 409 before any QEMU opens it.
    let mut body = vm("d7", "idle");
    body["disk"] = json!("op.qcow2");
    let (s, v) = create(body).await;
    assert_eq!(s, 409, "{v}");
    assert!(error(&v).contains("is the disk of VM 'op'"), "{v}");
    let mut body = vm("d8", "idle");
    body["disk"] = json!("base.qcow2");
    let (s, v) = create(body).await;
    assert_eq!(s, 409, "{v}");
    assert!(
        error(&v).contains("is the base of the disk of VM 'ov'"),
        "{v}"
    );
    std::fs::write(disks.join("junk.qcow2"), vec![7u8; 65536]).expect("junk");
    let mut body = vm("d9", "idle");
    body["disk"] = json!("junk.qcow2");
    let (s, v) = create(body).await;
    assert_eq!(s, 409, "{v}");
    assert!(error(&v).contains("is a raw image, expected qcow2"), "{v}");
    std::fs::remove_file(disks.join("junk.qcow2")).expect("rm junk");
    // A VM whose QEMU failed to start leaves no run directory behind.
    assert!(!store.run_dir("d1").exists(), "d1's run directory is left");

    // Deleting the VMs (lost: their QEMU is long gone) deletes only the agent's disk.
    for name in ["own", "op", "ov"] {
        let (s, v) = send("DELETE", &u(&format!("/v1/vms/{name}")), None).await;
        assert_eq!(s, 200, "{v}");
    }
    assert_eq!(files(&disks), ["op.qcow2"]);
    assert_eq!(
        std::fs::read(disks.join("op.qcow2")).expect("kept"),
        b"the operator's"
    );
}
