//! Env files as systemd reads them (`EnvironmentFile=`): the one reader
//! of the shims' helper (`djshim-exec`, [`crate::exec`]), so that a shim
//! sees what the instance's units see, and of `djshim check`, which says
//! where the shim refuses a file and where an older systemd reads it
//! otherwise. Pure: bytes in, findings out.
//!
//! The rules, from systemd's env-file parser: `#` or `;` first on a line
//! starts a comment; `KEY=VALUE`, blanks around the key and before the
//! value skipped, trailing blanks of an unquoted value dropped; `'…'` is
//! literal, `"…"` knows `\"`, `\\`, `` \` ``, `\$` and a backslash-newline;
//! quoted parts may span lines and follow one another; outside quotes a
//! backslash takes the next byte literally and joins lines; CR ends a line
//! as LF does. A line without `=` and an assignment to an invalid name are
//! skipped.

/// One assignment that systemd makes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assignment {
    /// The line the assignment ends on.
    pub line: usize,
    pub key: String,
    pub value: Vec<u8>,
}

/// What a reading of one file found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Reading {
    /// Assignments to valid names, in file order.
    pub assignments: Vec<Assignment>,
    /// Lines systemd (and the shim) skip: no `=`, or an invalid name.
    pub skipped: Vec<(usize, String)>,
    /// Names the shim refuses to set ([`refused`]), with their lines.
    pub refused: Vec<(usize, String)>,
    /// Names whose value is not UTF-8: systemd and the shim refuse the file.
    pub not_utf8: Vec<(usize, String)>,
    /// What else a reader of the file should know: a NUL byte, a line
    /// that systemd before 254 reads otherwise.
    pub notes: Vec<(usize, String)>,
}

impl Reading {
    /// Every finding that makes the file unfit, as `(line, message)`.
    pub fn problems(&self) -> Vec<(usize, String)> {
        let mut found = self.notes.clone();
        found.extend(self.refused.iter().map(|(line, key)| {
            (
                *line,
                format!("`{key}` may not be set from an env file: the shim refuses it (exit 78)"),
            )
        }));
        found.extend(self.not_utf8.iter().map(|(line, key)| {
            (
                *line,
                format!(
                    "the value of `{key}` is not UTF-8: systemd refuses the whole file, the shim too (exit 78)"
                ),
            )
        }));
        found.sort_by_key(|(line, _)| *line);
        found
    }
}

/// Names an env file may not set: they would steer the dynamic loader,
/// djshim, the shim's own variables, or the shell that reads the file.
pub fn refused(key: &str) -> bool {
    key.starts_with("LD_")
        || key.starts_with("DJSHIM_")
        || key.starts_with("djshim_")
        || matches!(
            key,
            "UID" | "EUID" | "PPID" | "SHELLOPTS" | "BASHOPTS" | "GROUPS"
        )
}

