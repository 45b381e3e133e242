//! What a real test needs, and what happens when the machine lacks it.

use std::io::Write;
use std::process::{Command, Stdio};

/// One prerequisite of a test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Effective uid 0: namespaces, bridges, qdiscs, cgroups, tap devices.
    Root,
    /// A program found on `PATH` that runs `<name> <arg>` successfully.
    Program {
        name: &'static str,
        arg: &'static str,
    },
}

pub const QEMU: Need = Need::Program {
    name: "qemu-system-x86_64",
    arg: "--version",
};
pub const QEMU_IMG: Need = Need::Program {
    name: "qemu-img",
    arg: "--version",
};
pub const IP: Need = Need::Program {
    name: "ip",
    arg: "-V",
};
pub const TC: Need = Need::Program {
    name: "tc",
    arg: "-V",
};
/// Schemathesis' CLI (scripts/setup installs the pinned version and links it on `PATH`).
pub const SCHEMATHESIS: Need = Need::Program {
    name: "st",
    arg: "--version",
};

impl Need {
    /// Why this need is not met, or None when it is.
    pub fn unmet(&self) -> Option<String> {
        match *self {
            Need::Root => {
                // SAFETY: geteuid has no preconditions and cannot fail.
                let uid = unsafe { libc::geteuid() };
                (uid != 0).then(|| format!("root (running as uid {uid})"))
            }
            Need::Program { name, arg } => {
                let run = Command::new(name)
                    .arg(arg)
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status();
                match run {
                    Ok(s) if s.success() => None,
                    Ok(s) => Some(format!("`{name}` (`{name} {arg}` exited with {s})")),
                    Err(e) => Some(format!("`{name}` (cannot run `{name} {arg}`: {e})")),
                }
            }
        }
    }
}

/// What a test does about its prerequisites.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Run,
    /// Skip, with the line to print.
    Skip(String),
    /// Fail, with the panic message.
    Fail(String),
}

/// Decides from what is missing and whether this is CI.
pub fn verdict(test: &str, missing: &[String], ci: bool) -> Verdict {
    if missing.is_empty() {
        return Verdict::Run;
    }
    let what = missing.join(", ");
    if ci {
        Verdict::Fail(format!(
            "{test}: missing prerequisite under CI: {what} (CI is set, so this is a failure, not a skip)"
        ))
    } else {
        Verdict::Skip(format!(
            "SKIPPED {test}: missing {what} (with CI set this fails)"
        ))
    }
}

/// True when every need is met. Otherwise panics under CI, or prints one `SKIPPED` line to
/// stderr and returns false. Prefer the [`crate::require!`] macro, which returns for you.
#[track_caller]
pub fn prerequisites_met(needs: &[Need]) -> bool {
    let missing: Vec<String> = needs.iter().filter_map(Need::unmet).collect();
    let thread = std::thread::current();
    // libtest names each test's thread after the test.
    let test = thread.name().unwrap_or("this test");
    let ci = std::env::var_os("CI").is_some();
    match verdict(test, &missing, ci) {
        Verdict::Run => true,
        Verdict::Fail(message) => panic!("{message}"),
        Verdict::Skip(line) => {
            // Straight to the stream: eprintln! output is captured for passing tests. The leading
            // newline keeps the line whole when the harness has printed "test name ... " already.
            let _ = writeln!(std::io::stderr(), "\n{line}");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_missing_runs_in_and_out_of_ci() {
        assert_eq!(verdict("t", &[], true), Verdict::Run);
        assert_eq!(verdict("t", &[], false), Verdict::Run);
    }

    #[test]
    fn missing_fails_under_ci_and_skips_elsewhere_naming_what() {
        let missing = vec!["root (running as uid 1000)".to_string(), "`tc`".to_string()];
        let Verdict::Fail(m) = verdict("lab::up", &missing, true) else {
            panic!("must fail under CI")
        };
        assert!(
            m.contains("lab::up") && m.contains("root") && m.contains("`tc`"),
            "{m}"
        );
        let Verdict::Skip(line) = verdict("lab::up", &missing, false) else {
            panic!("must skip outside CI")
        };
        assert!(
            line.starts_with("SKIPPED lab::up") && line.contains("`tc`"),
            "{line}"
        );
        assert!(!line.contains('\n'));
    }

    #[test]
    fn a_program_that_is_not_there_is_named() {
        let need = Need::Program {
            name: "drover-no-such-program",
            arg: "--version",
        };
        let why = need.unmet().expect("missing");
        assert!(why.contains("drover-no-such-program"), "{why}");
        let failing = Need::Program {
            name: "false",
            arg: "x",
        };
        assert!(failing.unmet().expect("fails").contains("exited"));
        let ok = Need::Program {
            name: "true",
            arg: "x",
        };
        assert_eq!(ok.unmet(), None);
    }
}
