//! Table and bucket ids, checked once: `STAGE.BUCKET.TABLE` and `STAGE.BUCKET`, the stage `in`, `out` or
//! `sys`, no part empty. A [`TableId`] or [`BucketId`] in hand is a valid one, so the client's methods
//! take them instead of strings and never check an id again.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::str::FromStr;

/// The stages a bucket can be in.
const STAGES: [&str; 3] = ["in", "out", "sys"];

/// What an id that does not parse was meant to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdKind {
    Table,
    Bucket,
}

/// Which rule an id breaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdRule {
    /// A table id has exactly two dots, a bucket id exactly one.
    Dots,
    /// A part is empty (`in..t`).
    EmptyPart,
    /// The stage is not `in`, `out` or `sys`.
    Stage,
}

/// An id that does not parse. The message is the one users have always seen; [`IdError::reason`] is the
/// broken rule alone, for callers that phrase their own message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct IdError {
    pub id: String,
    pub kind: IdKind,
    pub rule: IdRule,
}

impl IdError {
    /// The broken rule in a few words, e.g. "it needs exactly two dots".
    pub fn reason(&self) -> &'static str {
        match (self.kind, self.rule) {
            (IdKind::Table, IdRule::Dots) => "it needs exactly two dots",
            (IdKind::Bucket, IdRule::Dots) => "it needs exactly one dot",
            (_, IdRule::EmptyPart) => "no part may be empty",
            (_, IdRule::Stage) => "the stage must be in, out or sys",
        }
    }
}

impl fmt::Display for IdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            IdKind::Table => write!(
                f,
                "{:?} is not a table id (expected STAGE.BUCKET.TABLE, e.g. in.c-main.orders)",
                self.id
            ),
            IdKind::Bucket => write!(
                f,
                "{:?} is not a bucket id (expected STAGE.NAME, e.g. in.c-main)",
                self.id
            ),
        }
    }
}

/// Checks `id` against the one rule set; `parts` is 3 for a table id, 2 for a bucket id.
fn check(id: &str, kind: IdKind, parts: usize) -> Result<(), IdError> {
    let fail = |rule| IdError {
        id: id.to_owned(),
        kind,
        rule,
    };
    let split: Vec<&str> = id.split('.').collect();
    if split.len() != parts {
        return Err(fail(IdRule::Dots));
    }
    if split.iter().any(|p| p.is_empty()) {
        return Err(fail(IdRule::EmptyPart));
    }
    if !STAGES.contains(&split[0]) {
        return Err(fail(IdRule::Stage));
    }
    Ok(())
}

/// A bucket id, `in.c-main`: stage and bucket name.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BucketId(String);

impl BucketId {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// `in`, `out` or `sys`.
    pub fn stage(&self) -> &str {
        self.0.split_once('.').map_or("", |(stage, _)| stage)
    }

    /// The bucket's name, e.g. `c-main`.
    pub fn name(&self) -> &str {
        self.0.split_once('.').map_or("", |(_, name)| name)
    }

    /// The same stage with another name (a development branch's bucket).
    pub fn with_name(&self, name: &str) -> Result<BucketId, IdError> {
        format!("{}.{name}", self.stage()).parse()
    }

    /// The id of table `name` in this bucket.
    pub fn table(&self, name: &str) -> Result<TableId, IdError> {
        format!("{}.{name}", self.0).parse()
    }
}

impl FromStr for BucketId {
    type Err = IdError;
    fn from_str(id: &str) -> Result<Self, IdError> {
        check(id, IdKind::Bucket, 2)?;
        Ok(BucketId(id.to_owned()))
    }
}

/// A table id, `in.c-main.orders`: bucket id and table name.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TableId(String);

impl TableId {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    fn split(&self) -> (&str, &str) {
        self.0.rsplit_once('.').unwrap_or(("", &self.0))
    }

    /// The bucket the table is in.
    pub fn bucket(&self) -> BucketId {
        BucketId(self.split().0.to_owned())
    }

    /// The table's name, e.g. `orders`.
    pub fn name(&self) -> &str {
        self.split().1
    }

    /// `in`, `out` or `sys`.
    pub fn stage(&self) -> &str {
        self.0.split_once('.').map_or("", |(stage, _)| stage)
    }
}

impl FromStr for TableId {
    type Err = IdError;
    fn from_str(id: &str) -> Result<Self, IdError> {
        check(id, IdKind::Table, 3)?;
        Ok(TableId(id.to_owned()))
    }
}

macro_rules! string_like {
    ($t:ty) => {
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(&self.0, f)
            }
        }

        impl AsRef<str> for $t {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl PartialEq<str> for $t {
            fn eq(&self, other: &str) -> bool {
                self.0 == other
            }
        }

        impl PartialEq<&str> for $t {
            fn eq(&self, other: &&str) -> bool {
                self.0 == *other
            }
        }

        impl Serialize for $t {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                String::deserialize(d)?
                    .parse()
                    .map_err(serde::de::Error::custom)
            }
        }
    };
}

string_like!(TableId);
string_like!(BucketId);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_ids_are_checked_once() {
        let id: TableId = "in.c-main.orders".parse().unwrap();
        assert_eq!(
            (id.stage(), id.bucket().as_str(), id.name()),
            ("in", "in.c-main", "orders")
        );
        assert_eq!(id.bucket().name(), "c-main");
        assert_eq!(id.to_string(), "in.c-main.orders");
        assert_eq!(format!("{id:?}"), "\"in.c-main.orders\"");
        for (bad, rule) in [
            ("orders", IdRule::Dots),
            ("in.c-main", IdRule::Dots),
            ("in.c-main.t.u", IdRule::Dots),
            ("in..t", IdRule::EmptyPart),
            ("x.c-main.t", IdRule::Stage),
        ] {
            let err = bad.parse::<TableId>().unwrap_err();
            assert_eq!(err.rule, rule, "{bad}");
            assert_eq!(
                err.to_string(),
                format!(
                    "{bad:?} is not a table id (expected STAGE.BUCKET.TABLE, e.g. in.c-main.orders)"
                )
            );
        }
        assert_eq!(
            "out.c-main".parse::<TableId>().unwrap_err().reason(),
            "it needs exactly two dots"
        );
    }

    #[test]
    fn bucket_ids_are_checked_once() {
        let b: BucketId = "out.c-x".parse().unwrap();
        assert_eq!((b.stage(), b.name()), ("out", "c-x"));
        assert_eq!(b.table("t").unwrap(), "out.c-x.t");
        assert_eq!(b.with_name("c-9-x").unwrap(), "out.c-9-x");
        assert!(b.table("a.b").is_err());
        for bad in ["c-x", "in.", "x.c-x", "in.c-x.t"] {
            let err = bad.parse::<BucketId>().unwrap_err();
            assert!(err.to_string().contains("is not a bucket id"), "{bad}");
        }
    }

    #[test]
    fn ids_read_and_write_as_strings() {
        let id: TableId = serde_json::from_str("\"sys.c-x.t\"").unwrap();
        assert_eq!(serde_json::to_string(&id).unwrap(), "\"sys.c-x.t\"");
        assert!(serde_json::from_str::<TableId>("\"t\"").is_err());
    }
}
