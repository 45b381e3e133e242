use std::time::Duration;

use super::*;
use crate::fake::FakeSystem;
use crate::plan::{Action, AgentLaunch, Step, AGENT_PORT};

fn layout() -> CgroupLayout {
    CgroupLayout::V1 {
        cpu: "/cg/cpu".into(),
        memory: "/cg/memory".into(),
    }
}

fn dirs() -> LabDirs {
    LabDirs {
        root: "/run/drover/lab".into(),
    }
}

fn spec() -> LabSpec {
    let agent = AgentLaunch {
        argv_prefix: vec!["drover".into(), "agent".into()],
        port: AGENT_PORT,
        health_timeout: Duration::from_secs(1),
    };
    LabSpec::new("drover", 2)
        .unwrap()
        .cpus(1.0)
        .memory(1 << 30)
        .agent(agent)
}

/// Ops the fake records before the first planned step (the two discovery listings and the
/// address listing for picking a subnet).
const DISCOVERY_OPS: usize = 3;

fn name() -> LabName {
    LabName::new("drover").unwrap()
}

/// The op by which an undo action shows up in the fake's log.
fn signature(a: &Action) -> String {
    match a {
        Action::Run(c) => format!("run {c}"),
        Action::RemoveCgroup(p) | Action::RmdirIfEmpty(p) => format!("rmdir {}", p.display()),
        Action::RemoveTree(p) => format!("remove-tree {}", p.display()),
        Action::KillCgroup(f) => format!("read {}", f[0].display()),
        other => panic!("unexpected undo {other}"),
    }
}

#[test]
fn a_spec_that_cannot_work_is_refused_before_touching_the_machine() {
    let mut sys = FakeSystem::new();
    let err = up(&mut sys, &dirs(), &spec().memory(0), &layout()).unwrap_err();
    assert!(err.to_string().contains("at least 234 MiB"), "{err}");
    let err = up(&mut sys, &dirs(), &spec().cpus(f64::NAN), &layout()).unwrap_err();
    assert!(err.to_string().contains("CPU cap"), "{err}");
    assert!(sys.ops.is_empty(), "{:?}", sys.ops);
}

#[test]
fn up_runs_every_step_and_writes_the_state_last() {
    let mut sys = FakeSystem::new();
    let state = up(&mut sys, &dirs(), &spec(), &layout()).unwrap();
    assert_eq!(
        sys.ops.last().map(String::as_str),
        Some("write-atomic /run/drover/lab/drover/lab.json")
    );
    assert_eq!(state.hosts[0].agent_pid, Some(1001));
    assert_eq!(state.hosts[1].agent_pid, Some(1002));
    let token = &sys.files[&PathBuf::from("/run/drover/lab/drover/token")];
    assert_eq!(token.len(), 64);
    let saved = &sys.files[&PathBuf::from("/run/drover/lab/drover/lab.json")];
    assert_eq!(LabState::from_json(saved, Path::new("x")).unwrap(), state);
    assert!(sys
        .position("get http://198.18.0.12:7700/v1/health")
        .is_some());
}

