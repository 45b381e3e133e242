use super::*;

fn spec() -> LabSpec {
    LabSpec::new("drover", 2)
        .unwrap()
        .cpus(0.5)
        .memory(1 << 30)
        .link_rate(20_000_000)
        .unwrap()
}

fn agent() -> AgentLaunch {
    AgentLaunch {
        argv_prefix: vec!["/usr/bin/drover".into(), "agent".into()],
        port: AGENT_PORT,
        health_timeout: Duration::from_secs(5),
    }
}

fn lines(steps: &[Step]) -> Vec<String> {
    steps.iter().map(|s| s.action.to_string()).collect()
}

fn v2_env() -> PlanEnv {
    PlanEnv {
        layout: CgroupLayout::V2 {
            root: "/sys/fs/cgroup".into(),
        },
        ..PlanEnv::sample()
    }
}

#[test]
fn first_host_is_wired_in_order() {
    let plan = plan_up(&spec(), &PlanEnv::sample()).unwrap();
    let l = lines(&plan.steps);
    let start = l
        .iter()
        .position(|s| s == "ip netns add drvdrover-h1")
        .unwrap();
    let tbf = "tbf rate 160000000bit burst 200000 limit 1200000";
    let expect = [
        "ip netns add drvdrover-h1".to_string(),
        "ip link add drvdrover-h1 type veth peer name eth0 netns drvdrover-h1".into(),
        "ip link set drvdrover-h1 master drvdrover-br".into(),
        format!("tc qdisc add dev drvdrover-h1 root {tbf}"),
        "ip link set drvdrover-h1 up".into(),
        "ip -n drvdrover-h1 link add vmbr type bridge".into(),
        "ip -n drvdrover-h1 link set eth0 master vmbr".into(),
        "ip -n drvdrover-h1 addr add 198.18.0.11/24 dev vmbr".into(),
        format!("tc -n drvdrover-h1 qdisc add dev eth0 root {tbf}"),
        "ip -n drvdrover-h1 link set eth0 up".into(),
        "ip -n drvdrover-h1 link set vmbr up".into(),
        "ip -n drvdrover-h1 link set lo up".into(),
        "mkdir /sys/fs/cgroup/cpu/drover/drover/h1".into(),
        "mkdir /sys/fs/cgroup/memory/drover/drover/h1".into(),
        "write 100000 > /sys/fs/cgroup/cpu/drover/drover/h1/cpu.cfs_period_us".into(),
        "write 50000 > /sys/fs/cgroup/cpu/drover/drover/h1/cpu.cfs_quota_us".into(),
        "write 1073741824 > /sys/fs/cgroup/memory/drover/drover/h1/memory.limit_in_bytes".into(),
        "ip netns add drvdrover-h2".into(),
    ];
    assert_eq!(l[start..start + expect.len()], expect);
}

#[test]
fn lab_wide_steps_come_first_and_the_token_stays_out_of_displays() {
    let plan = plan_up(&spec(), &PlanEnv::sample()).unwrap();
    let l = lines(&plan.steps);
    assert_eq!(
        l[..9],
        [
            "mkdir /run/drover/lab/drover",
            "write token to /run/drover/lab/drover/token",
            "ip link add drvdrover-br type bridge",
            "ip addr add 198.18.0.1/24 dev drvdrover-br",
            "ip link set drvdrover-br up",
            "mkdir /sys/fs/cgroup/cpu/drover",
            "mkdir /sys/fs/cgroup/cpu/drover/drover",
            "mkdir /sys/fs/cgroup/memory/drover",
            "mkdir /sys/fs/cgroup/memory/drover/drover",
        ]
    );
    assert!(!l.iter().any(|s| s.contains("00ff")));
}

#[test]
fn every_creation_has_its_undo() {
    let plan = plan_up(&spec(), &PlanEnv::sample()).unwrap();
    let undo_of = |action: &str| {
        plan.steps
            .iter()
            .find(|s| s.action.to_string() == action)
            .and_then(|s| s.undo.clone())
    };
    assert_eq!(
        undo_of("ip netns add drvdrover-h2")
            .map(|a| a.to_string())
            .as_deref(),
        Some("ip netns del drvdrover-h2")
    );
    assert_eq!(
        undo_of("ip link add drvdrover-br type bridge")
            .map(|a| a.to_string())
            .as_deref(),
        Some("ip link del drvdrover-br")
    );
    assert_eq!(
        undo_of("mkdir /sys/fs/cgroup/memory/drover/drover/h2"),
        Some(Action::RemoveCgroup(
            "/sys/fs/cgroup/memory/drover/drover/h2".into()
        ))
    );
    assert_eq!(
        undo_of("mkdir /sys/fs/cgroup/cpu/drover"),
        Some(Action::RmdirIfEmpty("/sys/fs/cgroup/cpu/drover".into()))
    );
}

