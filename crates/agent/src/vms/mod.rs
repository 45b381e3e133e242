//! The VMs this agent runs: start, re-attach, list, stop; and the destination half of a
//! migration (an incoming QEMU that becomes a normal VM on commit).
//!
//! Each VM is a detached QEMU daemon (it outlives the agent) plus, while the agent runs, a QMP
//! session and a reader of the guest's workload reports. The registry is the only owner of
//! those; everything else borrows the QMP session through an `Arc`.
//!
//! Admission ([`admission`]) claims a VM's name and memory (guest plus QEMU's overhead) in one
//! step. What may be done to a VM a migration has (delete, abort, commit) is decided from what
//! its QEMU says ([`guard`]), never from the registry alone. A dead QEMU's reason names an OOM
//! kill when the host's memory cgroup counted one ([`oom`]).
//!
//! Lifecycle of one VM on this host:
//! ```text
//! create ──> Running ──────────────────────────────> (deleted | migrated away)
//! incoming ─> Incoming{migration} ──commit──> Running
//!                 └──abort──> (deleted)
//! any ──QEMU found dead──> Lost (reported, never restarted)
//! Running ──its migration's post-copy starts──> Moved (held until that migration ends)
//! Moved ──its migration abandoned (`release`)──> Lost (QEMU stopped, disk kept: the operator's)
//! Incoming, QEMU dead after the switch ──abort──> (forgotten; its disk file kept)
//! ```
//!
//! A running VM's workload may be changed in place ([`workload`]): the new spec is recorded,
//! then delivered to the guest over its metrics port.

mod workload;

use crate::lock;
use crate::model::{VmRecord, VmRole};
use crate::procfs::{self, Liveness};
use crate::store::{Store, StoreError};
use drover_api::qmp::ForwardedQmp;
use drover_api::{unix_ms, VmConfig, VmStatus, VmView};
use drover_qemu::image::GuestImage;
use drover_qemu::launcher::{self, Accel, LaunchError, RunPaths, TapNic, VmSpec};
use drover_qemu::metrics::{Clock, MetricsReader, Samples};
use drover_qemu::qmp::{QmpClient, QmpError, QmpExt};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use thiserror::Error;

mod admission;
pub mod disk;
mod forward;
mod guard;
mod nic;
pub mod oom;
mod process;
mod profile;
mod release;
pub mod tap;
mod view;

#[cfg(test)]
mod tests;

pub use admission::{
    vm_cost, QEMU_OVERHEAD_BYTES, QEMU_OVERHEAD_PER_VCPU_BYTES, QEMU_OVERHEAD_SHARE,
};
pub use forward::{check_storage_command, IncomingDisk};
pub use guard::{GuestSeen, Removal};
use oom::OomWatch;
pub use process::kill_pid;
use process::LAUNCHES;
pub use profile::ProfileTarget;

