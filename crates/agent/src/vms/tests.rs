//! The registry's liveness check: what it calls lost, and why.

use super::*;

fn dead_pid() -> u32 {
    let mut child = std::process::Command::new("true").spawn().expect("spawn");
    let pid = child.id();
    child.wait().expect("wait");
    pid
}

fn entry(store: &Store, name: &str, stopping: bool) -> VmEntry {
    let record = VmRecord {
        config: VmConfig {
            name: name.into(),
            vcpus: 1,
            memory_bytes: 128 << 20,
            workload: "idle".into(),
            disk: None,
            disk_size_bytes: None,
            disk_base: None,
            nic: None,
        },
        role: VmRole::Running,
        pid: dead_pid(),
        run_dir: store.run_dir(name),
        created_unix_ms: 0,
        arrived_by: None,
    };
    let mut e = Vms::lost_entry(record, String::new());
    e.lost = None;
    e.stopping = stopping;
    e
}

/// `vm delete` and the hand-over after a migration stop a QEMU on purpose: the sampler running
/// meanwhile must not log "VM lost". A QEMU that died on its own is lost, and when the host's
/// memory cgroup OOM-killed something since the last look, the reason says so.
#[test]
fn a_vm_stopped_on_purpose_is_not_lost_and_an_oom_kill_is_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cgroup = dir.path().join("cgroup");
    std::fs::create_dir(&cgroup).expect("mkdir");
    let oom_control = cgroup.join("memory.oom_control");
    std::fs::write(
        &oom_control,
        "oom_kill_disable 0\nunder_oom 0\noom_kill 0\n",
    )
    .expect("write");
    let store = Store::open(&dir.path().join("state")).expect("store");
    let vms = Vms::new(
        store.clone(),
        LaunchSettings {
            memory_cgroup: Some(cgroup.clone()),
            ..LaunchSettings::for_tests()
        },
    );
    for (name, stopping) in [("leaving", true), ("killed", false)] {
        lock(&vms.map).insert(name.into(), entry(&store, name, stopping));
    }
    std::fs::write(
        &oom_control,
        "oom_kill_disable 0\nunder_oom 0\noom_kill 1\n",
    )
    .expect("write");
    vms.check_liveness();
    let map = lock(&vms.map);
    assert_eq!(map["leaving"].lost, None, "stopped on purpose");
    let why = map["killed"].lost.clone().expect("lost");
    assert!(why.contains("is gone"), "{why}");
    assert!(why.contains("OOM-killed 1 process(es)"), "{why}");
    assert!(why.contains(&cgroup.display().to_string()), "{why}");
}

impl LaunchSettings {
    /// Settings for tests that never start QEMU (its binary does not exist): 1 GiB of room,
    /// TCG, no image, no cgroup, no VM network.
    pub(crate) fn for_tests() -> Self {
        LaunchSettings {
            qemu_binary: "/nonexistent/qemu".into(),
            accel: drover_qemu::launcher::Accel::Tcg,
            image: None,
            start_timeout: Duration::from_secs(1),
            memory_capacity_bytes: 1 << 30,
            memory_cgroup: None,
            vm_net: None,
        }
    }
}

