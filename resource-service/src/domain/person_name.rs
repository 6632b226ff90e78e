//! A person's display name.

use unicode_properties::{GeneralCategory, UnicodeGeneralCategory};

use super::Invalid;

/// 1 to 100 characters after trimming, at least one of them visible; no control characters,
/// and none of the format characters that hide text or change the order it shows in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PersonName(String);

impl PersonName {
    pub const MAX_CHARS: usize = 100;

    pub fn parse(name: String) -> Result<Self, Invalid> {
        let trimmed = name.trim();
        if trimmed.is_empty() {
            return Err(Invalid("name must not be empty".into()));
        }
        if trimmed.chars().count() > Self::MAX_CHARS {
            return Err(Invalid(format!(
                "name must be at most {} characters",
                Self::MAX_CHARS
            )));
        }
        if trimmed.chars().any(char::is_control) {
            return Err(Invalid("name must not contain control characters".into()));
        }
        if let Some(c) = hidden_or_reordering(trimmed) {
            return Err(Invalid(format!(
                "name must not contain invisible or text-reordering characters, found U+{:04X}",
                u32::from(c)
            )));
        }
        if !trimmed.chars().any(is_visible) {
            return Err(Invalid("name must contain a visible character".into()));
        }
        // Already trimmed (every name read back from the store): kept without a copy.
        if trimmed.len() == name.len() {
            return Ok(Self(name));
        }
        Ok(Self(trimmed.to_owned()))
    }

    /// The form the name filter matches against: lower-cased in Rust, so SQLite and PostgreSQL
    /// fold case the same way, beyond ASCII too.
    pub fn folded(&self) -> String {
        self.0.to_lowercase()
    }
}

/// The first format character that makes the name show blank, or show in another order than
/// it is stored (so a list or a log shows something else than what was typed): the
/// bidirectional controls (Unicode's `Bidi_Control`), the zero-width space, the word joiner and
/// the byte-order mark; and the zero-width joiner and non-joiner except between two characters
/// they join, as Persian and Indic names and emoji sequences need them.
fn hidden_or_reordering(name: &str) -> Option<char> {
    let chars: Vec<char> = name.chars().collect();
    chars.iter().enumerate().find_map(|(i, &c)| {
        let refused = match c {
            '\u{200C}' | '\u{200D}' => {
                let joins = |n: Option<&char>| n.is_some_and(|&n| is_visible(n) || is_mark(n));
                !(i > 0 && joins(chars.get(i - 1)) && joins(chars.get(i + 1)))
            }
            '\u{061C}'
            | '\u{200B}'
            | '\u{200E}'..='\u{200F}'
            | '\u{202A}'..='\u{202E}'
            | '\u{2060}'
            | '\u{2066}'..='\u{2069}'
            | '\u{FEFF}' => true,
            _ => false,
        };
        refused.then_some(c)
    })
}

/// A combining mark, which decorates the character before it (a virama before a joiner).
fn is_mark(c: char) -> bool {
    matches!(
        c.general_category(),
        GeneralCategory::NonspacingMark
            | GeneralCategory::EnclosingMark
            | GeneralCategory::SpacingMark
    )
}

/// Whether the character shows as something: not a space or separator, not a format or
/// control character, not a mark (which only decorates the character before it), and not one
/// of Hangul's filler letters, which are letters drawn as nothing.
fn is_visible(c: char) -> bool {
    !(c.is_whitespace()
        || matches!(c, '\u{115F}' | '\u{1160}' | '\u{3164}' | '\u{FFA0}')
        || matches!(
            c.general_category(),
            GeneralCategory::SpaceSeparator
                | GeneralCategory::LineSeparator
                | GeneralCategory::ParagraphSeparator
                | GeneralCategory::Format
                | GeneralCategory::Control
                | GeneralCategory::NonspacingMark
                | GeneralCategory::EnclosingMark
                | GeneralCategory::SpacingMark
        ))
}

impl AsRef<str> for PersonName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_names_of_one_to_a_hundred_characters() {
        assert!(PersonName::parse("A".into()).is_ok());
        assert!(PersonName::parse("é".repeat(100)).is_ok());
        assert_eq!(
            PersonName::parse("  Ann Smith ".into()).unwrap().as_ref(),
            "Ann Smith"
        );
    }

    #[test]
    fn accepts_names_in_scripts_with_marks_and_right_to_left_names() {
        for name in [
            "José",
            "e\u{0301}mile",
            "हिन्दी",
            // Joiners between the characters they join: Persian, Devanagari, an emoji family.
            "می\u{200C}خواهم",
            "क्\u{200D}ष",
            "\u{1F468}\u{200D}\u{1F469}\u{200D}\u{1F467}",
            "محمد",
            "שרה כהן",
            "김민준",
            "李小龍",
        ] {
            assert!(PersonName::parse(name.into()).is_ok(), "{name:?}");
        }
    }

    #[test]
    fn refuses_empty_long_and_control_names() {
        assert!(PersonName::parse(String::new()).is_err());
        assert!(PersonName::parse("   ".into()).is_err());
        assert!(PersonName::parse("a".repeat(101)).is_err());
        assert!(PersonName::parse("Ann\u{0}Smith".into()).is_err());
        assert!(PersonName::parse("Ann\nSmith".into()).is_err());
    }

    #[test]
    fn refuses_zero_width_and_bidi_override_characters() {
        for name in [
            "\u{200B}",
            "Ann\u{200B}Smith",
            "\u{202E}htimS nnA",
            "Ann\u{2066}Smith\u{2069}",
            "Ann\u{200D}",
            "\u{200C}Ann",
            "Ann \u{200D} Smith",
            "\u{2060}Ann",
            "\u{FEFF}Ann",
            "Ann\u{200F}",
        ] {
            let refusal = PersonName::parse(name.into()).unwrap_err().0;
            assert!(
                refusal.contains("invisible or text-reordering"),
                "{name:?}: {refusal}"
            );
        }
    }

    #[test]
    fn refuses_names_with_nothing_visible() {
        for name in [
            "\u{3164}",
            "\u{0301}\u{0301}",
            "\u{00AD}",
            "\u{3000}\u{115F}",
        ] {
            let refusal = PersonName::parse(name.into()).unwrap_err().0;
            assert!(
                refusal == "name must contain a visible character"
                    || refusal == "name must not be empty",
                "{name:?}: {refusal}"
            );
        }
    }
}
