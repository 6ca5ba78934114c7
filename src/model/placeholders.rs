//! `{project}`, `{instance}`, `{port}` and literal braces in string values.

use crate::error::backticked;

/// A placeholder problem: where in the string, and what to say.
#[derive(Debug, PartialEq, Eq)]
pub struct PlaceholderError {
    pub at: usize,
    pub len: usize,
    pub message: String,
    pub help: String,
}

/// Expands `{project}`, `{instance}` (only inside an instance) and `{port}`
/// (only in an instance with a `port`); `{{` and `}}` are literal braces;
/// anything else in braces is an error.
pub fn expand(
    raw: &str,
    project: &str,
    instance: Option<&str>,
    port: Option<u16>,
) -> Result<String, PlaceholderError> {
    let mut out = String::with_capacity(raw.len());
    let mut rest = raw;
    while let Some(i) = rest.find(['{', '}']) {
        out.push_str(&rest[..i]);
        let at = raw.len() - rest.len() + i;
        let tail = &rest[i..];
        if tail.starts_with("{{") || tail.starts_with("}}") {
            out.push_str(&tail[..1]);
            rest = &tail[2..];
            continue;
        }
        if tail.starts_with('}') {
            return Err(PlaceholderError {
                at,
                len: 1,
                message: "unmatched `}`".into(),
                help: "write `}}` for a literal brace".into(),
            });
        }
        let Some(end) = tail.find('}') else {
            return Err(PlaceholderError {
                at,
                len: tail.len(),
                message: "unclosed `{`".into(),
                help: "write `{{` for a literal brace".into(),
            });
        };
        let name = &tail[1..end];
        match (name, instance) {
            ("project", _) => out.push_str(project),
            ("instance", Some(instance)) => out.push_str(instance),
            ("instance", None) => {
                return Err(PlaceholderError {
                    at,
                    len: end + 1,
                    message: "`{instance}` is not defined outside an instance".into(),
                    help: "move the value into `[defaults]` or an instance".into(),
                });
            }
            ("port", _) => match port {
                Some(port) => out.push_str(&port.to_string()),
                None => {
                    return Err(PlaceholderError {
                        at,
                        len: end + 1,
                        message: "`{port}` is not defined: the instance has no `port`".into(),
                        help: "set `port = 8001` in the instance (each its own)".into(),
                    });
                }
            },
            _ => {
                return Err(PlaceholderError {
                    at,
                    len: end + 1,
                    message: format!("unknown placeholder `{{{name}}}`"),
                    help: format!(
                        "placeholders are {}; write `{{{{` and `}}}}` for literal braces",
                        backticked(&["{project}", "{instance}", "{port}"])
                    ),
                });
            }
        }
        rest = &tail[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}
