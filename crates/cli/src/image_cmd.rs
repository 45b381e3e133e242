//! `drover image ...` (filled in by the guest-image work).

#[derive(clap::Subcommand)]
pub enum ImageCommand {
    /// Build kernel + initramfs into the cache (no-op when up to date).
    Build,
}

pub fn run(_cmd: ImageCommand) -> anyhow::Result<()> {
    anyhow::bail!("not implemented yet")
}
