//! Single values of the config: placeholders expanded, paths resolved and
//! normalized, the characters no target can carry refused.

use camino::Utf8PathBuf;
use toml::Spanned;

use super::{Base, Builder, Scope, expand, normalize};
use crate::config::{Str, StrList};

impl Builder<'_> {
    /// A list of directories, each resolved against `base`; none may hold
    /// `:`, the separator of the variable the list is exported as.
    pub(super) fn list<'s>(
        &mut self,
        field: Option<(&StrList, String)>,
        scope: &dyn Fn(String) -> Scope<'s>,
        base: Base<'_>,
    ) -> Vec<Utf8PathBuf> {
        let Some((items, key)) = field else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for (i, item) in items.get_ref().iter().enumerate() {
            let s = scope(format!("{key}[{i}]"));
            if let Some(p) = self.path(item, &s, base) {
                if p.as_str().contains(':') {
                    self.error(
                        item,
                        &s.key,
                        format!("`{p}` contains `:`"),
                        "`:` separates the entries once the list is exported; rename the directory",
                    );
                } else {
                    out.push(p);
                }
            }
        }
        out
    }

    /// A path that must stay relative (to the package): `manage`.
    pub(super) fn relative(&mut self, v: &Str, scope: &Scope<'_>) -> Option<Utf8PathBuf> {
        let value = self.expand(v, scope)?;
        let path = Utf8PathBuf::from(&value);
        if path.is_absolute() || value.is_empty() {
            self.error(
                v,
                &scope.key,
                format!("`{value}` is not a path relative to the package"),
                "name manage.py relative to `package`, e.g. `src/manage.py`",
            );
            return None;
        }
        self.plain(v, scope, &value).then_some(path)
    }

    /// `static_in_package`: a directory inside each package (relative, no
    /// `..`), for an instance that runs its profile and has a
    /// `static_root`, the link to the running generation's.
    pub(super) fn static_in_package<'s>(
        &mut self,
        field: Option<(&Str, String)>,
        scope: &impl Fn(String) -> Scope<'s>,
        static_root: Option<&Utf8PathBuf>,
        profile: bool,
    ) -> Option<Utf8PathBuf> {
        let (v, key) = field?;
        let scope = &scope(key);
        let static_root = static_root.is_some();
        let value = self.expand(v, scope)?;
        let path = Utf8PathBuf::from(&value);
        let inside = !path.is_absolute()
            && !value.is_empty()
            && path
                .components()
                .all(|c| matches!(c, camino::Utf8Component::Normal(_)));
        let wrong = if !inside {
            Some((
                format!("`{value}` is not a directory inside the package"),
                "name it relative to the package, e.g. `static` for `$out/static`",
            ))
        } else if !profile {
            Some((
                "`static_in_package` is for an instance that runs its profile".to_owned(),
                "for a fixed `package`, set `static_root` to the package's directory itself",
            ))
        } else if !static_root {
            Some((
                "`static_in_package` needs `static_root`, the link the web server serves"
                    .to_owned(),
                "set `static_root`, e.g. `/var/lib/{project}-{instance}/static`",
            ))
        } else {
            None
        };
        if let Some((message, help)) = wrong {
            self.error(v, &scope.key, message, help);
            return None;
        }
        self.plain(v, scope, &value).then_some(path)
    }

    /// A path: absolute, or relative to `base`; made absolute and normalized.
    pub(super) fn path(
        &mut self,
        v: &Str,
        scope: &Scope<'_>,
        base: Base<'_>,
    ) -> Option<Utf8PathBuf> {
        let value = self.expand(v, scope)?;
        if value.is_empty() {
            self.error(
                v,
                &scope.key,
                "the path is empty".into(),
                "give a directory or file path",
            );
            return None;
        }
        if !self.plain(v, scope, &value) {
            return None;
        }
        let path = Utf8PathBuf::from(&value);
        if path.is_absolute() {
            return Some(normalize(&path));
        }
        match base {
            Base::ConfigDir => Some(normalize(&self.source.dir.join(path))),
            Base::Package(package) => Some(normalize(&package.join(path))),
            Base::None => {
                self.error(
                    v,
                    &scope.key,
                    format!("`{value}` is not an absolute path"),
                    "write the full path, e.g. `/nix/store/…-mywebsite`; omit `package` to run the instance profile",
                );
                None
            }
        }
    }

    /// Refuses control characters in a path: no unit file or log line can
    /// carry them faithfully, and no real deployment needs them.
    pub(super) fn plain(&mut self, v: &Str, scope: &Scope<'_>, value: &str) -> bool {
        if value.chars().any(char::is_control) {
            self.error(
                v,
                &scope.key,
                "the path contains a control character (a newline or tab, say)".into(),
                "rename the directory",
            );
            return false;
        }
        true
    }

    /// Expands `{project}`, `{instance}`, `{{` and `}}`; refuses NUL.
    pub(super) fn expand(&mut self, v: &Str, scope: &Scope<'_>) -> Option<String> {
        let raw = v.get_ref();
        if raw.contains('\0') {
            self.error(
                v,
                &scope.key,
                "the value contains a NUL character".into(),
                "no shell or unit file can carry NUL; remove it",
            );
            return None;
        }
        let port = if scope.instance.is_some() {
            self.port
        } else {
            None
        };
        match expand(raw, scope.project, scope.instance, port) {
            Ok(s) => Some(s),
            Err(e) => {
                let span = self.inner_span(v, e.at, e.len);
                let at = Spanned::new(span, ());
                self.error(&at, &scope.key, e.message, &e.help);
                None
            }
        }
    }

    /// The span of bytes `at..at+len` of a string value, when the value is
    /// written without escapes (else the whole value's span).
    pub(super) fn inner_span(&self, v: &Str, at: usize, len: usize) -> std::ops::Range<usize> {
        let span = v.span();
        let written = &self.source.text[span.clone()];
        let quote = written.chars().next().unwrap_or('"');
        if written.len() == v.get_ref().len() + 2
            && &written[1..written.len() - 1] == v.get_ref()
            && (quote == '"' || quote == '\'')
        {
            span.start + 1 + at..span.start + 1 + at + len
        } else {
            span
        }
    }
}
