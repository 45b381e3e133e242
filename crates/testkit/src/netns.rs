//! Running code inside a named network namespace (`ip netns add` ones, under /run/netns).

use std::os::fd::AsRawFd;
use std::path::PathBuf;

/// Runs `f` on a thread that has entered network namespace `ns`; sockets it creates live in
/// that namespace. Panics (in the thread, surfacing at `join`) if the namespace cannot be entered.
pub fn in_netns<T: Send + 'static>(
    ns: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> std::thread::JoinHandle<T> {
    let path = PathBuf::from("/run/netns").join(ns);
    std::thread::spawn(move || {
        let file = std::fs::File::open(&path)
            .unwrap_or_else(|e| panic!("open netns {}: {e}", path.display()));
        // SAFETY: setns on a valid namespace fd affects only this thread's network namespace.
        let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(
            rc,
            0,
            "setns {}: {}",
            path.display(),
            std::io::Error::last_os_error()
        );
        f()
    })
}
