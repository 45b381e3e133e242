//! `drover`: a thin command line over the library crates.

mod agent_cmd;
mod bench_cmd;
mod demo_cmd;
mod experiment_cmd;
mod flags;
mod fleet_cmd;
mod image_cmd;
mod lab_cmd;
mod manager_bench_cmd;
mod manager_cmd;
mod migration_flags;
mod numfmt;
mod resume_watch;
mod signals;
mod sim_cmd;
mod sim_fidelity_cmd;
mod sim_judge_cmd;
mod sim_live_cmd;
mod vm_cmd;
mod wan_cmd;
mod wan_exp_cmd;
mod wan_plan_cmd;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "drover",
    version,
    about = "Keeps QEMU/KVM clusters packed and their VMs fast"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run this host's agent (HTTP API for VMs, metrics and migrations).
    Agent(agent_cmd::AgentArgs),
    /// Run the cluster manager: watch every agent, decide with core, migrate through them.
    Manager(manager_cmd::ManagerArgs),
    /// Hosts as the running manager sees them; drain, undrain, wake.
    #[command(subcommand)]
    Host(fleet_cmd::HostCmd),
    /// The running manager's plans: list, show (with explanations), approve, cancel.
    #[command(subcommand)]
    Plan(fleet_cmd::PlanCmd),
    /// The running manager's migration results: list (newest first, by VM), show.
    #[command(subcommand)]
    Migration(fleet_cmd::MigrationCmd),
    /// VMs on agents, without a manager.
    #[command(subcommand)]
    Vm(vm_cmd::VmCommand),
    /// Guest image (kernel + initramfs with the workload binaries).
    #[command(subcommand)]
    Image(image_cmd::ImageCommand),
    /// A cluster of hosts on this machine (namespaces, shaped links, cgroups).
    #[command(subcommand)]
    Lab(lab_cmd::LabCommand),
    /// The reactive consolidation experiment on a 3-host lab with the manager, per technique:
    /// overload, relief, repack; a table, and a report folder with --report.
    Demo(demo_cmd::DemoArgs),
    /// Experiments on a real lab: `traffic-sensitive` (a group of network-bound VMs evacuated
    /// with all pre-copy, all post-copy and the traffic-sensitive group choice) and `wan-hybrid`
    /// (memory and a local disk over a WAN: pure pre-copy, pure post-copy, the model's hybrid).
    #[command(subcommand)]
    Experiment(experiment_cmd::ExperimentCmd),
    /// Boot a VM and a destination on this machine, migrate, and report.
    MigrateBench(bench_cmd::BenchArgs),
    /// Trace-driven datacenter simulator.
    Sim(sim_cmd::SimArgs),
}

/// The log filter when `DROVER_LOG` is not set: warnings, and for the daemons (whose log is
/// all an operator has) their own start-up and lifecycle lines too.
fn default_filter(command: &Command) -> &'static str {
    match command {
        Command::Agent(_) => "warn,drover_agent=info",
        Command::Manager(args) if args.is_daemon() => "warn,drover_manager=info",
        _ => "warn",
    }
}

/// Whether the command only prints a result, so that a closed stdout (`drover ... | head -1`)
/// should end it quietly, as it ends other Unix tools, instead of a "failed printing to stdout"
/// panic. Commands that serve, run children or talk to QEMU over Unix sockets keep Rust's
/// ignored SIGPIPE: for them a peer that hangs up must be an error they handle (a QMP socket of
/// a QEMU that died, a control client gone), never a silent death.
fn ends_quietly_on_closed_stdout(command: &Command) -> bool {
    use lab_cmd::LabCommand;
    !matches!(
        command,
        Command::Agent(_)
            | Command::Manager(_)
            | Command::MigrateBench(_)
            | Command::Demo(_)
            | Command::Experiment(_)
            | Command::Lab(LabCommand::DelayLine { .. } | LabCommand::Peer { .. })
    )
}

