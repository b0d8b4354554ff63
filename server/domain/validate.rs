//! Field violations: validation collects every problem of a request, not only the first.

/// One invalid field: the proto field path (e.g. `shots[2].duration_s`) and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldViolation {
    pub field: String,
    pub description: String,
}

/// The most characters of a caller's value that an error message or detail repeats.
pub const ECHO_CHARS: usize = 64;
/// The most violations one error lists; the rest are counted in a last entry.
pub const MAX_VIOLATIONS: usize = 20;

/// A caller's value as an error repeats it: quoted, at most `ECHO_CHARS` characters, then how
/// long it really was — so a 1 MiB value never comes back as megabytes of error.
pub fn echo(value: &str) -> String {
    bounded(&format!("{value:?}"), ECHO_CHARS + 2, value.len())
}

/// `text` cut to at most `max` characters, with `…(N bytes)` naming the original length.
pub fn truncate(text: &str, max: usize) -> String {
    bounded(text, max, text.len())
}

fn bounded(text: &str, max: usize, original_len: usize) -> String {
    match text.char_indices().nth(max) {
        None => text.to_string(),
        Some((cut, _)) => format!("{}…({original_len} bytes)", &text[..cut]),
    }
}

/// A collector of field violations (at most `MAX_VIOLATIONS` listed; the rest counted).
#[derive(Debug, Default)]
pub struct Violations(Vec<FieldViolation>, usize);

impl Violations {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn add(&mut self, field: impl Into<String>, description: impl Into<String>) {
        if self.0.len() >= MAX_VIOLATIONS {
            self.1 += 1;
            return;
        }
        self.0.push(FieldViolation {
            field: field.into(),
            description: description.into(),
        });
    }

    /// Adds a violation when `ok` is false.
    pub fn check(&mut self, ok: bool, field: impl Into<String>, description: impl Into<String>) {
        if !ok {
            self.add(field, description);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn into_vec(self) -> Vec<FieldViolation> {
        let mut v = self.0;
        if self.1 > 0 {
            v.push(FieldViolation {
                field: "request".into(),
                description: format!("and {} more violations", self.1),
            });
        }
        v
    }

    /// `Ok(())` when nothing was found, else every violation (bounded).
    pub fn finish(self) -> Result<(), Vec<FieldViolation>> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(self.into_vec())
        }
    }

    /// Checks an identifier: 1..=max characters of ASCII letters, digits and `extra`.
    pub fn identifier(
        &mut self,
        field: &str,
        value: &str,
        max: usize,
        extra: &str,
        required: bool,
    ) {
        if value.is_empty() {
            if required {
                self.add(field, "is required");
            }
            return;
        }
        if value.len() > max {
            self.add(field, format!("must be at most {max} characters"));
        } else if !value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || extra.contains(c))
        {
            self.add(
                field,
                format!("may contain only ASCII letters, digits and any of {extra:?}"),
            );
        }
    }

    /// Checks free text length in characters.
    pub fn text(&mut self, field: &str, value: &str, min: usize, max: usize) {
        let n = value.chars().count();
        if n == 0 && min > 0 {
            self.add(field, "is required");
        } else if n < min || n > max {
            self.add(field, format!("must be {min}–{max} characters (got {n})"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echoes_are_bounded() {
        assert_eq!(echo("quick"), "\"quick\"");
        let big = "x".repeat(1 << 20);
        let e = echo(&big);
        assert!(e.chars().count() < 100, "{e}");
        assert!(e.ends_with("…(1048576 bytes)"), "{e}");
        let mut v = Violations::new();
        for i in 0..1000 {
            v.add(format!("f{i}"), "bad");
        }
        let list = v.finish().unwrap_err();
        assert_eq!(list.len(), MAX_VIOLATIONS + 1);
        assert_eq!(list.last().unwrap().description, "and 980 more violations");
    }
}