#[test]
fn v2_delegates_controllers_before_creating_children() {
    let plan = plan_up(&spec(), &v2_env()).unwrap();
    let l = lines(&plan.steps);
    let pos = |s: &str| {
        l.iter()
            .position(|x| x == s)
            .unwrap_or_else(|| panic!("{s} in {l:#?}"))
    };
    let root_sc = pos("write +cpu +memory > /sys/fs/cgroup/cgroup.subtree_control");
    let top = pos("mkdir /sys/fs/cgroup/drover");
    let top_sc = pos("write +cpu +memory > /sys/fs/cgroup/drover/cgroup.subtree_control");
    let lab = pos("mkdir /sys/fs/cgroup/drover/drover");
    let lab_sc = pos("write +cpu +memory > /sys/fs/cgroup/drover/drover/cgroup.subtree_control");
    let host = pos("mkdir /sys/fs/cgroup/drover/drover/h1");
    assert!(root_sc < top && top < top_sc && top_sc < lab && lab < lab_sc && lab_sc < host);
    pos("write 50000 100000 > /sys/fs/cgroup/drover/drover/h1/cpu.max");
    pos("write 1073741824 > /sys/fs/cgroup/drover/drover/h1/memory.max");
    assert_eq!(plan.state.cgroup_version, crate::cgroup::CgroupVersion::V2);
    assert_eq!(
        plan.state.hosts[0].cgroup_procs,
        [PathBuf::from(
            "/sys/fs/cgroup/drover/drover/h1/cgroup.procs"
        )]
    );
}

#[test]
fn agents_start_in_cgroup_then_namespace_and_are_waited_for_after_all_started() {
    let plan = plan_up(&spec().agent(agent()), &PlanEnv::sample()).unwrap();
    let kinds: Vec<_> = plan
        .steps
        .iter()
        .filter_map(|s| match &s.action {
            Action::Spawn { host, .. } => Some(format!("spawn {host}")),
            Action::WaitHealth { host, .. } => Some(format!("wait {host}")),
            _ => None,
        })
        .collect();
    assert_eq!(kinds, ["spawn h1", "spawn h2", "wait h1", "wait h2"]);
    let Some(Step {
        action: Action::Spawn { argv, log, .. },
        undo,
    }) = plan
        .steps
        .iter()
        .find(|s| matches!(s.action, Action::Spawn { .. }))
    else {
        panic!("no spawn")
    };
    assert_eq!(argv[..4], ["sh", "-c", argv[2].as_str(), "sh"]);
    assert_eq!(
        argv[4..],
        [
            "2",
            "/sys/fs/cgroup/cpu/drover/drover/h1/cgroup.procs",
            "/sys/fs/cgroup/memory/drover/drover/h1/cgroup.procs",
            "sh",
            "-c",
            argv[9].as_str(),
            "sh",
            "/sys/fs/cgroup/memory/drover/drover/h1",
            "ip",
            "netns",
            "exec",
            "drvdrover-h1",
            "/usr/bin/drover",
            "agent",
            "--listen",
            "198.18.0.11:7700",
            "--state-dir",
            "/run/drover/lab/drover/h1",
            "--token-file",
            "/run/drover/lab/drover/token",
            "--cpus",
            "0.5",
            "--memory",
            "1073741824",
            "--link",
            "20000000",
            "--vm-net",
            "198.18.0.0/24",
            "--vm-bridge",
            "vmbr",
            "--cgroup-dir",
            "/proc/self/fd/3",
        ]
    );
    assert_eq!(log, &PathBuf::from("/run/drover/lab/drover/h1.agent.log"));
    assert!(matches!(undo, Some(Action::KillCgroup(f)) if f.len() == 2));
    let h2 = &plan.state.hosts[1];
    assert_eq!(h2.agent_url.as_deref(), Some("http://198.18.0.12:7700"));
    assert!(lines(&plan.steps).contains(&"mkdir /run/drover/lab/drover/h2".to_string()));
}

