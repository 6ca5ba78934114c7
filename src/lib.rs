//! djshim: per-instance `manage.py` commands for Nix-packaged Django sites.
//!
//! The pipeline, one module a stage: [`config`] (parse, with spans) →
//! [`model`] (validate, expand, resolve) → [`render`] (templates, escaping)
//! → [`write`] (atomic, manifest). Only the two ends touch the world;
//! [`commands`] strings them together per subcommand, [`check`] asks the
//! machine what the config cannot know.
//!
//! Public only what the `djshim` binary and the tests use; the helper
//! (`djshim-exec`: src/bin/djshim-exec/) is a binary of its own.

pub(crate) mod accounts;
pub(crate) mod archive;
pub(crate) mod build_account;
pub(crate) mod check;
pub mod cli;
pub(crate) mod collected;
pub mod commands;
pub mod config;
pub(crate) mod content;
pub(crate) mod django;
pub mod envfile;
pub(crate) mod envrule;
pub(crate) mod error;
pub(crate) mod gcroot;
pub(crate) mod installation;
pub(crate) mod interrupt;
pub(crate) mod layout;
pub(crate) mod lock;
pub mod model;
pub(crate) mod nixos;
pub(crate) mod operations;
pub(crate) mod process;
pub(crate) mod procs;
pub(crate) mod profile;
pub(crate) mod progress;
pub(crate) mod quote;
pub(crate) mod release;
pub(crate) mod release_commands;
pub mod render;
pub mod schedule;
pub mod units;
pub(crate) mod write;