/// What a destination accepts of a storage pre-copy: its own NBD address, exactly Drover's
/// export of the disk, and nothing of it for a VM without a disk.
#[test]
fn forwarded_storage_commands_must_be_the_agents_own() {
    use super::{check_storage_command, IncomingDisk};
    use drover_api::qmp::ForwardedQmp;
    let cmd = |name: &str, args: serde_json::Value| {
        let args = (!args.is_null()).then_some(args);
        ForwardedQmp::from_parts(name, args.as_ref()).expect("parses")
    };
    let start = |port: &str| {
        cmd(
            "nbd-server-start",
            serde_json::json!({"addr": {"type": "inet", "data": {"host": "198.18.0.3", "port": port}}}),
        )
    };
    let export = |id: &str, node: &str, name: &str| {
        cmd(
            "block-export-add",
            serde_json::json!({"type": "nbd", "id": id, "node-name": node, "name": name, "writable": true}),
        )
    };
    let own: std::net::SocketAddr = "198.18.0.3:10809".parse().expect("addr");
    let stop = cmd("nbd-server-stop", serde_json::Value::Null);
    let good = export("drover-disk0-export", "drover-disk0", "drover-disk0");
    for ok in [&start("10809"), &good, &stop] {
        assert!(
            check_storage_command("in1", ok, IncomingDisk::Target(own)).is_ok(),
            "{ok:?}"
        );
    }
    for (bad, words) in [
        (
            start("10810"),
            "arguments.addr '198.18.0.3:10810' is not valid",
        ),
        // The file node (the raw qcow2 bytes), another id or name: not Drover's export.
        (
            export("drover-disk0-export", "drover-disk0-file", "drover-disk0"),
            "node-name drover-disk0-file,",
        ),
        (export("x", "drover-disk0", "drover-disk0"), "'id x,"),
        (
            export("drover-disk0-export", "drover-disk0", "other"),
            "name other'",
        ),
    ] {
        let err = check_storage_command("in1", &bad, IncomingDisk::Target(own)).expect_err(words);
        let text = err.to_string();
        assert!(
            text.contains(words) && text.contains("incoming VM 'in1'"),
            "{text}"
        );
    }
    for diskless in [start("10809"), good, stop] {
        let err = check_storage_command("in1", &diskless, IncomingDisk::None).expect_err("no disk");
        assert!(
            err.to_string().starts_with("execute '") && err.to_string().contains("it has no disk"),
            "{err}"
        );
    }
    let query = cmd("query-status", serde_json::Value::Null);
    assert!(check_storage_command("in1", &query, IncomingDisk::None).is_ok());
}

/// What a destination accepts of a storage post-copy: exactly the session's stream of its
/// disk (with `on-error: stop`), resuming and dismissing that stream, the job list and
/// `cont`; none of it for a pre-copy or diskless VM, and no NBD server command for it.
#[test]
fn forwarded_stream_commands_must_be_the_agents_own() {
    use super::{check_storage_command, IncomingDisk};
    use drover_api::qmp::ForwardedQmp;
    let cmd = |name: &str, args: serde_json::Value| {
        let args = (!args.is_null()).then_some(args);
        ForwardedQmp::from_parts(name, args.as_ref()).expect("parses")
    };
    let stream = |job: &str, device: &str| {
        cmd(
            "block-stream",
            serde_json::json!({"job-id": job, "device": device, "on-error": "stop",
                               "auto-dismiss": false, "speed": 1000}),
        )
    };
    let own = [
        stream("drover-disk0-stream", "drover-disk0"),
        cmd(
            "block-job-resume",
            serde_json::json!({"device": "drover-disk0-stream"}),
        ),
        cmd(
            "job-dismiss",
            serde_json::json!({"id": "drover-disk0-stream"}),
        ),
        cmd("query-block-jobs", serde_json::Value::Null),
        cmd("cont", serde_json::Value::Null),
    ];
    for ok in &own {
        assert!(
            check_storage_command("in1", ok, IncomingDisk::Overlay).is_ok(),
            "{ok:?}"
        );
    }
    for (bad, words) in [
        // The file node (the raw bytes) or the remote node: not the disk's format node.
        (
            stream("drover-disk0-stream", "drover-disk0-file"),
            "arguments.device 'drover-disk0-file' is not valid: expected its disk's node drover-disk0",
        ),
        (
            stream("drover-disk0-stream", "drover-disk0-remote"),
            "arguments.device 'drover-disk0-remote'",
        ),
        (
            stream("drover-disk0-mirror", "drover-disk0"),
            "arguments.job-id 'drover-disk0-mirror'",
        ),
        (
            cmd("block-job-resume", serde_json::json!({"device": "other"})),
            "arguments.device 'other' is not valid: expected its disk's stream drover-disk0-stream",
        ),
        (
            cmd("job-dismiss", serde_json::json!({"id": "drover-disk0-mirror"})),
            "arguments.id 'drover-disk0-mirror'",
        ),
        (
            cmd("nbd-server-stop", serde_json::Value::Null),
            "no NBD server command (its disk arrives by storage post-copy)",
        ),
    ] {
        let err = check_storage_command("in1", &bad, IncomingDisk::Overlay).expect_err(words);
        let text = err.to_string();
        assert!(
            text.contains(words) && text.contains("incoming VM 'in1'"),
            "{text}"
        );
    }
    let target: std::net::SocketAddr = "198.18.0.3:10809".parse().expect("addr");
    for (disk, words) in [
        (
            IncomingDisk::Target(target),
            "its disk arrives by storage pre-copy",
        ),
        (IncomingDisk::None, "it has no disk"),
    ] {
        for c in &own {
            let err = check_storage_command("in1", c, disk).expect_err(words);
            assert!(err.to_string().contains(words), "{err}");
        }
    }
    // Both: a storage hybrid's destination (its own NBD address, the source's export).
    assert_eq!(
        IncomingDisk::of(Some(target), Some(target)),
        IncomingDisk::Hybrid(target)
    );
    assert_eq!(IncomingDisk::of(None, Some(target)), IncomingDisk::Overlay);
    assert_eq!(IncomingDisk::of(None, None), IncomingDisk::None);
}

