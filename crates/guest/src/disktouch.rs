//! disktouch: block I/O with verifiable contents on the VM's disk, the `disk` workload.
//!
//! The VM's disk is its only virtio-blk device ([`find_device`]); the guest sees the qcow2 as a
//! raw block device and works on its first `wss` bytes, as 4 KiB blocks. Every block carries a
//! header (a magic word, its block index, its generation) and a body derived from both, with a
//! checksum over the body; a separate array holds the generation each block must be at. At start
//! every block of the working set is written at generation 0 (so every later read is checkable,
//! and the whole set is allocated in the image). Then `rate=N` operations a second, evenly paced
//! (memtouch's [`Pace`]): `read=PCT` percent of them read a block back and verify it, the rest
//! write the block's next generation. A block lost (zeroed), stale (older generation), misplaced
//! (another index) or torn (a checksum that does not match its body) counts as an integrity
//! error; so does an I/O error, since the block could not be checked or written.
//!
//! The I/O bypasses the guest's page cache: the device is opened with `O_DIRECT` (from aligned
//! buffers), so a write returns once the virtio device completed it and a read comes from the
//! device, never from a cached copy; a read checks what the disk holds. Where `O_DIRECT` is
//! refused (a file on tmpfs standing in for the device in tests) each write is followed by
//! `fdatasync` instead ([`Sync`]).

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use crate::live::Live;
use crate::memtouch::{next_index, paced_batch, run_turns, splitmix64, Pace, Rng, Tally};
use crate::reporter::{Counters, Gauges};
use crate::spec::{Pattern, Rate, Workload, DISK_BLOCK_SIZE};
use crate::speed::SpeedMeter;

const BLOCK: usize = DISK_BLOCK_SIZE as usize;
const WORDS: usize = BLOCK / 8;
/// Header words: magic, index, generation, checksum; the body follows.
const HEADER: usize = 4;
/// "DROVERBK".
const MAGIC: u64 = 0x4452_4F56_4552_424B;
/// Blocks written per request while the working set is first written (256 KiB).
const INIT_CHUNK: usize = 64;
/// Ops done between publications of the counters.
const BATCH: u64 = 16;
/// `O_DIRECT` on Linux (x86_64 and aarch64 differ; the guest is x86_64).
#[cfg(target_arch = "aarch64")]
const O_DIRECT: i32 = 0o200000;
#[cfg(not(target_arch = "aarch64"))]
const O_DIRECT: i32 = 0o40000;
/// `EINVAL`: what `open` answers for `O_DIRECT` where the file system cannot do it.
const EINVAL: i32 = 22;

/// One block, aligned as `O_DIRECT` needs its buffers.
#[repr(C, align(4096))]
#[derive(Clone, Copy)]
struct Block([u64; WORDS]);

impl Block {
    fn zeroed() -> Block {
        Block([0; WORDS])
    }

    /// The contents block `index` has at generation `gen`.
    fn fill(&mut self, index: u64, gen: u32) {
        let seed = splitmix64(index ^ ((gen as u64) << 40) ^ MAGIC);
        for (i, w) in self.0[HEADER..].iter_mut().enumerate() {
            *w = splitmix64(seed ^ i as u64);
        }
        self.0[0] = MAGIC;
        self.0[1] = index;
        self.0[2] = gen as u64;
        self.0[3] = checksum(&self.0[HEADER..]);
    }

    /// Whether the block holds block `index` at generation `gen`, whole.
    fn holds(&self, index: u64, gen: u32) -> bool {
        self.0[0] == MAGIC
            && self.0[1] == index
            && self.0[2] == gen as u64
            && self.0[3] == checksum(&self.0[HEADER..])
    }

    fn bytes(&self) -> &[u8] {
        // SAFETY: a [u64; WORDS] is BLOCK initialised bytes; u8 has no alignment needs.
        unsafe { std::slice::from_raw_parts(self.0.as_ptr().cast::<u8>(), BLOCK) }
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `bytes`; every byte pattern is a valid u64.
        unsafe { std::slice::from_raw_parts_mut(self.0.as_mut_ptr().cast::<u8>(), BLOCK) }
    }
}

