//! The health probe of a deploy: a URL that must answer 2xx, or a command
//! that must succeed — tried until it does or the probe's deadline passes.
//! The whole probe ends by its deadline: each attempt of a command runs in
//! a process group of its own, killed at the deadline (with whatever it
//! left running); a URL attempt has a connect and a total deadline.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use super::plan::Probe;
use crate::error::Error;
use crate::process::Process;

/// How an attempt that the deadline cut short ends its message.
const IN_TIME: &str = ": no answer in time";

/// Probes until healthy or the deadline.
pub fn probe(probe: &Probe) -> Result<(), Error> {
    let timeout = match probe {
        Probe::Url { timeout, .. } | Probe::Command { timeout, .. } => {
            Duration::from_secs(*timeout)
        }
    };
    let deadline = Instant::now() + timeout;
    // What the last attempt that got an answer said: an attempt cut short
    // by the deadline says less than the 500 before it.
    let mut said: Option<String> = None;
    loop {
        let attempt = match probe {
            Probe::Url {
                host, port, path, ..
            } => http_status(host, *port, path, deadline),
            Probe::Command { argv, .. } => Process::new(&argv[0])
                .args(&argv[1..])
                .deadline(deadline)
                .output()
                .map(|_| ())
                .map_err(|e| e.to_string()),
        };
        let why = match attempt {
            Ok(()) => return Ok(()),
            Err(why) => why,
        };
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            let why = said.filter(|_| why.ends_with(IN_TIME)).unwrap_or(why);
            return Err(Error::problem(format!(
                "not healthy within {} s: {why}",
                timeout.as_secs()
            )));
        }
        said = Some(why);
        std::thread::sleep(left.min(Duration::from_millis(250)));
    }
}

/// The addresses of `host`, within `time`. The system's resolver
/// (`getaddrinfo`) has no deadline of its own — a silent name server holds
/// it for its own timeouts and retries (15 s and more) — so it runs in a
/// thread of its own that is left behind when the time is up.
fn lookup(host: &str, port: u16, time: Duration) -> Result<Vec<SocketAddr>, String> {
    if let Ok(ip) = host.parse::<std::net::IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, port)]);
    }
    let (tx, rx) = std::sync::mpsc::channel();
    let name = host.to_owned();
    std::thread::spawn(move || {
        let found = (name.as_str(), port)
            .to_socket_addrs()
            .map(Iterator::collect::<Vec<_>>)
            .map_err(|e| e.to_string());
        let _ = tx.send(found);
    });
    match rx.recv_timeout(time) {
        Ok(found) => found,
        Err(_) => Err(format!("the name lookup of {host}{IN_TIME}")),
    }
}

/// `host:port` as a URL and a `Host:` header write it: an IPv6 address in
/// brackets.
pub fn authority(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// One GET, ended by `deadline` whatever the server does (a full accept
/// queue, a trickle of bytes); Ok on a 2xx status line.
fn http_status(host: &str, port: u16, path: &str, deadline: Instant) -> Result<(), String> {
    let url = format!("http://{}{path}", authority(host, port));
    let left = || {
        let left = deadline.saturating_duration_since(Instant::now());
        (!left.is_zero())
            .then_some(left)
            .ok_or_else(|| format!("{url}{IN_TIME}"))
    };
    let addresses = lookup(host, port, left()?).map_err(|e| format!("{url}: {e}"))?;
    let mut last = format!("{url}: no address");
    let mut stream = None;
    for address in addresses {
        match TcpStream::connect_timeout(&address, left()?) {
            Ok(s) => {
                stream = Some(s);
                break;
            }
            Err(e) => last = format!("{url}: {e}"),
        }
    }
    let mut stream = stream.ok_or(last)?;
    stream
        .set_write_timeout(Some(left()?))
        .map_err(|e| e.to_string())?;
    // One write: a server may read the request with one recv.
    let request = format!(
        "GET {path} HTTP/1.0\r\nHost: {}\r\nConnection: close\r\n\r\n",
        authority(host, port)
    );
    stream
        .write_all(request.as_bytes())
        .map_err(|e| format!("{url}: {e}"))?;
    // The status line is all that counts: read up to its end, each read
    // bounded by what is left of the deadline.
    let mut answer = Vec::new();
    let mut buf = [0u8; 512];
    while !answer.contains(&b'\n') && answer.len() < 8192 {
        stream
            .set_read_timeout(Some(left()?))
            .map_err(|e| e.to_string())?;
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => answer.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return Err(format!("{url}{IN_TIME}"));
            }
            Err(e) => return Err(format!("{url}: {e}")),
        }
    }
    let answer = String::from_utf8_lossy(&answer);
    let status = answer.lines().next().unwrap_or_default().trim_end();
    match status.split_whitespace().nth(1) {
        Some(code) if code.starts_with('2') && code.len() == 3 => Ok(()),
        _ => Err(format!("{url} answered `{}`", crate::error::clean(status))),
    }
}