#[derive(Debug, Error)]
pub enum VmsError {
    #[error("no VM named '{0}' on this host")]
    NotFound(String),
    #[error("a VM named '{0}' already exists on this host")]
    Exists(String),
    #[error("VM '{name}' is busy: {why}")]
    Busy { name: String, why: String },
    /// A WAN plan asked for a VM without a disk (409, like the other refusals of what the VM
    /// is rather than of the request's shape).
    #[error("VM '{0}' has no disk: the WAN plan models memory and a disk")]
    NoDiskToPlan(String),
    #[error("migration '{id}' already has VM '{vm}' on this host")]
    MigrationTaken { id: String, vm: String },
    /// An abort refused: the migration switched, the guest runs only here.
    #[error("incoming VM '{name}' cannot be aborted: {why}")]
    GuestHere { name: String, why: String },
    /// A commit refused: no complete guest runs here.
    #[error("incoming VM '{name}' cannot be committed: {why}")]
    NoGuest { name: String, why: String },
    #[error("VM '{0}' cannot be committed: it never was an incoming migration destination")]
    NeverIncoming(String),
    #[error("VM '{0}' is lost (its QEMU is gone)")]
    Lost(String),
    #[error(transparent)]
    Launch(#[from] LaunchError),
    #[error("QMP with '{name}': {source}")]
    Qmp { name: String, source: QmpError },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("guest image: {0}")]
    Image(String),
    #[error(
        "VM '{name}' needs {need} bytes of memory (its guest's plus QEMU's own overhead) but \
         this host has {free} of {capacity} free"
    )]
    NoRoom {
        name: String,
        need: u64,
        free: u64,
        capacity: u64,
    },
    #[error("no disk named '{disk}' in this agent's storage directory {dir}")]
    NoDisk { disk: String, dir: PathBuf },
    /// A name in the storage directory that is a symbolic link to a file outside it (409: the
    /// host's files are at fault); the agent opens only files inside its directory.
    #[error(
        "{field} '{disk}' is a symbolic link that leads outside this agent's storage directory \
         {dir}; expected a file inside it"
    )]
    DiskOutside {
        field: &'static str,
        disk: String,
        dir: PathBuf,
    },
    /// A disk that cannot be created, or that the workload does not fit.
    #[error(transparent)]
    Disk(#[from] disk::DiskError),
    /// A NIC this host cannot give (no VM network, an address outside it or taken), or a tap
    /// that could not be made.
    #[error(transparent)]
    Tap(#[from] tap::TapError),
    #[error("VM '{0}' is not an incoming migration")]
    NotIncoming(String),
    /// An incoming VM committed since: it was one, and is a normal VM now.
    #[error(
        "VM '{name}' is not an incoming migration any more: migration {migration} delivered it \
         here and it was committed"
    )]
    Committed { name: String, migration: String },
    /// A forwarded QMP command's `arguments.uri` that is not the URI this agent made for the
    /// VM (the API answers 422, naming the field).
    #[error(
        "arguments.uri '{uri}' is not valid: expected the URI this agent made for incoming VM \
         '{name}'"
    )]
    ForeignUri { name: String, uri: String },
    /// A forwarded storage command that is not the one this agent expects for the VM.
    #[error("{field} '{given}' is not valid: expected {expected} for incoming VM '{name}'")]
    ForeignNbd {
        name: String,
        field: &'static str,
        given: String,
        expected: String,
    },
    /// A workload change the VM's running workload cannot take.
    #[error(transparent)]
    Workload(#[from] drover_api::workload::WorkloadChangeError),
    /// A workload spec that cannot travel in a control line (the shape check keeps these out).
    #[error("{0}")]
    Unsendable(String),
}

/// A VM with an attached QEMU, as the metrics sampler sees it.
pub struct LiveVm {
    pub name: String,
    pub pid: u32,
    pub vcpus: u32,
    pub memory_bytes: u64,
    pub tap: Option<String>,
    pub has_disk: bool,
    pub qmp: Arc<QmpClient>,
    pub migrating: bool,
    pub incoming: bool,
    /// Its migration's post-copy has switched over: the guest runs on the destination.
    pub guest_away: bool,
}

/// How this host starts QEMU.
#[derive(Debug, Clone)]
pub struct LaunchSettings {
    pub qemu_binary: String,
    pub accel: Accel,
    /// None: build/find the default image on first use.
    pub image: Option<GuestImage>,
    pub start_timeout: Duration,
    /// Memory VMs may be given in all, bytes (the host's capacity): a VM that would take more
    /// is refused rather than left to the kernel's OOM killer.
    pub memory_capacity_bytes: u64,
    /// The memory cgroup whose OOM kills explain a dead QEMU (None: the agent's own, if visible).
    pub memory_cgroup: Option<PathBuf>,
    /// The VM network NICs join (None: VMs get no NIC here).
    pub vm_net: Option<tap::VmNet>,
}

/// One VM known to the registry.
pub struct VmEntry {
    pub record: VmRecord,
    pub qmp: Option<Arc<QmpClient>>,
    pub samples: Samples,
    /// Reads the guest's reports and delivers workload changes to it (None when lost).
    reader: Option<MetricsReader>,
    /// Why the VM is lost, if it is.
    pub lost: Option<String>,
    /// The migration this VM takes part in.
    pub migration: Option<String>,
    /// That migration's post-copy has started: the guest runs on the destination.
    pub guest_away: bool,
    /// An incoming VM whose guest has been seen here (a forwarded look or the sampler's own,
    /// `release::watch_arrivals`, said the guest runs, or its migration switched or
    /// completed). Until then its QEMU exiting is
    /// the end of a migration that failed or was cancelled (QEMU quits when its incoming
    /// migration fails), not a lost guest.
    guest_arrived: bool,
    /// Being stopped on purpose, so a liveness check that finds its QEMU gone does not call it
    /// lost.
    stopping: bool,
    /// A WAN profile is being taken (see `profile`): no migration or workload change meanwhile.
    profiling: bool,
}

