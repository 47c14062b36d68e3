//! Fault injection: rules that make the next matching requests or jobs misbehave, so clients' retry, resume
//! and no-double-load logic can be tested against a server that fails on cue. A rule is posted as JSON to
//! `POST /_emulator/faults` or added with [`super::Emulator::add_fault`]; its keys and their effects are
//! described in this crate's `README.md` ("Fault rules").

use serde::{Deserialize, Serialize};
use std::sync::Mutex;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FaultRule {
    #[serde(default)]
    pub method: Option<String>,
    #[serde(default)]
    pub path: Option<String>,
    #[serde(default)]
    pub query: Option<String>,
    #[serde(default = "one")]
    pub times: u32,
    #[serde(default)]
    pub skip: u32,
    #[serde(default)]
    pub status: Option<u16>,
    #[serde(default)]
    pub retry_after: Option<u64>,
    #[serde(default)]
    pub code: Option<String>,
    #[serde(default)]
    pub message: Option<String>,
    #[serde(default)]
    pub after_apply: bool,
    #[serde(default)]
    pub delay_ms: Option<u64>,
    #[serde(default)]
    pub cut_after_bytes: Option<u64>,
    #[serde(default)]
    pub job: Option<String>,
    #[serde(default)]
    pub fail: Option<JobFailure>,
    #[serde(default)]
    pub hang: bool,
    #[serde(default)]
    pub truncate_slice_bytes: Option<u64>,
}

fn one() -> u32 {
    1
}

