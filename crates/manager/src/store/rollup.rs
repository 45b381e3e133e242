//! One minute of samples rolled up: the rule both stores use, so their rollups agree.

use super::types::{MeanMax, Rollup, Sample};

/// The start of the minute `t` falls in, s (`t` is finite and non-negative).
pub(crate) fn minute_of(t: f64) -> i64 {
    (t / 60.0) as i64 * 60
}

/// Sums and maxima of one series' samples in one minute.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Minute {
    n: u32,
    /// load, cpu_cores, memory_bytes, rx_bps, tx_bps.
    sum: [f64; 5],
    max: [f64; 5],
    dirty_n: u32,
    dirty_sum: f64,
    dirty_max: f64,
}

impl Default for Minute {
    fn default() -> Self {
        Minute {
            n: 0,
            sum: [0.0; 5],
            max: [0.0; 5],
            dirty_n: 0,
            dirty_sum: 0.0,
            dirty_max: 0.0,
        }
    }
}

impl Minute {
    pub fn add(&mut self, s: &Sample) {
        // Every value is non-negative (the stores refuse others), so 0 starts the maxima.
        let values = [
            s.load,
            s.cpu_cores,
            s.memory_bytes as f64,
            s.rx_bps,
            s.tx_bps,
        ];
        for (i, v) in values.into_iter().enumerate() {
            self.sum[i] += v;
            self.max[i] = self.max[i].max(v);
        }
        self.n += 1;
        if let Some(d) = s.dirty_bps {
            self.dirty_n += 1;
            self.dirty_sum += d;
            self.dirty_max = self.dirty_max.max(d);
        }
    }

    /// How many of the samples had a dirty rate (the weight of its mean in a merge).
    pub fn dirty_samples(&self) -> u32 {
        self.dirty_n
    }

    /// The rollup of the minute starting at `start_s`. Means of bytes and bytes/s are whole
    /// numbers, as [`Sample::stored`] keeps the samples.
    pub fn rollup(&self, start_s: i64) -> Rollup {
        let n = f64::from(self.n.max(1));
        let mm = |i: usize| MeanMax {
            mean: self.sum[i] / n,
            max: self.max[i],
        };
        let whole = |i: usize| MeanMax {
            mean: (self.sum[i] / n).round(),
            max: self.max[i],
        };
        Rollup {
            start_s: start_s as f64,
            samples: self.n,
            load: mm(0),
            cpu_cores: mm(1),
            memory_bytes: whole(2),
            dirty_bps: (self.dirty_n > 0).then(|| MeanMax {
                mean: (self.dirty_sum / f64::from(self.dirty_n)).round(),
                max: self.dirty_max,
            }),
            rx_bps: whole(3),
            tx_bps: whole(4),
        }
    }
}