/// A post-copy destination's disk is the overlay on the source's export; anything else is
/// the image itself; an address the launcher cannot take is refused, never a plain image.
#[test]
fn a_postcopy_destination_runs_on_the_overlay() {
    use crate::model::VmRole;
    use drover_qemu::disk::DiskSpec;
    let role = |source_nbd: Option<&str>| VmRole::Incoming {
        migration_id: "m1".into(),
        uri: None,
        recover_uri: None,
        nbd: None,
        source_nbd: source_nbd.map(|a| a.parse().expect("addr")),
    };
    let path = std::path::PathBuf::from("/s/disks/d.qcow2");
    let spec = super::forward::disk_spec("d", path.clone(), &role(Some("198.18.0.2:4000")))
        .expect("overlay");
    let DiskSpec::Overlay { overlay, source } = spec else {
        panic!("{spec:?}")
    };
    assert_eq!(overlay, path);
    assert_eq!(source.addr().port(), 4000);
    assert_eq!(
        super::forward::disk_spec("d", path.clone(), &role(None)).expect("image"),
        DiskSpec::Image(path.clone())
    );
    assert_eq!(
        super::forward::disk_spec("d", path.clone(), &VmRole::Running).expect("image"),
        DiskSpec::Image(path.clone())
    );
    let err =
        super::forward::disk_spec("d", path, &role(Some("0.0.0.0:4000"))).expect_err("unspecified");
    assert!(
        err.to_string().contains("source_nbd '0.0.0.0:4000'"),
        "{err}"
    );
}