impl VmEntry {
    fn status(&self) -> VmStatus {
        match (&self.lost, &self.record.role) {
            (Some(_), _) => VmStatus::Lost,
            (None, VmRole::Incoming { .. }) => VmStatus::Incoming,
            (None, VmRole::Running) if self.guest_away => VmStatus::Moved,
            (None, VmRole::Running) => VmStatus::Running,
        }
    }
}

/// The registry of this host's VMs.
pub struct Vms {
    store: Store,
    settings: LaunchSettings,
    image: tokio::sync::OnceCell<GuestImage>,
    map: Mutex<HashMap<String, VmEntry>>,
    /// VMs being started: their names, memory and migration ids, claimed until registered.
    claims: Mutex<HashMap<String, admission::Claim>>,
    oom: OomWatch,
    clock: Clock,
    /// Wall time at `clock`'s origin, to stamp samples in a form other hosts understand.
    origin_unix_ms: u64,
}

impl Vms {
    pub fn new(store: Store, settings: LaunchSettings) -> Self {
        let image = tokio::sync::OnceCell::new();
        if let Some(img) = &settings.image {
            let _ = image.set(img.clone());
        }
        Vms {
            oom: OomWatch::new(settings.memory_cgroup.clone()),
            store,
            settings,
            image,
            map: Mutex::new(HashMap::new()),
            claims: Mutex::new(HashMap::new()),
            clock: Clock::default(),
            origin_unix_ms: unix_ms(),
        }
    }

    /// The memory cgroup whose OOM kills explain dead VMs, if one is visible.
    pub fn oom_dir(&self) -> Option<&Path> {
        self.oom.dir()
    }

    pub fn clock(&self) -> Clock {
        self.clock
    }

    /// Wall-clock ms of an agent-clock instant.
    pub fn to_unix_ms(&self, host_ms: u64) -> u64 {
        self.origin_unix_ms + host_ms
    }

    /// Agent-clock ms of a wall-clock instant (0 if before the agent started).
    pub fn from_unix_ms(&self, unix: u64) -> u64 {
        unix.saturating_sub(self.origin_unix_ms)
    }

    async fn image(&self) -> Result<GuestImage, VmsError> {
        self.image
            .get_or_try_init(|| async {
                tokio::task::spawn_blocking(|| {
                    drover_qemu::image::ensure_image(&drover_qemu::image::NoProgress)
                })
                .await
                .map_err(|e| VmsError::Image(e.to_string()))?
                .map_err(|e| VmsError::Image(e.to_string()))
            })
            .await
            .cloned()
    }

    /// The disk's file, which must exist inside the storage directory (a symbolic link that
    /// leads out of it is refused too, as [`VmsError::DiskOutside`]).
    fn disk_path(&self, disk: &str) -> Result<PathBuf, VmsError> {
        self.resolve_disk("disk", disk)?
            .ok_or_else(|| VmsError::NoDisk {
                disk: disk.to_string(),
                dir: self.store.disk_dir(),
            })
    }

    /// The file `name` (the request's `field`) in the storage directory, symbolic links
    /// followed: `None` when there is no such regular file; [`VmsError::DiskOutside`] when it
    /// is a symbolic link that resolves outside the directory (never opened, whatever it is).
    fn resolve_disk(&self, field: &'static str, name: &str) -> Result<Option<PathBuf>, VmsError> {
        let dir = self.store.disk_dir();
        let path = dir.join(name);
        let (Ok(real), Ok(root)) = (path.canonicalize(), dir.canonicalize()) else {
            return Ok(None);
        };
        if !real.starts_with(&root) {
            let link = std::fs::symlink_metadata(&path).is_ok_and(|m| m.file_type().is_symlink());
            if link {
                let disk = name.to_string();
                return Err(VmsError::DiskOutside { field, disk, dir });
            }
            return Ok(None);
        }
        Ok(real.is_file().then_some(real))
    }

