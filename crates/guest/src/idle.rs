//! idle: does nothing but stay alive, so the reporter still shows the guest is up.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

pub fn run(stop: &AtomicBool) {
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(100));
    }
}
