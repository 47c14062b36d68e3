//! The CSV dialect of a file Storage loads: field delimiter and enclosure, each one byte. Storage and CSV
//! readers split fields on a single byte, so a character that takes several bytes in UTF-8 (`§`, `¦`) is
//! refused when it is parsed, with the reason, instead of being cut to its first byte later.

use std::fmt;
use std::str::FromStr;

/// Why a delimiter or an enclosure was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct DialectError(String);

/// Checks that `text` is one character of one byte; `what` names the option in the message.
fn one_byte(what: &str, text: &str) -> Result<u8, DialectError> {
    let mut chars = text.chars();
    match (chars.next(), chars.next()) {
        (Some(c), None) if c.is_ascii() => Ok(c as u8),
        (Some(c), None) => Err(DialectError(format!(
            "{what} `{c}` is {} bytes in UTF-8; the {what} must be a one-byte (ASCII) character, because \
             Storage and the CSV reader split fields on a single byte",
            c.len_utf8()
        ))),
        _ => Err(DialectError(format!(
            "{what} must be one character, got {} characters",
            text.chars().count()
        ))),
    }
}

/// A field delimiter: one byte, `,` by default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delimiter(u8);

impl Delimiter {
    pub const COMMA: Delimiter = Delimiter(b',');

    pub fn byte(self) -> u8 {
        self.0
    }
}

impl Default for Delimiter {
    fn default() -> Self {
        Delimiter::COMMA
    }
}

impl FromStr for Delimiter {
    type Err = DialectError;
    fn from_str(s: &str) -> Result<Self, DialectError> {
        one_byte("delimiter", s).map(Delimiter)
    }
}

impl fmt::Display for Delimiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0 as char)
    }
}

/// A field enclosure: one byte, `"` by default, or none (empty: values are never quoted).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Enclosure(Option<u8>);

impl Enclosure {
    pub const DOUBLE_QUOTE: Enclosure = Enclosure(Some(b'"'));
    pub const NONE: Enclosure = Enclosure(None);

    /// The quote byte; `None` when values are not enclosed.
    pub fn byte(self) -> Option<u8> {
        self.0
    }
}

impl Default for Enclosure {
    fn default() -> Self {
        Enclosure::DOUBLE_QUOTE
    }
}

impl FromStr for Enclosure {
    type Err = DialectError;
    fn from_str(s: &str) -> Result<Self, DialectError> {
        if s.is_empty() {
            return Ok(Enclosure::NONE);
        }
        one_byte("enclosure", s)
            .map(|b| Enclosure(Some(b)))
            .map_err(|e| {
                if s.chars().count() > 1 {
                    DialectError("enclosure must be one character or empty".into())
                } else {
                    e
                }
            })
    }
}

impl fmt::Display for Enclosure {
    /// As the API takes it: the character, or an empty string for none.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(b) => write!(f, "{}", b as char),
            None => Ok(()),
        }
    }
}

/// Delimiter and enclosure together, the RFC 4180 pair (`,` and `"`) by default.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Dialect {
    pub delimiter: Delimiter,
    pub enclosure: Enclosure,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_byte_characters_only() {
        assert_eq!(";".parse::<Delimiter>().unwrap().byte(), b';');
        assert_eq!("\t".parse::<Delimiter>().unwrap().to_string(), "\t");
        let err = "§".parse::<Delimiter>().unwrap_err().to_string();
        assert!(
            err.starts_with(
                "delimiter `§` is 2 bytes in UTF-8; the delimiter must be a one-byte (ASCII)"
            ),
            "{err}"
        );
        assert_eq!(
            ";;".parse::<Delimiter>().unwrap_err().to_string(),
            "delimiter must be one character, got 2 characters"
        );
        assert!("".parse::<Delimiter>().is_err());
    }

    #[test]
    fn an_enclosure_may_be_empty() {
        assert_eq!("".parse::<Enclosure>().unwrap(), Enclosure::NONE);
        assert_eq!(Enclosure::NONE.to_string(), "");
        assert_eq!("'".parse::<Enclosure>().unwrap().byte(), Some(b'\''));
        assert_eq!(
            "''".parse::<Enclosure>().unwrap_err().to_string(),
            "enclosure must be one character or empty"
        );
        assert!(
            "«".parse::<Enclosure>()
                .unwrap_err()
                .to_string()
                .contains("2 bytes in UTF-8")
        );
        assert_eq!(Dialect::default().delimiter, Delimiter::COMMA);
        assert_eq!(Dialect::default().enclosure.byte(), Some(b'"'));
    }
}
