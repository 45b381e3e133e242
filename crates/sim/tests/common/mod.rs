//! Shared helpers for the integration tests.

use std::path::PathBuf;

/// The PlanetLab data, beside the checkout (`../shared/planetlab` from the workspace root).
pub fn planetlab() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/planetlab");
    assert!(
        dir.is_dir(),
        "PlanetLab traces not found at {}: CI keeps shared/ beside the clone (see the issue)",
        dir.display()
    );
    dir
}
