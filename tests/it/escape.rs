//! Property tests: arbitrary text (anything but NUL, which no C string can
//! hold) survives the sh escaper and the whole shim, through a real /bin/sh.

use std::os::unix::ffi::OsStrExt;
use std::process::Command;

use djshim::config::{self, Source};
use djshim::model::Model;
use djshim::render::{Renderer, sh_quote};
use proptest::prelude::*;

use crate::support::{World, toml_str};

fn text() -> impl Strategy<Value = String> {
    any::<String>().prop_map(|s| s.replace('\0', ""))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn sh_quote_round_trips_through_sh(s in text()) {
        let script = format!("printf '%s' {}", sh_quote(&s));
        let output = Command::new("/bin/sh").args(["-c", &script]).output().unwrap();
        prop_assert!(output.status.success());
        prop_assert_eq!(output.stdout, s.as_bytes());
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// The value goes through TOML, placeholder escaping (`{{`), the model,
    /// the template and sh; the arguments through the shim's `"$@"`.
    #[test]
    fn env_values_and_arguments_reach_the_command_unchanged(
        value in text(),
        args in proptest::collection::vec(text(), 0..4),
    ) {
        let world = World::new();
        // The "interpreter" is /bin/sh and "manage.py" a script printing the
        // variable and its arguments, NUL-separated. (Nothing this process
        // wrote is exec'd: a thread forking meanwhile would make it ETXTBSY.)
        world.write("pkg/manage.py", "printf '%s\\0' \"$VALUE\" \"$@\"\n");
        let braced = value.replace('{', "{{").replace('}', "}}");
        let text = format!(
            "project = \"p\"\n[instances.i]\npackage = \"{pkg}\"\npython = \"/bin/sh\"\n\
             settings = \"p.settings\"\nenv = {{ VALUE = {v} }}\n",
            pkg = world.path("pkg"),
            v = toml_str(&braced),
        );
        let source = Source { name: "djshim.toml".into(), text, dir: world.path("") };
        let model = Model::build(&source, &config::parse(&source).unwrap()).unwrap();
        let shim = Renderer::new()
            .shim(&model, &model.instances["i"], &model.bin_dir)
            .unwrap();
        let path = world.write("shim", std::str::from_utf8(&shim.bytes).unwrap());
        let output = Command::new("/bin/sh").arg(&path).args(&args).env_clear().output().unwrap();
        prop_assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));

        let mut expected = Vec::new();
        for part in std::iter::once(&value).chain(&args) {
            expected.extend_from_slice(std::ffi::OsStr::new(part).as_bytes());
            expected.push(0);
        }
        prop_assert_eq!(output.stdout, expected);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 6, ..ProptestConfig::default() })]

    /// Arbitrary text survives the Nix string escaper through a real Nix
    /// evaluator (a batch per case: one `nix-instantiate` each).
    #[test]
    fn nix_str_round_trips_through_nix(batch in proptest::collection::vec(text(), 1..40)) {
        let mut hostile = batch;
        hostile.extend(["${x}", "$${x}", "\\${x}", "''${x}", "\"", "\\", "a\nb\tc\rd", "${", "$", "}"].map(String::from));
        let expression: Vec<String> = hostile.iter().map(|s| djshim::render::nix_str(s)).collect();
        let output = crate::support::nix("nix-instantiate")
            .args(["--eval", "--strict", "--json", "-E"])
            .arg(format!("[ {} ]", expression.join(" ")))
            .output()
            .unwrap();
        prop_assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        let back: Vec<String> = serde_json::from_slice(&output.stdout).unwrap();
        prop_assert_eq!(back, hostile);
    }
}
