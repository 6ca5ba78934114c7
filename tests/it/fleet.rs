//! Several hosts (SPEC section 10): each host's part of a rollout, on one
//! host (two instances on one database stand for two hosts), then the
//! rollout itself through the real `ansible-playbook` over ssh to three
//! hosts (see `hosts`).

use crate::site::{Site, commit_votes};
use crate::support::{Expect, assert_status, text};

/// A host that leaves the shared commands to another host of its rollout
/// (`--skip-shared`) refuses a candidate whose migrations the shared
/// database lacks, and runs no `migrate` once another host applied them;
/// `rollback --to-package` finds the generation of a package whatever its
/// number, and reverses nothing that host did not migrate.
#[test]
fn a_host_that_skips_the_shared_steps_waits_for_the_migrations_and_goes_back_by_package() {
    let mut site = Site::new();
    // prod and staging on one database: two hosts of one site.
    let config = site
        .world
        .read("djshim.toml")
        .replace("{instance}.sqlite3", "shared.sqlite3");
    site.world.write("djshim.toml", &config);
    assert_status(&site.world.djshim(&["generate"]), 0);
    site.hold_server();
    assert_status(&site.deploy(&["prod"]), 0);
    let first = site.generation_target("prod");
    // The initial migrations are applied: a host that skips them follows.
    assert_status(&site.deploy(&["staging", "--skip-shared"]), 0);
    assert_eq!(site.generation_target("staging"), first);

    commit_votes(&site);
    let history = |site: &Site| text(&site.world.djshim(&["history", "staging"])).0;
    let before = history(&site);
    Expect::new()
        .status(1)
        .stderr_has(
            "its database lacks the package's migrations (polls.0002_question_votes), and \
             --skip-shared leaves `migrate` to another host",
        )
        .stderr_has("= help: deploy the rollout's first host (without --skip-shared) first")
        .check(&site.deploy(&["staging", "--skip-shared"]));
    assert_eq!(history(&site), before, "a refused deploy changed nothing");

    // The first host migrates; the other switches without a `migrate`.
    assert_status(&site.deploy(&["prod"]), 0);
    let second = site.generation_target("prod");
    let output = site.deploy(&["staging", "--skip-shared"]);
    assert_status(&output, 0);
    let stderr = text(&output).1;
    assert!(
        stderr.contains("deploy: switch to generation 2"),
        "{stderr}"
    );
    assert!(!stderr.contains("deploy: migrate"), "{stderr}");
    assert_eq!(site.generation_target("staging"), second);

    // Back by package: the follower reverses nothing, the first host does.
    let output = site
        .world
        .djshim(&["rollback", "staging", "--to-package", first.as_str()]);
    assert_status(&output, 0);
    let stderr = text(&output).1;
    assert!(!stderr.contains("rollback: migrate polls"), "{stderr}");
    assert_eq!(site.generation_target("staging"), first);
    assert!(site.migrations("prod").contains("[X] 0002_question_votes"));
    let output = site
        .world
        .djshim(&["rollback", "prod", "--to-package", first.as_str()]);
    assert_status(&output, 0);
    assert!(
        text(&output)
            .1
            .contains("rollback: migrate polls 0001_initial")
    );
    site.assert_back_on(&first);
    let again = site
        .world
        .djshim(&["rollback", "staging", "--to-package", first.as_str()]);
    assert_status(&again, 0);
    assert_eq!(text(&again).0, "staging: generation 1 is already current\n");
    Expect::new()
        .status(1)
        .stderr_has("no generation of instance `staging` up to the current one runs")
        .check(
            &site
                .world
                .djshim(&["rollback", "staging", "--to-package", second.as_str()]),
        );
}