    /// Starts a VM (or, with `Incoming`, a migration destination waiting for `migrate-incoming`).
    /// `config` has been validated (`VmConfig::validate`); what depends on this host (room,
    /// disk, tap) is checked here.
    ///
    /// A disk the configuration asks for is created first ([`disk`]) and removed again if the
    /// VM does not start; the stored configuration names it in `disk`.
    pub async fn start(&self, mut config: VmConfig, role: VmRole) -> Result<VmView, VmsError> {
        let _claim = self.reserve(&config, &role)?;
        config.disk = config.disk_file();
        let created = match (&config.disk, config.creates_disk()) {
            (Some(name), true) => Some(self.create_disk(&config, name).await?),
            (Some(name), false) => {
                self.check_operator_disk(&config.name, name).await?;
                None
            }
            _ => None,
        };
        let started = match self.check_disk_fit(config).await {
            Ok(config) => self.start_checked(config, role).await,
            Err(e) => Err(e),
        };
        if let (Err(_), Some(name)) = (&started, created) {
            disk::remove(&self.store.disk_dir(), &name);
        }
        started
    }

    /// [`Self::start`] once the disk exists: what depends on this host (room, tap) is checked
    /// here.
    async fn start_checked(&self, config: VmConfig, role: VmRole) -> Result<VmView, VmsError> {
        let disk = config
            .disk
            .as_deref()
            .map(|d| self.disk_path(d))
            .transpose()?;
        let nic = self.admit_net(&config)?;
        let image = self.image().await?;
        let mut append = drover_qemu::image::kernel_cmdline(&config.workload);
        let mut tap = None;
        if let Some((net, nic)) = &nic {
            let (Some(ifname), Some(mac)) = (nic.tap(), nic.mac()) else {
                return Err(tap::TapError::Outside {
                    address: nic.address.clone(),
                    net: net.to_string(),
                }
                .into());
            };
            tap::make(net, &ifname).await?;
            append = drover_qemu::image::with_guest_net(&append, &net.guest_cidr(nic));
            tap = Some(TapNic { ifname, mac });
        }
        let tap_name = tap.as_ref().map(|t| t.ifname.clone());
        let started = self.launch(config, role, disk, image, append, tap).await;
        if started.is_err() {
            if let Some(t) = &tap_name {
                tap::remove(t).await;
            }
        }
        started
    }

    /// Launches QEMU for a checked `config` and registers it.
    async fn launch(
        &self,
        config: VmConfig,
        role: VmRole,
        disk: Option<PathBuf>,
        image: GuestImage,
        append: String,
        tap: Option<TapNic>,
    ) -> Result<VmView, VmsError> {
        let spec = VmSpec {
            name: config.name.clone(),
            vcpus: config.vcpus,
            memory_bytes: config.memory_bytes,
            accel: self.settings.accel,
            kernel: image.kernel,
            initrd: image.initrd,
            append,
            incoming: matches!(role, VmRole::Incoming { .. }),
            tap,
            disk: disk
                .map(|path| forward::disk_spec(&config.name, path, &role))
                .transpose()?,
        };
        let run_dir = self.store.run_dir(&config.name);
        let paths = RunPaths::in_dir(&run_dir);
        let pid_of = || {
            std::fs::read_to_string(launcher::pidfile(&paths))
                .ok()
                .and_then(|t| t.trim().parse::<u32>().ok())
        };
        // A pid file already there belongs to some earlier QEMU, never to this launch.
        let earlier = pid_of();
        let launched = {
            let _launching = LAUNCHES.launching().await;
            launcher::spawn_detached(
                &self.settings.qemu_binary,
                &spec,
                &paths,
                self.settings.start_timeout,
            )
            .await
        };
        let pid = match launched {
            Ok(pid) => pid,
            Err(e) => {
                tracing::warn!(vm = %config.name, error = %e, "QEMU did not start");
                // A launch that gave up (timed out) may have left a daemon behind that no
                // record will ever name: stop it, if this launch wrote its pid file.
                if let Some(pid) = pid_of().filter(|&p| Some(p) != earlier) {
                    kill_pid(pid, &config.name).await;
                }
                // Its sockets and logs are of no further use (the error quotes QEMU's words).
                let _ = std::fs::remove_dir_all(&run_dir);
                return Err(e.into());
            }
        };
        let record = VmRecord {
            config,
            role,
            pid,
            run_dir,
            created_unix_ms: unix_ms(),
            arrived_by: None,
        };
        // Persist before anything else can fail, so a crash here still leaves a record to
        // re-attach to (or to report lost) instead of an orphan QEMU.
        if let Err(e) = self.store.save_vm(&record) {
            kill_pid(pid, &record.config.name).await;
            return Err(e.into());
        }
        let entry = match self.attach(record.clone()).await {
            Ok(entry) => entry,
            Err(e) => {
                kill_pid(pid, &record.config.name).await;
                let _ = self.store.remove_vm(&record.config.name);
                return Err(e);
            }
        };
        let view = self.view_of(&entry, None);
        self.register(entry);
        Ok(view)
    }

