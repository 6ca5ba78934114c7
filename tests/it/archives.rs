//! A release directory carried to another host as an archive (SPEC
//! section 10, a rollout's first part): `djshim pack` says the content
//! hash on the build host, `djshim unpack --hash` keeps the release only
//! when what arrived has it, frozen; a hostile archive writes nothing
//! outside the private directory it is unpacked in.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};

use crate::support::{Expect, World, assert_status, text};

#[test]
fn a_release_travels_as_an_archive_checked_by_its_content_hash() {
    let world = World::new();
    let name = "mywebsite-0123456789ab";
    world.write(&format!("built/{name}/manage.py"), "print('hi')\n");
    world.write(&format!("built/{name}/pkg/deep/x.py"), "X = 1\n");
    world.write(&format!("built/{name}/bin/run"), "#!/bin/sh\n");
    let release = world.path(&format!("built/{name}"));
    fs::set_permissions(release.join("bin/run"), fs::Permissions::from_mode(0o755)).unwrap();
    std::os::unix::fs::symlink("pkg/deep", release.join("link")).unwrap();
    let archive = world.path("carry.tar");

    let packed = world.djshim(&["pack", release.as_str(), "--out", archive.as_str()]);
    assert_status(&packed, 0);
    let hash = text(&packed).0.trim().to_owned();
    assert!(hash.starts_with("sha256:") && hash.len() == 71, "{hash}");

    let into = world.path("host/releases");
    let unpack = |hash: &str| {
        world.djshim(&[
            "unpack",
            archive.as_str(),
            "--hash",
            hash,
            "--into",
            into.as_str(),
        ])
    };
    // Other bytes than the ones built: nothing is kept.
    let wrong = format!("sha256:{}", "0".repeat(64));
    Expect::new()
        .status(1)
        .stderr_has(&format!(
            "is not the release that was built: its content hash is {hash}, not {wrong}; nothing was kept"
        ))
        .check(&unpack(&wrong));
    assert_eq!(fs::read_dir(&into).unwrap().count(), 0);

    let output = unpack(&hash);
    assert_status(&output, 0);
    let got = into.join(name);
    assert_eq!(text(&output).0, format!("{got}\n"));
    assert_eq!(
        fs::read_to_string(got.join("pkg/deep/x.py")).unwrap(),
        "X = 1\n"
    );
    assert_eq!(
        fs::read_link(got.join("link")).unwrap().to_str(),
        Some("pkg/deep")
    );
    let run = fs::metadata(got.join("bin/run")).unwrap();
    assert_eq!(run.mode() & 0o7777, 0o555, "executable, and frozen");
    assert_eq!(
        fs::metadata(got.join("manage.py")).unwrap().mode() & 0o7777,
        0o444
    );
    assert_eq!(fs::metadata(&got).unwrap().uid(), 0);
    // The same bytes again: kept as they are.
    let again = unpack(&hash);
    assert_status(&again, 0);
    assert_eq!(text(&again).0, format!("{got}\n"));
    assert_eq!(fs::read_dir(&into).unwrap().count(), 1);
}

/// An archive that tries to write outside where it is unpacked (a `..`
/// member; a symlink to elsewhere, then a file through it) writes nothing
/// there, and is refused.
#[test]
fn a_hostile_archive_writes_nothing_outside() {
    let world = World::new();
    let outside = world.path("outside");
    fs::create_dir(&outside).unwrap();
    let archive = world.path("evil.tar");
    let script = format!(
        "import io, tarfile\n\
         t = tarfile.open({archive:?}, 'w')\n\
         def add(name, data=b'', kind=tarfile.REGTYPE, target=''):\n\
         \x20   i = tarfile.TarInfo(name); i.type = kind; i.linkname = target; i.size = len(data)\n\
         \x20   t.addfile(i, io.BytesIO(data) if data else None)\n\
         add('r', kind=tarfile.DIRTYPE)\n\
         add('r/evil', kind=tarfile.SYMTYPE, target={outside:?})\n\
         add('r/evil/pwned', b'x')\n\
         add('../escape', b'x')\n\
         t.close()\n"
    );
    let made = std::process::Command::new("python3")
        .args(["-c", &script])
        .output()
        .unwrap();
    assert_status(&made, 0);
    let into = world.path("host/releases");
    let output = world.djshim(&[
        "unpack",
        archive.as_str(),
        "--hash",
        &format!("sha256:{}", "0".repeat(64)),
        "--into",
        into.as_str(),
    ]);
    assert_eq!(output.status.code(), Some(1), "{:?}", text(&output));
    assert!(
        text(&output)
            .1
            .contains("trying to unpack outside of destination path"),
        "{:?}",
        text(&output)
    );
    assert!(!outside.join("pwned").exists(), "written through the link");
    assert!(!world.path("host/escape").exists(), "written above");
    assert_eq!(fs::read_dir(&into).unwrap().count(), 0);
}
