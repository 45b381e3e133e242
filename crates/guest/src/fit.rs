//! The rules of a VM's size, applied by every host before anything boots: vCPUs 1 to 64, memory
//! 128 MiB to 1 TiB, a workload the guest's grammar reads, and a working set that fits (working
//! set plus 96 MiB). (A library module only: the guest binary never needs it.)
//!
//! # The figures, measured
//! The Drover guest image (Debian 6.1 cloud kernel, 14 MiB, and a 3 MiB initramfs) booted under
//! QEMU 10 with TCG, q35, 1 vCPU, the launcher's own command line, 40-50 s per run:
//!
//! | guest memory | workload | result |
//! | --- | --- | --- |
//! | 64 MiB | idle | dies in the kernel's decompressor (last line "Probing EDD"); without `-no-reboot` QEMU reboots it forever, console empty |
//! | 72 MiB | idle | kernel panic "System is deadlocked on memory" while unpacking the initramfs |
//! | 76, 80, 88, 96, 112, 128 MiB | idle | boots, the workload reports |
//! | 112, 128 MiB | memtouch 64 MiB, rate=max | the guest's OOM killer kills drover-guest |
//! | 132, 136, 144 MiB | memtouch 64 MiB, rate=max | runs, all 16384 pages touched, no OOM |
//! | 192 MiB | memtouch 128 MiB, rate=max | OOM killer |
//! | 200, 208 MiB | memtouch 128 MiB, rate=max | runs |
//! | 128 MiB (the rule's edge) | memtouch 32 MiB, rate=max | runs, no OOM |
//! | 160 MiB (the rule's edge) | memtouch 64 MiB, rate=max | runs, no OOM |
//!
//! So the guest boots from 76 MiB and needs 65 to 72 MiB beside a working set. The rules keep a
//! margin over both: [`MIN_GUEST_MEMORY_BYTES`] 128 MiB (52 MiB over the least that boots) and
//! [`GUEST_OVERHEAD_BYTES`] 96 MiB (24 MiB over the most measured), for a kernel that grows, page
//! cache and the slab a busier guest holds.
//!
//! Each rule has one message, whoever applies it: the agent's API names the field
//! (`memory_bytes 50331648: expected ...`), `vm create` and `migrate-bench` name the flag
//! with the text as typed (`--memory 48M is 50331648 bytes; expected ...`), through
//! [`FitError::message`].

use crate::spec::{parse_workload, SpecError, Workload, PAGE_SIZE};
use std::fmt;

/// Least guest memory a VM may have, bytes: 76 MiB measured to boot, plus a margin (module doc).
pub const MIN_GUEST_MEMORY_BYTES: u64 = 128 << 20;

/// Most memory a VM may have, bytes (1 TiB).
pub const MAX_GUEST_MEMORY_BYTES: u64 = 1 << 40;

/// Most vCPUs a VM may have.
pub const MAX_VCPUS: u32 = 64;

/// Memory the guest's kernel and initramfs need besides a workload's working set, bytes: 65 to
/// 72 MiB measured, plus a margin (module doc).
pub const GUEST_OVERHEAD_BYTES: u64 = 96 << 20;

/// What every VM's QEMU takes on its host beside its guest's RAM, bytes (measured under TCG:
/// see the agent's admission module, which charges it).
pub const QEMU_OVERHEAD_BYTES: u64 = 96 << 20;

/// What QEMU takes per vCPU (thread, TCG context), bytes: measured +7 MiB for a second one.
pub const QEMU_OVERHEAD_PER_VCPU_BYTES: u64 = 8 << 20;

/// Share of guest memory QEMU's own structures grow with (1/64).
pub const QEMU_OVERHEAD_SHARE: u64 = 64;

/// Memory a VM takes on its host, bytes: its guest's RAM (`memory_bytes`) plus its QEMU (the
/// agent's admission charge).
pub const fn vm_cost(memory_bytes: u64, vcpus: u32) -> u64 {
    memory_bytes
        .saturating_add(QEMU_OVERHEAD_BYTES)
        .saturating_add(QEMU_OVERHEAD_PER_VCPU_BYTES.saturating_mul(vcpus as u64))
        .saturating_add(memory_bytes / QEMU_OVERHEAD_SHARE)
}

