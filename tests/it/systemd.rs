//! A fast stand-in for systemd, beside the real one of realunits.rs: unit
//! files read as systemd reads them, and a service started exactly as its
//! unit says: `ExecStart=` split and unescaped by systemd's rules, an
//! environment of `Environment=` and `EnvironmentFile=` only, the
//! `WorkingDirectory=`. (`User=` is not applied: the tests run as root.)
//! The tests that check many variants of one unit use it; what only
//! systemd can show (sockets, timers, accounts, sandboxing) runs under the
//! real one.

use std::collections::BTreeMap;
use std::fs;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A unit file as systemd reads it: settings by section and key, in order.
#[derive(Debug, Default)]
pub struct Unit {
    settings: Vec<(String, String, String)>,
}

impl Unit {
    pub fn parse(text: &str) -> Unit {
        let mut unit = Unit::default();
        let mut section = String::new();
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
                continue;
            }
            if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
                name.clone_into(&mut section);
                continue;
            }
            let (key, value) = line.split_once('=').expect("key=value");
            unit.settings.push((
                section.clone(),
                key.trim().to_owned(),
                value.trim().to_owned(),
            ));
        }
        unit
    }

    pub fn all(&self, key: &str) -> Vec<&str> {
        self.settings
            .iter()
            .filter(|(_, k, _)| k == key)
            .map(|(_, _, v)| v.as_str())
            .collect()
    }

    pub fn one(&self, key: &str) -> &str {
        let values = self.all(key);
        assert_eq!(values.len(), 1, "{key}: {values:?}");
        values[0]
    }

    /// `Environment=` lines as systemd reads them: words unquoted and
    /// C-unescaped, `%%` made `%`, `$` left alone.
    pub fn environment(&self) -> BTreeMap<String, String> {
        self.all("Environment")
            .into_iter()
            .flat_map(|v| words(v, false))
            .map(|w| {
                let (k, v) = w.split_once('=').unwrap();
                (k.to_owned(), v.to_owned())
            })
            .collect()
    }

    /// `ExecStart=` as systemd reads it: as above, and `$$` made `$`.
    pub fn exec(&self) -> Vec<String> {
        words(self.one("ExecStart"), true)
    }
}

/// systemd's word splitting (`extract_first_word` with unquoting and
/// C-unescaping), then its specifier and `$` unescaping.
pub fn words(value: &str, exec: bool) -> Vec<String> {
    let mut out = Vec::new();
    let mut chars = value.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.peek().is_none() {
            return out;
        }
        let (mut word, mut quote) = (String::new(), None);
        while let Some(c) = chars.next() {
            match (c, quote) {
                ('\\', _) => match chars.next().unwrap() {
                    'n' => word.push('\n'),
                    't' => word.push('\t'),
                    'r' => word.push('\r'),
                    'x' => {
                        let hex: String = [chars.next().unwrap(), chars.next().unwrap()]
                            .iter()
                            .collect();
                        word.push(char::from(u8::from_str_radix(&hex, 16).unwrap()));
                    }
                    other => word.push(other),
                },
                ('"' | '\'', None) => quote = Some(c),
                (c, Some(q)) if c == q => quote = None,
                (c, None) if c.is_whitespace() => break,
                (c, _) => word.push(c),
            }
        }
        let word = word.replace("%%", "\u{0}");
        // A specifier or a variable systemd would expand: the stand-in
        // cannot, so it refuses rather than guess.
        assert!(
            !word.contains('%'),
            "the stand-in cannot expand the specifier in {value:?}: test it under the real \
             systemd (realunits.rs)"
        );
        let word = if exec { dollars(&word, value) } else { word };
        out.push(word.replace('\u{0}', "%"));
    }
}

/// `$$` made `$`; any other `$` is a variable systemd would expand, which
/// the stand-in refuses.
fn dollars(word: &str, value: &str) -> String {
    let mut out = String::new();
    let mut chars = word.chars();
    while let Some(c) = chars.next() {
        if c == '$' {
            assert!(
                chars.next() == Some('$'),
                "the stand-in cannot expand the variable in {value:?}: test it under the real \
                 systemd (realunits.rs)"
            );
        }
        out.push(c);
    }
    out
}

impl Unit {
    /// The service's command as systemd would start it.
    pub fn command(&self) -> Command {
        let argv = self.exec();
        let mut env = self.environment();
        for file in self.all("EnvironmentFile") {
            env.extend(env_file(file.trim_start_matches('-')));
        }
        let mut cmd = Command::new(&argv[0]);
        cmd.args(&argv[1..]).env_clear().envs(&env);
        if let Some(dir) = self.all("WorkingDirectory").first() {
            cmd.current_dir(dir);
        }
        cmd
    }
}

/// A free loopback port.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn http_get(port: u16) -> Option<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    stream
        .write_all(b"GET / HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    Some(response)
}

/// Reads an env file of plain `KEY=value` lines (and comments), as any
/// reader does. It is not djshim's parser (src/envfile.rs, which this would
/// only echo): what systemd's syntax does beyond that — quotes, escapes,
/// continuation lines — is refused here, and tested against systemd's own
/// test vectors (envfiles.rs) and under the real systemd (realunits.rs).
pub fn env_file(path: &str) -> Vec<(String, String)> {
    let text = fs::read_to_string(path).unwrap();
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        assert!(
            !line.contains(['"', '\'', '\\']),
            "the stand-in reads plain `KEY=value` lines only, not {line:?}: test this \
             under the real systemd (realunits.rs) or against systemd's vectors (envfiles.rs)"
        );
        let (key, value) = line.split_once('=').expect("KEY=value");
        out.push((key.trim().to_owned(), value.trim().to_owned()));
    }
    out
}

/// What a finished child wrote to its piped stderr.
pub fn stderr_of(child: &mut std::process::Child) -> String {
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    stderr
}

/// `systemd-analyze verify` of `units`: it must succeed and say nothing
/// (it exits 0 on the warnings it prints, so silence is the test).
pub fn verify(units: &[camino::Utf8PathBuf]) {
    let output = Command::new(crate::support::require("systemd-analyze", "systemd"))
        .args(["verify", "--man=no"])
        .args(units)
        .output()
        .unwrap();
    let (out, err) = crate::support::text(&output);
    assert!(
        output.status.success() && out.is_empty() && err.is_empty(),
        "systemd-analyze verify:\n{out}{err}"
    );
}

/// Starts the server of `unit` and waits (up to 30 s) until `port`
/// answers; the response and the running child.
pub fn serve(unit: &Unit, port: u16) -> (String, std::process::Child) {
    let mut server = unit
        .command()
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(r) = http_get(port) {
            return (r, server);
        }
        if Instant::now() > deadline || server.try_wait().unwrap().is_some() {
            let _ = server.kill();
            panic!("the server did not come up:\n{}", stderr_of(&mut server));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Stops a server as systemd does (SIGTERM) and waits for it.
pub fn stop(mut server: std::process::Child) -> String {
    let _ = Command::new("kill").arg(server.id().to_string()).status();
    let status = server.wait().unwrap();
    let stderr = stderr_of(&mut server);
    assert!(
        status.code() == Some(0) || status.code().is_none(),
        "{status:?}\n{stderr}"
    );
    stderr
}