#[test]
fn without_agents_the_state_has_no_agent_fields() {
    let plan = plan_up(&spec(), &PlanEnv::sample()).unwrap();
    let h1 = &plan.state.hosts[0];
    assert_eq!((h1.agent_url.as_ref(), h1.agent_log.as_ref()), (None, None));
    assert_eq!(h1.address.to_string(), "198.18.0.11");
    assert_eq!(plan.state.link.rate_bytes_per_sec, 20_000_000);
    assert!(!plan
        .steps
        .iter()
        .any(|s| matches!(s.action, Action::Spawn { .. })));
}

#[test]
fn the_cgroup_wrapper_joins_every_file_then_execs() {
    let dir = tempfile::tempdir().unwrap();
    let files = [dir.path().join("a"), dir.path().join("b")];
    let argv = in_cgroup_argv(&files, &["sh".into(), "-c".into(), "echo $$".into()]);
    let out = std::process::Command::new(&argv[0])
        .args(&argv[1..])
        .output()
        .unwrap();
    let printed = String::from_utf8_lossy(&out.stdout).trim().to_string();
    for f in &files {
        assert_eq!(
            std::fs::read_to_string(f).unwrap().trim(),
            printed,
            "exec keeps the pid"
        );
    }
}

/// The agent, under `ip netns exec`, cannot see cgroupfs by path; the descriptor the wrapper
/// opens still reads its memory cgroup's files.
#[test]
fn the_descriptor_wrapper_hands_the_directory_over() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("memory.oom_control"), "oom_kill 2\n").unwrap();
    let cat = [
        "sh".to_string(),
        "-c".into(),
        format!("cat /proc/self/fd/{CGROUP_FD}/memory.oom_control"),
    ];
    let argv = with_dir_fd(dir.path(), &cat);
    let out = std::process::Command::new(&argv[0])
        .args(&argv[1..])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "oom_kill 2\n");
    let missing = with_dir_fd(&dir.path().join("absent"), &cat);
    let status = std::process::Command::new(&missing[0])
        .args(&missing[1..])
        .status()
        .unwrap();
    assert!(!status.success(), "started without its cgroup");
}

#[test]
fn listings_are_filtered_by_prefix() {
    let netns = "drvt1-h2 (id: 1)\ndrvt12-h1 (id: 2)\nother\ndrvt1-h1\n";
    assert_eq!(parse_netns_list(netns, "drvt1-"), ["drvt1-h2", "drvt1-h1"]);
    let links = "1: lo: <LOOPBACK,UP> mtu 65536\n\
                 7: drvt1-br: <BROADCAST,MULTICAST,UP> mtu 1500\n\
                 9: drvt1-h1@if2: <BROADCAST> mtu 1500 master drvt1-br\n\
                 10: drvt12-h1@if2: <BROADCAST> mtu 1500\n";
    assert_eq!(parse_link_list(links, "drvt1-"), ["drvt1-br", "drvt1-h1"]);
}

#[test]
fn down_kills_then_unlinks_then_removes_deepest_cgroups_first() {
    let found = Found {
        netns: vec!["drvx-h1".into()],
        links: vec!["drvx-br".into(), "drvx-h1".into()],
        cgroup_dirs: vec![
            "/cg/drover/x".into(),
            "/cg/drover/x/h1".into(),
            "/cg/drover/x/h1/vm".into(),
        ],
        cgroup_tops: vec!["/cg/drover".into()],
        lab_dir: Some("/run/drover/lab/x".into()),
    };
    let l: Vec<String> = plan_down(&found, "drvx-br")
        .iter()
        .map(|a| a.to_string())
        .collect();
    assert_eq!(
        l,
        [
            "kill processes in [\"/cg/drover/x/h1/vm/cgroup.procs\"]",
            "kill processes in [\"/cg/drover/x/h1/cgroup.procs\"]",
            "kill processes in [\"/cg/drover/x/cgroup.procs\"]",
            "kill processes in netns drvx-h1",
            "ip link del drvx-h1",
            "ip link del drvx-br",
            "ip netns del drvx-h1",
            "remove cgroup /cg/drover/x/h1/vm",
            "remove cgroup /cg/drover/x/h1",
            "remove cgroup /cg/drover/x",
            "rmdir /cg/drover if unused",
            "remove /run/drover/lab/x",
        ]
    );
}