/// "The same disk" is the same file: a hard link or a symbolic link to a running VM's disk or
/// base is refused as shared (409, naming the VM and the name it uses), and a symbolic link
/// out of the storage directory is refused as such, not as a missing disk.
#[tokio::test]
async fn another_name_for_a_vms_disk_or_base_is_the_same_disk() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(&dir.path().join("state")).expect("store");
    let disks = store.disk_dir();
    std::fs::create_dir_all(&disks).expect("mkdir");
    for f in ["c7.qcow2", "base.qcow2", "free.qcow2"] {
        std::fs::write(disks.join(f), b"QFI").expect("write");
    }
    let outside = dir.path().join("outside.qcow2");
    std::fs::write(&outside, b"QFI").expect("write");
    std::os::unix::fs::symlink("c7.qcow2", disks.join("alias.qcow2")).expect("symlink");
    std::fs::hard_link(disks.join("c7.qcow2"), disks.join("hard.qcow2")).expect("link");
    std::os::unix::fs::symlink("base.qcow2", disks.join("b-alias.qcow2")).expect("symlink");
    std::os::unix::fs::symlink(&outside, disks.join("link-out.qcow2")).expect("symlink");
    let vms = Vms::new(store.clone(), LaunchSettings::for_tests());
    let mut c7 = entry(&store, "c7", false);
    c7.record.config.disk = Some("c7.qcow2".into());
    let mut c6 = entry(&store, "c6", false);
    c6.record.config.disk = Some("c6.qcow2".into());
    c6.record.config.disk_base = Some("base.qcow2".into());
    lock(&vms.map).insert("c7".into(), c7);
    lock(&vms.map).insert("c6".into(), c6);

    let conflict = |e: VmsError| {
        let text = e.to_string();
        assert!(
            matches!(
                crate::api::ApiError::from(e),
                crate::api::ApiError::Conflict(_)
            ),
            "409: {text}"
        );
        text
    };
    for (disk, words) in [
        (
            "alias.qcow2",
            "is the disk of VM 'c7' (the same file as 'c7.qcow2')",
        ),
        (
            "hard.qcow2",
            "is the disk of VM 'c7' (the same file as 'c7.qcow2')",
        ),
        ("c7.qcow2", "is the disk of VM 'c7': two VMs"),
        (
            "b-alias.qcow2",
            "is the base of the disk of VM 'c6' (the same file as 'base.qcow2')",
        ),
    ] {
        let err = vms.check_operator_disk("c8", disk).await.expect_err(disk);
        let text = conflict(err);
        assert!(text.contains(words), "{text}");
        assert!(text.contains("two VMs must not share a disk"), "{text}");
    }
    // Its own disk, and a file nobody uses, pass the sharing check (qemu-img, absent here,
    // is what fails next).
    for (vm, disk) in [("c7", "alias.qcow2"), ("c8", "free.qcow2")] {
        let err = vms
            .check_operator_disk(vm, disk)
            .await
            .expect_err("no qemu-img");
        assert!(!err.to_string().contains("share"), "{err}");
    }
    let err = vms
        .check_operator_disk("c8", "link-out.qcow2")
        .await
        .expect_err("outside");
    let text = conflict(err);
    assert!(
        text.starts_with("disk 'link-out.qcow2' is a symbolic link that leads outside"),
        "{text}"
    );
    let mut config = entry(&store, "c8", false).record.config;
    config.disk_base = Some("alias.qcow2".into());
    let err = vms
        .create_disk(&config, "c8.qcow2")
        .await
        .expect_err("base");
    let text = conflict(err);
    assert!(
        text.contains(
            "disk_base 'alias.qcow2' is the disk of VM 'c7' (the same file as 'c7.qcow2')"
        ),
        "{text}"
    );
    // Overlays may share a base, by any name (qemu-img, absent here, is what fails next).
    config.disk_base = Some("b-alias.qcow2".into());
    let err = vms
        .create_disk(&config, "c8.qcow2")
        .await
        .expect_err("no qemu-img");
    assert!(!err.to_string().contains("VM 'c6'"), "{err}");
    config.disk_base = Some("link-out.qcow2".into());
    let err = vms
        .create_disk(&config, "c8.qcow2")
        .await
        .expect_err("outside");
    assert!(
        conflict(err).starts_with("disk_base 'link-out.qcow2' is a symbolic link"),
        "outside base"
    );
}

/// A WAN plan of a VM without a disk is refused for what it is (409), not as a busy VM.
#[test]
fn a_wan_plan_of_a_vm_without_a_disk_says_so() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(&dir.path().join("state")).expect("store");
    let vms = Vms::new(store.clone(), LaunchSettings::for_tests());
    lock(&vms.map).insert("n1".into(), entry(&store, "n1", false));
    let Err(err) = vms.begin_profile("n1") else {
        panic!("refused")
    };
    let text = err.to_string();
    assert_eq!(
        text,
        "VM 'n1' has no disk: the WAN plan models memory and a disk"
    );
    assert!(matches!(
        crate::api::ApiError::from(err),
        crate::api::ApiError::Conflict(_)
    ));
}
