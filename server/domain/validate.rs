//! Field violations: validation collects every problem of a request, not only the first.

/// One invalid field: the proto field path (e.g. `shots[2].duration_s`) and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldViolation {
    pub field: String,
    pub description: String,
}

/// A collector of field violations.
#[derive(Debug, Default)]
pub struct Violations(Vec<FieldViolation>);

impl Violations {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn add(&mut self, field: impl Into<String>, description: impl Into<String>) {
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
        self.0
    }

    /// `Ok(())` when nothing was found, else every violation.
    pub fn finish(self) -> Result<(), Vec<FieldViolation>> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(self.0)
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
