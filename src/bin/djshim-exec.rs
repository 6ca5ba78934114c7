//! The shims' helper: see `src/exec.rs`. A binary of its own, small and
//! quick to start, that `djshim generate` copies next to the shims; it
//! takes the four modules it needs from the library's sources rather than
//! the library, whose templates and parsers it has no use for.

#[allow(dead_code)]
#[path = "../envfile.rs"]
mod envfile;
#[allow(dead_code)]
#[path = "../envrule.rs"]
mod envrule;
#[path = "../exec.rs"]
mod exec;
#[path = "../relay.rs"]
mod relay;

fn main() -> std::process::ExitCode {
    exec::main()
}
