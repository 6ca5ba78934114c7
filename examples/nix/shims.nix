# The shims of mywebsite, built by Nix with djshim as the builder.
#
#   nix-build examples/nix/shims.nix \
#     --arg djshim /path/to/djshim \
#     --arg staging 'builtins.storePath /nix/store/…-mywebsite-1.4' \
#     --arg prod 'builtins.storePath /nix/store/…-mywebsite-1.3' \
#     --argstr python /nix/store/…-python3-env/bin/python3
#
# The output holds bin/mywebsite-staging and bin/mywebsite-prod. Because the
# shims name the packages' store paths, Nix records the packages as runtime
# dependencies of the output: installing the shims keeps the packages alive.
#
# djshim needs no $HOME, writes nothing outside --out and gives the same
# bytes for the same config, so the output is reproducible. With nixpkgs,
# the same is `runCommand "mywebsite-shims" { } "${djshim}/bin/djshim
# --config ${writeText "djshim.toml" ...} generate --out $out/bin"`, which
# also accepts packages that are derivation outputs (builtins.toFile below
# only accepts plain store paths).
#
# An instance with a `user` or env files also needs the helper djshim-exec,
# which generate copies from beside djshim into the output: pass a djshim
# whose directory holds both (a package's bin/), not a lone file.
{ djshim, staging, prod, python, system ? builtins.currentSystem }:

let
  config = builtins.toFile "djshim.toml" ''
    project = "mywebsite"

    [defaults]
    python = "${python}"
    settings = "mywebsite.settings.{instance}"
    state_dir = "/var/lib/{project}-{instance}"
    static_root = "/var/lib/{project}-{instance}/static"

    [instances.staging]
    package = "${staging}"

    [instances.prod]
    package = "${prod}"
    settings = "mywebsite.settings.production"
  '';
in
derivation {
  name = "mywebsite-shims";
  inherit system;
  builder = djshim;
  args = [ "--config" config "generate" "--out" "${placeholder "out"}/bin" ];
}