    /// Connects QMP and the metrics reader to a running QEMU.
    async fn attach(&self, record: VmRecord) -> Result<VmEntry, VmsError> {
        let paths = RunPaths::in_dir(&record.run_dir);
        let qmp = QmpClient::connect(&paths.qmp, Duration::from_secs(5), Duration::from_secs(30))
            .await
            .map_err(|source| VmsError::Qmp {
                name: record.config.name.clone(),
                source,
            })?;
        let samples = Samples::default();
        let reader = MetricsReader::spawn(
            paths.metrics.clone(),
            self.clock,
            samples.clone(),
            Duration::from_secs(5),
        );
        Ok(VmEntry {
            record,
            qmp: Some(Arc::new(qmp)),
            samples,
            reader: Some(reader),
            lost: None,
            migration: None,
            guest_away: false,
            guest_arrived: false,
            stopping: false,
            profiling: false,
        })
    }

    fn lost_entry(record: VmRecord, why: String) -> VmEntry {
        VmEntry {
            record,
            qmp: None,
            samples: Samples::default(),
            reader: None,
            lost: Some(why),
            migration: None,
            guest_away: false,
            guest_arrived: false,
            stopping: false,
            profiling: false,
        }
    }

    /// Re-attaches to every persisted VM after a (re)start. Dead ones are kept as `lost`.
    pub async fn reattach_all(&self) -> Result<(), VmsError> {
        for record in self.store.load_vms()? {
            let name = record.config.name.clone();
            let entry =
                match procfs::liveness(record.pid, &name, procfs::proc_info(record.pid).as_ref()) {
                    Liveness::Dead(why) => {
                        Self::lost_entry(record, with_oom(why, self.oom.so_far()))
                    }
                    Liveness::Alive => match self.attach(record.clone()).await {
                        Ok(e) => e,
                        Err(e) => Self::lost_entry(
                            record,
                            format!("QEMU runs but cannot be re-attached: {e}"),
                        ),
                    },
                };
            if let Some(why) = &entry.lost {
                tracing::warn!(vm = %name, reason = %why, "VM lost");
            } else {
                tracing::info!(vm = %name, pid = entry.record.pid, "re-attached");
            }
            lock(&self.map).insert(name, entry);
        }
        Ok(())
    }

    /// Reaps exited QEMU processes left to this agent, except one a launch is waiting for
    /// (called by the sampler).
    pub fn reap_exited(&self) {
        LAUNCHES.reap_unless_launching(procfs::reap_zombie_children);
    }

    /// Marks VMs whose QEMU died since as lost (called by the sampler), saying so when the
    /// host's memory cgroup OOM-killed something meanwhile. VMs being stopped on purpose are
    /// not lost.
    pub fn check_liveness(&self) {
        let oom = self.oom.since_last();
        let mut map = lock(&self.map);
        for entry in map.values_mut().filter(|e| e.lost.is_none() && !e.stopping) {
            if let Liveness::Dead(why) = procfs::liveness(
                entry.record.pid,
                &entry.record.config.name,
                procfs::proc_info(entry.record.pid).as_ref(),
            ) {
                let why = with_oom(why, oom.clone());
                let incoming = matches!(entry.record.role, VmRole::Incoming { .. });
                if incoming && !entry.guest_arrived {
                    tracing::info!(vm = %entry.record.config.name, reason = %why, "incoming QEMU exited before the guest ran here (its migration failed or was cancelled)");
                } else {
                    tracing::warn!(vm = %entry.record.config.name, reason = %why, "VM lost");
                }
                entry.lost = Some(why);
                entry.qmp = None;
                entry.reader = None;
            }
        }
    }

