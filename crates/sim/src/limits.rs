//! The largest inputs the simulator takes, so that a typo or a malformed trace gets an error
//! naming what is too large instead of a capacity-overflow panic or an allocation abort.
//!
//! Sized from the largest run the project documents, the 100,000-VM synthetic day
//! (BENCHMARKS.md: 100,000 VMs on 80,000 hosts, 288 samples, about 220 MiB at peak). Every limit
//! leaves ten times that, which still fits a small server's memory (a day ten times as large
//! needs about 2-3 GiB), while `--synthetic 50000000` (58 GB of samples alone) is refused.

use std::fmt;
use std::io::Read;
use std::ops::RangeInclusive;
use std::path::Path;
use thiserror::Error;

/// VMs in a workload: ten times the documented 100,000-VM day.
pub const MAX_VMS: usize = 1_000_000;
/// Hosts in a datacenter: ten times the 80,000 hosts of the documented day (and more than the
/// default of 4 per 5 VMs needs at [`MAX_VMS`]).
pub const MAX_HOSTS: usize = 1_000_000;
/// Samples per VM: a year of 5-minute samples (a PlanetLab day has 288).
pub const MAX_SAMPLES: usize = 365 * 288;
/// Samples per VM below which there is nothing to simulate (the first interval is start-up).
pub const MIN_SAMPLES: usize = 2;
/// VMs x samples held in memory (4 bytes each): ten times the documented day's 28.8 million.
pub const MAX_CELLS: usize = 10 * 100_000 * 288;
/// Runs per policy in `drover sim bench` (each is a whole simulation).
pub const MAX_REPEAT: usize = 1000;
/// Bytes a line of a trace file may take on average in the largest file allowed: a PlanetLab
/// line is at most 5 (`100\r\n`), a CSV row (`vm,t,cpu_pct`) about 15 plus the VM's name.
pub const LINE_BYTES: u64 = 32;
/// The largest PlanetLab VM file read: [`MAX_SAMPLES`] lines of [`LINE_BYTES`] (3.4 MB; a day's
/// file is under 1 KB). Larger files are refused before they are read.
pub const MAX_VM_FILE_BYTES: u64 = MAX_SAMPLES as u64 * LINE_BYTES;
/// The largest CSV trace read: [`MAX_CELLS`] rows of [`LINE_BYTES`] (9.2 GB). Larger files are
/// refused before they are read.
pub const MAX_CSV_BYTES: u64 = MAX_CELLS as u64 * LINE_BYTES;

/// Largest file read whole (a `migrate-bench --json` rows file, a stored decision), bytes:
/// 64 MiB. The project's rows file is 30 KB and a decision over 100,000 VMs about 40 MB; a
/// larger one is a wrong path (`/dev/zero`, a disk image), and reading it whole would run out
/// of memory before any parse could refuse it.
pub const MAX_FILE_BYTES: u64 = 64 << 20;

/// VMs, samples per VM and runs allowed, as ranges (for messages and argument parsers).
pub const VMS: RangeInclusive<usize> = 1..=MAX_VMS;
pub const HOSTS: RangeInclusive<usize> = 1..=MAX_HOSTS;
pub const SAMPLES: RangeInclusive<usize> = MIN_SAMPLES..=MAX_SAMPLES;
pub const REPEAT: RangeInclusive<usize> = 1..=MAX_REPEAT;

/// A size or count outside what the simulator takes.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{what} is {value}; allowed: {range}")]
pub struct LimitError {
    /// What was counted, e.g. "VMs in the synthetic day".
    pub what: String,
    pub value: u128,
    pub range: Allowed,
}

/// An allowed range, printed as `min..=max` (or `at most max` from zero).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Allowed(pub usize, pub usize);

impl fmt::Display for Allowed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Allowed(0, max) => write!(f, "at most {max}"),
            Allowed(min, max) => write!(f, "{min}..={max}"),
        }
    }
}

/// Checks `value` against `range`; `what` names it in the error.
pub fn check(
    what: impl Into<String>,
    value: usize,
    range: &RangeInclusive<usize>,
) -> Result<usize, LimitError> {
    if range.contains(&value) {
        return Ok(value);
    }
    Err(LimitError {
        what: what.into(),
        value: value as u128,
        range: Allowed(*range.start(), *range.end()),
    })
}

