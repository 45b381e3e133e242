//! Compiles the guest workload (crates/guest) into a static binary that the image module embeds.
//! A plain rustc call rather than a nested cargo build: the guest has no dependencies, and a
//! nested cargo would contend for the build directory lock.
//!
//! musl is preferred (small, fully static). Where its Rust target cannot be installed (rustup's
//! download server is not always reachable), the host's glibc target links statically instead:
//! the guest uses nothing of glibc that needs dynamic loading (no NSS, no dlopen).

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

const MUSL: &str = "x86_64-unknown-linux-musl";
const GLIBC: &str = "x86_64-unknown-linux-gnu";

fn main() {
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("cargo sets this"));
    let guest_src = manifest_dir.join("../guest/src");
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed={}", guest_src.display());

    let rustc = env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let target = if has_target(&rustc, MUSL) {
        MUSL
    } else {
        GLIBC
    };
    let out = PathBuf::from(env::var("OUT_DIR").expect("cargo sets this")).join("drover-guest");
    let output = Command::new(&rustc)
        .args([
            "--edition",
            "2021",
            "--crate-name",
            "drover_guest",
            "--crate-type",
            "bin",
        ])
        .args(["--target", target])
        .args(["-C", "opt-level=2", "-C", "panic=abort"])
        .args(["-C", "target-feature=+crt-static", "-C", "strip=symbols"])
        .arg("-o")
        .arg(&out)
        .arg(guest_src.join("main.rs"))
        .output()
        .unwrap_or_else(|e| panic!("running {rustc}: {e}"));
    if !output.status.success() {
        panic!(
            "compiling the guest workload for {target} failed (for a static glibc build, libc6-dev \
             must be installed: run scripts/setup):\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    println!("cargo:rustc-env=DROVER_GUEST_FNV={:016x}", fnv_file(&out));
}

fn has_target(rustc: &str, target: &str) -> bool {
    Command::new(rustc)
        .args(["--print", "sysroot"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .is_some_and(|root| Path::new(&root).join("lib/rustlib").join(target).is_dir())
}

fn fnv_file(path: &Path) -> u64 {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3)
    })
}
