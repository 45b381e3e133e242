//! `drover-delay-line <config.json>`: one WAN pair's delay line (see drover_lab::wan), the
//! same program `drover lab delay-line` runs; the lab's own tests spawn this one.

use std::process::ExitCode;

fn main() -> ExitCode {
    let Some(config) = std::env::args_os().nth(1) else {
        eprintln!("usage: drover-delay-line <config.json>");
        return ExitCode::from(2);
    };
    match drover_lab::delay_io::run_from_file(std::path::Path::new(&config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("delay line: {e}");
            ExitCode::FAILURE
        }
    }
}