#[test]
fn bad_specs_are_rejected() {
    assert!(matches!(LabSpec::new("drover", 0), Err(PlanError::Name(_))));
    assert!(matches!(LabSpec::new("Bad", 2), Err(PlanError::Name(_))));
    assert!(matches!(spec().link_rate(5), Err(PlanError::Tbf(_))));
    // tc takes 1 kB/s, but the agents take 1 Mbit/s at least: refused up front, by the
    // agents' own function, not after the health timeout.
    let e = spec().link_rate(1000).unwrap_err();
    assert_eq!(
        e.to_string(),
        "link rate 1000 bytes/s: expected at least 125000 bytes/s (1 Mbit/s)"
    );
    let mut raw = spec();
    raw.link.rate_bytes_per_sec = 1000;
    assert!(matches!(raw.validate(), Err(PlanError::Tbf(_))));
    assert!(spec().link_rate(125_000).expect("rate").validate().is_ok());
    for cpus in [-1.0, 0.0, f64::NAN, f64::INFINITY, 1e300, 0.0001] {
        let bad = spec().cpus(cpus);
        assert!(matches!(bad.validate(), Err(PlanError::Cpus(_))), "{cpus}");
        assert!(matches!(
            plan_up(&bad, &PlanEnv::sample()),
            Err(PlanError::Cpus(_))
        ));
    }
    // 64 MiB was once the floor: the agent then admitted no VM at all.
    for bytes in [0, 64 << 20, MIN_HOST_MEMORY - 1] {
        let e = spec().memory(bytes).validate().unwrap_err();
        assert_eq!(e, PlanError::Memory(bytes));
        assert!(e.to_string().contains("at least 234 MiB"), "{e}");
        assert!(e.to_string().contains("QEMU's overhead"), "{e}");
    }
    // The agent's own floor, the same constant.
    assert_eq!(MIN_HOST_MEMORY, drover_guest::fit::MIN_HOST_MEMORY_BYTES);
    assert_eq!(spec().memory(MIN_HOST_MEMORY).validate(), Ok(()));
    // The fields are public: a spec not built by the builders is checked all the same.
    let mut raw = spec();
    raw.hosts = 1000;
    assert!(matches!(raw.validate(), Err(PlanError::Name(_))));
    let mut raw = spec();
    raw.link.rate_bytes_per_sec = 0;
    assert!(matches!(raw.validate(), Err(PlanError::Tbf(_))));
    let mut quick = agent();
    quick.health_timeout = Duration::ZERO;
    assert_eq!(
        spec().agent(quick).validate(),
        Err(PlanError::HealthTimeout)
    );
}

#[test]
fn the_traffic_peer_has_a_namespace_on_the_bridge() {
    let plan = plan_up(&spec(), &PlanEnv::sample()).unwrap();
    let l = lines(&plan.steps);
    let start = l
        .iter()
        .position(|s| s == "ip netns add drvdrover-p")
        .unwrap();
    assert_eq!(
        l[start..start + 7],
        [
            "ip netns add drvdrover-p",
            "ip link add drvdrover-p type veth peer name eth0 netns drvdrover-p",
            "ip link set drvdrover-p master drvdrover-br",
            "ip link set drvdrover-p up",
            "ip -n drvdrover-p addr add 198.18.0.250/24 dev eth0",
            "ip -n drvdrover-p link set eth0 up",
            "ip -n drvdrover-p link set lo up",
        ]
    );
    let peer = plan.state.peer.as_ref().unwrap();
    assert_eq!(
        (peer.netns.as_str(), peer.address.to_string()),
        ("drvdrover-p", "198.18.0.250".into())
    );
    let subnet = crate::name::Subnet(0);
    assert_eq!(
        subnet.vm_addr(0).map(|a| a.to_string()).as_deref(),
        Some("198.18.0.110")
    );
    assert_eq!(
        subnet.vm_addr(139).map(|a| a.to_string()).as_deref(),
        Some("198.18.0.249")
    );
    assert_eq!(subnet.vm_addr(140), None);
}

#[test]
fn a_wan_end_is_told_the_slowest_of_its_links() {
    use crate::wan::WanLink;
    let mut s = spec();
    s.hosts = 3;
    let lan = s.link.rate_bytes_per_sec;
    s.wan = vec![WanLink::parse("h1-h2=1Mbit/s,50ms").expect("wan")];
    assert_eq!(host_link_bps(&s, 1), 125_000);
    assert_eq!(host_link_bps(&s, 2), 125_000);
    assert_eq!(host_link_bps(&s, 3), lan, "not on the WAN");
    // A WAN faster than the lab's link changes nothing.
    s.wan = vec![WanLink::parse("h1-h2=100Gbit/s,50ms").expect("wan")];
    assert_eq!(host_link_bps(&s, 1), lan);
}