    /// Marks a running VM as the source of `migration` (refused if busy or lost).
    pub fn begin_migration(&self, name: &str, migration: &str) -> Result<(), VmsError> {
        let mut map = lock(&self.map);
        let e = guard::unclaimed(&mut map, name)?;
        e.migration = Some(migration.to_string());
        Ok(())
    }

    /// Releases a VM its migration held.
    pub fn end_migration(&self, name: &str) {
        if let Some(e) = lock(&self.map).get_mut(name) {
            e.migration = None;
            e.guest_away = false;
        }
    }

    /// Records that the guest of incoming VM `name` has been seen here (see
    /// `VmEntry::guest_arrived`).
    pub fn mark_guest_arrived(&self, name: &str) {
        if let Some(e) = lock(&self.map).get_mut(name) {
            e.guest_arrived = true;
        }
    }

    /// Records that the post-copy of the migration holding `name` has started: its guest runs
    /// on the destination now (the view says `moved`, not `running`).
    pub fn mark_guest_away(&self, name: &str) {
        if let Some(e) = lock(&self.map).get_mut(name) {
            if e.migration.is_some() {
                e.guest_away = true;
            }
        }
    }

    /// Checks a forwarded command against incoming VM `name`: only an incoming VM takes them,
    /// a URI must be the one this agent made for it, and so must an NBD address; an export
    /// must be exactly Drover's of its disk (see [`check_storage_command`]).
    pub fn check_forwarded(&self, name: &str, cmd: &ForwardedQmp) -> Result<(), VmsError> {
        let map = lock(&self.map);
        let e = map
            .get(name)
            .ok_or_else(|| VmsError::NotFound(name.to_string()))?;
        let VmRole::Incoming {
            uri,
            recover_uri,
            nbd,
            source_nbd,
            ..
        } = &e.record.role
        else {
            return Err(VmsError::NotIncoming(name.to_string()));
        };
        let (given, own) = match cmd {
            ForwardedQmp::MigrateIncoming(a) => (a.uri, uri),
            ForwardedQmp::MigrateRecover(a) => (a.uri, recover_uri),
            other => {
                let disk = IncomingDisk::of(*nbd, *source_nbd);
                return check_storage_command(name, other, disk);
            }
        };
        if own.as_ref() != Some(&given) {
            return Err(VmsError::ForeignUri {
                name: name.to_string(),
                uri: given.to_string(),
            });
        }
        Ok(())
    }

    /// What QEMU says about VM `name`'s guest: None when the VM is lost.
    async fn look(&self, name: &str) -> Result<guard::Look, VmsError> {
        let qmp = {
            let map = lock(&self.map);
            let e = map
                .get(name)
                .ok_or_else(|| VmsError::NotFound(name.to_string()))?;
            e.qmp.clone()
        };
        Ok(match qmp {
            Some(q) => Some(guard::look(q.as_ref()).await),
            None => None,
        })
    }

    /// What QEMU says about incoming VM `name`'s guest, for an abort: a QEMU that does not
    /// answer because its process has exited (QEMU quits when its incoming migration fails or
    /// is cancelled; the liveness check may not have seen it yet) is gone, as if lost.
    async fn look_incoming(&self, name: &str) -> Result<guard::Look, VmsError> {
        let seen = self.look(name).await?;
        if !matches!(seen, Some(Err(_))) {
            return Ok(seen);
        }
        let pid = lock(&self.map).get(name).map(|e| e.record.pid);
        let exited = pid.is_some_and(|pid| {
            matches!(
                procfs::liveness(pid, name, procfs::proc_info(pid).as_ref()),
                Liveness::Dead(_)
            )
        });
        Ok(if exited { None } else { seen })
    }

