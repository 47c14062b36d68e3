//! Redaction of secrets. Every token and every `#` value from `config.json` is registered here as soon as
//! it is read; all log lines and error messages pass through [`redact`] before they leave the process.

// The registry lives with the Storage client, so its `Secret`s (the token, presigned URLs, cloud
// credentials) are registered wherever they are made.
pub use kbc_storage::secret::{Secret, redact, register};

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
    }
}