/// Order-sensitive checksum of the body (a multiply-xor chain: a swapped, zeroed or changed
/// word changes it).
fn checksum(words: &[u64]) -> u64 {
    words.iter().fold(0xCBF2_9CE4_8422_2325, |h, w| {
        splitmix64(h ^ w).rotate_left(7)
    })
}

/// How writes are made to reach the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sync {
    /// Opened with `O_DIRECT`: no guest page cache on either path.
    Direct,
    /// Buffered, with `fdatasync` after each write (where `O_DIRECT` is refused).
    Fsync,
}

/// The device (or a file standing in for it), opened for block I/O.
pub struct Device {
    file: File,
    sync: Sync,
    size_bytes: u64,
}

impl Device {
    /// Opens `path` read-write with `O_DIRECT`, or with [`Sync::Fsync`] where the file system
    /// refuses it. Its size is the file's length or, for a block device, `size_bytes`.
    pub fn open(path: &Path, size_bytes: Option<u64>) -> io::Result<Device> {
        let direct = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(O_DIRECT)
            .open(path);
        let (file, sync) = match direct {
            Ok(f) => (f, Sync::Direct),
            Err(e) if e.raw_os_error() == Some(EINVAL) => (
                OpenOptions::new().read(true).write(true).open(path)?,
                Sync::Fsync,
            ),
            Err(e) => return Err(e),
        };
        let size_bytes = match size_bytes {
            Some(s) => s,
            None => file.metadata()?.len(),
        };
        Ok(Device {
            file,
            sync,
            size_bytes,
        })
    }

    pub fn sync(&self) -> Sync {
        self.sync
    }

    fn write_at(&self, bytes: &[u8], offset: u64) -> io::Result<()> {
        self.file.write_all_at(bytes, offset)?;
        if self.sync == Sync::Fsync {
            self.file.sync_data()?;
        }
        Ok(())
    }
}

/// The working set on the device and the generation each block must be at.
pub struct DiskSet {
    dev: Device,
    expected: Vec<u32>,
    buf: Block,
}

impl DiskSet {
    /// Writes the first `blocks` blocks at generation 0, feeding `meter` with the time spent.
    ///
    /// # Errors
    /// The working set does not fit the device, or a write failed.
    pub fn new(dev: Device, blocks: u64, meter: &mut SpeedMeter) -> Result<DiskSet, String> {
        let need = blocks.saturating_mul(DISK_BLOCK_SIZE);
        if need > dev.size_bytes {
            return Err(format!(
                "working set {need} bytes does not fit the {} byte disk",
                dev.size_bytes
            ));
        }
        let n = usize::try_from(blocks).map_err(|_| "working set too large".to_string())?;
        let mut chunk = vec![Block::zeroed(); INIT_CHUNK];
        let mut first = 0;
        while first < n {
            let t = Instant::now();
            let count = INIT_CHUNK.min(n - first);
            for (i, b) in chunk[..count].iter_mut().enumerate() {
                b.fill((first + i) as u64, 0);
            }
            // SAFETY: `count` contiguous, initialised blocks (a Vec is one allocation).
            let bytes =
                unsafe { std::slice::from_raw_parts(chunk.as_ptr().cast::<u8>(), count * BLOCK) };
            dev.write_at(bytes, first as u64 * DISK_BLOCK_SIZE)
                .map_err(|e| format!("writing blocks from {first}: {e}"))?;
            meter.feed(count as u64, t.elapsed());
            first += count;
        }
        Ok(DiskSet {
            dev,
            expected: vec![0; n],
            buf: Block::zeroed(),
        })
    }

    pub fn len(&self) -> u64 {
        self.expected.len() as u64
    }

