//! djshim: per-instance `manage.py` commands for Nix-packaged Django sites.
//!
//! The pipeline, one module a stage: [`config`] (parse, with spans) →
//! [`model`] (validate, expand, resolve) → [`render`] (templates, escaping)
//! → [`write`] (atomic, manifest). Only the two ends touch the world;
//! [`commands`] strings them together per subcommand, [`check`] asks the
//! machine what the config cannot know.

pub mod builder;
pub mod check;
pub mod cli;
pub mod commands;
pub mod config;
pub mod deploy;
pub mod django;
pub mod envfile;
pub mod envrule;
pub mod error;
pub mod exec;
pub mod gcroot;
pub mod interrupt;
pub mod layout;
pub mod lock;
pub mod model;
pub mod nixos;
pub mod pins;
pub mod process;
pub mod profile;
pub mod quote;
pub mod relay;
pub mod release;
pub mod render;
pub mod schedule;
pub mod steps;
pub mod units;
pub mod write;
