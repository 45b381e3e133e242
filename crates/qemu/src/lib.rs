//! QEMU adapter: everything Drover does to a QEMU process goes through here.
//!
//! - [`launcher`]: VM spec -> command line -> supervised process (killed on drop).
//! - [`qmp`]: the QMP trait, typed commands, the real client and a scripted fake.
//! - [`driver`]: runs one live migration between two QMP peers, decisions from core.
//! - [`metrics`]: reads the guest workload's reports from its serial port.
//! - [`image`]: builds the guest kernel + initramfs.
//! - [`bench`]: `migrate-bench`, composing all of the above on this machine.

pub mod driver;
pub mod image;
pub mod launcher;
pub mod metrics;
pub mod qmp;
pub mod bench;
pub mod vm;
