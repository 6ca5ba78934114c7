//! What is installed with djshim: the helper binary (`djshim-exec`) beside
//! this program, which `generate` and the operations copy beside the
//! shims. The one read of it, so that the pipeline (render, layout) stays
//! without I/O: callers hand its bytes to [`crate::render::helper`].

use camino::Utf8PathBuf;

use crate::error::Error;

/// The shims' helper, to be copied beside the shims: the `djshim-exec`
/// installed beside this program. A copy, not a reference, so that it has
/// the owner and the trust of the shims that exec it, and stays the
/// version they were written for.
pub fn helper_binary() -> Result<Vec<u8>, Error> {
    let source = std::env::current_exe()
        .ok()
        .and_then(|exe| Utf8PathBuf::from_path_buf(exe.with_file_name("djshim-exec")).ok())
        .ok_or_else(|| Error::problem("cannot tell where djshim itself is installed"))?;
    std::fs::read(&source).map_err(|e| {
        Error::with_help(
            format!("the shims' helper {source} cannot be read ({e})"),
            "it is built and installed with djshim (`cargo build`, `cargo install --path .`)",
        )
    })
}