#[test]
fn a_failure_at_any_step_undoes_everything_before_it_in_reverse() {
    let env = PlanEnv {
        layout: layout(),
        subnet: crate::name::Subnet(0),
        lab_dir: dirs().lab_dir(&name()),
        token: "x".into(),
        now_unix: 0,
    };
    let steps = plan_up(&spec(), &env).unwrap().steps;
    // k == steps.len() fails the final state-file write.
    for k in 0..=steps.len() {
        let mut sys = FakeSystem::new();
        sys.fail_at = Some(DISCOVERY_OPS + k);
        if let Some(Step {
            action: Action::WaitHealth { addr, .. },
            ..
        }) = steps.get(k)
        {
            // Health is polled; make every poll fail, not just the first.
            sys.fail_on = Some(format!("get http://{addr}"));
        }
        let err = up(&mut sys, &dirs(), &spec(), &layout()).unwrap_err();
        let LabError::SetUp {
            cause, rollback, ..
        } = &err
        else {
            panic!("step {k}: {err}")
        };
        assert!(rollback.is_empty(), "step {k}: {rollback:?}");
        assert!(cause.to_string().contains("injected"), "step {k}: {cause}");
        assert!(err
            .to_string()
            .contains("everything made so far was removed"));

        let expected: Vec<String> = steps[..k]
            .iter()
            .rev()
            .filter_map(|s| s.undo.as_ref())
            .map(signature)
            .collect();
        let after = &sys.ops[DISCOVERY_OPS + k + 1..];
        let mut rest = after.iter();
        for want in &expected {
            assert!(
                rest.any(|op| op == want),
                "step {k}: {want} missing or out of order in {after:#?}"
            );
        }
        // Nothing but undo work happens after the failure.
        assert!(
            after
                .iter()
                .all(|op| !op.starts_with("mkdir") && !op.starts_with("spawn")),
            "step {k}: {after:#?}"
        );
    }
}

#[test]
fn rollback_failures_are_reported_with_the_cause() {
    let mut inner = FakeSystem::new();
    inner.fail_on = Some("run ip -n drvdrover-h2 link set lo".into());
    // The bridge cannot be deleted either.
    let mut sys = FailTwice { inner };
    let err = up(&mut sys, &dirs(), &spec(), &layout())
        .unwrap_err()
        .to_string();
    assert!(err.contains("link set lo up"), "{err}");
    assert!(
        err.contains("rolling back also failed") && err.contains("ip link del drvdrover-br"),
        "{err}"
    );
}

/// A fake that also fails deleting the bridge.
struct FailTwice {
    inner: FakeSystem,
}

impl System for FailTwice {
    fn run(&mut self, cmd: &Cmd) -> Result<String, SystemError> {
        if cmd.to_string() == "ip link del drvdrover-br" {
            return Err(SystemError::Injected(cmd.to_string()));
        }
        self.inner.run(cmd)
    }
    fn mkdir(&mut self, p: &Path) -> Result<(), SystemError> {
        self.inner.mkdir(p)
    }
    fn rmdir(&mut self, p: &Path) -> Result<(), SystemError> {
        self.inner.rmdir(p)
    }
    fn write(&mut self, p: &Path, c: &str, m: Option<u32>) -> Result<(), SystemError> {
        self.inner.write(p, c, m)
    }
    fn write_atomic(&mut self, p: &Path, c: &str) -> Result<(), SystemError> {
        self.inner.write_atomic(p, c)
    }
    fn read(&mut self, p: &Path) -> Result<String, SystemError> {
        self.inner.read(p)
    }
    fn exists(&mut self, p: &Path) -> bool {
        self.inner.exists(p)
    }
    fn subdirs(&mut self, p: &Path) -> Result<Vec<PathBuf>, SystemError> {
        self.inner.subdirs(p)
    }
    fn remove_tree(&mut self, p: &Path) -> Result<(), SystemError> {
        self.inner.remove_tree(p)
    }
    fn kill(&mut self, pid: i32) -> Result<(), SystemError> {
        self.inner.kill(pid)
    }
    fn spawn_detached(&mut self, a: &[String], l: &Path) -> Result<u32, SystemError> {
        self.inner.spawn_detached(a, l)
    }
    fn http_get(&mut self, a: std::net::SocketAddr, p: &str, t: &str) -> Result<(), SystemError> {
        self.inner.http_get(a, p, t)
    }
    fn control(&mut self, s: &Path, r: &str, t: Duration) -> Result<String, SystemError> {
        self.inner.control(s, r, t)
    }
    fn sleep(&mut self, d: Duration) {
        self.inner.sleep(d)
    }
    fn random(&mut self, n: usize) -> Result<Vec<u8>, SystemError> {
        self.inner.random(n)
    }
    fn lock(&mut self) -> Result<crate::system::LabLock, SystemError> {
        self.inner.lock()
    }
}

