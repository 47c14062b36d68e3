//! Request parameters: the real API accepts the same parameters as JSON, as form-urlencoded (PHP-style
//! `key[]` arrays and `a[0][b]` brackets, `0`/`1` booleans) or as multipart, and GET/DELETE take them in the
//! query string. This module turns all of them into one JSON object and offers lenient typed getters.

use super::error::ApiError;
use serde_json::{Map, Value};

/// Parses a query string (PHP bracket rules) into an object.
pub(crate) fn parse_query(query: Option<&str>) -> Map<String, Value> {
    let pairs: Vec<(String, String)> = query
        .map(|q| serde_urlencoded::from_str::<Vec<(String, String)>>(q).unwrap_or_default())
        .unwrap_or_default();
    from_pairs(pairs.into_iter().map(|(k, v)| (k, Value::String(v))))
}

/// Parses a request body according to its content type. Multipart is handled by the caller (it needs the
/// request), which passes its fields through [`from_pairs`].
pub(crate) fn parse_body(
    content_type: Option<&str>,
    body: &[u8],
) -> Result<Map<String, Value>, ApiError> {
    let ct = content_type.unwrap_or("").to_ascii_lowercase();
    let trimmed = body.iter().position(|b| !b.is_ascii_whitespace());
    let Some(start) = trimmed else {
        return Ok(Map::new());
    };
    let form_or_json = ct.is_empty() || ct.contains("json") || ct.contains("form");
    if !form_or_json {
        // The real API takes parameters only; CSV goes through files/prepare (or `dataString` in a form).
        let ct = ct.split(';').next().unwrap_or("").trim().to_owned();
        return Err(ApiError::bad_request(
            "validation.failed",
            format!(
                "Unsupported Content-Type \"{ct}\": send parameters as JSON, form-urlencoded or multipart. CSV data goes through files/prepare and a dataFileId (or the deprecated sync endpoints' dataString form field)."
            ),
        ));
    }
    if ct.starts_with("application/json") || (!ct.contains("form") && matches!(body[start], b'{')) {
        return match serde_json::from_slice::<Value>(body) {
            Ok(Value::Object(m)) => Ok(m),
            Ok(_) => Err(ApiError::bad_request(
                "validation.failed",
                "The request body must be a JSON object",
            )),
            Err(e) => Err(ApiError::bad_request(
                "validation.failed",
                format!("Invalid JSON in the request body: {e}"),
            )),
        };
    }
    let pairs: Vec<(String, String)> = serde_urlencoded::from_bytes(body).map_err(|e| {
        ApiError::bad_request("validation.failed", format!("Invalid form body: {e}"))
    })?;
    Ok(from_pairs(
        pairs.into_iter().map(|(k, v)| (k, Value::String(v))),
    ))
}

/// Builds a nested object from flat `key[..][..]` pairs: `a[]` appends, `a[0][b]` nests, and objects whose
/// keys are all numbers become arrays (in numeric order).
pub(crate) fn from_pairs(pairs: impl Iterator<Item = (String, Value)>) -> Map<String, Value> {
    let mut root = Map::new();
    for (key, value) in pairs {
        let (base, segments) = split_key(&key);
        insert(&mut root, base, &segments, value);
    }
    root.into_iter()
        .map(|(k, v)| (k, arrays_from_numeric(v)))
        .collect()
}

fn split_key(key: &str) -> (String, Vec<String>) {
    match key.find('[') {
        Some(i) if key.ends_with(']') => {
            let base = key[..i].to_owned();
            let rest = &key[i..];
            let segments = rest
                .split(']')
                .filter(|s| s.starts_with('['))
                .map(|s| s[1..].to_owned())
                .collect();
            (base, segments)
        }
        _ => (key.to_owned(), Vec::new()),
    }
}

fn insert(map: &mut Map<String, Value>, key: String, segments: &[String], value: Value) {
    if segments.is_empty() {
        map.insert(key, value);
        return;
    }
    let entry = map.entry(key).or_insert_with(|| Value::Object(Map::new()));
    if !entry.is_object() {
        *entry = Value::Object(Map::new());
    }
    if let Value::Object(child) = entry {
        let next = if segments[0].is_empty() {
            child.len().to_string()
        } else {
            segments[0].clone()
        };
        insert(child, next, &segments[1..], value);
    }
}

fn arrays_from_numeric(v: Value) -> Value {
    match v {
        Value::Object(m) => {
            let numeric = !m.is_empty() && m.keys().all(|k| k.parse::<usize>().is_ok());
            if numeric {
                let mut items: Vec<(usize, Value)> = m
                    .into_iter()
                    .map(|(k, v)| (k.parse().unwrap_or(0), arrays_from_numeric(v)))
                    .collect();
                items.sort_by_key(|(i, _)| *i);
                Value::Array(items.into_iter().map(|(_, v)| v).collect())
            } else {
                Value::Object(
                    m.into_iter()
                        .map(|(k, v)| (k, arrays_from_numeric(v)))
                        .collect(),
                )
            }
        }
        other => other,
    }
}

/// Typed, lenient access to merged parameters.
#[derive(Debug, Default, Clone)]
pub(crate) struct Params(pub Map<String, Value>);

impl Params {
    pub(crate) fn get(&self, key: &str) -> Option<&Value> {
        self.0.get(key).filter(|v| !v.is_null())
    }

    /// A scalar as a string (numbers and booleans included); None when absent or null.
    pub(crate) fn str(&self, key: &str) -> Option<String> {
        self.get(key).and_then(scalar_string)
    }

    /// A non-empty string.
    pub(crate) fn nonempty(&self, key: &str) -> Option<String> {
        self.str(key).filter(|s| !s.is_empty())
    }

