//! Hardware the decisions are about: host and VM types and the power model.

use serde::{Deserialize, Serialize};

/// Index of a host in a [`crate::dc::Snapshot`].
pub type HostId = usize;
/// Index of a VM in a [`crate::dc::Snapshot`].
pub type VmId = usize;

/// Power draw at 0%, 10%, ..., 100% CPU load (a SPECpower table), linearly interpolated between
/// the points, the way CloudSim's `PowerModelSpecPower` does.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PowerModel {
    pub watts: [f64; 11],
}

impl PowerModel {
    /// HP ProLiant ML110 G4 (Xeon 3040), the benchmark's slower host.
    pub const HP_ML110_G4: PowerModel = PowerModel {
        watts: [
            86.0, 89.4, 92.6, 96.0, 99.5, 102.0, 106.0, 108.0, 112.0, 114.0, 117.0,
        ],
    };
    /// HP ProLiant ML110 G5 (Xeon 3075), the benchmark's faster host.
    pub const HP_ML110_G5: PowerModel = PowerModel {
        watts: [
            93.7, 97.0, 101.0, 105.0, 110.0, 116.0, 121.0, 125.0, 129.0, 133.0, 135.0,
        ],
    };

    /// Watts at `utilization` (0..=1; values outside are clamped, where CloudSim would abort).
    #[inline]
    pub fn power(&self, utilization: f64) -> f64 {
        let x = utilization.clamp(0.0, 1.0) * 10.0;
        // x is in 0..=10 (or NaN, which casts to 0 as its floor would): truncation is the floor,
        // without a libm call on the hottest path of placement.
        let i = (x as usize).min(10);
        if i == 10 {
            return self.watts[10];
        }
        self.watts[i] + (self.watts[i + 1] - self.watts[i]) * (x - i as f64)
    }

    pub fn idle(&self) -> f64 {
        self.watts[0]
    }

    #[inline]
    pub fn max(&self) -> f64 {
        self.watts[10]
    }
}

/// A kind of physical host.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HostType {
    pub name: String,
    /// Cores (CloudSim's PEs).
    pub pes: u32,
    /// Capacity of one core, MIPS.
    pub mips_per_pe: f64,
    pub ram_mb: u32,
    /// Network bandwidth, Mbit/s; migrations get half of it (the benchmark's rule).
    pub bw_mbps: f64,
    pub power: PowerModel,
}

impl HostType {
    #[inline]
    pub fn total_mips(&self) -> f64 {
        self.pes as f64 * self.mips_per_pe
    }

    /// Bandwidth a migration into or out of this host gets, MB/s: half the link.
    pub fn migration_mb_per_s(&self) -> f64 {
        self.bw_mbps / 8.0 / 2.0
    }

    /// The same bandwidth in bytes per second (MB here is 10^6 bytes, as in Mbit/s), the unit
    /// the migration cost model takes.
    pub fn migration_bytes_per_s(&self) -> f64 {
        self.migration_mb_per_s() * 1e6
    }

    /// Seconds to move `ram_mb` of memory over this host's migration bandwidth.
    pub fn migration_time_s(&self, ram_mb: u32) -> f64 {
        ram_mb as f64 / self.migration_mb_per_s().max(1e-9)
    }

    pub fn hp_ml110_g4() -> HostType {
        HostType {
            name: "HP ProLiant ML110 G4".into(),
            pes: 2,
            mips_per_pe: 1860.0,
            ram_mb: 4096,
            bw_mbps: 1000.0,
            power: PowerModel::HP_ML110_G4,
        }
    }

    pub fn hp_ml110_g5() -> HostType {
        HostType {
            name: "HP ProLiant ML110 G5".into(),
            pes: 2,
            mips_per_pe: 2660.0,
            ram_mb: 4096,
            bw_mbps: 1000.0,
            power: PowerModel::HP_ML110_G5,
        }
    }
}

/// A kind of VM (an EC2-like instance type in the benchmark).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VmType {
    pub name: String,
    /// Capacity of one virtual core, MIPS.
    pub mips: f64,
    pub pes: u32,
    pub ram_mb: u32,
    /// Network bandwidth reserved at admission, Mbit/s.
    pub bw_mbps: f64,
}

impl VmType {
    pub fn total_mips(&self) -> f64 {
        self.pes as f64 * self.mips
    }

    /// The four instance types of the PlanetLab benchmark (high-CPU medium, extra large, small,
    /// micro), in CloudSim's order.
    pub fn benchmark_types() -> Vec<VmType> {
        [(2500.0, 870), (2000.0, 1740), (1000.0, 1740), (500.0, 613)]
            .iter()
            .enumerate()
            .map(|(i, &(mips, ram))| VmType {
                name: format!("type{i}"),
                mips,
                pes: 1,
                ram_mb: ram,
                bw_mbps: 100.0,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn power_interpolates_between_table_points() {
        let g4 = PowerModel::HP_ML110_G4;
        assert_eq!(g4.power(0.0), 86.0);
        assert_eq!(g4.power(1.0), 117.0);
        assert!((g4.power(0.05) - 87.7).abs() < 1e-9);
        assert!((g4.power(0.3) - 96.0).abs() < 1e-9);
        assert!((g4.power(0.95) - 115.5).abs() < 1e-9);
        // Out-of-range loads are clamped instead of aborting.
        assert_eq!(g4.power(1.5), 117.0);
        assert_eq!(g4.power(-0.1), 86.0);
    }

    #[test]
    fn migration_gets_half_the_link() {
        let g5 = HostType::hp_ml110_g5();
        assert_eq!(g5.migration_mb_per_s(), 62.5);
        assert_eq!(g5.migration_bytes_per_s(), 62.5e6);
        assert!((g5.migration_time_s(1740) - 27.84).abs() < 1e-9);
        assert_eq!(g5.total_mips(), 5320.0);
    }
}
