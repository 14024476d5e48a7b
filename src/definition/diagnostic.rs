//! A problem found in a definition file, pointing at the line and column to fix.

use std::fmt;

use serde::Serialize;

use crate::definition::node::Pos;

/// One problem in a definition file.
///
/// Rendered as `FILE:LINE:COL: error: MESSAGE`, then `  help: HELP` on its own line
/// when there is a suggestion, so editors and terminals can jump to the spot.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Diagnostic {
    pub file: String,
    #[serde(flatten)]
    pub pos: Pos,
    pub message: String,
    pub help: Option<String>,
    /// Errors make the definition invalid; warnings do not.
    pub severity: Severity,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    #[default]
    Error,
    Warning,
}

impl Diagnostic {
    /// A problem that does not make the definition invalid.
    pub fn warning(file: &str, pos: Pos, message: String, help: String) -> Diagnostic {
        Diagnostic {
            file: file.to_owned(),
            pos,
            message,
            help: Some(help),
            severity: Severity::Warning,
        }
    }

    /// A problem with a whole file or directory rather than a spot in it.
    pub fn about(file: &str, message: String, help: String) -> Diagnostic {
        Diagnostic {
            file: file.to_owned(),
            pos: Pos::START,
            message,
            help: Some(help),
            severity: Severity::Error,
        }
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let severity = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        write!(
            f,
            "{}:{}: {severity}: {}",
            self.file, self.pos, self.message
        )?;
        if let Some(help) = &self.help {
            write!(f, "\n  help: {help}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Diagnostic {}

/// Renders diagnostics one after another, each ending with a newline.
pub fn render(diagnostics: &[Diagnostic]) -> String {
    diagnostics.iter().map(|d| format!("{d}\n")).collect()
}

/// Collects the diagnostics of one file so decoding can go on after a problem.
#[derive(Debug)]
pub(crate) struct Diags {
    file: String,
    list: Vec<Diagnostic>,
}

impl Diags {
    pub(crate) fn new(file: &str) -> Self {
        Diags {
            file: file.to_owned(),
            list: Vec::new(),
        }
    }

    /// Every problem says what is wrong and how to fix it, so there is no way to
    /// report one without help.
    pub(crate) fn error_help(
        &mut self,
        pos: Pos,
        message: impl Into<String>,
        help: impl Into<String>,
    ) {
        self.list.push(Diagnostic {
            file: self.file.clone(),
            pos,
            message: message.into(),
            help: Some(help.into()),
            severity: Severity::Error,
        });
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// The diagnostics in source order (stable for problems at the same spot).
    pub(crate) fn into_sorted(mut self) -> Vec<Diagnostic> {
        self.list.sort_by_key(|d| d.pos);
        self.list
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn diag(help: Option<&str>) -> Diagnostic {
        Diagnostic {
            file: "sagas/a.yaml".into(),
            pos: Pos { line: 3, column: 7 },
            message: "unknown field `timout`".into(),
            help: help.map(str::to_owned),
            severity: Severity::Error,
        }
    }

    #[test]
    fn renders_with_and_without_help() {
        assert_eq!(
            diag(Some("did you mean `timeout`?")).to_string(),
            "sagas/a.yaml:3:7: error: unknown field `timout`\n  help: did you mean `timeout`?"
        );
        assert_eq!(
            diag(None).to_string(),
            "sagas/a.yaml:3:7: error: unknown field `timout`"
        );
    }

    #[test]
    fn serializes_flat() {
        let json = serde_json::to_value(diag(None)).expect("serializes");
        assert_eq!(
            json,
            serde_json::json!({"file": "sagas/a.yaml", "line": 3, "column": 7,
                               "message": "unknown field `timout`", "help": null,
                               "severity": "error"})
        );
    }

    #[test]
    fn sorted_by_position() {
        let mut d = Diags::new("f");
        d.error_help(Pos { line: 5, column: 1 }, "b", "h");
        d.error_help(Pos { line: 2, column: 9 }, "a", "h");
        d.error_help(Pos { line: 5, column: 1 }, "c", "h");
        let msgs: Vec<_> = d.into_sorted().into_iter().map(|d| d.message).collect();
        assert_eq!(msgs, ["a", "b", "c"]);
    }
}