    /// `true`/`false`, `1`/`0`, `"1"`/`"0"`, `"true"`/`"True"`; absent → `default`.
    pub(crate) fn bool(&self, key: &str, default: bool) -> Result<bool, ApiError> {
        match self.get(key) {
            None => Ok(default),
            Some(v) => as_bool(v).ok_or_else(|| {
                ApiError::bad_request(
                    "validation.failed",
                    format!("Parameter \"{key}\" must be a boolean"),
                )
            }),
        }
    }

    pub(crate) fn int(&self, key: &str) -> Result<Option<i64>, ApiError> {
        match self.str(key) {
            None => Ok(None),
            Some(s) if s.is_empty() => Ok(None),
            Some(s) => s.trim().parse::<i64>().map(Some).map_err(|_| {
                ApiError::bad_request(
                    "validation.failed",
                    format!("Parameter \"{key}\" must be an integer, got \"{s}\""),
                )
            }),
        }
    }

    /// A list given as an array or as a comma-separated string.
    pub(crate) fn list(&self, key: &str) -> Vec<String> {
        match self.get(key) {
            Some(Value::Array(items)) => items.iter().filter_map(scalar_string).collect(),
            Some(v) => scalar_string(v)
                .map(|s| {
                    s.split(',')
                        .map(|p| p.trim().to_owned())
                        .filter(|p| !p.is_empty())
                        .collect()
                })
                .unwrap_or_default(),
            None => Vec::new(),
        }
    }

    /// A list that must be an array (`key[]` in forms); a plain string is one element.
    pub(crate) fn array(&self, key: &str) -> Vec<String> {
        match self.get(key) {
            Some(Value::Array(items)) => items.iter().filter_map(scalar_string).collect(),
            Some(v) => scalar_string(v).into_iter().collect(),
            None => Vec::new(),
        }
    }
}

pub(crate) fn scalar_string(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(if *b { "1" } else { "0" }.to_owned()),
        _ => None,
    }
}

pub(crate) fn as_bool(v: &Value) -> Option<bool> {
    match v {
        Value::Bool(b) => Some(*b),
        Value::Number(n) => n.as_i64().map(|i| i != 0),
        Value::String(s) => match s.trim().to_ascii_lowercase().as_str() {
            "1" | "true" | "yes" | "on" => Some(true),
            "0" | "false" | "no" | "off" | "" => Some(false),
            _ => None,
        },
        Value::Null => Some(false),
        _ => None,
    }
}

/// The percent-decoded, non-empty segments of a URL path (`/a/in.c-x%2Ey/` → `["a", "in.c-x.y"]`).
pub(crate) fn path_segments(path: &str) -> Vec<String> {
    path.split('/')
        .filter(|s| !s.is_empty())
        .map(|s| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8_lossy()
                .into_owned()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn form_brackets_become_nested_values() {
        let body = b"tags%5B%5D=a&tags%5B%5D=b&whereFilters%5B0%5D%5Bcolumn%5D=id&whereFilters%5B0%5D%5Bvalues%5D%5B%5D=1&whereFilters%5B0%5D%5Bvalues%5D%5B%5D=2&incremental=1";
        let m = parse_body(Some("application/x-www-form-urlencoded"), body).unwrap();
        assert_eq!(
            Value::Object(m),
            json!({"tags":["a","b"],"whereFilters":[{"column":"id","values":["1","2"]}],"incremental":"1"})
        );
    }

    #[test]
    fn json_and_booleans() {
        let m = parse_body(
            Some("application/json"),
            br#"{"incremental":true,"limit":5,"columns":"a, b"}"#,
        )
        .unwrap();
        let p = Params(m);
        assert!(p.bool("incremental", false).unwrap());
        assert_eq!(p.int("limit").unwrap(), Some(5));
        assert_eq!(p.list("columns"), ["a", "b"]);
        assert!(!p.bool("missing", false).unwrap());
        let q = Params(parse_query(Some("force=False&async=True")));
        assert!(!q.bool("force", true).unwrap());
        assert!(q.bool("async", false).unwrap());
        assert!(
            Params(parse_query(Some("x=maybe")))
                .bool("x", false)
                .is_err()
        );
    }

    #[test]
    fn csv_bodies_are_refused_with_a_hint() {
        let e = parse_body(Some("text/csv"), b"id\n1\n").unwrap_err();
        assert_eq!(e.status, 400);
        assert!(e.message.contains("files/prepare"), "{}", e.message);
        assert!(parse_body(Some("text/csv"), b"").unwrap().is_empty());
    }

    #[test]
    fn bad_json_is_a_400() {
        let e = parse_body(Some("application/json"), b"{nope").unwrap_err();
        assert_eq!(e.status, 400);
    }

    proptest::proptest! {
        /// Whatever a client sends, parsing answers a value or a 400, never a panic.
        #[test]
        fn parsing_never_panics(body in proptest::collection::vec(proptest::num::u8::ANY, 0..200),
                                ct in "(application/json|application/x-www-form-urlencoded|text/csv|)") {
            let ct = (!ct.is_empty()).then_some(ct.as_str());
            if let Ok(m) = parse_body(ct, &body) {
                let p = Params(m);
                let _ = (p.bool("a", false), p.int("a"), p.list("a"), p.array("a"));
            }
        }

        #[test]
        fn bracket_keys_never_panic(key in "[a-z\\[\\]0-9]{0,12}", value in ".{0,5}") {
            let m = from_pairs(std::iter::once((key, Value::String(value))));
            let _ = Value::Object(m).to_string();
        }
    }
}
