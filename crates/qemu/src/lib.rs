//! QEMU adapter.
