# A deploy-rs profile whose activation is djshim (SPEC section 10), built
# without nixpkgs: `derivation` and /bin/sh alone, as on a Debian host with
# Nix. With nixpkgs, a flake writes the same through
# `deploy-rs.lib.<system>.activate.custom` (see README, "Several hosts").
#
#   import ./profile.nix {
#     app = ./result;                        # the site's package
#     djshim = /usr/bin/djshim;              # djshim and its helper, into the closure
#     djshim-exec = /usr/bin/djshim-exec;
#     activate-rs = .../bin/activate;        # deploy-rs's own activation binary
#     config = "/etc/mywebsite/djshim.toml"; # djshim's config on the node
#     instance = "prod";
#   }
{ app, djshim, djshim-exec, activate-rs, config, instance, system ? builtins.currentSystem }:
derivation {
  name = "djshim-${instance}-profile";
  inherit system app config instance;
  djshimbin = djshim;
  djshimexec = djshim-exec;
  activaters = activate-rs;
  activatesh = ./activate;
  builder = "/bin/sh";
  args = [
    "-c"
    ''
      set -e
      /bin/mkdir -p $out/bin
      /bin/cp $djshimbin $out/bin/djshim
      /bin/cp $djshimexec $out/bin/djshim-exec
      /bin/cp $activaters $out/activate-rs
      /bin/cp $activatesh $out/deploy-rs-activate
      /bin/chmod 555 $out/bin/djshim $out/bin/djshim-exec $out/activate-rs $out/deploy-rs-activate
      /bin/ln -s $app $out/app
      echo "$config" > $out/djshim-config
      echo "$instance" > $out/djshim-instance
    ''
  ];
}
