//! The Ansible collection (`ansible/ansible_collections/djshim/django`,
//! SPEC section 10) driving djshim through the real `ansible-playbook` of
//! ansible-core (pinned in tests/requirements.txt): status as facts, a
//! deploy that is `changed` only when the instance moves, check mode that
//! changes nothing, a failure with djshim's message and whether it was
//! undone. Here on this host (`connection: local`); across hosts the
//! engine's transport is ssh, which changes nothing in the modules.

use std::process::Command;

use camino::Utf8Path;

use crate::site::Site;
use crate::support::{CRON_PATH, assert_status, root, text, venv};

/// `PROGRAM` of the tests' ansible-core (`ansible-playbook`,
/// `ansible-doc`), with the collection of this repository, `home` as its
/// home, and nothing of the caller's environment.
pub fn ansible(program: &str, home: &Utf8Path) -> Command {
    let mut cmd = Command::new(venv().join("bin").join(program));
    cmd.env_clear()
        .env("PATH", CRON_PATH)
        .env("LANG", "C.UTF-8")
        .env("HOME", home)
        .env("ANSIBLE_HOME", home)
        .env("ANSIBLE_LOCAL_TEMP", home.join("tmp"))
        .env("ANSIBLE_COLLECTIONS_PATH", root().join("ansible"))
        .env("ANSIBLE_NOCOLOR", "1")
        .env("ANSIBLE_RETRY_FILES_ENABLED", "0")
        .env("ANSIBLE_DEPRECATION_WARNINGS", "0");
    cmd
}

/// `ansible-playbook` on `playbook` (YAML) against localhost: its output.
fn playbook(site: &Site, playbook: &str) -> std::process::Output {
    let file = site.world.write("playbook.yml", playbook);
    ansible("ansible-playbook", &site.world.path("ansible-home"))
        .args(["-i", "localhost,", "-c", "local", file.as_str()])
        .arg("-e")
        .arg(format!(
            "ansible_python_interpreter={}",
            venv().join("bin/python3")
        ))
        .output()
        .unwrap()
}

/// `ansible-doc ARGS`: its output, asserted to succeed.
fn doc(args: &[&str]) -> String {
    let output = ansible("ansible-doc", Utf8Path::new(env!("CARGO_TARGET_TMPDIR")))
        .args(args)
        .output()
        .unwrap();
    assert_status(&output, 0);
    text(&output).0
}

/// Every module's documentation loads, its shared options (the doc
/// fragment) included: `ansible-doc` is what a user reads.
#[test]
fn every_module_is_documented() {
    for module in ["status", "deploy", "rollback", "window", "unpack"] {
        let doc = doc(&[&format!("djshim.django.{module}")]);
        for option in ["config", "executable", "instance"]
            .iter()
            .filter(|o| !["status", "unpack"].contains(&module) || **o != "instance")
        {
            assert!(
                doc.contains(option),
                "djshim.django.{module} lacks `{option}`:\n{doc}"
            );
        }
    }
}

/// The rollout role's variables (`meta/argument_specs.yml`) load, as
/// `ansible-doc -t role` shows them, every one the playbooks use among
/// them.
#[test]
fn the_rollout_role_is_documented() {
    let doc = doc(&["-t", "role", "djshim.django.rollout"]);
    let collection = root().join("ansible/ansible_collections/djshim/django");
    let mut used = String::new();
    for dir in ["playbooks", "roles/rollout/tasks"] {
        for file in collection.join(dir).read_dir_utf8().unwrap() {
            used.push_str(&std::fs::read_to_string(file.unwrap().path()).unwrap());
        }
    }
    for word in used.split(|c: char| !(c.is_alphanumeric() || c == '_')) {
        // The role's inputs; the facts it sets itself are not.
        let input = word.starts_with("djshim_")
            && ![
                "djshim_before",
                "djshim_back_to",
                "djshim_batch",
                "djshim_candidate",
                "djshim_candidate_hash",
                "djshim_deb_version",
                "djshim_deployed",
                "djshim_first",
                "djshim_first_back",
                "djshim_generated",
                "djshim_hosts",
                "djshim_installed",
                "djshim_packed",
                "djshim_prepare",
                "djshim_prepared",
                "djshim_reached",
                "djshim_reached_back",
                "djshim_status_before",
                "djshim_status_now",
                "djshim_switched",
                "djshim_systemd",
                "djshim_unpacked",
                "djshim_windowed",
            ]
            .contains(&word);
        assert!(
            !input || doc.contains(word),
            "`{word}` is not in the role's documentation:\n{doc}"
        );
    }
}

