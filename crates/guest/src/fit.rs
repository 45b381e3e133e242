//! The rules of a VM's size, applied by every host before anything boots: vCPUs 1 to 64, memory
//! 64 MiB to 1 TiB, a workload the guest's grammar reads, and a working set that fits. (A
//! library module only: the guest binary never needs it.)
//!
//! Each rule has one message, whoever applies it: the agent's API names the field
//! (`memory_bytes 50331648: expected ...`), `vm create` and `migrate-bench` name the flag
//! with the text as typed (`--memory 48M is 50331648 bytes; expected ...`), through
//! [`FitError::message`].

use crate::spec::{parse_workload, SpecError, Workload, PAGE_SIZE};
use std::fmt;

/// Least guest memory a VM may have, bytes: the kernel and the initramfs need most of it.
pub const MIN_GUEST_MEMORY_BYTES: u64 = 64 << 20;

/// Most memory a VM may have, bytes (1 TiB).
pub const MAX_GUEST_MEMORY_BYTES: u64 = 1 << 40;

/// Most vCPUs a VM may have.
pub const MAX_VCPUS: u32 = 64;

/// Memory the guest's kernel and initramfs need besides a workload's working set, bytes.
pub const GUEST_OVERHEAD_BYTES: u64 = 48 << 20;

/// Which of a VM's settings a rule is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Setting {
    Vcpus,
    Memory,
    Workload,
}

impl Setting {
    /// The setting's name in the agent's API.
    pub fn field(self) -> &'static str {
        match self {
            Setting::Vcpus => "vcpus",
            Setting::Memory => "memory_bytes",
            Setting::Workload => "workload",
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
}

impl FitError {
    /// The setting at fault: the memory when it is outside its own range, the workload when
    /// its spec is wrong or its working set does not fit.
    pub fn setting(&self) -> Setting {
        match self {
            FitError::Vcpus { .. } => Setting::Vcpus,
            FitError::Memory { .. } => Setting::Memory,
            FitError::Spec { .. } | FitError::DoesNotFit { .. } => Setting::Workload,
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
            FitError::Spec { spec, .. } | FitError::DoesNotFit { spec, .. } => spec.clone(),
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
        assert!(check_fits("idle", 64 << 20).is_ok());
        assert!(matches!(
            check_fits("idle", 48 << 20),
            Err(FitError::Memory { .. })
        ));
        assert!(matches!(
            check_fits("memtouch:wss=32M", 64 << 20),
            Err(FitError::DoesNotFit { .. })
        ));
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
            "memory_bytes 50331648: expected 64 MiB to 1 TiB (67108864 to 1099511627776 bytes)"
        );
        assert_eq!(
            err.message("--memory", "48M", Some("is 50331648 bytes")),
            "--memory 48M is 50331648 bytes; expected 64 MiB to 1 TiB (67108864 to \
             1099511627776 bytes)"
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
             (the guest itself needs about 48 MiB)"
        );
        assert!(err
            .message("--workload", "memtouch:wss=100M", None)
            .starts_with("--workload 'memtouch:wss=100M': working set 100 MiB"));
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