/// Least memory a host may offer, bytes: the smallest guest (1 vCPU, [`MIN_GUEST_MEMORY_BYTES`])
/// plus the QEMU overhead the agent charges for it ([`vm_cost`]): 234 MiB.
pub const MIN_HOST_MEMORY_BYTES: u64 = vm_cost(MIN_GUEST_MEMORY_BYTES, 1);

/// What a host's memory must be, as every refusal of a host cap words it.
pub fn host_memory_expected() -> String {
    format!(
        "at least {} MiB ({MIN_HOST_MEMORY_BYTES} bytes: the smallest guest, {} MiB, plus \
         QEMU's overhead charged for it)",
        MIN_HOST_MEMORY_BYTES >> 20,
        MIN_GUEST_MEMORY_BYTES >> 20
    )
}

/// Least disk the agent creates for a VM, bytes (1 MiB).
pub const MIN_DISK_BYTES: u64 = 1 << 20;

/// Most disk the agent creates for a VM, bytes (16 TiB: far beyond a test VM, well within
/// qcow2's limits; a bigger one is a typo).
pub const MAX_DISK_BYTES: u64 = 16 << 40;

/// Least CPU capacity a host may offer or be capped at, cores.
pub const MIN_HOST_CPUS: f64 = 0.1;

/// Most CPU capacity a host may offer or be capped at, cores.
pub const MAX_HOST_CPUS: f64 = 1024.0;

/// What a host's CPU capacity must be, as every refusal words it.
pub fn host_cpus_expected() -> String {
    format!("{MIN_HOST_CPUS} to {MAX_HOST_CPUS} cores")
}

/// Whether `cores` is a CPU capacity a host may have: finite, [`MIN_HOST_CPUS`] to
/// [`MAX_HOST_CPUS`] (NaN is not).
pub fn host_cpus_ok(cores: f64) -> bool {
    (MIN_HOST_CPUS..=MAX_HOST_CPUS).contains(&cores)
}

/// Which of a VM's settings a rule is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Setting {
    Vcpus,
    Memory,
    Workload,
    /// The size of a disk the agent creates.
    DiskSize,
}

impl Setting {
    /// The setting's name in the agent's API.
    pub fn field(self) -> &'static str {
        match self {
            Setting::Vcpus => "vcpus",
            Setting::Memory => "memory_bytes",
            Setting::Workload => "workload",
            Setting::DiskSize => "disk_size_bytes",
        }
    }

    /// What a number-valued setting accepts, as every refusal words it (`None` for the
    /// workload, whose refusals give their own reason).
    pub fn expected(self) -> Option<String> {
        match self {
            Setting::Vcpus => Some(format!("expected 1 to {MAX_VCPUS}")),
            Setting::Memory => Some(format!(
                "expected {} MiB to {} TiB ({MIN_GUEST_MEMORY_BYTES} to {MAX_GUEST_MEMORY_BYTES} bytes)",
                MIN_GUEST_MEMORY_BYTES >> 20,
                MAX_GUEST_MEMORY_BYTES >> 40
            )),
            Setting::DiskSize => Some(format!(
                "expected 1 MiB to 16 TiB ({MIN_DISK_BYTES} to {MAX_DISK_BYTES} bytes)"
            )),
            Setting::Workload => None,
        }
    }
}

/// Why a VM cannot have this size or run this workload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FitError {
    /// The vCPU count is 0 or above [`MAX_VCPUS`].
    Vcpus { vcpus: u32 },
    /// The guest's memory is outside [`MIN_GUEST_MEMORY_BYTES`] to [`MAX_GUEST_MEMORY_BYTES`].
    Memory { memory_bytes: u64 },
    /// The guest's grammar does not read the workload spec.
    Spec { spec: String, error: SpecError },
    /// The working set plus the guest's own needs exceed its memory.
    DoesNotFit {
        spec: String,
        wss_bytes: u64,
        memory_bytes: u64,
    },
    /// A disk size outside [`MIN_DISK_BYTES`] to [`MAX_DISK_BYTES`].
    DiskSize { disk_bytes: u64 },
    /// A `disk` workload's working set beyond the VM's disk (None: the VM has no disk).
    NoDiskRoom {
        spec: String,
        wss_bytes: u64,
        disk_bytes: Option<u64>,
    },
}