#[test]
fn the_collection_deploys_reports_and_fails_as_djshim_says() {
    let (site, _first) = Site::serving();
    site.commit(&[("polls/extra.py", "X = 1\n")], "second");
    let build = site.world.djshim(&["build"]);
    assert_status(&build, 0);
    let second = text(&build).0.lines().last().unwrap().to_owned();
    let args = format!(
        "config: {}\n        executable: {}",
        site.world.path("djshim.toml"),
        env!("CARGO_BIN_EXE_djshim")
    );
    let output = playbook(
        &site,
        &format!(
            r#"- hosts: localhost
  gather_facts: false
  tasks:
    - djshim.django.status:
        {args}
    - ansible.builtin.assert:
        that:
          - ansible_facts.djshim.instances.prod.generation == 1
          - ansible_facts.djshim.instances.prod.healthy
    - name: a prepare asks and changes nothing
      djshim.django.deploy:
        instance: prod
        path: {second}
        prepare: true
        {args}
      register: prepared
    - ansible.builtin.assert:
        that:
          - prepared is not changed
          - not prepared.prepared.already
          - prepared.prepared.content_hash is match("sha256:[0-9a-f]{{64}}$")
    - name: check mode says it would move, and moves nothing
      djshim.django.deploy:
        instance: prod
        path: {second}
        {args}
      check_mode: true
      register: would
    - djshim.django.status:
        {args}
    - ansible.builtin.assert:
        that:
          - would is changed
          - ansible_facts.djshim.instances.prod.generation == 1
    - djshim.django.deploy:
        instance: prod
        path: {second}
        hash: "{{{{ prepared.prepared.content_hash }}}}"
        {args}
      register: moved
    - ansible.builtin.assert:
        that:
          - moved is changed
          - moved.djshim.generation == 2
          - moved.djshim.package == "{second}"
    - name: a second run changes nothing, and check mode agrees
      djshim.django.deploy:
        instance: prod
        path: {second}
        {args}
      register: again
    - djshim.django.deploy:
        instance: prod
        path: {second}
        {args}
      check_mode: true
      register: would_again
    - ansible.builtin.assert:
        that:
          - again is not changed
          - would_again is not changed
    - name: back to generation 1, once
      djshim.django.rollback:
        instance: prod
        to: 1
        {args}
      register: back
    - djshim.django.rollback:
        instance: prod
        to: 1
        {args}
      register: back_again
    - ansible.builtin.assert:
        that:
          - back is changed
          - back.djshim.generation == 1
          - back_again is not changed
"#
        ),
    );
    assert_status(&output, 0);
    let stdout = text(&output).0;
    assert!(stdout.contains("failed=0"), "{stdout}");

    a_broken_release_fails_undone(&site, &args);
}

/// A release whose health view answers 500: the task fails with
/// djshim's message, undone (exit 3), and prod is back on generation 1.
fn a_broken_release_fails_undone(site: &Site, args: &str) {
    let views = std::fs::read_to_string(site.repo.join("polls/views.py"))
        .unwrap()
        .replace(
            "return HttpResponse(\"ok\\n\", content_type=\"text/plain\")",
            "return HttpResponse(\"broken\\n\", status=500)",
        );
    site.commit(&[("polls/views.py", &views)], "broken health");
    let output = playbook(
        site,
        &format!(
            r#"- hosts: localhost
  gather_facts: false
  tasks:
    - djshim.django.deploy:
        instance: prod
        {args}
      register: broken
      ignore_errors: true
    - ansible.builtin.assert:
        that:
          - broken is failed
          - broken.rc == 3
          - broken.undone
          - "'health' in broken.msg"
          - broken.djshim.generation == 1
"#
        ),
    );
    assert_status(&output, 0);
    let stdout = text(&output).0;
    assert!(stdout.contains("ignored=1"), "{stdout}");
}