/// Checks that `vms` x `samples` fits [`MAX_CELLS`] (computed without overflow).
pub fn check_cells(what: impl Into<String>, vms: usize, samples: usize) -> Result<(), LimitError> {
    let cells = vms as u128 * samples as u128;
    if cells <= MAX_CELLS as u128 {
        return Ok(());
    }
    Err(LimitError {
        what: format!("{} (VMs x samples)", what.into()),
        value: cells,
        range: Allowed(0, MAX_CELLS),
    })
}

/// A file [`read_text`] could not read. The message is the whole reason (no source chain:
/// callers put the path in front, and a chain printed after it would repeat the reason).
#[derive(Debug, Error)]
pub enum ReadError {
    #[error("{0}")]
    Io(std::io::Error),
    #[error("larger than {} MiB, the most read from one file: expected a text file", MAX_FILE_BYTES >> 20)]
    TooLarge,
    #[error("not UTF-8 text")]
    NotUtf8,
    #[error("not a regular file: expected a text file")]
    NotAFile,
}

/// Reads `path` as text, at most [`MAX_FILE_BYTES`]: checked while reading (with
/// `Read::take`), so an endless file (`/dev/zero`, a FIFO) is refused without filling memory.
///
/// # Errors
/// [`ReadError`]: the file cannot be read, is too large, or is not UTF-8.
pub fn read_text(path: &Path) -> Result<String, ReadError> {
    // A FIFO or a device is never opened: opening a FIFO blocks until a writer comes.
    let meta = std::fs::metadata(path).map_err(ReadError::Io)?;
    if !meta.is_file() {
        return Err(ReadError::NotAFile);
    }
    let file = std::fs::File::open(path).map_err(ReadError::Io)?;
    read_text_from(file, MAX_FILE_BYTES)
}

fn read_text_from(r: impl Read, max: u64) -> Result<String, ReadError> {
    let bytes = read_capped(r, max)
        .map_err(ReadError::Io)?
        .ok_or(ReadError::TooLarge)?;
    String::from_utf8(bytes).map_err(|_| ReadError::NotUtf8)
}

/// At most `max` bytes of `r`, or `None` when it holds more (found by reading one byte past
/// `max`, never more, so an endless input stops there). Every capped read of this crate goes
/// through here.
///
/// # Errors
/// The reader's own.
pub fn read_capped(r: impl Read, max: u64) -> std::io::Result<Option<Vec<u8>>> {
    let mut bytes = Vec::new();
    r.take(max.saturating_add(1)).read_to_end(&mut bytes)?;
    Ok((bytes.len() as u64 <= max).then_some(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reading_stops_at_the_cap() {
        let endless = std::io::repeat(0);
        assert!(matches!(
            read_text_from(endless, 1000),
            Err(ReadError::TooLarge)
        ));
        let exact = read_text_from(&b"abcd"[..], 4).expect("at the cap");
        assert_eq!(exact, "abcd");
        assert!(matches!(
            read_text_from(&b"abcde"[..], 4),
            Err(ReadError::TooLarge)
        ));
        assert!(matches!(
            read_text_from(&[0xff_u8][..], 4),
            Err(ReadError::NotUtf8)
        ));
        assert!(matches!(
            read_text(Path::new("/dev/zero")),
            Err(ReadError::NotAFile)
        ));
        let e = read_text(Path::new("/nonexistent/x")).expect_err("no file");
        assert!(
            std::error::Error::source(&e).is_none(),
            "no chain to repeat"
        );
        assert_eq!(e.to_string(), "No such file or directory (os error 2)");
        // An endless device is refused before it is opened; a file over the cap by the cap.
        let e = read_text(Path::new("/dev/zero")).expect_err("endless");
        assert_eq!(e.to_string(), "not a regular file: expected a text file");
        assert_eq!(
            ReadError::TooLarge.to_string(),
            "larger than 64 MiB, the most read from one file: expected a text file"
        );
    }

    #[test]
    fn the_documented_day_fits_with_room_and_absurd_sizes_do_not() {
        assert!(check("VMs", 100_000, &VMS).is_ok());
        assert!(check("hosts", 80_000, &HOSTS).is_ok());
        assert!(check_cells("day", 100_000, 288).is_ok());
        assert!(check_cells("day", MAX_VMS, 288).is_ok());
        let e = check("VMs", 50_000_000, &VMS).unwrap_err();
        assert_eq!(e.to_string(), "VMs is 50000000; allowed: 1..=1000000");
        let e = check_cells("day", usize::MAX, usize::MAX).unwrap_err();
        assert!(e.to_string().contains("(VMs x samples)"), "{e}");
        assert!(e.to_string().ends_with("allowed: at most 288000000"), "{e}");
        assert!(check("samples", 1, &SAMPLES).is_err());
    }
}
