//! Whether a workload fits a guest: the one rule for a VM's size, applied by every host before
//! anything boots. (A library module only: the guest binary never needs it.)

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

/// Why a workload cannot run in a guest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FitError {
    /// The spec itself is wrong.
    Spec(SpecError),
    /// The guest's memory is below [`MIN_GUEST_MEMORY_BYTES`].
    TooLittleMemory { memory_bytes: u64 },
    /// The guest's memory is above [`MAX_GUEST_MEMORY_BYTES`].
    TooMuchMemory { memory_bytes: u64 },
    /// The vCPU count is 0 or above [`MAX_VCPUS`].
    Vcpus { vcpus: u32 },
    /// The working set plus the guest's own needs exceed its memory.
    DoesNotFit { wss_bytes: u64, memory_bytes: u64 },
}

impl fmt::Display for FitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FitError::Spec(e) => e.fmt(f),
            FitError::TooLittleMemory { memory_bytes } => write!(
                f,
                "guest memory {memory_bytes} bytes is too small: at least {} MiB",
                MIN_GUEST_MEMORY_BYTES >> 20
            ),
            FitError::TooMuchMemory { memory_bytes } => write!(
                f,
                "guest memory {memory_bytes} bytes is too large: at most {} GiB",
                MAX_GUEST_MEMORY_BYTES >> 30
            ),
            FitError::Vcpus { vcpus } => write!(f, "vcpus {vcpus}: expected 1 to {MAX_VCPUS}"),
            FitError::DoesNotFit {
                wss_bytes,
                memory_bytes,
            } => write!(
                f,
                "working set {} MiB does not fit a {} MiB guest (the guest itself needs about {} MiB)",
                wss_bytes >> 20,
                memory_bytes >> 20,
                GUEST_OVERHEAD_BYTES >> 20
            ),
        }
    }
}

impl std::error::Error for FitError {}

/// Parses `spec` and checks that it fits a guest of `memory_bytes` (working set plus
/// [`GUEST_OVERHEAD_BYTES`]).
///
/// # Errors
/// [`FitError`] naming what does not fit.
pub fn check_fits(spec: &str, memory_bytes: u64) -> Result<Workload, FitError> {
    if memory_bytes < MIN_GUEST_MEMORY_BYTES {
        return Err(FitError::TooLittleMemory { memory_bytes });
    }
    if memory_bytes > MAX_GUEST_MEMORY_BYTES {
        return Err(FitError::TooMuchMemory { memory_bytes });
    }
    let workload = parse_workload(spec).map_err(FitError::Spec)?;
    let wss_bytes = workload.pages() * PAGE_SIZE;
    if wss_bytes.saturating_add(GUEST_OVERHEAD_BYTES) > memory_bytes {
        return Err(FitError::DoesNotFit {
            wss_bytes,
            memory_bytes,
        });
    }
    Ok(workload)
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_working_set_and_the_guest_must_fit() {
        assert!(check_fits("memtouch:wss=128M", 256 << 20).is_ok());
        assert!(check_fits("idle", 64 << 20).is_ok());
        assert!(matches!(
            check_fits("idle", 48 << 20),
            Err(FitError::TooLittleMemory { .. })
        ));
        assert!(matches!(
            check_fits("memtouch:wss=32M", 64 << 20),
            Err(FitError::DoesNotFit { .. })
        ));
        assert!(matches!(
            check_fits("bogus", 1 << 30),
            Err(FitError::Spec(_))
        ));
    }
}
