//! The window.
pub fn run() -> eframe::Result {
    Ok(())
}