impl Default for FaultRule {
    /// Matches every request once and does nothing: set at least one action.
    fn default() -> Self {
        Self {
            method: None,
            path: None,
            query: None,
            times: 1,
            skip: 0,
            status: None,
            retry_after: None,
            code: None,
            message: None,
            after_apply: false,
            delay_ms: None,
            cut_after_bytes: None,
            job: None,
            fail: None,
            hang: false,
            truncate_slice_bytes: None,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct JobFailure {
    pub code: String,
    pub message: String,
}

/// What to do to one request.
#[derive(Debug, Clone, Default)]
pub(crate) struct RequestFault {
    pub(crate) status: Option<u16>,
    pub(crate) retry_after: Option<u64>,
    pub(crate) code: Option<String>,
    pub(crate) message: Option<String>,
    pub(crate) after_apply: bool,
    pub(crate) delay_ms: Option<u64>,
    pub(crate) cut_after_bytes: Option<u64>,
}

/// What to do to one job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum JobFault {
    Fail {
        code: String,
        message: String,
    },
    Hang,
    TruncateSlice(u64),
    /// Stay `processing` this many milliseconds before doing the work (jobs of a known duration).
    Delay(u64),
}

#[derive(Debug, thiserror::Error)]
#[error("invalid fault rule: {0}")]
pub(crate) struct InvalidRule(String);

#[derive(Default)]
pub(crate) struct Faults {
    rules: Mutex<Vec<FaultRule>>,
}

impl Faults {
    pub(crate) fn add(&self, rule: FaultRule) -> Result<(), InvalidRule> {
        if rule.times == 0 {
            return Err(InvalidRule("`times` must be at least 1".into()));
        }
        if rule.job.is_some() {
            let n = [
                rule.fail.is_some(),
                rule.hang,
                rule.truncate_slice_bytes.is_some(),
                rule.delay_ms.is_some(),
            ]
            .iter()
            .filter(|b| **b)
            .count();
            if n != 1 {
                return Err(InvalidRule(
                    "a `job` rule needs exactly one of `fail`, `hang`, `truncateSliceBytes`, `delayMs`"
                        .into(),
                ));
            }
        } else if rule.status.is_none() && rule.delay_ms.is_none() && rule.cut_after_bytes.is_none()
        {
            return Err(InvalidRule(
                "a request rule needs `status`, `delayMs` or `cutAfterBytes`".into(),
            ));
        }
        if rule.after_apply && rule.status.is_none() {
            return Err(InvalidRule("`afterApply` needs `status`".into()));
        }
        if let Some(s) = rule.status
            && !(100..=599).contains(&s)
        {
            return Err(InvalidRule(format!("`status` {s} is not an HTTP status")));
        }
        self.rules
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(rule);
        Ok(())
    }

    pub(crate) fn list(&self) -> Vec<FaultRule> {
        self.rules.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub(crate) fn clear(&self) {
        self.rules.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }

    /// Consumes the first request rule matching `method path?query`, if any.
    pub(crate) fn take_request_fault(
        &self,
        method: &str,
        path: &str,
        query: &str,
    ) -> Option<RequestFault> {
        let mut rules = self.rules.lock().unwrap_or_else(|p| p.into_inner());
        let idx = rules.iter().position(|r| {
            r.job.is_none()
                && r.method
                    .as_deref()
                    .is_none_or(|m| m == "*" || m.eq_ignore_ascii_case(method))
                && r.path
                    .as_deref()
                    .is_none_or(|p| glob(p.as_bytes(), path.as_bytes()))
                && r.query
                    .as_deref()
                    .is_none_or(|q| glob(q.as_bytes(), query.as_bytes()))
        })?;
        let rule = &mut rules[idx];
        if rule.skip > 0 {
            rule.skip -= 1;
            return None;
        }
        let fault = RequestFault {
            status: rule.status,
            retry_after: rule.retry_after,
            code: rule.code.clone(),
            message: rule.message.clone(),
            after_apply: rule.after_apply,
            delay_ms: rule.delay_ms,
            cut_after_bytes: rule.cut_after_bytes,
        };
        rule.times -= 1;
        if rule.times == 0 {
            rules.remove(idx);
        }
        Some(fault)
    }

    /// Consumes the first job rule for `operation`, if any.
    pub(crate) fn take_job_fault(&self, operation: &str) -> Option<JobFault> {
        let mut rules = self.rules.lock().unwrap_or_else(|p| p.into_inner());
        let idx = rules
            .iter()
            .position(|r| r.job.as_deref().is_some_and(|j| j == "*" || j == operation))?;
        let rule = &mut rules[idx];
        if rule.skip > 0 {
            rule.skip -= 1;
            return None;
        }
        let fault = if let Some(f) = &rule.fail {
            JobFault::Fail {
                code: f.code.clone(),
                message: f.message.clone(),
            }
        } else if rule.hang {
            JobFault::Hang
        } else if let Some(ms) = rule.delay_ms {
            JobFault::Delay(ms)
        } else {
            JobFault::TruncateSlice(rule.truncate_slice_bytes.unwrap_or(0))
        };
        rule.times -= 1;
        if rule.times == 0 {
            rules.remove(idx);
        }
        Some(fault)
    }
}

/// `*` matches any run of bytes (including `/`); everything else literally.
pub(crate) fn glob(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while t < text.len() {
        if p < pattern.len() && pattern[p] == b'*' {
            star = Some(p);
            mark = t;
            p += 1;
        } else if p < pattern.len() && pattern[p] == text[t] {
            p += 1;
            t += 1;
        } else if let Some(s) = star {
            p = s + 1;
            mark += 1;
            t = mark;
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob(
            b"/v2/storage/tables/*/import-async",
            b"/v2/storage/tables/in.c-a.t/import-async"
        ));
        assert!(glob(b"*", b"/anything/at/all"));
        assert!(!glob(b"/v2/storage/jobs/*", b"/v2/storage/tables/x"));
        assert!(glob(
            b"/kbc-sapi-files/*_part_*",
            b"/kbc-sapi-files/exp/1.csv0000_part_00.gz"
        ));
    }

    #[test]
    fn rules_are_consumed_in_order_and_counted() {
        let f = Faults::default();
        f.add(FaultRule {
            method: Some("GET".into()),
            path: Some("/x*".into()),
            times: 2,
            skip: 1,
            status: Some(503),
            retry_after: Some(1),
            ..Default::default()
        })
        .unwrap();
        assert!(f.take_request_fault("GET", "/xa", "").is_none()); // skipped
        assert!(f.take_request_fault("POST", "/xa", "").is_none());
        assert_eq!(
            f.take_request_fault("GET", "/xa", "").unwrap().status,
            Some(503)
        );
        assert_eq!(
            f.take_request_fault("get", "/xb", "").unwrap().retry_after,
            Some(1)
        );
        assert!(f.take_request_fault("GET", "/xa", "").is_none());
        f.add(FaultRule {
            query: Some("*partNumber=2&*".into()),
            status: Some(500),
            ..Default::default()
        })
        .unwrap();
        assert!(
            f.take_request_fault("PUT", "/b/k", "partNumber=1&uploadId=u")
                .is_none()
        );
        assert!(
            f.take_request_fault("PUT", "/b/k", "partNumber=2&uploadId=u")
                .is_some()
        );
        assert!(f.add(FaultRule::default()).is_err());
        f.add(FaultRule {
            job: Some("tableImport".into()),
            hang: true,
            ..Default::default()
        })
        .unwrap();
        assert_eq!(f.take_job_fault("tableExport"), None);
        assert_eq!(f.take_job_fault("tableImport"), Some(JobFault::Hang));
        f.add(FaultRule {
            job: Some("*".into()),
            delay_ms: Some(100),
            times: 2,
            ..Default::default()
        })
        .unwrap();
        assert_eq!(f.take_job_fault("tableExport"), Some(JobFault::Delay(100)));
        assert_eq!(f.take_job_fault("bucketDelete"), Some(JobFault::Delay(100)));
        assert_eq!(f.take_job_fault("tableExport"), None);
        assert!(
            f.add(FaultRule {
                job: Some("*".into()),
                delay_ms: Some(1),
                hang: true,
                ..Default::default()
            })
            .is_err()
        );
        assert_eq!(f.take_job_fault("tableImport"), None);
    }

    proptest::proptest! {
        #[test]
        fn glob_never_panics_and_star_matches_all(p in ".{0,12}", t in ".{0,24}") {
            let _ = glob(p.as_bytes(), t.as_bytes());
            proptest::prop_assert!(glob(b"*", t.as_bytes()));
            proptest::prop_assert!(glob(t.replace('*', "").as_bytes(), t.replace('*', "").as_bytes()));
        }
    }
}
