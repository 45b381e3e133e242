//! Reading flag values so that every refusal quotes the flag and the text as typed.
//!
//! Two kinds of refusal, both naming the flag and the text:
//! - a value that is wrong on its own (a number out of its range, a fraction above 1, a rate
//!   in an unknown unit) is refused by clap's value parser, in clap's words: `invalid value
//!   '-1' for '--vcpus <N>': -1 is not in 1..=64`;
//! - a value read with a unit, or checked against another one (memory against the workload,
//!   a bandwidth against its floor once read), is refused after parsing, by the rule that
//!   checks it, with what the text was read as: `--bandwidth 1bit/s rounds to 0 bytes/s;
//!   expected at least 125000 bytes/s (1 Mbit/s)`.

use anyhow::anyhow;
use clap::builder::RangedI64ValueParser;
use drover_core::units::{read_rate, read_size, Reading, UnitError};
use drover_guest::fit::{FitError, Setting};

/// A whole-number flag that accepts `min..=max` only. Parsed as a signed number first, so a
/// negative one is refused with the range too, not as "invalid digit".
pub fn whole<T>(min: u64, max: u64) -> RangedI64ValueParser<T>
where
    T: TryFrom<i64> + Clone + Send + Sync + 'static,
    <T as TryFrom<i64>>::Error: std::error::Error + Send + Sync + 'static,
{
    let bound = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    RangedI64ValueParser::new().range(bound(min)..=bound(max))
}

/// A file a command will write at its end, checked before the work that fills it (which may
/// take minutes): its folder must exist and the path must not be a folder itself.
///
/// # Errors
/// Naming `flag` and the path: the folder is missing, or the path is a folder.
pub fn output_file(flag: &str, path: &std::path::Path) -> anyhow::Result<()> {
    if path.is_dir() {
        return Err(anyhow!(
            "{flag} {}: is a folder: expected a file name",
            path.display()
        ));
    }
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => std::path::Path::new("."),
    };
    if !parent.is_dir() {
        return Err(anyhow!(
            "{flag} {}: folder {} does not exist",
            path.display(),
            parent.display()
        ));
    }
    Ok(())
}

/// A flag given with a unit, as typed and as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Typed {
    pub flag: &'static str,
    pub text: String,
    pub reading: Reading,
    /// The unit of `reading` in messages (`bytes`, `bytes/s`).
    pub unit: &'static str,
}

impl Typed {
    /// Reads a size flag.
    ///
    /// # Errors
    /// The unit error, after the flag.
    pub fn size(flag: &'static str, text: &str) -> anyhow::Result<Typed> {
        Self::size_of(flag, text, None)
    }

    /// Reads a size flag for a VM `setting`: a number beyond any size is refused with the
    /// setting's own range (`--disk-size '1e30'...: expected 1 MiB to 16 TiB`), not the
    /// reader's 16 EiB, which no setting accepts.
    ///
    /// # Errors
    /// The unit error, after the flag.
    pub fn size_for(flag: &'static str, text: &str, setting: Setting) -> anyhow::Result<Typed> {
        Self::size_of(flag, text, setting.expected())
    }

    fn size_of(flag: &'static str, text: &str, range: Option<String>) -> anyhow::Result<Typed> {
        let reading = read_size(text).map_err(|e| match (&e, range) {
            (UnitError::OutOfRange { .. }, Some(range)) => {
                anyhow!("{flag} '{text}' is out of range: {range}")
            }
            _ => anyhow!("{flag} {e}"),
        })?;
        Ok(Typed {
            flag,
            text: text.to_string(),
            reading,
            unit: "bytes",
        })
    }

    /// Reads a rate flag.
    ///
    /// # Errors
    /// The unit error, after the flag.
    pub fn rate(flag: &'static str, text: &str) -> anyhow::Result<Typed> {
        let reading = read_rate(text).map_err(|e| anyhow!("{flag} {e}"))?;
        Ok(Typed {
            flag,
            text: text.to_string(),
            reading,
            unit: "bytes/s",
        })
    }

    pub fn value(&self) -> u64 {
        self.reading.value
    }

    /// What the text was read as, when it is not the plain number (`is 50331648 bytes`,
    /// `rounds to 0 bytes/s`); a bare number says its unit, which is easy to get wrong.
    pub fn note(&self) -> Option<String> {
        match self.reading.note(&self.text, self.unit) {
            Some(note) => Some(note),
            None if self.unit == "bytes/s" => Some("(a bare number is bytes per second)".into()),
            None => None,
        }
    }