impl FitError {
    /// The setting at fault: the memory when it is outside its own range, the workload when
    /// its spec is wrong or its working set does not fit.
    pub fn setting(&self) -> Setting {
        match self {
            FitError::Vcpus { .. } => Setting::Vcpus,
            FitError::Memory { .. } => Setting::Memory,
            FitError::DiskSize { .. } => Setting::DiskSize,
            FitError::Spec { .. } | FitError::DoesNotFit { .. } | FitError::NoDiskRoom { .. } => {
                Setting::Workload
            }
        }
    }

    /// The refusal, naming the setting as `name` (an API field such as `memory_bytes` or a
    /// flag such as `--memory`) with its value as `typed` there; `note` says what a typed
    /// text was read as (`is 50331648 bytes`) when it is not the plain number.
    pub fn message(&self, name: &str, typed: &str, note: Option<&str>) -> String {
        match (self, self.setting().expected()) {
            (FitError::Spec { error, .. }, _) => format!("{name} '{typed}': {error}"),
            (
                FitError::DoesNotFit {
                    wss_bytes,
                    memory_bytes,
                    ..
                },
                _,
            ) => format!(
                "{name} '{typed}': working set {} MiB does not fit a {} MiB guest (the guest \
                 itself needs about {} MiB)",
                wss_bytes >> 20,
                memory_bytes >> 20,
                GUEST_OVERHEAD_BYTES >> 20
            ),
            (
                FitError::NoDiskRoom {
                    wss_bytes,
                    disk_bytes: Some(disk),
                    ..
                },
                _,
            ) => format!(
                "{name} '{typed}': working set {wss_bytes} bytes does not fit the VM's \
                 {disk} byte disk"
            ),
            (FitError::NoDiskRoom { .. }, _) => format!(
                "{name} '{typed}': a disk workload needs a disk (disk, disk_size_bytes or \
                 disk_base)"
            ),
            (_, expected) => {
                let expected = expected.unwrap_or_default();
                match note {
                    Some(note) => format!("{name} {typed} {note}; {expected}"),
                    None => format!("{name} {typed}: {expected}"),
                }
            }
        }
    }

    /// The value at fault as the API's field holds it.
    fn value(&self) -> String {
        match self {
            FitError::Vcpus { vcpus } => vcpus.to_string(),
            FitError::Memory { memory_bytes } => memory_bytes.to_string(),
            FitError::DiskSize { disk_bytes } => disk_bytes.to_string(),
            FitError::Spec { spec, .. }
            | FitError::DoesNotFit { spec, .. }
            | FitError::NoDiskRoom { spec, .. } => spec.clone(),
        }
    }
}

/// The message with the API's field names (`vcpus 0: expected 1 to 64`).
impl fmt::Display for FitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message(self.setting().field(), &self.value(), None))
    }
}

impl std::error::Error for FitError {}

/// Checks a VM's vCPU count.
///
/// # Errors
/// [`FitError::Vcpus`] outside 1 to [`MAX_VCPUS`].
pub fn check_vcpus(vcpus: u32) -> Result<(), FitError> {
    if (1..=MAX_VCPUS).contains(&vcpus) {
        Ok(())
    } else {
        Err(FitError::Vcpus { vcpus })
    }
}

/// Checks a VM's memory size.
///
/// # Errors
/// [`FitError::Memory`] outside [`MIN_GUEST_MEMORY_BYTES`] to [`MAX_GUEST_MEMORY_BYTES`].
pub fn check_memory(memory_bytes: u64) -> Result<(), FitError> {
    if (MIN_GUEST_MEMORY_BYTES..=MAX_GUEST_MEMORY_BYTES).contains(&memory_bytes) {
        Ok(())
    } else {
        Err(FitError::Memory { memory_bytes })
    }
}