#[test]
fn up_refuses_a_lab_that_is_up_or_has_leftovers() {
    let mut sys = FakeSystem::new();
    sys.files
        .insert("/run/drover/lab/drover/lab.json".into(), "{}".into());
    let err = up(&mut sys, &dirs(), &spec(), &layout()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "lab 'drover' is already up; run `drover lab down --name drover` first"
    );

    let mut sys = FakeSystem::new();
    sys.outputs
        .insert("ip netns list".into(), "drvdrover-h1 (id: 3)\n".into());
    let err = up(&mut sys, &dirs(), &spec(), &layout())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("leftovers") && err.contains("drvdrover-h1"),
        "{err}"
    );
    assert!(!sys.ops.iter().any(|o| o.starts_with("mkdir")));
}

#[test]
fn down_finds_everything_by_name_without_the_state_file_and_is_idempotent() {
    let mut sys = FakeSystem::new();
    up(&mut sys, &dirs(), &spec(), &layout()).unwrap();
    // Simulate a crash: the state file is gone, the kernel objects are still there, an agent
    // and a QEMU it started still run in h1's cgroup.
    sys.files
        .remove(&PathBuf::from("/run/drover/lab/drover/lab.json"));
    sys.outputs.insert(
        "ip netns list".into(),
        "drvdrover-h2 (id: 1)\ndrvdrover-h1 (id: 0)\nx\n".into(),
    );
    sys.outputs.insert(
        "ip -o link show".into(),
        "1: lo: <LOOPBACK>\n4: drvdrover-br: <UP>\n5: drvdrover-h1@if2: <UP>\n6: drvdrover-h2@if2: <UP>\n".into(),
    );
    sys.files.insert(
        "/cg/cpu/drover/drover/h1/cgroup.procs".into(),
        "1001\n4242\n".into(),
    );
    sys.ops.clear();

    let report = down(&mut sys, &dirs(), &name(), &layout()).unwrap();
    assert_eq!(report.namespaces, ["drvdrover-h2", "drvdrover-h1"]);
    assert_eq!(
        report.links,
        ["drvdrover-br", "drvdrover-h1", "drvdrover-h2"]
    );
    assert_eq!(report.cgroup_dirs.len(), 6);
    let pos = |s: &str| {
        sys.position(s)
            .unwrap_or_else(|| panic!("{s} not in {:#?}", sys.ops))
    };
    assert!(pos("kill 4242") < pos("run ip link del drvdrover-h1"));
    assert!(pos("run ip link del drvdrover-h2") < pos("run ip link del drvdrover-br"));
    assert!(pos("run ip netns del drvdrover-h1") < pos("rmdir /cg/cpu/drover/drover/h1"));
    assert!(pos("rmdir /cg/cpu/drover/drover/h1") < pos("rmdir /cg/cpu/drover/drover"));
    assert!(pos("rmdir /cg/memory/drover/drover") < pos("remove-tree /run/drover/lab/drover"));
    assert!(sys.dirs.is_empty(), "{:?}", sys.dirs);

    // The kernel objects are gone now; a second down finds nothing and does nothing.
    sys.outputs.clear();
    sys.ops.clear();
    let again = down(&mut sys, &dirs(), &name(), &layout()).unwrap();
    assert!(again.is_empty());
    assert!(
        sys.ops.iter().all(|o| o.starts_with("run ip")),
        "{:#?}",
        sys.ops
    );
}

#[test]
fn down_keeps_going_past_failures_and_reports_them() {
    let mut sys = FakeSystem::new();
    sys.outputs
        .insert("ip netns list".into(), "drvdrover-h1\n".into());
    sys.outputs.insert(
        "ip -o link show".into(),
        "5: drvdrover-h1@if2: <UP>\n4: drvdrover-br: <UP>\n".into(),
    );
    sys.fail_on = Some("run ip link del drvdrover-h1".into());
    let err = down(&mut sys, &dirs(), &name(), &layout())
        .unwrap_err()
        .to_string();
    assert!(err.contains("1 removal(s) failed"), "{err}");
    assert!(sys.position("run ip netns del drvdrover-h1").is_some());
}

