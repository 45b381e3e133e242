//! A look's samples as one blob (a *frame*: one row of the `frame` table a look), so that a
//! look writes one row however many hosts and VMs it saw, and compaction deletes one row a
//! second instead of one a series.
//!
//! # Format (version [`FORMAT`])
//!
//! ```text
//! frame  = version:u8  count:varint  entry*count        (entries by ascending series id)
//! entry  = id_delta:varint  load:f64  cpu:f64  mem:varint  dirty:varint  rx:varint  tx:varint
//! ```
//!
//! `varint` is LEB128 (7 bits a byte, low first); `f64` is IEEE 754, little-endian. `id_delta`
//! is the series id minus the previous entry's (the first entry's: minus 0), so ids grow.
//! `dirty` is 0 when the sample has no dirty rate, else the rate plus one. Rates are whole
//! bytes/s ([`Sample::stored`]), so they are kept as integers; load and CPU cores exactly.
//! About 28 bytes an entry (10,000 VMs and 1,000 hosts: about 310 KB a look), where a row a
//! sample took about 62. A frame of another version is refused as corrupt, never guessed at:
//! a later format is a new version, and a schema migration rewrites the stored frames.

use crate::store::types::Sample;

/// The frame format this build writes and reads.
pub const FORMAT: u8 = 1;

/// A frame that cannot be read: its version, or where and why its bytes end wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a sample frame {0}")]
pub struct FrameError(String);

/// The blob of `entries` (series id, sample as stored), which must be sorted by id, each id
/// once.
pub fn encode(entries: &[(i64, Sample)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + entries.len() * 32);
    out.push(FORMAT);
    varint(&mut out, entries.len() as u64);
    let mut last = 0i64;
    for (id, s) in entries {
        varint(&mut out, id.saturating_sub(last).max(0) as u64);
        last = *id;
        out.extend_from_slice(&s.load.to_le_bytes());
        out.extend_from_slice(&s.cpu_cores.to_le_bytes());
        varint(&mut out, s.memory_bytes);
        varint(
            &mut out,
            s.dirty_bps.map_or(0, |d| whole(d).saturating_add(1)),
        );
        varint(&mut out, whole(s.rx_bps));
        varint(&mut out, whole(s.tx_bps));
    }
    out
}

/// A rate already rounded to whole bytes/s, as an integer (finite and non-negative: exact up
/// to 2^53, saturating past u64).
fn whole(x: f64) -> u64 {
    x as u64
}

fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8 & 0x7f) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Reads a frame's entries in order, one at a time (a reader of one series stops early).
pub struct Entries<'a> {
    bytes: &'a [u8],
    at: usize,
    left: u64,
    id: i64,
}

/// The entries of `bytes`.
///
/// # Errors
/// [`FrameError`] for another format version or a frame without a count.
pub fn decode(bytes: &[u8]) -> Result<Entries<'_>, FrameError> {
    match bytes.first() {
        Some(&FORMAT) => {}
        Some(v) => return Err(FrameError(format!("of format {v}, not {FORMAT}"))),
        None => return Err(FrameError("is empty".into())),
    }
    let mut e = Entries {
        bytes,
        at: 1,
        left: 0,
        id: 0,
    };
    e.left = e.varint()?;
    Ok(e)
}

/// Every entry of `bytes`, collected.
///
/// # Errors
/// As [`decode`] and [`Entries::next`].
pub fn decode_all(bytes: &[u8]) -> Result<Vec<(i64, Sample)>, FrameError> {
    decode(bytes)?.collect()
}

impl Entries<'_> {
    fn varint(&mut self) -> Result<u64, FrameError> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let Some(&b) = self.bytes.get(self.at) else {
                return Err(self.short());
            };
            self.at += 1;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(FrameError(format!(
            "has a number too long at byte {}",
            self.at
        )))
    }

    fn f64(&mut self) -> Result<f64, FrameError> {
        let end = self.at + 8;
        let bytes: [u8; 8] = self
            .bytes
            .get(self.at..end)
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| self.short())?;
        self.at = end;
        Ok(f64::from_le_bytes(bytes))
    }

    fn short(&self) -> FrameError {
        FrameError(format!(
            "ends at byte {} with {} entries to go",
            self.bytes.len(),
            self.left
        ))
    }

    fn entry(&mut self) -> Result<(i64, Sample), FrameError> {
        let delta = i64::try_from(self.varint()?).map_err(|_| self.short())?;
        self.id = self.id.saturating_add(delta);
        let load = self.f64()?;
        let cpu_cores = self.f64()?;
        let memory_bytes = self.varint()?;
        let dirty = self.varint()?;
        let rx = self.varint()?;
        let tx = self.varint()?;
        Ok((
            self.id,
            Sample {
                load,
                cpu_cores,
                memory_bytes,
                dirty_bps: dirty.checked_sub(1).map(|d| d as f64),
                rx_bps: rx as f64,
                tx_bps: tx as f64,
            },
        ))
    }
}

impl Iterator for Entries<'_> {
    type Item = Result<(i64, Sample), FrameError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.left == 0 {
            return None;
        }
        let entry = self.entry();
        self.left = if entry.is_ok() { self.left - 1 } else { 0 };
        Some(entry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(load: f64, dirty: Option<f64>) -> Sample {
        Sample {
            load,
            cpu_cores: load * 3.0,
            memory_bytes: (1 << 34) + 7,
            dirty_bps: dirty,
            rx_bps: 0.0,
            tx_bps: 123_456_789.0,
        }
    }

    #[test]
    fn a_frame_reads_back_exactly() {
        let entries = vec![
            (1, sample(0.1, None)),
            (2, sample(1.0 / 3.0, Some(0.0))),
            (300, sample(2.5, Some(9_007_199_254_740_992.0))),
            (i64::from(u32::MAX) + 5, sample(0.0, Some(42.0))),
        ];
        let bytes = encode(&entries);
        assert_eq!(decode_all(&bytes).expect("reads"), entries);
        assert_eq!(decode_all(&encode(&[])).expect("empty"), vec![]);
        let one = encode(&entries[..1]).len();
        assert!(one < 40, "{one} bytes for one entry");
    }

    #[test]
    fn a_damaged_or_foreign_frame_is_refused_not_guessed() {
        let bytes = encode(&[(1, sample(0.5, Some(1.0))), (2, sample(0.5, None))]);
        for cut in 1..bytes.len() {
            let got: Result<Vec<_>, _> = decode(&bytes[..cut]).and_then(Iterator::collect);
            assert!(got.is_err(), "cut at {cut}");
        }
        let mut other = bytes.clone();
        other[0] = FORMAT + 1;
        let e = decode(&other).err().expect("another format");
        assert!(e.to_string().contains("format 2"), "{e}");
        assert!(decode(&[]).is_err());
        let endless = [
            FORMAT, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 1,
        ];
        assert!(decode(&endless).is_err());
    }
}