    /// Refuses VM `name` when its QEMU says a post-copy has taken its guest away.
    ///
    /// # Errors
    /// [`VmsError::Busy`], [`VmsError::NotFound`].
    pub async fn check_not_departed(&self, name: &str) -> Result<(), VmsError> {
        guard::not_departed(name, &self.look(name).await?)
    }

    /// Turns an incoming VM into a normal one, once QEMU says the migration delivered its guest
    /// here whole; again for a VM that arrived by migration is a no-op (the source retries on
    /// doubt).
    ///
    /// # Errors
    /// See [`guard::may_commit`].
    pub async fn commit(&self, name: &str) -> Result<(), VmsError> {
        let seen = self.look(name).await?;
        let mut map = lock(&self.map);
        let e = map
            .get_mut(name)
            .ok_or_else(|| VmsError::NotFound(name.to_string()))?;
        let arrived_by = e.record.arrived_by.as_deref();
        if guard::may_commit(name, &e.record.role, arrived_by, &seen)? == guard::Commit::Again {
            return Ok(());
        }
        let mut record = e.record.clone();
        record.arrived_by = record.role.incoming_migration().map(str::to_string);
        record.role = VmRole::Running;
        self.store.save_vm(&record)?;
        e.record = record;
        Ok(())
    }

    /// Stops a VM and forgets it, if `kind` may (see [`guard::may_remove`]: an incoming VM is
    /// never deleted, only aborted before its migration switched; a source whose guest left
    /// part-way is held). Returns the disk file the agent created and kept rather than deleted:
    /// an aborted incoming VM whose QEMU died after its guest arrived ([`release::keeps_disk`]).
    pub async fn remove(&self, name: &str, kind: Removal) -> Result<Option<String>, VmsError> {
        let seen = match kind {
            Removal::Force => None,
            Removal::Delete => self.look(name).await?,
            Removal::AbortIncoming => self.look_incoming(name).await?,
        };
        let (record, qmp, keep_disk) = {
            let mut map = lock(&self.map);
            let e = map
                .get_mut(name)
                .ok_or_else(|| VmsError::NotFound(name.to_string()))?;
            let held = guard::Held {
                role: &e.record.role,
                migration: e.migration.as_deref(),
                guest_away: e.guest_away,
                arrived_by: e.record.arrived_by.as_deref(),
            };
            guard::may_remove(kind, name, held, &seen)?;
            // From here its QEMU's end is ours, not news for the liveness check.
            e.stopping = true;
            let keep = kind == Removal::AbortIncoming
                && release::keeps_disk(seen.is_none(), e.guest_arrived);
            (e.record.clone(), e.qmp.clone(), keep)
        };
        if let Some(q) = qmp {
            // A clean quit first; the pid check below catches a QEMU that ignores it.
            let _ = tokio::time::timeout(Duration::from_secs(2), q.quit()).await;
        }
        kill_pid(record.pid, name).await;
        if let Err(e) = self.store.remove_vm(name) {
            // Still registered, its QEMU gone: let the liveness check report it lost.
            if let Some(entry) = lock(&self.map).get_mut(name) {
                entry.stopping = false;
            }
            return Err(e.into());
        }
        lock(&self.map).remove(name);
        let _ = std::fs::remove_dir_all(&record.run_dir);
        // The agent owns the disks it created; an operator's disk stays, and so does one that
        // may hold what only a guest lost since wrote.
        let mut kept = None;
        if let (true, Some(d)) = (record.config.creates_disk(), &record.config.disk) {
            if keep_disk {
                kept = Some(d.clone());
            } else {
                disk::remove(&self.store.disk_dir(), d);
            }
        }
        if let Some(t) = record.config.nic.as_ref().and_then(|n| n.tap()) {
            tap::remove(&t).await;
        }
        Ok(kept)
    }

    /// Kills every VM's QEMU (tests and shutdown-with-cleanup only).
    pub async fn kill_all(&self) {
        let names: Vec<String> = lock(&self.map).keys().cloned().collect();
        for n in names {
            let _ = self.remove(&n, Removal::Force).await;
        }
    }
}

/// `why`, with the OOM killer's part in it when there is one.
fn with_oom(why: String, oom: Option<String>) -> String {
    match oom {
        Some(oom) => format!("{why}; {oom}"),
        None => why,
    }
}
