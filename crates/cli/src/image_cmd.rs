//! `drover image ...`: builds the guest image (kernel + initramfs) for test VMs.

use std::path::PathBuf;

use anyhow::Context;
use drover_qemu::image::{self, GuestImage, Progress};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

#[derive(clap::Subcommand)]
pub enum ImageCommand {
    /// Build kernel + initramfs into the cache (no-op when up to date).
    Build {
        /// Output directory (default: <cache>/image-<guest build>-v<N>, one per guest
        /// binary, the cache being $DROVER_CACHE, $XDG_CACHE_HOME/drover or ~/.cache/drover).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Print the result as JSON on stdout.
        #[arg(long)]
        json: bool,
    },
}

pub fn run(cmd: ImageCommand) -> anyhow::Result<()> {
    match cmd {
        ImageCommand::Build { out, json } => build(out, json),
    }
}

fn build(out: Option<PathBuf>, json: bool) -> anyhow::Result<()> {
    let out = match out {
        Some(dir) => dir,
        None => image::image_dir_in(&image::default_cache_dir()?),
    };
    let bar = BarProgress::new();
    let img = image::build(&out, &bar)
        .with_context(|| format!("building the guest image in {}", out.display()))?;
    print_result(&img, json)
}

fn print_result(img: &GuestImage, json: bool) -> anyhow::Result<()> {
    if json {
        let v = serde_json::json!({
            "kernel": img.kernel,
            "initrd": img.initrd,
            "cmdline_example": image::kernel_cmdline("idle"),
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        println!("kernel: {}", img.kernel.display());
        println!("initrd: {}", img.initrd.display());
    }
    Ok(())
}

/// An indicatif bar on stderr, one stage at a time (hidden when stderr is not a terminal).
struct BarProgress {
    bar: ProgressBar,
}

impl BarProgress {
    fn new() -> Self {
        let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
        let style = ProgressStyle::with_template("{msg:>10} [{bar:40}] {bytes}/{total_bytes}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
        bar.set_style(style);
        BarProgress { bar }
    }
}

impl Progress for BarProgress {
    fn stage(&self, name: &str, total: u64) {
        // Module counts are not bytes; a plain position display reads better for them.
        let template = if name == "modules" {
            "{msg:>10} [{bar:40}] {pos}/{len}"
        } else {
            "{msg:>10} [{bar:40}] {bytes}/{total_bytes}"
        };
        if let Ok(style) = ProgressStyle::with_template(template) {
            self.bar.set_style(style.progress_chars("=> "));
        }
        self.bar.set_message(name.to_string());
        self.bar.set_length(total);
        self.bar.set_position(0);
    }

    fn advance(&self, n: u64) {
        self.bar.inc(n);
    }

    fn finish(&self) {
        self.bar.finish_and_clear();
    }
}
