//! Finding processes a test left behind, and stopping them.

/// Pids and command lines (NUL separators shown as spaces) of every process whose command line
/// contains `tag`, this process excluded.
fn mentioning(tag: &str) -> Vec<(i32, String)> {
    let me = std::process::id().to_string();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut found = Vec::new();
    for entry in dir.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.parse::<i32>().ok()) else {
            continue;
        };
        if name.to_string_lossy() == me {
            continue;
        }
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let text = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if text.contains(tag) {
            found.push((pid, text));
        }
    }
    found
}

/// Command lines of every process whose command line contains `tag`, this process excluded.
pub fn processes_mentioning(tag: &str) -> Vec<String> {
    mentioning(tag).into_iter().map(|(_, cmd)| cmd).collect()
}

/// Kills (SIGKILL) every process whose command line contains `tag`, this process excluded,
/// and waits up to 5 s for them to be gone; returns the command lines still there. For a
/// test's clean-up of what it started (daemons that outlive their parent, like detached
/// QEMUs), so `tag` must be specific to the test, such as its temporary directory.
pub fn kill_processes_mentioning(tag: &str) -> Vec<String> {
    for (pid, _) in mentioning(tag) {
        if pid > 1 {
            // SAFETY: kill has no memory-safety preconditions; pids <= 1 are never signalled.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
        }
    }
    for _ in 0..100 {
        // A killed process is gone once its parent reaps it; a zombie has an empty cmdline.
        let left = processes_mentioning(tag);
        if left.is_empty() {
            return left;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    processes_mentioning(tag)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_a_child_by_its_arguments_and_not_itself() {
        let tag = format!("drover-testkit-{}", std::process::id());
        let mut child = std::process::Command::new("sh")
            // `; :` keeps sh from exec-ing sleep, which would drop the tag from the command line.
            .args(["-c", "sleep 30; :", &tag])
            .spawn()
            .expect("spawn sh");
        // Until the child has exec'd, its command line is this test's; and for a moment after,
        // the shell's own child (forked to run `sleep`, not yet exec'd) shows the shell's.
        let mut found = Vec::new();
        for _ in 0..100 {
            found = processes_mentioning(&tag);
            if found.len() == 1 {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(processes_mentioning(&tag).is_empty());
    }

    #[test]
    fn kills_what_mentions_the_tag() {
        let tag = format!("drover-testkit-kill-{}", std::process::id());
        // Detached like a daemonized QEMU: the outer shell exits at once and the inner one,
        // which carries the tag as its `$0`, is reparented away from this test. Its sleeps are
        // short, so none outlives it by more than a second.
        let status = std::process::Command::new("sh")
            .args(["-c", "sh -c 'while :; do sleep 1; done' \"$0\" &", &tag])
            .status()
            .expect("spawn sh");
        assert!(status.success());
        let mut found = Vec::new();
        for _ in 0..100 {
            found = processes_mentioning(&tag);
            if !found.is_empty() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        assert!(!found.is_empty(), "the detached process did not start");
        assert_eq!(kill_processes_mentioning(&tag), Vec::<String>::new());
    }
}
