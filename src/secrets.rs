//! Redaction of secrets. Every token and every `#` value from `config.json` is registered here as soon as
//! it is read; all log lines and error messages pass through [`redact`] before they leave the process.

use std::borrow::Cow;
use std::sync::RwLock;

static SECRETS: RwLock<Vec<String>> = RwLock::new(Vec::new());

/// What a secret is replaced with; the platform's own filter uses the same text.
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

/// Registers every string under a key starting with `#`, at any depth of a JSON document.
pub fn register_hash_values(value: &serde_json::Value) {
    fn walk(value: &serde_json::Value, secret: bool) {
        match value {
            serde_json::Value::Object(map) => {
                for (k, v) in map {
                    walk(v, secret || k.starts_with('#'));
                }
            }
            serde_json::Value::Array(items) => items.iter().for_each(|v| walk(v, secret)),
            serde_json::Value::String(s) if secret => register(s),
            serde_json::Value::Number(n) if secret => register(&n.to_string()),
            _ => {}
        }
    }
    walk(value, false);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_registered_and_hash_values() {
        register("tok-1234-secret");
        register_hash_values(&serde_json::json!({"a": {"#password": "hunter22", "user": "bob1"}}));
        assert_eq!(
            redact("token tok-1234-secret and hunter22 for bob1"),
            "token [hidden] and [hidden] for bob1"
        );
        assert!(matches!(redact("nothing here"), Cow::Borrowed(_)));
    }
}