fn valid_name(key: &str) -> bool {
    let mut bytes = key.bytes();
    bytes
        .next()
        .is_some_and(|b| b == b'_' || b.is_ascii_alphabetic())
        && bytes.all(|b| b == b'_' || b.is_ascii_alphanumeric())
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum State {
    PreKey,
    Key,
    PreValue,
    Value,
    ValueEscape,
    Single,
    Double,
    DoubleEscape,
    Comment,
    CommentEscape,
}

/// Reads `bytes` the way systemd does, noting what the shim refuses.
pub fn read(bytes: &[u8]) -> Reading {
    let mut parser = Parser {
        state: State::PreKey,
        line: 1,
        key: Vec::new(),
        value: Vec::new(),
        blank: Vec::new(),
        reading: Reading::default(),
    };
    let mut text = bytes;
    if let Some(nul) = bytes.iter().position(|&b| b == 0) {
        let line = bytes[..nul].split(|&b| b == b'\n').count();
        parser.reading.notes.push((
            line,
            "a NUL byte: systemd and the shim ignore the rest of the file".into(),
        ));
        text = &bytes[..nul];
    }
    for &c in text {
        parser.step(c);
        if c == b'\n' {
            parser.line += 1;
        }
    }
    parser.finish()
}

/// systemd's env-file state machine, one byte at a time.
struct Parser {
    state: State,
    line: usize,
    key: Vec<u8>,
    value: Vec<u8>,
    /// Blanks after the value so far: kept only if more of the value follows.
    blank: Vec<u8>,
    reading: Reading,
}

fn newline(c: u8) -> bool {
    c == b'\n' || c == b'\r'
}

fn space(c: u8) -> bool {
    c == b' ' || c == b'\t'
}

impl Parser {
    fn push(&mut self) {
        push(&mut self.reading, self.line, &self.key, &mut self.value);
    }

    fn no_value(&mut self) {
        let key = String::from_utf8_lossy(&self.key)
            .escape_debug()
            .to_string();
        self.reading
            .skipped
            .push((self.line, format!("no `=` in `{key}`")));
    }

    fn step(&mut self, c: u8) {
        match self.state {
            State::PreKey => {
                if c == b'#' || c == b';' {
                    self.state = State::Comment;
                } else if !(space(c) || newline(c)) {
                    self.state = State::Key;
                    self.key = vec![c];
                }
            }
            State::Key => {
                if newline(c) {
                    self.no_value();
                    self.state = State::PreKey;
                } else if c == b'=' {
                    self.state = State::PreValue;
                    self.value.clear();
                    self.blank.clear();
                } else {
                    self.key.push(c);
                }
            }
            State::PreValue => match c {
                c if newline(c) => {
                    self.push();
                    self.state = State::PreKey;
                }
                b'\'' => self.state = State::Single,
                b'"' => self.state = State::Double,
                b'\\' => self.state = State::ValueEscape,
                c if space(c) => {}
                c => {
                    self.state = State::Value;
                    self.value.push(c);
                }
            },
            State::Value => match c {
                c if newline(c) => {
                    self.push();
                    self.state = State::PreKey;
                }
                b'\\' => {
                    self.state = State::ValueEscape;
                    self.value.append(&mut self.blank);
                }
                c if space(c) => self.blank.push(c),
                c => {
                    self.value.append(&mut self.blank);
                    self.value.push(c);
                }
            },
            State::ValueEscape => {
                self.state = State::Value;
                if !newline(c) {
                    self.value.push(c);
                }
            }
            State::Single => match c {
                b'\'' => self.state = State::PreValue,
                c => self.value.push(c),
            },
            State::Double => match c {
                b'"' => self.state = State::PreValue,
                b'\\' => self.state = State::DoubleEscape,
                c => self.value.push(c),
            },
            State::DoubleEscape => {
                self.state = State::Double;
                match c {
                    b'"' | b'\\' | b'`' | b'$' => self.value.push(c),
                    b'\n' => {}
                    c => self.value.extend([b'\\', c]),
                }
            }
            State::Comment => {
                if c == b'\\' {
                    self.state = State::CommentEscape;
                } else if newline(c) {
                    self.state = State::PreKey;
                }
            }
            State::CommentEscape => {
                if newline(c) {
                    self.reading.notes.push((
                        self.line,
                        "a comment ends in a backslash: systemd before 254 (Debian 12 has 252) \
                         also skips the next line, the shim and newer systemd read it"
                            .into(),
                    ));
                    self.state = State::PreKey;
                } else {
                    self.state = State::Comment;
                }
            }
        }
    }

    /// The end of the file ends an unfinished value too (an open quote
    /// included).
    fn finish(mut self) -> Reading {
        match self.state {
            State::PreValue
            | State::Value
            | State::ValueEscape
            | State::Single
            | State::Double
            | State::DoubleEscape => self.push(),
            State::Key => self.no_value(),
            _ => {}
        }
        self.reading
    }
}

/// Records one assignment systemd makes, or why it is skipped or refused.
fn push(reading: &mut Reading, line: usize, key: &[u8], value: &mut Vec<u8>) {
    let key = String::from_utf8_lossy(key);
    let key = key.trim_end_matches([' ', '\t']);
    let value = std::mem::take(value);
    if !valid_name(key) {
        reading.skipped.push((
            line,
            format!("`{}` is not a variable name", key.escape_debug()),
        ));
    } else if std::str::from_utf8(&value).is_err() {
        reading.not_utf8.push((line, key.to_owned()));
    } else if refused(key) {
        reading.refused.push((line, key.to_owned()));
    } else {
        reading.assignments.push(Assignment {
            line,
            key: key.to_owned(),
            value,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(text: &str) -> Vec<(String, String)> {
        read(text.as_bytes())
            .assignments
            .into_iter()
            .map(|a| (a.key, String::from_utf8(a.value).unwrap()))
            .collect()
    }

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn reads_as_systemd_does() {
        assert_eq!(
            values("A=1\r\n\r\nB=\"x\" # not a comment\nC=\"open\nD=2"),
            pairs(&[("A", "1"), ("B", "x# not a comment"), ("C", "open\nD=2")])
        );
        assert_eq!(
            values("  K  =  v w  \nE=a\\ \\\nb\nQ='a\\b' \"c\\$d\\e\"\n"),
            pairs(&[("K", "v w"), ("E", "a b"), ("Q", "a\\bc$d\\e")])
        );
        assert_eq!(values("X=a\"b\"\n"), pairs(&[("X", "a\"b\"")]));
    }

    #[test]
    fn skips_what_systemd_skips_and_notes_what_the_shim_refuses() {
        let r = read(b"export A=1\nnot a line\n2FA=x\nLD_PRELOAD=/x.so\n# c \\\nB=1\n");
        assert_eq!(r.skipped.len(), 3, "{r:?}");
        assert_eq!(r.refused, [(4, "LD_PRELOAD".to_owned())], "{r:?}");
        assert_eq!(r.notes.len(), 1, "{r:?}");
        assert_eq!(r.problems().len(), 2, "{r:?}");
        assert_eq!(r.assignments.len(), 1);
        assert_eq!(read(b"A=\xff\n").not_utf8, [(1, "A".to_owned())]);
        let nul = read(b"A=1\0B=2\n");
        assert_eq!(nul.notes.len(), 1);
        assert_eq!(nul.assignments.len(), 1, "the rest is ignored: {nul:?}");
    }
}
