//! Warnings for plain scalars that YAML 1.1 tools read differently. sagaflow reads
//! every scalar by the YAML 1.2 core schema (`NO` and `1:30` are strings), but the same
//! file is also read by editors, linters, CI scripts and other YAML 1.1 libraries
//! (PyYAML, Go's yaml.v2, SnakeYAML), which turn `NO` into false and `1:30` into 90.
//! Quoting removes the doubt, so each such value gets a warning with its quoted form.

use super::diagnostic::Diagnostic;
use super::node::{Node, Pos, Value};

/// Warnings for every plain scalar (value or key) of `root` that YAML 1.1 would read
/// differently. `source` tells plain scalars from quoted ones.
pub(crate) fn warnings(root: &Node, source: &str, file: &str) -> Vec<Diagnostic> {
    let lines: Vec<&str> = source.lines().collect();
    let mut out = Vec::new();
    walk(root, &mut |text, pos| {
        if is_plain(&lines, pos)
            && let Some(reading) = yaml11_reading(text)
        {
            out.push(Diagnostic::warning(
                file,
                pos,
                format!(
                    "`{text}` is the string \"{text}\" here (YAML 1.2), but YAML 1.1 tools read it as {reading}"
                ),
                format!("quote it ('{text}') so that every tool reads the same string"),
            ));
        }
    });
    out
}

fn walk(node: &Node, visit: &mut impl FnMut(&str, Pos)) {
    match &node.value {
        Value::String(s) => visit(s, node.pos),
        Value::Seq(items) => items.iter().for_each(|n| walk(n, visit)),
        Value::Map(entries) => {
            for (key, value) in entries {
                visit(&key.name, key.pos);
                walk(value, visit);
            }
        }
        _ => {}
    }
}

/// A scalar is plain unless it starts with a quote or a block indicator.
fn is_plain(lines: &[&str], pos: Pos) -> bool {
    let Some(line) = usize::try_from(pos.line)
        .ok()
        .and_then(|l| lines.get(l.wrapping_sub(1)))
    else {
        return false;
    };
    let column = usize::try_from(pos.column).unwrap_or(1).saturating_sub(1);
    !matches!(
        line.chars().nth(column),
        Some('\'' | '"' | '|' | '>') | None
    )
}

/// What a YAML 1.1 parser makes of `text`, if not the string itself.
fn yaml11_reading(text: &str) -> Option<String> {
    const TRUE: [&str; 8] = ["y", "Y", "yes", "Yes", "YES", "on", "On", "ON"];
    const FALSE: [&str; 8] = ["n", "N", "no", "No", "NO", "off", "Off", "OFF"];
    // (`True` and `FALSE` are booleans in YAML 1.2 too, so they never reach here.)
    if TRUE.contains(&text) {
        return Some("the boolean true".into());
    }
    if FALSE.contains(&text) {
        return Some("the boolean false".into());
    }
    let unsigned = text.trim_start_matches(['-', '+']);
    let digits = |s: &str, radix: u32| {
        !s.is_empty()
            && s.chars().any(|c| c != '_')
            && s.chars().all(|c| c == '_' || c.is_digit(radix))
    };
    if unsigned.len() > 1 && unsigned.starts_with('0') && digits(unsigned, 10) {
        let octal = digits(unsigned, 8).then(|| {
            i64::from_str_radix(&unsigned.replace('_', ""), 8)
                .map(|n| format!(" ({n})"))
                .unwrap_or_default()
        });
        return Some(match octal {
            Some(value) => format!("an octal number{value}"),
            None => "a number".into(),
        });
    }
    if let Some(bin) = unsigned.strip_prefix("0b")
        && digits(bin, 2)
    {
        return Some("a binary number".into());
    }
    if unsigned.contains('_') && digits(unsigned, 10) {
        return Some(format!("the number {}", unsigned.replace('_', "")));
    }
    sexagesimal(unsigned).map(|n| format!("the number {n} (base 60)"))
}

/// `1:30` → 90, `1:00:00` → 3600: YAML 1.1 integers in base 60.
fn sexagesimal(text: &str) -> Option<u64> {
    let mut parts = text.split(':');
    let first = parts.next()?;
    if !digits_only(first) {
        return None;
    }
    let mut value: u64 = first.parse().ok()?;
    let mut any = false;
    for part in parts {
        if part.is_empty() || part.len() > 2 || !digits_only(part) {
            return None;
        }
        let n: u64 = part.parse().ok()?;
        if n > 59 {
            return None;
        }
        value = value.checked_mul(60)?.checked_add(n)?;
        any = true;
    }
    any.then_some(value)
}

fn digits_only(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn warned(doc: &str) -> Vec<(u64, String)> {
        let root: Node = serde_saphyr::from_str_with_options(
            doc,
            serde_saphyr::options! {
                strict_booleans: true,
                leading_zero_numbers_as_strings: true,
            },
        )
        .expect("parses");
        warnings(&root, doc, "f.yaml")
            .into_iter()
            .map(|d| (d.pos.line, d.message))
            .collect()
    }

    #[test]
    fn yaml_11_readings() {
        for (text, reading) in [
            ("NO", "the boolean false"),
            ("on", "the boolean true"),
            ("y", "the boolean true"),
            ("012345", "an octal number (5349)"),
            ("089", "a number"),
            ("1:30", "the number 90 (base 60)"),
            ("0b101", "a binary number"),
            ("1_000", "the number 1000"),
        ] {
            assert_eq!(yaml11_reading(text).as_deref(), Some(reading), "{text}");
        }
        for text in ["Norway", "0", "12:75", "a:1", "10.5", "ok", "no way", "_"] {
            assert_eq!(yaml11_reading(text), None, "{text}");
        }
    }

    #[test]
    fn plain_scalars_warn_and_quoted_ones_do_not() {
        let doc = "a: NO\nb: 'NO'\nc: \"on\"\nd: {zip: 012345, t: 1:30}\non: x\ne: |\n  yes\n";
        let got = warned(doc);
        let lines: Vec<u64> = got.iter().map(|(l, _)| *l).collect();
        assert_eq!(lines, [1, 4, 4, 5], "{got:?}");
        assert!(
            got[0].1.contains("`NO` is the string \"NO\" here"),
            "{got:?}"
        );
    }
}