#[test]
fn status_reads_the_state_and_checks_the_machine() {
    let mut sys = FakeSystem::new();
    up(&mut sys, &dirs(), &spec(), &layout()).unwrap();
    sys.outputs
        .insert("ip netns list".into(), "drvdrover-h1\n".into());
    let st = status(&mut sys, &dirs(), &name()).unwrap();
    assert_eq!(st.hosts.len(), 2);
    assert!(st.hosts[0].netns_present && !st.hosts[1].netns_present);
    assert_eq!(st.hosts[0].agent_healthy, Some(true));
    assert_eq!(st.hosts[0].agent_running, Some(false));
    assert_eq!(st.manager, None);
    let record = dirs()
        .lab_dir(&name())
        .join(crate::manager_file::MANAGER_FILE);
    sys.files.insert(
        record,
        r#"{"url":"http://127.0.0.1:7800","pid":4242}"#.into(),
    );
    let st = status(&mut sys, &dirs(), &name()).unwrap();
    assert_eq!(
        st.manager,
        Some(crate::lab::ManagerStatus {
            url: "http://127.0.0.1:7800".into(),
            pid: 4242,
            running: false,
        })
    );

    let other = LabName::new("nolab").unwrap();
    let err = status(&mut sys, &dirs(), &other).unwrap_err();
    assert!(
        matches!(err, LabError::State(StateError::NotUp { .. })),
        "{err}"
    );
}

#[test]
fn layout_is_detected_from_mounts() {
    let mut sys = FakeSystem::new();
    sys.files.insert(
        "/proc/self/mounts".into(),
        "cgroup2 /sys/fs/cgroup cgroup2 rw 0 0\n".into(),
    );
    sys.files.insert(
        "/sys/fs/cgroup/cgroup.controllers".into(),
        "cpu io memory\n".into(),
    );
    assert_eq!(
        detect_layout(&mut sys).unwrap(),
        CgroupLayout::V2 {
            root: "/sys/fs/cgroup".into()
        }
    );
}

#[test]
fn up_takes_the_lowest_free_subnet() {
    let mut sys = FakeSystem::new();
    sys.outputs.insert(
        "ip -o -4 addr show".into(),
        "4: drvother-br    inet 198.18.0.1/24 scope global drvother-br\n".into(),
    );
    let state = up(&mut sys, &dirs(), &spec(), &layout()).unwrap();
    assert_eq!(state.subnet, "198.18.1.0/24");
    assert_eq!(state.bridge_address.to_string(), "198.18.1.1");
    assert_eq!(state.hosts[1].address.to_string(), "198.18.1.12");
    assert!(sys
        .position("run ip addr add 198.18.1.1/24 dev drvdrover-br")
        .is_some());
}

fn wan_spec() -> LabSpec {
    let link = crate::wan::WanLink::parse("h1-h2=100Mbit/s,50ms").unwrap();
    spec().wan(vec![link], vec!["drover-delay-line".into()])
}

#[test]
fn a_wan_pair_runs_its_delay_line_and_records_it() {
    let mut sys = FakeSystem::new();
    let state = up(&mut sys, &dirs(), &wan_spec(), &layout()).unwrap();
    let w = &state.wan[0];
    assert!(w.pid.is_some(), "{w:?}");
    assert_ne!(w.pid, state.hosts[0].agent_pid);
    let sock = "/run/drover/lab/drover/wan-h1-h2.sock";
    let asked = sys.position(&format!("control {sock} stats")).unwrap();
    let routed = sys
        .ops
        .iter()
        .position(|o| o.contains("route add 198.18.0.12/32 dev wan-h2"))
        .unwrap();
    assert!(asked < routed, "routes only once the line answers");
    assert_eq!(w.config.control, std::path::PathBuf::from(sock));
    // Status checks the line's process: gone, then (its /proc entry back) running.
    let pid = w.pid.expect("pid");
    let st = status(&mut sys, &dirs(), &name()).unwrap();
    assert_eq!(
        st.wan,
        [crate::lab::WanStatus {
            pair: "h1-h2".into(),
            pid: Some(pid),
            running: Some(false),
            link: None,
        }]
    );
    sys.dirs
        .insert(std::path::PathBuf::from(format!("/proc/{pid}")));
    let st = status(&mut sys, &dirs(), &name()).unwrap();
    assert_eq!(st.wan[0].running, Some(true));
}

