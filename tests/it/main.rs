//! djshim's integration tests: one binary, one module per topic. Every test
//! runs the real parts: the built binary, /bin/sh (dash), bash, shellcheck,
//! a real Django in a real venv.

mod accounts;
mod ansible;
mod archives;
mod builds;
mod buildtrust;
mod commands;
mod deploys;
mod docs;
mod envfiles;
mod errors;
mod escape;
mod fleet;
mod generate;
mod helper;
mod hosts;
mod machine;
mod nixos;
mod packaging;
mod plans;
mod postgres;
mod profiles;
mod realunits;
mod runtime;
mod servers;
mod services;
mod shells;
mod site;
mod status;
mod support;
mod systemd;
mod terminals;
mod trust;
mod units;
