//! Secrets and their redaction: one process-wide list of values that must never be shown, and the
//! [`Secret`] type that adds its value to that list when it is made. Programs built on the client pass
//! every line they print through [`redact`], so a token or a presigned URL that ends up in an error
//! message from a server, a library or a panic is still masked.

use serde::{Deserialize, Deserializer};
use std::borrow::Cow;
use std::fmt;
use std::sync::RwLock;

static SECRETS: RwLock<Vec<String>> = RwLock::new(Vec::new());

/// What a secret is replaced with; the Keboola platform's own log filter uses the same text.
pub const MASK: &str = "[hidden]";

/// Registers a secret value. Very short values are ignored: masking every `1` in the logs would make them
/// unreadable and protect nothing.
pub fn register(value: &str) {
    let value = value.trim();
    if value.len() < 4 {
        return;
    }
    let mut secrets = SECRETS.write().unwrap_or_else(|e| e.into_inner());
    if !secrets.iter().any(|s| s == value) {
        secrets.push(value.to_owned());
        // Longest first, so a secret containing another is masked whole.
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
    }
}

/// Replaces every registered secret in `text` with [`MASK`].
pub fn redact(text: &str) -> Cow<'_, str> {
    let secrets = SECRETS.read().unwrap_or_else(|e| e.into_inner());
    if !secrets.iter().any(|s| text.contains(s.as_str())) {
        return Cow::Borrowed(text);
    }
    let mut out = text.to_owned();
    for s in secrets.iter() {
        out = out.replace(s.as_str(), MASK);
    }
    Cow::Owned(out)
}

/// A string that must not be shown: tokens, presigned URLs, cloud credentials. Making one (also by
/// deserializing it) registers its value for [`redact`], and `Debug` never shows it.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        let value = value.into();
        register(&value);
        Secret(value)
    }

    /// The value itself, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Secret::new(value)
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Self {
        Secret::new(value)
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Secret::new)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // An empty value is shown as such: "no token" is worth seeing when debugging.
        f.write_str(if self.0.is_empty() { "\"\"" } else { MASK })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn making_a_secret_registers_it_and_debug_hides_it() {
        let s = Secret::new("tok-5678-made-here");
        assert_eq!(format!("{s:?}"), MASK);
        assert_eq!(redact("sent tok-5678-made-here"), "sent [hidden]");
        let parsed: Secret = serde_json::from_str("\"https://s3/x?sig=parsed-secret\"").unwrap();
        assert_eq!(parsed.expose(), "https://s3/x?sig=parsed-secret");
        assert_eq!(redact("GET https://s3/x?sig=parsed-secret"), "GET [hidden]");
        assert_eq!(format!("{:?}", Secret::default()), "\"\"");
        assert!(matches!(redact("nothing here"), Cow::Borrowed(_)));
    }

    #[test]
    fn short_values_are_not_masked_and_longer_ones_win() {
        register("abc");
        register("key-1234");
        register("key-1234-and-more");
        assert_eq!(redact("abc key-1234-and-more"), "abc [hidden]");
    }
}