/// Checks that the memory is in range, that the guest reads `spec` and that its working set
/// fits a guest of `memory_bytes` (working set plus [`GUEST_OVERHEAD_BYTES`]).
///
/// # Errors
/// [`FitError`] naming what is wrong: the memory, when it is outside its own range, before the
/// workload is looked at.
pub fn check_fits(spec: &str, memory_bytes: u64) -> Result<Workload, FitError> {
    check_memory(memory_bytes)?;
    let workload = parse_workload(spec).map_err(|error| FitError::Spec {
        spec: spec.to_string(),
        error,
    })?;
    let wss_bytes = workload.pages() * PAGE_SIZE;
    if wss_bytes.saturating_add(GUEST_OVERHEAD_BYTES) > memory_bytes {
        return Err(FitError::DoesNotFit {
            spec: spec.to_string(),
            wss_bytes,
            memory_bytes,
        });
    }
    Ok(workload)
}

/// Checks the size of a disk the agent is asked to create.
///
/// # Errors
/// [`FitError::DiskSize`] outside [`MIN_DISK_BYTES`] to [`MAX_DISK_BYTES`].
pub fn check_disk_size(disk_bytes: u64) -> Result<(), FitError> {
    if (MIN_DISK_BYTES..=MAX_DISK_BYTES).contains(&disk_bytes) {
        Ok(())
    } else {
        Err(FitError::DiskSize { disk_bytes })
    }
}

/// Checks that `workload` (read from `spec`) fits a VM's disk of `disk_bytes` (None: no disk):
/// a `disk` workload's working set must lie within the device the guest sees (the qcow2's
/// virtual size); other workloads fit any disk or none.
///
/// # Errors
/// [`FitError::NoDiskRoom`].
pub fn check_disk_fits(
    spec: &str,
    workload: &Workload,
    disk_bytes: Option<u64>,
) -> Result<(), FitError> {
    let wss_bytes = workload.disk_wss_bytes();
    if wss_bytes == 0 || disk_bytes.is_some_and(|d| wss_bytes <= d) {
        return Ok(());
    }
    Err(FitError::NoDiskRoom {
        spec: spec.to_string(),
        wss_bytes,
        disk_bytes,
    })
}

