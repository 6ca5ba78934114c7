//! The content hash of a package: SHA-256 of its Nix archive (NAR)
//! serialization, the hash Nix itself keeps for a store path
//! (`nix-store --query --hash`). One definition for a store path and a
//! release directory alike, so two hosts can tell that they run the same
//! bytes whatever the package is: names, contents, the executable bit and
//! symlink targets count; owners, times and other mode bits do not.

use std::fmt::Write;
use std::io::Read;

use camino::Utf8Path;
use sha2::{Digest, Sha256};

use crate::error::Error;

/// `sha256:<64 hex digits>` of `path`'s NAR serialization (symlinks are
/// not followed, `path` itself included).
pub fn hash(path: &Utf8Path) -> Result<String, Error> {
    let mut nar = Nar(Sha256::new());
    nar.string(b"nix-archive-1");
    nar.node(path)?;
    let digest = nar.0.finalize();
    let mut out = String::from("sha256:");
    for b in digest {
        let _ = write!(out, "{b:02x}");
    }
    Ok(out)
}

/// A NAR writer that hashes what it would write.
struct Nar(Sha256);

impl Nar {
    /// A string: its length (8 bytes, little-endian), its bytes, zeros to
    /// a multiple of 8.
    fn string(&mut self, bytes: &[u8]) {
        self.0.update((bytes.len() as u64).to_le_bytes());
        self.0.update(bytes);
        self.0.update(&[0u8; 8][..(8 - bytes.len() % 8) % 8]);
    }

    fn node(&mut self, path: &Utf8Path) -> Result<(), Error> {
        use std::os::unix::fs::PermissionsExt;
        let meta = std::fs::symlink_metadata(path).map_err(|e| Error::io("read", path, e))?;
        self.string(b"(");
        self.string(b"type");
        if meta.is_symlink() {
            let target = std::fs::read_link(path).map_err(|e| Error::io("read link", path, e))?;
            self.string(b"symlink");
            self.string(b"target");
            self.string(target.as_os_str().as_encoded_bytes());
        } else if meta.is_dir() {
            self.string(b"directory");
            let mut names: Vec<String> = path
                .read_dir_utf8()
                .map_err(|e| Error::io("read directory", path, e))?
                .map(|e| e.map(|e| e.file_name().to_owned()))
                .collect::<Result<_, _>>()
                .map_err(|e| Error::io("read directory", path, e))?;
            names.sort_unstable();
            for name in names {
                self.string(b"entry");
                self.string(b"(");
                self.string(b"name");
                self.string(name.as_bytes());
                self.string(b"node");
                self.node(&path.join(&name))?;
                self.string(b")");
            }
        } else {
            self.string(b"regular");
            if meta.permissions().mode() & 0o100 != 0 {
                self.string(b"executable");
                self.string(b"");
            }
            self.string(b"contents");
            self.0.update(meta.len().to_le_bytes());
            let mut file = std::fs::File::open(path).map_err(|e| Error::io("open", path, e))?;
            let mut buf = vec![0u8; 1 << 16];
            let mut read = 0u64;
            loop {
                let n = file
                    .read(&mut buf)
                    .map_err(|e| Error::io("read", path, e))?;
                if n == 0 {
                    break;
                }
                read += n as u64;
                self.0.update(&buf[..n]);
            }
            if read != meta.len() {
                return Err(Error::problem(format!(
                    "{path} changed while its content hash was taken"
                )));
            }
            self.0.update(&[0u8; 8][..(8 - (read % 8) as usize) % 8]);
        }
        self.string(b")");
        Ok(())
    }
}
