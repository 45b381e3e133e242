//! The VM command's pure parts: configs, clashes, the advice it prints.

use super::{clash, destination, migrate_flags, nothing_paused, vm_config, DiskFlags, Target};
use drover_api::{NicConfig, VmConfig, VmStatus, VmView};

fn vm(name: &str, address: Option<&str>) -> VmView {
    VmView {
        name: name.into(),
        status: VmStatus::Running,
        vcpus: 1,
        memory_bytes: 256 << 20,
        workload: "idle".into(),
        workload_pending: false,
        disk: None,
        nic: address.map(|a| NicConfig { address: a.into() }),
        pid: 1,
        qemu_status: None,
        migration: None,
        workload_report: Default::default(),
        error: None,
    }
}

/// `vm resume` of a VM no agent knows says there is no such VM, not that nothing is paused.
#[test]
fn resuming_an_unknown_vm_says_there_is_none() {
    assert_eq!(
        nothing_paused("nosuch", false, false),
        "no VM named 'nosuch': no lab host has it or a migration of it"
    );
    assert!(nothing_paused("x", false, true).contains("the agent has neither it"));
    assert_eq!(
        nothing_paused("c7", true, false),
        "no agent has a post-copy of VM 'c7' left paused"
    );
}

#[test]
fn a_name_or_address_another_host_has_clashes() {
    let config = |name: &str, address: Option<&str>| VmConfig {
        name: name.into(),
        vcpus: 1,
        memory_bytes: 256 << 20,
        workload: "idle".into(),
        disk: None,
        disk_size_bytes: None,
        disk_base: None,
        nic: address.map(|a| NicConfig { address: a.into() }),
    };
    let h2 = [vm("a", Some("198.18.0.110")), vm("b", None)];
    assert_eq!(
        clash(&config("b", None), "h2", &h2).as_deref(),
        Some("a VM named 'b' exists on lab host h2 already")
    );
    assert_eq!(
        clash(&config("c", Some("198.18.0.110")), "h2", &h2).as_deref(),
        Some("--address 198.18.0.110: VM 'a' on lab host h2 has it already")
    );
    assert_eq!(clash(&config("c", Some("198.18.0.111")), "h2", &h2), None);
    assert_eq!(clash(&config("c", None), "h2", &h2), None);
    assert_eq!(clash(&config("c", Some("198.18.0.110")), "h3", &[]), None);
}

#[test]
fn disk_flags_are_checked_and_named() {
    let create = |size: Option<&str>, base: Option<&str>| {
        let disk = DiskFlags {
            name: None,
            size: size.map(str::to_string),
            base: base.map(str::to_string),
        };
        vm_config("a".into(), 1, "256M", "idle".into(), disk, None).map_err(|e| e.to_string())
    };
    let c = create(Some("64M"), None).expect("valid");
    assert_eq!(c.disk_size_bytes, Some(64 << 20));
    assert_eq!(c.disk_file().as_deref(), Some("a.qcow2"));
    let c = create(None, Some("base.qcow2")).expect("valid");
    assert_eq!(c.disk_base.as_deref(), Some("base.qcow2"));
    let e = create(Some("512K"), None).unwrap_err();
    assert!(
        e.starts_with("--disk-size 512K is 524288 bytes; expected 1 MiB to 16 TiB"),
        "{e}"
    );
    let e = create(Some("lots"), None).unwrap_err();
    assert!(e.starts_with("--disk-size"), "{e}");
    // Beyond any size: the disk's own range, not the reader's 16 EiB.
    let e = create(Some("999999999999999999999"), None).unwrap_err();
    assert_eq!(
        e,
        "--disk-size '999999999999999999999' is out of range: expected 1 MiB to 16 TiB \
         (1048576 to 17592186044416 bytes)"
    );
    let e = create(None, Some("../b")).unwrap_err();
    assert!(e.starts_with("--disk-base '../b' is not valid"), "{e}");
}

#[test]
fn a_wan_plan_run_line_names_the_lab_and_destination_as_given() {
    let target = |lab: &str, agent: Option<&str>| Target {
        host: None,
        agent: agent.map(str::to_string),
        lab: lab.into(),
        token_file: None,
    };
    assert_eq!(
        migrate_flags(&target("fu1", None), Some("h2")),
        "--lab fu1 --to h2"
    );
    let default = drover_lab::name::DEFAULT_LAB;
    assert_eq!(migrate_flags(&target(default, None), Some("h2")), "--to h2");
    assert_eq!(
        migrate_flags(&target("fu1", None), None),
        "--lab fu1 --to HOST"
    );
    let by_url = target("fu1", Some("http://198.18.0.2:7700"));
    assert_eq!(migrate_flags(&by_url, None), "--to HOST");
}

/// `--to` names a lab host only with the lab; with `--agent` it must be a URL, and an empty
/// one is refused before any lab is read.
#[test]
fn to_is_a_url_with_agent_and_never_empty() {
    let with_agent = Target {
        host: None,
        agent: Some("http://127.0.0.1:9".into()),
        lab: "zq9".into(),
        token_file: None,
    };
    let e = destination("h2", &with_agent)
        .expect_err("a host name")
        .to_string();
    assert!(
        e.starts_with("--to h2: with --agent, --to takes the destination agent's URL"),
        "{e}"
    );
    let e = destination(" ", &with_agent)
        .expect_err("empty")
        .to_string();
    assert!(e.starts_with("--to: expected a lab host"), "{e}");
    let url = destination("http://198.18.0.12:7700", &with_agent).expect("a URL");
    assert!(url.to_string().contains("198.18.0.12:7700"), "{url}");
}
