//! Finding processes a test left behind.

/// Command lines (NUL separators shown as spaces) of every process whose command line contains
/// `tag`, this process excluded.
pub fn processes_mentioning(tag: &str) -> Vec<String> {
    let me = std::process::id().to_string();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut found = Vec::new();
    for entry in dir.flatten() {
        if entry.file_name().to_string_lossy() == me {
            continue;
        }
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let text = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if text.contains(tag) {
            found.push(text);
        }
    }
    found
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
        // Until the child has exec'd, its command line is this test's.
        let mut found = Vec::new();
        for _ in 0..100 {
            found = processes_mentioning(&tag);
            if !found.is_empty() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(processes_mentioning(&tag).is_empty());
    }
}
