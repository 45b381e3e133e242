//! A scripted cluster and a fake fleet for the control step's tests.

use crate::control::{
    record, step, Action, ControlSettings, ControlState, HostObs, MigrationObs, MigrationPhase,
    Observation, Outcome, PlanState, PowerState, StepOutput, VmObs, VmPresence,
};

/// What every completed migration of the rig reports it moved, bytes.
pub const MOVED_BYTES: u64 = 96 << 20;

pub const GIB: u64 = 1 << 30;

/// Hosts and their VMs, as agents would report them.
#[derive(Debug, Clone, Default)]
pub struct Cluster {
    pub hosts: Vec<HostObs>,
}

impl Cluster {
    pub fn new() -> Cluster {
        Cluster::default()
    }

    /// An active, reachable host.
    pub fn host(mut self, name: &str, cpus: f64, mem_gib: u64) -> Cluster {
        self.hosts.push(HostObs {
            name: name.into(),
            reachable: true,
            power: PowerState::Active,
            cpus,
            memory_bytes: mem_gib * GIB,
            cpu_demand_cores: 0.0,
            vms: Vec::new(),
        });
        self
    }

    /// A host in standby.
    pub fn standby_host(mut self, name: &str, cpus: f64, mem_gib: u64) -> Cluster {
        self = self.host(name, cpus, mem_gib);
        self.h(name).power = PowerState::Standby;
        self
    }

    /// A running VM, idle in memory (dirty rate measured at 0).
    pub fn vm(mut self, host: &str, name: &str, demand: f64, mem_gib: u64) -> Cluster {
        self.h(host).vms.push(VmObs {
            name: name.into(),
            presence: VmPresence::Running,
            vcpus: 4,
            memory_bytes: mem_gib * GIB,
            cpu_demand_cores: demand,
            dirty_rate_bps: Some(0.0),
            wss_bytes: Some(0),
            net_rx_bps: 0.0,
            net_tx_bps: 0.0,
            migration: None,
        });
        self
    }

    pub fn h(&mut self, name: &str) -> &mut HostObs {
        self.hosts
            .iter_mut()
            .find(|h| h.name == name)
            .expect("a host of the script")
    }

    pub fn v(&mut self, name: &str) -> &mut VmObs {
        self.hosts
            .iter_mut()
            .flat_map(|h| h.vms.iter_mut())
            .find(|v| v.name == name)
            .expect("a VM of the script")
    }

    /// The host `vm` runs on.
    pub fn where_is(&self, vm: &str) -> Option<&str> {
        self.hosts
            .iter()
            .find(|h| {
                h.vms
                    .iter()
                    .any(|v| v.name == vm && v.presence == VmPresence::Running)
            })
            .map(|h| h.name.as_str())
    }

    /// Moves `vm` to `to` at once (as if it had migrated).
    pub fn relocate(&mut self, vm: &str, to: &str) {
        let mut taken = None;
        for h in &mut self.hosts {
            if let Some(i) = h.vms.iter().position(|v| v.name == vm) {
                taken = Some(h.vms.remove(i));
            }
        }
        if let Some(v) = taken {
            self.h(to).vms.push(v);
        }
    }

    /// The observation: each host's demand is its running VMs' sum.
    pub fn observe(&self, migrations: Vec<MigrationObs>) -> Observation {
        let mut hosts = self.hosts.clone();
        for h in &mut hosts {
            h.cpu_demand_cores = h
                .vms
                .iter()
                .filter(|v| v.presence == VmPresence::Running)
                .map(|v| v.cpu_demand_cores)
                .sum();
        }
        Observation { hosts, migrations }
    }
}

/// A migration the fake fleet runs.
#[derive(Debug, Clone)]
pub struct Flight {
    pub id: String,
    pub vm: String,
    pub from: String,
    pub to: String,
    pub looks_left: u32,
    pub phase: MigrationPhase,
}

/// The control step, a cluster, and a fake fleet that carries actions out.
pub struct Rig {
    pub state: ControlState,
    pub settings: ControlSettings,
    pub cluster: Cluster,
    pub now: f64,
    pub flights: Vec<Flight>,
    /// Hosts waking, and looks until active.
    pub waking: Vec<(String, u32)>,
    /// Looks a migration takes.
    pub migrate_looks: u32,
    /// Looks a wake takes.
    pub wake_looks: u32,
    /// When false, the agents ignore `Migrate` (to test asking again).
    pub accept_migrations: bool,
    /// Every output, in order.
    pub outputs: Vec<StepOutput>,
}

