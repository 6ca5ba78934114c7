//! What a command writes as it goes: each timed piece of work (a build's
//! export, a plan's step) says on stderr when it starts and when it ends,
//! with its duration, so a long build or migration shows that it is
//! alive, and a failure names it; a result's line goes to stdout.

use std::io::Write;
use std::time::Instant;

use camino::Utf8Path;

use crate::error::Error;

/// One line of a command's result on stdout (where a failed write, a
/// closed pipe say, is an error to report quietly).
pub fn say(out: &mut dyn Write, line: std::fmt::Arguments<'_>) -> Result<(), Error> {
    writeln!(out, "{line}").map_err(|e| Error::io("write", Utf8Path::new("stdout"), e))
}

/// A result as a table on stdout: each column as wide as its widest cell,
/// two spaces between, the last column unpadded.
pub fn table<R: AsRef<[String]>>(out: &mut dyn Write, rows: &[R]) -> Result<(), Error> {
    let columns = rows.first().map_or(0, |r| r.as_ref().len());
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            rows.iter()
                .map(|r| r.as_ref()[c].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    for row in rows {
        let row = row.as_ref();
        let mut line = String::new();
        for (c, cell) in row.iter().enumerate() {
            if c + 1 == row.len() {
                line.push_str(cell);
            } else {
                line.push_str(cell);
                line.push_str(&" ".repeat(widths[c] - cell.chars().count() + 2));
            }
        }
        say(out, format_args!("{line}"))?;
    }
    Ok(())
}

/// Runs `f` as the piece of work `name`.
///
/// The lines are written without panicking on a failed write: after a
/// hang-up the terminal is gone, and the plan must still be undone.
pub fn timed<T>(name: &str, f: impl FnOnce() -> Result<T, Error>) -> Result<T, Error> {
    let _ = writeln!(std::io::stderr(), "djshim: {name} …");
    let start = Instant::now();
    let result = f();
    let seconds = start.elapsed().as_secs_f64();
    match result {
        Ok(value) => {
            let _ = writeln!(std::io::stderr(), "djshim: {name}: done in {seconds:.2} s");
            Ok(value)
        }
        Err(e) => {
            let _ = writeln!(
                std::io::stderr(),
                "djshim: {name}: failed after {seconds:.2} s"
            );
            Err(Error::Step {
                step: name.to_owned(),
                source: Box::new(e),
            })
        }
    }
}