    /// Writes block `index`'s next generation. Returns whether it reached the device.
    pub fn write(&mut self, index: usize) -> bool {
        let next = self.expected[index].wrapping_add(1);
        self.buf.fill(index as u64, next);
        let written = self
            .dev
            .write_at(self.buf.bytes(), index as u64 * DISK_BLOCK_SIZE);
        // Whatever happened, the device may hold the new generation now or the old one: expect
        // the new one, so a write that failed shows as an error again when read back.
        self.expected[index] = next;
        written.is_ok()
    }

    /// Reads block `index` back. Returns whether it holds its expected generation, whole.
    pub fn verify(&mut self, index: usize) -> bool {
        let offset = index as u64 * DISK_BLOCK_SIZE;
        match self.dev.file.read_exact_at(self.buf.bytes_mut(), offset) {
            Ok(()) => self.buf.holds(index as u64, self.expected[index]),
            Err(_) => false,
        }
    }
}

/// What disktouch runs with now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Params {
    rate: Rate,
    pattern: Pattern,
    read_pct: u8,
    /// Blocks worked on: the first `blocks` of the working set.
    blocks: u64,
}

impl Params {
    /// The disk parameters of `workload` (disk, or a mixed workload's disk part).
    fn of(workload: &Workload, allocated: u64) -> Option<Params> {
        workload.disk_part().map(|d| Params {
            rate: d.rate,
            pattern: d.pattern,
            read_pct: d.read_pct,
            blocks: (d.wss_bytes / DISK_BLOCK_SIZE).clamp(1, allocated.max(1)),
        })
    }
}

/// Runs disktouch until `stop` is set, with the parameters `live` holds, publishing cumulative
/// ops and integrity errors into `counters` as memtouch does.
pub fn run(
    set: &mut DiskSet,
    live: &Live,
    seed: u64,
    counters: &Counters,
    meter: &mut SpeedMeter,
    stop: &AtomicBool,
) {
    let Some(mut turns) = Turns::new(live, set.len(), seed) else {
        return;
    };
    run_turns(stop, || turns.turn(set, live, meter, counters));
}

/// disktouch's loop, one turn at a time: alone ([`run`]) or as the disk part of a mixed
/// workload (as memtouch's [`crate::memtouch::Turns`]).
pub struct Turns {
    allocated: u64,
    version: u64,
    params: Params,
    rng: Rng,
    cursor: u64,
    tally: Tally,
    pace: Pace,
    /// Most ops a turn does.
    batch: u64,
}

impl Turns {
    /// The loop over a working set of `allocated` blocks, with the parameters `live` holds
    /// (None: `live` runs no disk workload).
    pub fn new(live: &Live, allocated: u64, seed: u64) -> Option<Turns> {
        let version = live.version();
        let params = Params::of(&live.workload(), allocated)?;
        Some(Turns {
            allocated,
            version,
            params,
            rng: Rng::new(seed),
            cursor: 0,
            tally: Tally::default(),
            pace: Pace::new(params.rate, Instant::now()),
            batch: BATCH,
        })
    }

    /// At most `batch` ops a turn (at least 1): each op holds the thread for the device's
    /// latency, so a loop that shares the thread takes fewer at a time.
    pub fn with_batch(self, batch: u64) -> Turns {
        Turns {
            batch: batch.max(1),
            ..self
        }
    }

    /// The rate asked for now.
    pub fn rate(&self) -> Rate {
        self.params.rate
    }

    /// One turn: the parameters re-read if `live` changed, then a batch of what is owed,
    /// published into `gauges`.
    ///
    /// # Errors
    /// Nothing is owed: the time until the next op is (the caller sleeps).
    pub fn turn(
        &mut self,
        set: &mut DiskSet,
        live: &Live,
        meter: &mut SpeedMeter,
        gauges: &Gauges,
    ) -> Result<(), Duration> {
        self.pace.advance(Instant::now(), meter.best());
        if live.version() != self.version {
            self.version = live.version();
            let next = Params::of(&live.workload(), self.allocated).unwrap_or(self.params);
            if next.rate != self.params.rate {
                self.pace.set_rate(next.rate);
            }
            self.params = next;
        }
        let (params, rng, cursor) = (self.params, &mut self.rng, &mut self.cursor);
        paced_batch(
            &mut self.pace,
            meter,
            gauges,
            self.batch,
            &mut self.tally,
            || {
                let index = next_index(params.pattern, params.blocks, rng, cursor) as usize;
                if rng.below(100) < params.read_pct as u64 {
                    set.verify(index)
                } else {
                    set.write(index)
                }
            },
        )
    }
}

