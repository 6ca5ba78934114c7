//! The leaf escapers: a string as one word of POSIX sh, of a systemd unit
//! setting, of a crontab command, a Nix or a TOML string. Pure functions of their input, used by
//! the render stage (through the template engine's auto-escape) and by
//! process.rs (the command line in every error).

use std::borrow::Cow;
use std::fmt::Write as _;

/// Quotes `text` as one POSIX sh word. Words made only of characters that
/// no shell treats specially stay bare; anything else goes in double quotes
/// with `\`, `"`, `$` and `` ` `` backslash-escaped: inside double quotes
/// those four are the only characters a backslash or the shell acts on
/// (POSIX 2.2.3), so the word reaches the command byte for byte, newlines
/// included. (Single quotes would do as well, but shellcheck reads a `$`
/// inside them as a likely mistake.)
pub fn sh_quote(text: &str) -> Cow<'_, str> {
    let plain = |b: u8| b.is_ascii_alphanumeric() || b"@%+=:,./_-".contains(&b);
    if !text.is_empty() && text.bytes().all(plain) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        if matches!(c, '\\' | '"' | '$' | '`') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    Cow::Owned(out)
}

/// Quotes `text` as one word of a systemd unit setting: bare when plain,
/// else in double quotes with `\\` and `"` escaped and control characters
/// written as C escapes, which systemd undoes. `%` is doubled (specifiers
/// apply everywhere); `$` is doubled only where `$` expands (`exec`: the
/// `Exec*=` lines), since in `Environment=` it is literal. A lone `;`, which
/// would separate two commands, becomes `\;`.
pub fn systemd_word(text: &str, exec: bool) -> Cow<'_, str> {
    let plain = |b: u8| b.is_ascii_alphanumeric() || b"/._-:@+=,".contains(&b);
    if !text.is_empty() && text.bytes().all(plain) {
        return Cow::Borrowed(text);
    }
    if text == ";" {
        return Cow::Borrowed("\\;");
    }
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '%' => out.push_str("%%"),
            '$' if exec => out.push_str("$$"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_ascii_control() => {
                let _ = write!(out, "\\x{:02x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    Cow::Owned(out)
}

/// `text` as the value of a systemd setting that takes it unquoted
/// (`EnvironmentFile=`, `WorkingDirectory=`, `ListenStream=`, and the path
/// lists `ReadWritePaths=`, `StateDirectory=` and tmpfiles.d's path field,
/// which split on spaces and undo quotes and backslashes): as is, `%`
/// doubled (specifiers apply there too). `None` when no spelling carries
/// it: whitespace, control characters, quotes, backslashes.
pub fn systemd_raw(text: &str) -> Option<Cow<'_, str>> {
    let carried = |c: char| !(c.is_whitespace() || c.is_control() || "\"'\\".contains(c));
    if text.is_empty() || !text.chars().all(carried) {
        return None;
    }
    Some(if text.contains('%') {
        Cow::Owned(text.replace('%', "%%"))
    } else {
        Cow::Borrowed(text)
    })
}

/// `text` as a Nix double-quoted string: `\`, `"` and the `${` of an
/// interpolation escaped, newline, tab and return as `\n`, `\t`, `\r`;
/// any other character stands for itself (Nix strings hold any byte but
/// NUL, which the model refuses).
pub fn nix_str(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '$' if chars.peek() == Some(&'{') => out.push_str("\\$"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// `text` as a TOML basic string: `\` and `"` escaped, control
/// characters as `\uXXXX`.
pub fn toml_str(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04X}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Quotes `text` for the command field of a crontab line, which cron hands
/// to /bin/sh after turning every unescaped `%` into a newline: sh quoting,
/// then each `%` escaped.
pub fn cron_word(text: &str) -> Cow<'_, str> {
    match sh_quote(text) {
        Cow::Borrowed(s) if !s.contains('%') => Cow::Borrowed(s),
        quoted => Cow::Owned(quoted.replace('%', "\\%")),
    }
}
