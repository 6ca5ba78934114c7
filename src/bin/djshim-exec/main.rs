//! The shims' helper, `djshim-exec`: see `exec.rs` beside this file (and
//! `relay.rs`, its terminal relay). A binary of its own, small and quick
//! to start, that `djshim generate` copies next to the shims; it takes the
//! two modules it shares with the library (the env-file parser and rule)
//! from the library's sources rather than the library, whose templates and
//! parsers it has no use for.

#[allow(dead_code)]
#[path = "../../envfile.rs"]
mod envfile;
#[allow(dead_code)]
#[path = "../../envrule.rs"]
mod envrule;
mod exec;
mod relay;

fn main() -> std::process::ExitCode {
    exec::main()
}
