//! The named steps of a build or a deploy: each says on stderr when it
//! starts and when it ends, with its duration, so a long build or migration
//! shows that it is alive; a failure names its step.

use std::time::Instant;

use crate::error::Error;

/// Runs `f` as the step `name`.
pub fn step<T>(name: &str, f: impl FnOnce() -> Result<T, Error>) -> Result<T, Error> {
    eprintln!("djshim: {name} …");
    let start = Instant::now();
    let result = f();
    let seconds = start.elapsed().as_secs_f64();
    match result {
        Ok(value) => {
            eprintln!("djshim: {name}: done in {seconds:.2} s");
            Ok(value)
        }
        Err(e) => {
            eprintln!("djshim: {name}: failed after {seconds:.2} s");
            Err(Error::Step {
                step: name.to_owned(),
                source: Box::new(e),
            })
        }
    }
}
