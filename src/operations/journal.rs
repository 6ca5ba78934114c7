//! What the release engine keeps beside a profile: the journal of the plan
//! in flight and the record of each deployed generation; beside them the
//! instance's lock (in [`crate::profile`]). File names come from
//! [`crate::layout`].

use std::collections::BTreeMap;
use std::fs;
use std::io;

use camino::Utf8PathBuf;
use serde::{Deserialize, Serialize};

use super::plan::{self, Journal, Store};
use crate::error::Error;
use crate::layout;
use crate::profile::Profile;

/// What a deploy leaves beside a generation: the migration state before
/// it (where `rollback` takes the database back to), and whether it ran
/// healthy. Written when the generation is made (not healthy), and marked
/// healthy as the deploy's last step.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Record {
    pub targets: BTreeMap<String, Option<String>>,
    pub healthy: bool,
    /// The generation's migrations that cannot be reversed (allowed with
    /// `--allow-irreversible`): no rollback takes the database past them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub irreversible: Vec<String>,
    /// Its migrations were reversed (by the undo of its deploy, or by a
    /// rollback past it): a later rollback has nothing to reverse of it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub reversed: bool,
}

impl Record {
    /// The record of generation `number`; `None` when a pin made it. A
    /// record that cannot be read is an error, never taken for a pin.
    pub fn of(profile: &Profile, number: u32) -> Result<Option<Record>, Error> {
        let path = layout::record(&profile.dir, &profile.name, number);
        let text = match fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io("read", &path, e)),
        };
        serde_json::from_str(&text).map(Some).map_err(|e| {
            Error::with_help(
                format!(
                    "{path}: not a deploy record djshim wrote ({e}), so what generation \
                     {number} did to the database is unknown"
                ),
                format!(
                    "restore the file, or, if generation {number} brought no migration, write \
                     `{{\"targets\": {{}}, \"healthy\": true}}` into it"
                ),
            )
        })
    }

    pub fn write(&self, profile: &Profile, number: u32) -> Result<(), Error> {
        let text = serde_json::to_string_pretty(self)
            .map_err(|e| Error::problem(format!("cannot write a deploy record: {e}")))?;
        let path = layout::record(&profile.dir, &profile.name, number);
        crate::write::write_atomic(
            &profile.dir,
            path.file_name().unwrap_or_default(),
            text.as_bytes(),
            0o644,
        )?;
        crate::write::sync_dir(&profile.dir)
    }
}

/// The journal file of an instance: written atomically and fsync'd (file
/// and directory) at every save.
#[derive(Debug)]
pub struct JournalFile {
    profile: Profile,
}

impl JournalFile {
    pub fn new(profile: &Profile) -> JournalFile {
        JournalFile {
            profile: profile.clone(),
        }
    }

    pub fn path(&self) -> Utf8PathBuf {
        layout::journal(&self.profile.dir, &self.profile.name)
    }

    /// The journal left by a run that did not end; an error, naming the
    /// file and the way out, when it is none this djshim can go on from.
    pub fn read(&self) -> Result<Option<Journal>, Error> {
        let path = self.path();
        let text = match fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io("read", &path, e)),
        };
        plan::parse(&text).map(Some).map_err(|why| {
            Error::with_help(
                format!("{path}: {why}; djshim will not guess what the run that left it did"),
                "see what it says, make the instance whole by hand (`djshim history`, \
                 `manage.py showmigrations`), then remove the file",
            )
        })
    }
}

impl Store for JournalFile {
    fn save(&mut self, journal: &Journal) -> Result<(), Error> {
        let text = serde_json::to_string_pretty(journal)
            .map_err(|e| Error::problem(format!("cannot write the journal: {e}")))?;
        let path = self.path();
        crate::write::write_atomic(
            &self.profile.dir,
            path.file_name().unwrap_or_default(),
            text.as_bytes(),
            0o644,
        )?;
        crate::write::sync_dir(&self.profile.dir)
    }

    fn clear(&mut self) -> Result<(), Error> {
        let path = self.path();
        match fs::remove_file(&path) {
            Ok(()) => crate::write::sync_dir(&self.profile.dir),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io("remove", &path, e)),
        }
    }
}
