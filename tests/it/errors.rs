//! The bad-config corpus: every file in tests/bad-configs is a config that
//! must be refused with exit 2, the exact message in the `.stderr` file
//! beside it, and nothing written.

use crate::support::{World, assert_status, golden, root, text};

#[test]
fn every_bad_config_is_refused_with_its_message_and_nothing_written() {
    let dir = root().join("tests/bad-configs");
    let mut cases: Vec<_> = dir
        .read_dir_utf8()
        .unwrap()
        .map(|e| e.unwrap().path().to_owned())
        .filter(|p| p.extension() == Some("toml"))
        .collect();
    cases.sort();
    assert!(
        cases.len() >= 25,
        "the corpus has only {} cases",
        cases.len()
    );
    for case in cases {
        let world = World::new();
        world.write("djshim.toml", &std::fs::read_to_string(&case).unwrap());
        let before = world.files();
        for args in [
            &["generate"][..],
            &["generate", "--dry-run"],
            &["show", "prod"],
            &["check"],
        ] {
            let output = world.djshim(args);
            assert_status(&output, 2);
            let (stdout, stderr) = text(&output);
            assert_eq!(stdout, "", "{case}: {args:?} printed to stdout");
            let name = case.file_stem().unwrap();
            golden(&format!("bad-configs/{name}.stderr"), &stderr);
            assert_eq!(world.files(), before, "{case}: {args:?} wrote files");
        }
    }
}