impl Rig {
    pub fn new(cluster: Cluster, settings: ControlSettings) -> Rig {
        Rig {
            state: ControlState::default(),
            settings,
            cluster,
            now: 0.0,
            flights: Vec::new(),
            waking: Vec::new(),
            migrate_looks: 2,
            wake_looks: 3,
            accept_migrations: true,
            outputs: Vec::new(),
        }
    }

    /// What the agents report; an unreachable source reports nothing.
    pub fn observation(&self) -> Observation {
        let reachable = |h: &str| {
            self.cluster
                .hosts
                .iter()
                .any(|x| x.name == h && x.reachable)
        };
        let migrations = self
            .flights
            .iter()
            .filter(|f| reachable(&f.from))
            .map(|f| MigrationObs {
                id: f.id.clone(),
                phase: f.phase,
                vm_on_destination: f.phase == MigrationPhase::Completed,
                error: None,
                transferred_bytes: (f.phase == MigrationPhase::Completed).then_some(MOVED_BYTES),
            })
            .collect();
        self.cluster.observe(migrations)
    }

    /// One second passes, the fleet progresses, the step looks, the actions are carried out.
    pub fn look(&mut self) -> StepOutput {
        self.now += 1.0;
        self.progress();
        let obs = self.observation();
        let out = step(&mut self.state, &obs, &self.settings, self.now);
        self.carry(&out);
        self.outputs.push(out.clone());
        out
    }

    /// `n` looks; returns every action they emitted.
    pub fn looks(&mut self, n: usize) -> Vec<Action> {
        (0..n).flat_map(|_| self.look().actions).collect()
    }

    /// Looks until `now` reaches `t` (or passes it); returns every action.
    pub fn until(&mut self, t: f64) -> Vec<Action> {
        let mut actions = Vec::new();
        while self.now < t {
            actions.extend(self.look().actions);
        }
        actions
    }

    fn progress(&mut self) {
        let mut arrived = Vec::new();
        for f in &mut self.flights {
            if f.phase != MigrationPhase::Running {
                continue;
            }
            f.looks_left = f.looks_left.saturating_sub(1);
            if f.looks_left == 0 {
                f.phase = MigrationPhase::Completed;
                arrived.push((f.vm.clone(), f.to.clone()));
            }
        }
        for (vm, to) in arrived {
            self.cluster.relocate(&vm, &to);
        }
        for (host, left) in &mut self.waking {
            *left = left.saturating_sub(1);
            if *left == 0 {
                self.cluster.h(host).power = PowerState::Active;
            }
        }
        self.waking.retain(|(_, left)| *left > 0);
    }

    fn carry(&mut self, out: &StepOutput) {
        for a in &out.actions {
            let outcome = match a {
                Action::Migrate {
                    move_id,
                    vm,
                    from,
                    to,
                    ..
                } => {
                    if !self.accept_migrations {
                        continue;
                    }
                    if !self.flights.iter().any(|f| &f.id == move_id) {
                        self.flights.push(Flight {
                            id: move_id.clone(),
                            vm: vm.clone(),
                            from: from.clone(),
                            to: to.clone(),
                            looks_left: self.migrate_looks,
                            phase: MigrationPhase::Running,
                        });
                    }
                    Outcome::MigrateAccepted {
                        move_id: move_id.clone(),
                    }
                }
                Action::Standby { host } => {
                    self.cluster.h(host).power = PowerState::Standby;
                    Outcome::Standby {
                        host: host.clone(),
                        error: None,
                    }
                }
                Action::Wake { host } => {
                    self.cluster.h(host).power = PowerState::Waking;
                    self.waking.push((host.clone(), self.wake_looks));
                    Outcome::Wake {
                        host: host.clone(),
                        error: None,
                    }
                }
                Action::Cancel { move_id, .. } => Outcome::Cancel {
                    move_id: move_id.clone(),
                    error: None,
                },
            };
            record(&mut self.state, outcome, self.now);
        }
    }

    /// The plans in `state`, oldest first.
    pub fn plans(&self, wanted: PlanState) -> Vec<&crate::control::Plan> {
        let mut p: Vec<_> = self
            .state
            .plans
            .values()
            .filter(|p| p.state == wanted)
            .collect();
        p.sort_by(|a, b| a.created_s.total_cmp(&b.created_s));
        p
    }
}

/// The (vm, from, to) of every `Migrate` in `actions`.
pub fn migrations(actions: &[Action]) -> Vec<(String, String, String)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Migrate { vm, from, to, .. } => Some((vm.clone(), from.clone(), to.clone())),
            _ => None,
        })
        .collect()
}

/// Settings for tests: the defaults, with consolidation out of the way unless a test wants it.
pub fn quiet() -> ControlSettings {
    ControlSettings {
        standby: false,
        ..ControlSettings::default()
    }
}
