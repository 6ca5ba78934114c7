//! djshim as its users install software (issue 24, item 7): the Debian
//! package `packaging/deb/build` makes from the binaries the tests run,
//! installed with the real dpkg inside the throwaway systemd container
//! (its root is a copy-on-write layer: the machine's dpkg database never
//! sees it).

use std::process::Command;

use camino::Utf8Path;

use crate::machine::machine;
use crate::support::{assert_status, require, root, text};

#[test]
fn the_debian_package_installs_djshim_its_helper_man_pages_and_completions() {
    let script = root().join("packaging/deb/build");
    let lint = Command::new(require("shellcheck", "shellcheck"))
        .args(["--enable=all", "--shell=sh", script.as_str()])
        .output()
        .unwrap();
    assert_eq!(text(&lint), (String::new(), String::new()), "shellcheck");
    let m = machine();
    let guest = m.guest();
    let bin = Utf8Path::new(env!("CARGO_BIN_EXE_djshim"))
        .parent()
        .unwrap();
    let build = Command::new(&script)
        .args([bin.as_str(), guest.world.path("dist").as_str()])
        .output()
        .unwrap();
    assert_status(&build, 0);
    // Built here; the container sees the world at its own path.
    let deb = text(&build).0.trim().to_owned();
    let file = Utf8Path::new(&deb).file_name().unwrap();
    let installed = guest.path(&format!("dist/{file}"));
    let contents = Command::new(require("dpkg-deb", "dpkg"))
        .args(["--contents", &deb])
        .output()
        .unwrap();
    assert_status(&contents, 0);
    let contents = text(&contents).0;
    let mut wanted = vec![
        "./usr/bin/djshim".to_owned(),
        "./usr/bin/djshim-exec".to_owned(),
        "./usr/share/bash-completion/completions/djshim".to_owned(),
        "./usr/share/zsh/vendor-completions/_djshim".to_owned(),
        "./usr/share/fish/vendor_completions.d/djshim.fish".to_owned(),
        "./usr/share/doc/djshim/changelog.gz".to_owned(),
    ];
    // Every man page of the repository, each subcommand's too.
    for page in root().join("man").read_dir_utf8().unwrap() {
        let name = page.unwrap().file_name().to_owned();
        let section = name.rsplit('.').next().unwrap().to_owned();
        wanted.push(format!("./usr/share/man/man{section}/{name}.gz"));
    }
    for path in &wanted {
        assert!(
            contents.lines().any(|l| l.ends_with(&format!(" {path}"))),
            "no {path} in the package:\n{contents}"
        );
    }
    assert!(contents.contains("root/root"), "{contents}");

    m.ok(&["dpkg", "-i", installed.as_str()]);
    assert_eq!(
        m.ok(&["dpkg-query", "-W", "-f", "${Status}", "djshim"]),
        "install ok installed"
    );
    let version = m.ok(&["djshim", "--version"]);
    assert_eq!(
        version.trim(),
        format!("djshim {}", env!("CARGO_PKG_VERSION"))
    );
    // The installed djshim finds its helper beside itself: a shim that
    // switches accounts gets a copy of /usr/bin/djshim-exec.
    guest.write(
        "djshim.toml",
        "project = \"sddeb\"\n[instances.prod]\npackage = \"/srv\"\n\
         python = \"/usr/bin/python3\"\nsettings = \"x.settings\"\nuser = \"nobody\"\n",
    );
    let dir = guest.path("");
    m.ok(&["sh", "-c", &format!("cd '{dir}' && djshim generate")]);
    m.ok(&[
        "cmp",
        "/usr/bin/djshim-exec",
        guest.path("bin/.djshim-sddeb-exec").as_str(),
    ]);
    // The man page man reads is the repository's, rendered from the CLI.
    let page = m.ok(&["zcat", "/usr/share/man/man1/djshim-status.1.gz"]);
    assert_eq!(
        page,
        std::fs::read_to_string(root().join("man/djshim-status.1")).unwrap()
    );

    m.ok(&["dpkg", "--purge", "djshim"]);
    let gone = m.run(&["test", "-e", "/usr/bin/djshim"]);
    assert_eq!(
        gone.status.code(),
        Some(1),
        "dpkg --purge left /usr/bin/djshim"
    );
}
