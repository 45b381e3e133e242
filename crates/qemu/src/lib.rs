//! QEMU adapter: everything Drover does to a QEMU process goes through here.
//!
//! - [`launcher`]: VM spec -> command line -> supervised process (killed on drop).
//! - [`qmp`]: the QMP trait, typed commands, the real client and a scripted fake.
//! - [`driver`]: runs one live migration between two QMP peers, decisions from core.
//! - [`storage`]: a storage pre-copy (NBD export + mirror) around a memory migration;
//!   [`storage_postcopy`]: a storage post-copy (the source's NBD export under the
//!   destination's overlay, a stream after the switchover); [`disk`]: a disk's block-layer
//!   names, how the launcher attaches it, and `qemu-img` for target images.
//! - [`metrics`]: reads the guest workload's reports from its serial port and writes control
//!   lines back ([`guest_control`]: delivering a workload change).
//! - [`profile`]: dirty-rate measurement for the cost model.
//! - [`image`]: builds the guest kernel + initramfs.
//! - [`img`]: qcow2 disk images through `qemu-img` (create, overlay, size).
//! - [`bench`]: `migrate-bench`, composing all of the above on this machine.

pub mod bench;
pub mod disk;
pub mod disk_trace;
pub mod driver;
pub mod guest_control;
pub mod image;
pub mod img;
pub mod launcher;
pub mod metrics;
pub mod profile;
pub mod qmp;
pub mod storage;
pub mod storage_hybrid;
pub mod storage_postcopy;
#[cfg(test)]
mod test_rig;
pub mod vm;