/// The VM's disk: the one block device under `sys_block` (`/sys/block`) whose driver is
/// `virtio_blk`, as its `/dev` node and its size in bytes (sysfs counts 512-byte sectors).
/// Devices are tried in name order, so the first of several is taken.
pub fn find_device(sys_block: &Path) -> Option<(PathBuf, u64)> {
    let mut names: Vec<String> = std::fs::read_dir(sys_block)
        .ok()?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .collect();
    names.sort();
    names.into_iter().find_map(|name| {
        let dir = sys_block.join(&name);
        let driver = std::fs::read_link(dir.join("device/driver")).ok()?;
        if driver.file_name()? != "virtio_blk" {
            return None;
        }
        let sectors: u64 = std::fs::read_to_string(dir.join("size"))
            .ok()?
            .trim()
            .parse()
            .ok()?;
        Some((
            PathBuf::from("/dev").join(name),
            sectors.saturating_mul(512),
        ))
    })
}

/// How long the guest waits for its disk to appear (its driver loads during boot).
pub const DEVICE_WAIT: Duration = Duration::from_secs(10);

/// Opens the VM's disk for `workload` and writes its working set: the device is looked for
/// under `/sys/block` for up to [`DEVICE_WAIT`].
///
/// # Errors
/// No virtio-blk disk, the working set larger than it, or an I/O error, as a message.
pub fn open_vm_disk(workload: &Workload, meter: &mut SpeedMeter) -> Result<DiskSet, String> {
    let start = Instant::now();
    let (path, size) = loop {
        if let Some(found) = find_device(Path::new("/sys/block")) {
            break found;
        }
        if start.elapsed() >= DEVICE_WAIT {
            return Err("no virtio-blk disk under /sys/block (does the VM have a disk?)".into());
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let dev = Device::open(&path, Some(size)).map_err(|e| format!("{}: {e}", path.display()))?;
    eprintln!(
        "drover-guest: disk {} ({size} bytes, {:?} writes)",
        path.display(),
        dev.sync()
    );
    DiskSet::new(dev, workload.disk_wss_bytes() / DISK_BLOCK_SIZE, meter)
        .map_err(|e| format!("{}: {e}", path.display()))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::sync::atomic::Ordering;
    use std::sync::Arc;

    /// A file standing in for the device (or a directory), removed when dropped.
    pub(crate) struct TempFile(pub(crate) PathBuf);

    impl TempFile {
        pub(crate) fn new(tag: &str, len: u64) -> TempFile {
            let path = std::env::temp_dir().join(format!(
                "drover-disktouch-{tag}-{}-{:?}",
                std::process::id(),
                std::thread::current().id()
            ));
            let f = File::create(&path).unwrap();
            f.set_len(len).unwrap();
            TempFile(path)
        }
    }

    impl Drop for TempFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn set(file: &TempFile, blocks: u64) -> DiskSet {
        let dev = Device::open(&file.0, None).unwrap();
        DiskSet::new(dev, blocks, &mut SpeedMeter::default()).unwrap()
    }

    fn corrupt(file: &TempFile, index: u64, bytes: &[u8], at: u64) {
        let f = OpenOptions::new().write(true).open(&file.0).unwrap();
        f.write_all_at(bytes, index * DISK_BLOCK_SIZE + at).unwrap();
    }

    #[test]
    fn written_blocks_read_back_intact() {
        let file = TempFile::new("ok", 64 * DISK_BLOCK_SIZE);
        let mut s = set(&file, 32);
        for i in 0..32 {
            assert!(s.verify(i), "fresh block {i}");
        }
        for round in 0..3 {
            for i in 0..32 {
                assert!(s.write(i));
                assert!(s.verify(i), "block {i} round {round}");
            }
        }
    }

    #[test]
    fn lost_stale_misplaced_and_torn_blocks_are_caught() {
        let file = TempFile::new("bad", 8 * DISK_BLOCK_SIZE);
        let mut s = set(&file, 8);
        // Lost: zeroed.
        corrupt(&file, 1, &[0; BLOCK], 0);
        assert!(!s.verify(1));
        // Stale: an older generation put back.
        let old = std::fs::read(&file.0).unwrap();
        assert!(s.write(2));
        let at = 2 * BLOCK;
        corrupt(&file, 2, &old[at..at + BLOCK], 0);
        assert!(!s.verify(2));
        // Misplaced: block 4's contents in block 3.
        let now = std::fs::read(&file.0).unwrap();
        corrupt(&file, 3, &now[4 * BLOCK..5 * BLOCK], 0);
        assert!(!s.verify(3));
        // Torn: one body byte changed.
        corrupt(&file, 5, &[0xFF], 3000);
        assert!(!s.verify(5));
        // Errors are events: a rewritten block is good again.
        assert!(s.write(1) && s.verify(1));
        assert!(s.verify(0) && s.verify(6));
    }

    #[test]
    fn a_working_set_larger_than_the_device_is_refused() {
        let file = TempFile::new("small", 4 * DISK_BLOCK_SIZE);
        let dev = Device::open(&file.0, None).unwrap();
        let err = DiskSet::new(dev, 5, &mut SpeedMeter::default())
            .err()
            .expect("too big");
        assert!(err.contains("does not fit the 16384 byte disk"), "{err}");
    }

    #[test]
    fn run_paces_reads_and_writes_and_counts_no_errors() {
        let file = TempFile::new("run", 64 * DISK_BLOCK_SIZE);
        let mut s = set(&file, 64);
        let w = crate::spec::parse_workload("disk:wss=256K,rate=400,read=50").unwrap();
        let live = Live::new(w);
        let counters = Counters::default();
        let stop = Arc::new(AtomicBool::new(false));
        let stopper = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(500));
                stop.store(true, Ordering::Relaxed);
            })
        };
        run(
            &mut s,
            &live,
            7,
            &counters,
            &mut SpeedMeter::default(),
            &stop,
        );
        stopper.join().unwrap();
        let (ops, errors) = counters.snapshot();
        assert_eq!(errors, 0);
        // 400/s for 0.5 s, with a backlog cap: about 200, never far more.
        assert!((100..=260).contains(&ops), "{ops} ops");
        // Every block still verifies afterwards.
        assert!((0..64).all(|i| s.verify(i)));
    }

    #[test]
    fn the_disk_is_the_virtio_blk_device() {
        let root = std::env::temp_dir().join(format!("drover-sysblock-{}", std::process::id()));
        let _cleanup = TempFile(root.clone());
        let mk = |name: &str, driver: &str, sectors: u64| {
            let dev = root.join(format!("devices/{name}"));
            std::fs::create_dir_all(&dev).unwrap();
            std::fs::create_dir_all(root.join(format!("drivers/{driver}"))).unwrap();
            std::os::unix::fs::symlink(root.join(format!("drivers/{driver}")), dev.join("driver"))
                .unwrap();
            let block = root.join(format!("block/{name}"));
            std::fs::create_dir_all(&block).unwrap();
            std::os::unix::fs::symlink(&dev, block.join("device")).unwrap();
            std::fs::write(block.join("size"), format!("{sectors}\n")).unwrap();
        };
        std::fs::create_dir_all(root.join("block/ram0")).unwrap();
        mk("sr0", "sr", 100);
        assert_eq!(find_device(&root.join("block")), None);
        mk("vda", "virtio_blk", 131072);
        assert_eq!(
            find_device(&root.join("block")),
            Some((PathBuf::from("/dev/vda"), 64 << 20))
        );
    }
}