/// Status asks a running line for its link: cut, up, or no answer (the reason kept).
#[test]
fn status_says_whether_a_wan_link_is_cut() {
    let mut sys = FakeSystem::new();
    let state = up(&mut sys, &dirs(), &wan_spec(), &layout()).unwrap();
    let pid = state.wan[0].pid.expect("pid");
    sys.dirs
        .insert(std::path::PathBuf::from(format!("/proc/{pid}")));
    let ask = "control /run/drover/lab/drover/wan-h1-h2.sock stats".to_string();
    let reply = |state| {
        serde_json::to_string(&crate::delay_io::ControlReply {
            state,
            dirs: Default::default(),
            error: None,
        })
        .unwrap()
    };
    let link = |sys: &mut FakeSystem| status(sys, &dirs(), &name()).unwrap().wan[0].link.clone();
    sys.outputs
        .insert(ask.clone(), reply(crate::delay::LinkState::Cut));
    assert_eq!(link(&mut sys), Some(crate::lab::LinkCheck::Cut));
    sys.outputs
        .insert(ask.clone(), reply(crate::delay::LinkState::Up));
    assert_eq!(link(&mut sys), Some(crate::lab::LinkCheck::Up));
    sys.outputs.insert(ask, "garbage".into());
    assert!(
        matches!(link(&mut sys), Some(crate::lab::LinkCheck::NoAnswer { reason }) if reason.contains("garbage"))
    );
    sys.fail_on = Some("control ".into());
    assert!(matches!(
        link(&mut sys),
        Some(crate::lab::LinkCheck::NoAnswer { .. })
    ));
}

#[test]
fn a_delay_line_that_never_answers_rolls_the_lab_back() {
    let mut sys = FakeSystem::new();
    sys.fail_on = Some("control ".into());
    let err = up(&mut sys, &dirs(), &wan_spec(), &layout()).unwrap_err();
    let text = err.to_string();
    assert!(text.contains("delay line h1-h2 did not answer"), "{text}");
    assert!(
        text.contains("everything made so far was removed"),
        "{text}"
    );
    // The line is killed in its namespace, the namespaces (and their TUN devices) deleted.
    let ops = &sys.ops;
    for needle in [
        "run ip netns pids drvdrover-h1",
        "run ip netns del drvdrover-h1",
        "remove-tree /run/drover/lab/drover",
    ] {
        assert!(ops.iter().any(|o| o == needle), "{needle} not in {ops:#?}");
    }
    assert!(!ops.iter().any(|o| o.contains("route add")), "{ops:#?}");
    assert!(!sys.exists(&dirs().state_file(&name())));
}

#[test]
fn wan_pairs_outside_the_lab_or_without_a_program_are_refused_up_front() {
    let mut sys = FakeSystem::new();
    let link = crate::wan::WanLink::parse("h1-h3=100Mbit/s,50ms").unwrap();
    let err = up(
        &mut sys,
        &dirs(),
        &spec().wan(vec![link], vec!["x".into()]),
        &layout(),
    );
    assert!(err.unwrap_err().to_string().contains("h1..h2"));
    let mut no_line = wan_spec();
    no_line.delay_line = None;
    let err = up(&mut sys, &dirs(), &no_line, &layout()).unwrap_err();
    assert!(err.to_string().contains("delay-line program"), "{err}");
    assert!(sys.ops.is_empty(), "{:?}", sys.ops);
}
