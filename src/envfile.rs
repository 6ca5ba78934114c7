//! Env files as systemd reads them (`EnvironmentFile=`): the one reader
//! of the shims' helper (`djshim-exec`, src/bin/djshim-exec/exec.rs), so that a shim
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
    /// Assignments whose name or value is not UTF-8 as systemd judges it
    /// (noncharacters such as U+FFFE and U+FDD0 count as invalid):
    /// systemd and the shim refuse the whole file.
    pub not_utf8: Vec<(usize, String)>,
    /// Lines that systemd versions read differently (a comment ending in
    /// a backslash: before 254 — Debian 12 has 252 — the next line is part
    /// of the comment, from 254 on it is read): the shim refuses the file,
    /// so that it never sees another environment than the unit.
    pub versions_differ: Vec<(usize, String)>,
    /// The line of a NUL byte: systemd 252 refuses the whole file
    /// (`load_env_file` fails with EBADMSG, the unit does not start), and
    /// so does the shim (exit 78).
    pub nul: Option<usize>,
}

impl Reading {
    /// Every finding that makes the file unfit, as `(line, message)`.
    pub fn problems(&self) -> Vec<(usize, String)> {
        let mut found: Vec<(usize, String)> = self
            .nul
            .iter()
            .map(|line| (*line, NUL.to_owned()))
            .collect();
        found.extend(self.versions_differ.iter().cloned());
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
                    "{key} is not UTF-8 as systemd reads it (invalid bytes or a noncharacter): \
                     systemd refuses the whole file, the shim too (exit 78)"
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

/// What a NUL byte in an env file means.
pub const NUL: &str = "a NUL byte: systemd refuses the whole file (the unit does not start), the \
                       shim too (exit 78)";

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
        parser.reading.nul = Some(bytes[..nul].split(|&b| b == b'\n').count());
        text = &bytes[..nul];
    }
    for &c in text {
        parser.feed(c);
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

    fn feed(&mut self, c: u8) {
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
                    self.reading.versions_differ.push((
                        self.line,
                        "a comment ends in a backslash: systemd before 254 (Debian 12 has 252) \
                         also skips the next line, newer systemd reads it; the shim refuses \
                         the file (exit 78): remove the backslash"
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

/// Whether `bytes` are UTF-8 as systemd's `utf8_is_valid` judges:
/// well-formed, and no noncharacter (U+FDD0–U+FDEF, U+xFFFE, U+xFFFF).
pub fn systemd_utf8(bytes: &[u8]) -> bool {
    std::str::from_utf8(bytes).is_ok_and(|text| {
        text.chars().all(|c| {
            let c = u32::from(c);
            !(0xFDD0..=0xFDEF).contains(&c) && c & 0xFFFE != 0xFFFE
        })
    })
}

/// Records one assignment systemd makes, or why it is skipped or refused.
fn push(reading: &mut Reading, line: usize, key: &[u8], value: &mut Vec<u8>) {
    let value = std::mem::take(value);
    let key_bytes = trim_blanks(key);
    let key = String::from_utf8_lossy(key_bytes);
    let key = key.as_ref();
    if !systemd_utf8(key_bytes) {
        reading
            .not_utf8
            .push((line, format!("the name `{}`", key.escape_debug())));
    } else if !systemd_utf8(&value) {
        reading
            .not_utf8
            .push((line, format!("the value of `{}`", key.escape_debug())));
    } else if !valid_name(key) {
        reading.skipped.push((
            line,
            format!("`{}` is not a variable name", key.escape_debug()),
        ));
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

/// `key` without its trailing blanks.
fn trim_blanks(key: &[u8]) -> &[u8] {
    let end = key.iter().rposition(|&b| !space(b)).map_or(0, |i| i + 1);
    &key[..end]
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
        assert_eq!(r.versions_differ.len(), 1, "{r:?}");
        assert_eq!(r.problems().len(), 2, "{r:?}");
        assert_eq!(r.assignments.len(), 1);
        assert_eq!(
            read(b"A=\xff\n").not_utf8,
            [(1, "the value of `A`".to_owned())]
        );
        let nul = read(b"A=1\0B=2\n");
        assert_eq!(nul.nul, Some(1));
        assert_eq!(nul.problems(), vec![(1, NUL.to_owned())]);
    }

    /// systemd's own test vectors (`src/test/test-env-file.c`: every
    /// `load_env_file` case, with the values it expects, after the
    /// invalid names that `EnvironmentFile=` drops). Where systemd
    /// versions differ (a comment ending in `\`), the values are 254's
    /// and the reading says the versions differ.
    #[test]
    #[allow(clippy::too_many_lines)] // a table of systemd's cases
    fn systemds_test_vectors() {
        struct Case {
            text: &'static str,
            want: &'static [(&'static str, &'static str)],
            versions_differ: bool,
        }
        let cases = [
            // load_env_file_1 (in file order; the last `a` wins, as in the
            // unit's environment, whose data[0] is `a=a`)
            Case {
                text: "a=a\na=b\na=b\na=a\nb=b\\\nc\nd= d\\\ne  \\\nf  \ng=g\\ \nh= ąęół\\ śćńźżμ \ni=i\\",
                want: &[
                    ("a", "a"),
                    ("a", "b"),
                    ("a", "b"),
                    ("a", "a"),
                    ("b", "bc"),
                    ("d", "de  f"),
                    ("g", "g "),
                    ("h", "ąęół śćńźżμ"),
                    ("i", "i"),
                ],
                versions_differ: false,
            },
            // load_env_file_2
            Case {
                text: "a=a\\\n",
                want: &[("a", "a")],
                versions_differ: false,
            },
            // load_env_file_3
            Case {
                text: "#SPAMD_ARGS=\"-d --socketpath=/var/lib/bulwark/spamd \\\n\
                       #--nouser-config                                     \\\n\
                       normal1=line\\\n111\n\
                       ;normal=ignored                                      \\\n\
                       normal2=line222\n\
                       normal ignored                                       \\\n",
                want: &[("normal1", "line111"), ("normal2", "line222")],
                versions_differ: true,
            },
            // load_env_file_4
            Case {
                text: "# Generated\n\nHWMON_MODULES=\"coretemp f71882fg\"\n\n# For compatibility reasons\n\nMODULE_0=coretemp\nMODULE_1=f71882fg",
                want: &[
                    ("HWMON_MODULES", "coretemp f71882fg"),
                    ("MODULE_0", "coretemp"),
                    ("MODULE_1", "f71882fg"),
                ],
                versions_differ: false,
            },
            // load_env_file_5
            Case {
                text: "a=\nb=",
                want: &[("a", ""), ("b", "")],
                versions_differ: false,
            },
            // load_env_file_6
            Case {
                text: "a=\\ \\n \\t \\x \\y \\' \nb= \\$'                  \nc= ' \\n\\t\\$\\`\\\\\n'   \nd= \" \\n\\t\\$\\`\\\\\n\"   \n",
                want: &[
                    ("a", " n t x y '"),
                    ("b", "$'"),
                    ("c", " \\n\\t\\$\\`\\\\\n"),
                    ("d", " \\n\\t$`\\\n"),
                ],
                versions_differ: false,
            },
            // parse_env_file ("export nine" and "invalid line" are no names)
            Case {
                text: "one=BAR   \n# comment\n # comment \n ; comment \n  two   =   bar    \n\
                       invalid line\ninvalid line #comment\nthree = \"333\nxxxx\"\n\
                       four = '44\\\"44'\nfive = \"55\\\"55\" \"FIVE\" cinco   \n\
                       six = seis sechs\\\n sis\nseven=\"sevenval\" #nocomment\n\
                       eight=eightval #nocomment\nexport nine=nineval\nten=ignored\nten=ignored\nten=\n\
                       eleven=\\value\ntwelve=\"\\value\"\nthirteen='\\value'",
                want: &[
                    ("one", "BAR"),
                    ("two", "bar"),
                    ("three", "333\nxxxx"),
                    ("four", "44\\\"44"),
                    ("five", "55\"55FIVEcinco"),
                    ("six", "seis sechs sis"),
                    ("seven", "sevenval#nocomment"),
                    ("eight", "eightval #nocomment"),
                    ("ten", "ignored"),
                    ("ten", "ignored"),
                    ("ten", ""),
                    ("eleven", "value"),
                    ("twelve", "\\value"),
                    ("thirteen", "\\value"),
                ],
                versions_differ: false,
            },
            // parse_multiline_env_file
            Case {
                text: "one=BAR\\\n\\ \\ \\ \\ VAR\\\n\\\tGAR\n#comment\ntwo=\"bar\\\n    var\\\n\tgar\"\n\
                       #comment\ntri=\"bar \\\n    var \\\n\tgar \"\n",
                want: &[
                    ("one", "BAR    VAR\tGAR"),
                    ("two", "bar    var\tgar"),
                    ("tri", "bar     var \tgar "),
                ],
                versions_differ: false,
            },
            // load_env_file_pairs
            Case {
                text: "NAME=\"Arch Linux\"\nID=arch\nPRETTY_NAME=\"Arch Linux\"\nANSI_COLOR=\"0;36\"\n\
                       HOME_URL=\"https://www.archlinux.org/\"\nSUPPORT_URL=\"https://bbs.archlinux.org/\"\n\
                       BUG_REPORT_URL=\"https://bugs.archlinux.org/\"\n",
                want: &[
                    ("NAME", "Arch Linux"),
                    ("ID", "arch"),
                    ("PRETTY_NAME", "Arch Linux"),
                    ("ANSI_COLOR", "0;36"),
                    ("HOME_URL", "https://www.archlinux.org/"),
                    ("SUPPORT_URL", "https://bbs.archlinux.org/"),
                    ("BUG_REPORT_URL", "https://bugs.archlinux.org/"),
                ],
                versions_differ: false,
            },
        ];
        for case in &cases {
            let r = read(case.text.as_bytes());
            let got: Vec<(String, String)> = r
                .assignments
                .iter()
                .map(|a| (a.key.clone(), String::from_utf8(a.value.clone()).unwrap()))
                .collect();
            assert_eq!(got, pairs(case.want), "{:?}", case.text);
            assert_eq!(
                !r.versions_differ.is_empty(),
                case.versions_differ,
                "{:?}: {r:?}",
                case.text
            );
            assert!(r.not_utf8.is_empty(), "{r:?}");
        }
        // load_env_file_invalid_utf8: noncharacters in a name or a value
        // make systemd refuse the whole file (-EINVAL).
        for text in [
            "fo\u{fffe}o=bar",
            "foo=b\u{ffff}ar",
            "baz=hello world\u{fffe}",
            "x=\u{fdd0}",
        ] {
            let r = read(text.as_bytes());
            assert_eq!(r.not_utf8.len(), 1, "{text:?}: {r:?}");
            assert!(r.assignments.is_empty());
        }
        assert_eq!(read(b"k\xffey=1\n").not_utf8.len(), 1);
    }
}
