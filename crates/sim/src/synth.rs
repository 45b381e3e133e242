//! A seeded synthetic workload, so `drover sim` runs with no trace at all and scales to any size.
//!
//! Shaped after the PlanetLab days (mean utilization ~10-12%, ~15% zero samples, a long tail of
//! busy VMs): each VM belongs to a class (idle, light, busy) that sets its mean; a diurnal wave
//! with a random phase, AR(1) noise and occasional bursts ride on top; samples are whole
//! percents like PlanetLab's, so the same "idle VMs leave" rule applies.

use crate::limits::{self, LimitError};
use crate::trace::Workload;
use drover_core::dc::rng::SplitMix64;

/// Parameters of the generator.
#[derive(Debug, Clone, PartialEq)]
pub struct SynthSpec {
    pub vms: usize,
    pub samples: usize,
    pub seed: u64,
}

impl SynthSpec {
    pub fn day(vms: usize, seed: u64) -> SynthSpec {
        SynthSpec {
            vms,
            samples: 288,
            seed,
        }
    }
}

fn normal(rng: &mut SplitMix64) -> f64 {
    // Box-Muller; 1 - u keeps the logarithm finite.
    let u1 = 1.0 - rng.next_f64();
    let u2 = rng.next_f64();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

impl SynthSpec {
    /// Checks the sizes against [`crate::limits`] before anything is allocated.
    pub fn validate(&self) -> Result<(), LimitError> {
        limits::check("VMs in the synthetic day", self.vms, &limits::VMS)?;
        limits::check("samples per VM", self.samples, &limits::SAMPLES)?;
        limits::check_cells("the synthetic day", self.vms, self.samples)
    }
}

/// Generates the workload (deterministic for a given spec); sizes beyond [`crate::limits`] are
/// refused.
pub fn generate(spec: &SynthSpec) -> Result<Workload, LimitError> {
    spec.validate()?;
    let mut util = Vec::with_capacity(spec.vms * spec.samples);
    let mut names = Vec::with_capacity(spec.vms);
    for v in 0..spec.vms {
        // One stream per VM: the same VM looks the same whatever the total count.
        let mut rng = SplitMix64::new(spec.seed ^ (v as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let class = rng.next_f64();
        let (mean, noise) = if class < 0.25 {
            (0.01 + 0.03 * rng.next_f64(), 0.02)
        } else if class < 0.85 {
            (0.05 + 0.15 * rng.next_f64(), 0.05)
        } else {
            (0.25 + 0.35 * rng.next_f64(), 0.10)
        };
        let amplitude = mean * 0.6 * rng.next_f64();
        let phase = std::f64::consts::TAU * rng.next_f64();
        let mut ar = 0.0;
        let mut burst = 0usize;
        for k in 0..spec.samples {
            ar = 0.9 * ar + noise * 0.44 * normal(&mut rng);
            if burst == 0 && rng.next_f64() < 0.01 {
                burst = 1 + rng.below(4);
            }
            let day = (std::f64::consts::TAU * k as f64 / spec.samples as f64 + phase).sin();
            let mut u = mean + amplitude * day + ar;
            if burst > 0 {
                u += 0.3;
                burst -= 1;
            }
            let pct = (u.clamp(0.0, 1.0) * 100.0).round();
            util.push(pct as f32 / 100.0);
        }
        names.push(format!("synthetic-{v:06}"));
    }
    Ok(Workload::new(
        format!("synthetic-{}-{}", spec.vms, spec.seed),
        names,
        spec.samples,
        util,
    )
    .into_synthetic())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_and_planetlab_like() {
        let a = generate(&SynthSpec::day(400, 7)).unwrap();
        let b = generate(&SynthSpec::day(400, 7)).unwrap();
        assert_eq!(a, b);
        let n = (a.vms() * a.samples) as f64;
        let mean: f64 = (0..a.vms())
            .flat_map(|v| a.row(v).iter().map(|&x| x as f64))
            .sum::<f64>()
            / n;
        let zeros = (0..a.vms())
            .flat_map(|v| a.row(v).iter())
            .filter(|&&x| x == 0.0)
            .count() as f64
            / n;
        assert!((0.06..0.2).contains(&mean), "mean {mean}");
        assert!((0.03..0.35).contains(&zeros), "zeros {zeros}");
        assert_ne!(a, generate(&SynthSpec::day(400, 8)).unwrap());
    }

    #[test]
    fn sizes_past_the_limits_are_refused_before_allocating() {
        for (vms, samples) in [
            (usize::MAX, 288),
            (50_000_000, 288),
            (1000, usize::MAX),
            (0, 288),
        ] {
            let spec = SynthSpec {
                vms,
                samples,
                seed: 1,
            };
            let e = generate(&spec).unwrap_err();
            assert!(e.to_string().contains("; allowed: "), "{e}");
        }
        let e = generate(&SynthSpec {
            vms: limits::MAX_VMS,
            samples: limits::MAX_SAMPLES,
            seed: 1,
        })
        .unwrap_err();
        assert!(e.to_string().contains("VMs x samples"), "{e}");
    }
}