/// Every size rule of a VM, in the order the API checks them: vCPUs, memory, workload.
///
/// # Errors
/// The first rule broken.
pub fn check_vm(vcpus: u32, memory_bytes: u64, spec: &str) -> Result<Workload, FitError> {
    check_vcpus(vcpus)?;
    check_fits(spec, memory_bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_working_set_and_the_guest_must_fit() {
        assert!(check_fits("memtouch:wss=128M", 256 << 20).is_ok());
        assert!(check_fits("idle", 128 << 20).is_ok());
        assert!(matches!(
            check_fits("idle", 64 << 20),
            Err(FitError::Memory { .. })
        ));
        assert!(matches!(
            check_fits("memtouch:wss=48M", 128 << 20),
            Err(FitError::DoesNotFit { .. })
        ));
        // Measured: a 64 MiB working set was OOM-killed in a 128 MiB guest and ran in 144 MiB.
        assert!(matches!(
            check_fits("memtouch:wss=64M,rate=max", 128 << 20),
            Err(FitError::DoesNotFit { .. })
        ));
        assert!(check_fits("memtouch:wss=64M,rate=max", 160 << 20).is_ok());
        assert!(check_fits("memtouch:wss=64M,rate=max", 192 << 20).is_ok());
        assert!(matches!(
            check_fits("bogus", 1 << 30),
            Err(FitError::Spec { .. })
        ));
    }

    /// A memory outside its range is the memory's fault, whatever the workload: the message
    /// names the memory, never the workload.
    #[test]
    fn too_little_memory_is_blamed_on_the_memory() {
        let err = check_fits("memtouch:wss=128M,rate=max", 48 << 20).unwrap_err();
        assert_eq!(err.setting(), Setting::Memory);
        assert_eq!(
            err.to_string(),
            "memory_bytes 50331648: expected 128 MiB to 1 TiB (134217728 to 1099511627776 bytes)"
        );
        assert_eq!(
            err.message("--memory", "48M", Some("is 50331648 bytes")),
            "--memory 48M is 50331648 bytes; expected 128 MiB to 1 TiB (134217728 to \
             1099511627776 bytes)"
        );
        // 64 MiB, the old minimum, never boots (module doc).
        assert_eq!(
            check_memory(64 << 20),
            Err(FitError::Memory {
                memory_bytes: 64 << 20
            })
        );
    }

    #[test]
    fn one_message_per_rule_under_any_name() {
        let err = check_vm(0, 256 << 20, "idle").unwrap_err();
        assert_eq!(err.to_string(), "vcpus 0: expected 1 to 64");
        assert_eq!(
            err.message("--vcpus", "0", None),
            "--vcpus 0: expected 1 to 64"
        );
        let err = check_fits("memtouch:wss=100M", 128 << 20).unwrap_err();
        assert_eq!(
            err.to_string(),
            "workload 'memtouch:wss=100M': working set 100 MiB does not fit a 128 MiB guest \
             (the guest itself needs about 96 MiB)"
        );
        assert!(err
            .message("--workload", "memtouch:wss=100M", None)
            .starts_with("--workload 'memtouch:wss=100M': working set 100 MiB"));
    }

    /// The host floor is the smallest guest plus the QEMU overhead the agent charges for it,
    /// so a host at the floor admits that guest.
    #[test]
    fn the_host_floor_holds_the_smallest_guest_and_its_qemu() {
        assert_eq!(MIN_HOST_MEMORY_BYTES, vm_cost(MIN_GUEST_MEMORY_BYTES, 1));
        assert_eq!(MIN_HOST_MEMORY_BYTES, (128 + 96 + 8 + 2) << 20);
        assert!(host_memory_expected().starts_with("at least 234 MiB (245366784 bytes"));
    }

    #[test]
    fn host_cpus_have_a_range() {
        for ok in [0.1, 0.5, 1.0, 1024.0] {
            assert!(host_cpus_ok(ok), "{ok}");
        }
        for bad in [1e300, 0.0001, 0.0, -1.0, f64::NAN, f64::INFINITY, 1024.5] {
            assert!(!host_cpus_ok(bad), "{bad}");
        }
        assert_eq!(host_cpus_expected(), "0.1 to 1024 cores");
    }

    #[test]
    fn disks_have_a_size_and_the_disk_workload_fits_its_disk() {
        assert!(check_disk_size(64 << 20).is_ok());
        assert!(check_disk_size((1 << 20) + 1).is_ok());
        for bad in [0, 4096, (1 << 20) - 1, MAX_DISK_BYTES + 1, u64::MAX] {
            let err = check_disk_size(bad).unwrap_err();
            assert_eq!(err.setting(), Setting::DiskSize);
            assert!(
                err.to_string()
                    .starts_with(&format!("disk_size_bytes {bad}: expected 1 MiB to 16 TiB")),
                "{err}"
            );
        }
        let spec = "disk:wss=16M,rate=200";
        let w = parse_workload(spec).unwrap();
        assert!(check_disk_fits(spec, &w, Some(16 << 20)).is_ok());
        let err = check_disk_fits(spec, &w, Some(8 << 20)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "workload 'disk:wss=16M,rate=200': working set 16777216 bytes does not fit the \
             VM's 8388608 byte disk"
        );
        let err = check_disk_fits(spec, &w, None).unwrap_err();
        assert!(err.to_string().contains("needs a disk"), "{err}");
        let idle = parse_workload("idle").unwrap();
        assert!(check_disk_fits("idle", &idle, None).is_ok());
    }

    /// A bad spec is refused with the grammar's own reason, naming the part that is wrong.
    #[test]
    fn a_bad_spec_says_which_part_is_wrong() {
        for (spec, part) in [
            ("memtouch:wss=64M,rate=0", "rate"),
            ("memtouch:wss=64M,rate=99999999999", "rate"),
            ("memtouch:wss=0M", "\"0M\" for wss"),
            ("memtouch:wss=64M,pattern=zigzag", "pattern"),
            ("cpu:demand=101", "demand"),
            ("memtouch:wss=64M,bogus=1", "bogus"),
        ] {
            let msg = check_fits(spec, 1 << 30).unwrap_err().to_string();
            assert!(msg.starts_with(&format!("workload '{spec}': ")), "{msg}");
            assert!(msg.contains(part), "{spec}: {msg}");
        }
    }
}
