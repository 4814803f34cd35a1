//! `quantscope`: with no sub-command it opens the window; with one it runs the command-line tool.

mod cli;

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    // `quantscope formats | head` should end quietly, as other command-line tools do
    #[cfg(unix)]
    // SAFETY: restoring the default SIGPIPE disposition before any thread starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    // glibc raises its mmap threshold to 32 MiB after a large free and then keeps freed buffers
    // below it in its heaps; a fixed 1 MiB threshold hands them back to the kernel
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes the allocator's tuning, before any thread starts.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
    }
    let args = cli::Cli::parse();
    let result = match args.command {
        Some(cmd) => cli::run(cmd),
        None => open_window(args.model),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // one line: the cause chain joined
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(feature = "gui")]
fn open_window(model: Option<std::path::PathBuf>) -> anyhow::Result<()> {
    quantscope::gui::run(model).map_err(|e| anyhow::anyhow!("could not open the window: {e}"))
}

#[cfg(not(feature = "gui"))]
fn open_window(_model: Option<std::path::PathBuf>) -> anyhow::Result<()> {
    anyhow::bail!("this build has no window (built without the `gui` feature); run `quantscope --help` for the command-line tool")
}