    /// The refusal of this value by a rule expecting `expected` (`expected at least ...`).
    pub fn refused(&self, expected: &str) -> anyhow::Error {
        anyhow!(drover_core::units::refusal(
            self.flag,
            &self.text,
            self.note().as_deref(),
            expected
        ))
    }
}

/// A VM's settings as flags, for the guest's size rules' refusals.
pub struct VmFlags<'a> {
    /// `--vcpus` as typed (None: the command has no such flag).
    pub vcpus: Option<String>,
    pub memory: &'a Typed,
    pub workload: &'a str,
}

impl VmFlags<'_> {
    /// A size rule's refusal naming the flag, in the same words as the API's.
    pub fn refused(&self, e: &FitError) -> anyhow::Error {
        let message = match e.setting() {
            Setting::Vcpus => match &self.vcpus {
                Some(typed) => e.message("--vcpus", typed, None),
                None => e.to_string(),
            },
            Setting::Memory => {
                let note = self.memory.note();
                e.message(self.memory.flag, &self.memory.text, note.as_deref())
            }
            Setting::Workload => e.message("--workload", self.workload, None),
            // Commands with a disk size check it themselves, naming their flag.
            Setting::DiskSize => e.to_string(),
        };
        anyhow!(message)
    }
}

/// A flag whose text must parse as `T` (an accelerator, a technique): the refusal names the
/// flag, and the parser's own message quotes the text (`unknown technique 'warp': ...`).
pub fn parsed<T: std::str::FromStr>(flag: &str, text: &str) -> anyhow::Result<T>
where
    T::Err: std::fmt::Display,
{
    text.parse().map_err(|e| anyhow!("{flag}: {e}"))
}

/// A host's number of cores, as typed: [`drover_guest::fit::MIN_HOST_CPUS`] to
/// [`drover_guest::fit::MAX_HOST_CPUS`] (clap's refusal names the flag and quotes the text).
pub fn cores(text: &str) -> Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(c) if drover_guest::fit::host_cpus_ok(c) => Ok(c),
        _ => Err(format!(
            "expected {} (e.g. 0.5)",
            drover_guest::fit::host_cpus_expected()
        )),
    }
}

/// A duration flag in seconds, fractions allowed: finite, from 0 to `max`, as typed.
pub fn seconds(max: u64) -> impl Fn(&str) -> Result<f64, String> + Clone + Send + Sync + 'static {
    move |text: &str| match text.trim().parse::<f64>() {
        Ok(s) if s.is_finite() && (0.0..=max as f64).contains(&s) => Ok(s),
        _ => Err(format!("expected seconds from 0 to {max}")),
    }
}

/// Parses `extra` as the flags of one subcommand's `clap::Args` (`name` as argv[0]), for the
/// unit tests of each command's flag checks.
#[cfg(test)]
pub fn parse_args<A: clap::Args>(name: &'static str, extra: &[&str]) -> A {
    let cmd = A::augment_args(clap::Command::new(name));
    let mut argv = vec![name];
    argv.extend_from_slice(extra);
    let matches = cmd.try_get_matches_from(argv).expect("parses");
    A::from_arg_matches(&matches).expect("reads back")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_quotes_the_flag_and_the_text() {
        let bw = Typed::rate("--bandwidth", "1bit/s").expect("reads");
        assert_eq!(
            bw.refused("expected at least 125000 bytes/s (1 Mbit/s)")
                .to_string(),
            "--bandwidth 1bit/s rounds to 0 bytes/s; expected at least 125000 bytes/s (1 Mbit/s)"
        );
        let bare = Typed::rate("--bandwidth", "100").expect("reads");
        assert!(bare
            .refused("expected ...")
            .to_string()
            .contains("a bare number is bytes per second"));
        let err = Typed::rate("--link", "300Mb/s").unwrap_err().to_string();
        assert!(err.starts_with("--link '300Mb/s'"), "{err}");
        let memory = Typed::size("--memory", "1.5").expect("reads");
        let flags = VmFlags {
            vcpus: Some("1".into()),
            memory: &memory,
            workload: "idle",
        };
        let e = drover_guest::fit::check_memory(memory.value()).unwrap_err();
        let msg = flags.refused(&e).to_string();
        assert!(
            msg.starts_with("--memory 1.5 rounds to 2 bytes; expected 128 MiB"),
            "{msg}"
        );
        assert!(cores("NaN").is_err() && cores("-1").is_err() && cores("0.5").is_ok());
        let wake = seconds(3600);
        assert_eq!(wake("0.5"), Ok(0.5));
        for bad in ["NaN", "-1", "3601", "inf", "soon"] {
            assert_eq!(
                wake(bad),
                Err("expected seconds from 0 to 3600".into()),
                "{bad}"
            );
        }
    }
}