/// Restores the default SIGPIPE action (Rust's runtime ignores it before `main`), so a write
/// to a closed pipe ends the process as the signal does, exit status 128 + 13 in a shell.
fn default_sigpipe() {
    // SAFETY: setting a signal's disposition to SIG_DFL installs no handler and touches no
    // memory; it runs before any thread is started.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// Runs the command; a failure prints [`user_error`] and exits with status 1 (as a returned
/// error did), never with a backtrace.
fn main() -> std::process::ExitCode {
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{}", user_error(&e));
            std::process::ExitCode::FAILURE
        }
    }
}

/// A failure as the user reads it: `error: ` and the error with its causes on one line,
/// joined by `: ` as `{:#}` joins them, but a cause whose text the line already holds is not
/// repeated: many errors put their cause in their own message and also return it as their
/// `source()` (thiserror's `#[from]` with `{0}`), which `{:#}` printed twice ("... (os error
/// 2): ... (os error 2)"). Returning the error from `main` would print its `Debug` form, which
/// holds a whole backtrace whenever `RUST_BACKTRACE` is set (as it often is, for panics' sake).
fn user_error(e: &anyhow::Error) -> String {
    let mut text = e.to_string();
    for cause in e.chain().skip(1) {
        let cause = cause.to_string();
        if !text.contains(&cause) {
            text.push_str(": ");
            text.push_str(&cause);
        }
    }
    format!("error: {text}")
}

fn run() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if ends_quietly_on_closed_stdout(&cli.command) {
        default_sigpipe();
    }
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("DROVER_LOG").unwrap_or_else(|_| {
                tracing_subscriber::EnvFilter::new(default_filter(&cli.command))
            }),
        )
        .with_writer(std::io::stderr)
        // Colour codes only for a terminal: agents' logs go to files.
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    match cli.command {
        Command::Image(cmd) => image_cmd::run(cmd),
        Command::Sim(args) => sim_cmd::run(args),
        Command::MigrateBench(args) => bench_cmd::run(args),
        Command::Demo(args) => demo_cmd::run(args),
        Command::Experiment(cmd) => experiment_cmd::run(cmd),
        Command::Lab(cmd) => lab_cmd::run(cmd),
        Command::Agent(args) => agent_cmd::run(args),
        Command::Manager(args) => manager_cmd::run(args),
        Command::Vm(cmd) => vm_cmd::run(cmd),
        Command::Host(cmd) => fleet_cmd::run_host(cmd),
        Command::Plan(cmd) => fleet_cmd::run_plan(cmd),
        Command::Migration(cmd) => fleet_cmd::run_migration(cmd),
    }
}

#[cfg(test)]
mod tests {
    use super::user_error;

    /// A user's error is its chain of causes, without the backtrace anyhow captured.
    #[test]
    fn a_user_error_is_its_chain_without_a_backtrace() {
        let e = anyhow::anyhow!("no such file").context("reading --config x.toml");
        let text = user_error(&e);
        assert_eq!(text, "error: reading --config x.toml: no such file");
    }

    /// An error that quotes its cause and also returns it as its source prints it once.
    #[test]
    fn a_cause_already_in_the_message_is_not_repeated() {
        // As thiserror's `#[error("store x.db: {0}")] Store(#[from] io::Error)` makes it.
        #[derive(Debug)]
        struct Wrapped(std::io::Error);
        impl std::fmt::Display for Wrapped {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "store x.db: {}", self.0)
            }
        }
        impl std::error::Error for Wrapped {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.0)
            }
        }
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "no such file");
        let e = anyhow::Error::new(Wrapped(io)).context("starting the manager");
        assert_eq!(
            user_error(&e),
            "error: starting the manager: store x.db: no such file"
        );
        // Causes not quoted are all still there, in order.
        let e = anyhow::anyhow!("disk full")
            .context("writing x")
            .context("saving");
        assert_eq!(user_error(&e), "error: saving: writing x: disk full");
    }
}
