//! Paging through the persons: how many per page, where the next page starts, and the name filter.
//!
//! Pages are keyset pages ordered by person id: a page token names the last id the caller has
//! seen, and the next page is the persons with a greater id. Rows inserted while a caller walks
//! the table therefore never shift the pages, so every person that existed when the walk began
//! is returned exactly once.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};

use super::{Invalid, PersonId};

/// How many persons a page holds: 0 asks for the default, and anything above the maximum is
/// lowered to it (AIP-158), so a client asking for "everything" still gets pages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PageSize(u32);

impl PageSize {
    pub const DEFAULT: u32 = 20;
    pub const MAX: u32 = 100;

    pub fn parse(size: i32) -> Result<Self, Invalid> {
        match size {
            0 => Ok(Self(Self::DEFAULT)),
            s if s < 0 => Err(Invalid(format!("page_size must not be negative, got {s}"))),
            s => Ok(Self((s as u32).min(Self::MAX))),
        }
    }

    pub fn get(self) -> u32 {
        self.0
    }
}

impl Default for PageSize {
    fn default() -> Self {
        Self(Self::DEFAULT)
    }
}

/// Opaque to callers: base64url of a versioned cursor, so the encoding can change later.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PageToken {
    pub after: PersonId,
}

const TOKEN_PREFIX: &str = "v1:";

impl PageToken {
    /// An empty token starts at the beginning.
    pub fn parse(token: &str) -> Result<Option<Self>, Invalid> {
        if token.is_empty() {
            return Ok(None);
        }
        let invalid = || Invalid("page_token is not one this service issued".into());
        let bytes = URL_SAFE_NO_PAD.decode(token).map_err(|_| invalid())?;
        let text = std::str::from_utf8(&bytes).map_err(|_| invalid())?;
        let id = text
            .strip_prefix(TOKEN_PREFIX)
            .and_then(|id| id.parse::<i64>().ok())
            .ok_or_else(invalid)?;
        let after = PersonId::parse(id).map_err(|_| invalid())?;
        Ok(Some(Self { after }))
    }

    pub fn encode(&self) -> String {
        URL_SAFE_NO_PAD.encode(format!("{TOKEN_PREFIX}{}", self.after.0))
    }
}

/// A case-insensitive substring of the name; at most as long as a name can be.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NameFilter(String);

impl NameFilter {
    /// An empty filter matches everyone.
    pub fn parse(filter: &str) -> Result<Option<Self>, Invalid> {
        if filter.is_empty() {
            return Ok(None);
        }
        if filter.chars().count() > super::PersonName::MAX_CHARS {
            return Err(Invalid(format!(
                "name_filter must be at most {} characters",
                super::PersonName::MAX_CHARS
            )));
        }
        // No name holds one, and PostgreSQL refuses a NUL in text (an internal error otherwise).
        if filter.chars().any(char::is_control) {
            return Err(Invalid(
                "name_filter must not contain control characters".into(),
            ));
        }
        Ok(Some(Self(filter.to_lowercase())))
    }

    /// A `LIKE` pattern matching folded names that contain the filter, with `\` as the escape
    /// character, so `%` and `_` in the filter match themselves.
    pub fn like_pattern(&self) -> String {
        let mut pattern = String::with_capacity(self.0.len() + 2);
        pattern.push('%');
        for c in self.0.chars() {
            if matches!(c, '%' | '_' | '\\') {
                pattern.push('\\');
            }
            pattern.push(c);
        }
        pattern.push('%');
        pattern
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_size_defaults_clamps_and_refuses_negatives() {
        assert_eq!(PageSize::parse(0).unwrap().get(), 20);
        assert_eq!(PageSize::parse(7).unwrap().get(), 7);
        assert_eq!(PageSize::parse(100).unwrap().get(), 100);
        assert_eq!(PageSize::parse(101).unwrap().get(), 100);
        assert_eq!(PageSize::parse(i32::MAX).unwrap().get(), 100);
        assert!(PageSize::parse(-1).is_err());
    }

    #[test]
    fn page_tokens_round_trip_and_empty_means_start() {
        let token = PageToken {
            after: PersonId(42),
        };
        assert_eq!(PageToken::parse(&token.encode()), Ok(Some(token)));
        assert_eq!(PageToken::parse(""), Ok(None));
    }

    #[test]
    fn forged_page_tokens_are_refused() {
        for bad in [
            "42",
            "!!!",
            &URL_SAFE_NO_PAD.encode("v1:abc"),
            &URL_SAFE_NO_PAD.encode("v1:-5"),
            &URL_SAFE_NO_PAD.encode("v2:5"),
            &URL_SAFE_NO_PAD.encode([0xff, 0xfe]),
        ] {
            assert!(PageToken::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_filter_with_control_characters_is_refused() {
        for bad in ["a\u{0}b", "a\nb", "\u{85}"] {
            assert!(NameFilter::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn like_wildcards_in_a_filter_match_themselves() {
        let filter = NameFilter::parse("50%_A\\").unwrap().unwrap();
        assert_eq!(filter.like_pattern(), "%50\\%\\_a\\\\%");
        assert_eq!(NameFilter::parse(""), Ok(None));
        assert!(NameFilter::parse(&"x".repeat(101)).is_err());
    }
}
