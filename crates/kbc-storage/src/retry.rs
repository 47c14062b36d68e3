//! The retry policy, as one object with no I/O: given what went wrong, how many times we tried and for how
//! long, it decides whether to try again and after what delay.
//!
//! Why these rules:
//! - 408, 429, 500, 502, 503, 504 and network failures are transient; 501 and every other 4xx are answers
//!   that will not change (keboola/storage-api-php-client#212, #524).
//! - `Retry-After` and Keboola's maintenance answer (503 `{"status":"maintenance"}`, which the API docs
//!   say to retry after `Retry-After`) are honoured for as long as the run may wait: until
//!   [`RetryPolicy::wait_deadline`], which the client sets to its job timeout. A wait that would end
//!   past it is not started, so the run fails at once with the maintenance error instead of sleeping in
//!   vain.
//! - A request that creates a job (import, export, create, delete rows) is repeated only when the server
//!   provably did not act on it: the connection was never made, or it answered 429 or Keboola's 503
//!   maintenance body (it refused the request). A bare 503 is not proof: proxies answer 503 after the
//!   backend got the request (Envoy's "upstream reset"); repeating it doubled an incremental load in
//!   `tests/faults.rs` (`import/proxy-503-after-apply-not-repeated`). After a 500 or a lost response the
//!   job may exist already; repeating an incremental import into a table without a primary key would load
//!   the data twice (keboola/cli#599).
//! - Backoff is exponential with jitter, so parallel transfers that fail together do not retry together,
//!   and bounded by an overall deadline, so retries never outlive the credentials they use.

use std::time::Duration;

/// Whether repeating a request is harmless.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Idempotency {
    /// GET, DELETE of a whole object, and other requests whose repetition changes nothing.
    Idempotent,
    /// A POST (or DELETE with filters) that queues a job: repeated only if the server never got it.
    CreatesJob,
}

/// What went wrong with one attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// The server answered with a non-success status.
    Status {
        status: u16,
        retry_after: Option<Duration>,
    },
    /// The connection could not be made: the request never reached the server.
    Connect,
    /// The request was sent (or partly sent) but no complete answer came: a timeout or a reset.
    Interrupted,
    /// 503 with Keboola's maintenance body (`{"status": "maintenance", ...}`): the API refused the request.
    Maintenance { retry_after: Option<Duration> },
}

/// What to do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Wait this long, then try again.
    Retry(Duration),
    /// Give up and report the failure as it is.
    GiveUp,
    /// Give up, and say that the request may have been applied.
    MaybeApplied,
}

/// The retry policy; [`RetryPolicy::default`] is what the client uses.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// Retries after the first attempt.
    pub max_retries: u32,
    /// The first backoff delay.
    pub initial_backoff: Duration,
    /// The largest backoff delay.
    pub max_backoff: Duration,
    /// Backoff growth per retry.
    pub multiplier: f64,
    /// Waits the server asks for (`Retry-After`, maintenance) are honoured while they end within this
    /// time of the first attempt, whatever [`RetryPolicy::max_retries`] and [`RetryPolicy::deadline`] say.
    pub wait_deadline: Duration,
    /// No other retry starts later than this after the first attempt.
    pub deadline: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_retries: 8,
            initial_backoff: Duration::from_millis(250),
            max_backoff: Duration::from_secs(20),
            multiplier: 2.0,
            // The client cuts this to its job timeout.
            wait_deadline: Duration::from_secs(24 * 3600),
            // Keep below the lifetime of Keboola's federation credentials (~1 h) with a wide margin.
            deadline: Duration::from_secs(5 * 60),
        }
    }
}

impl RetryPolicy {
    /// The statuses worth another attempt.
    pub fn is_retryable_status(status: u16) -> bool {
        matches!(status, 408 | 429 | 500 | 502 | 503 | 504)
    }

    /// Whether the failure proves the server did not act on the request.
    fn not_processed(failure: &Failure) -> bool {
        match failure {
            Failure::Connect => true,
            Failure::Maintenance { .. } => true,
            Failure::Status { status, .. } => *status == 429,
            Failure::Interrupted => false,
        }
    }

    /// Decides what to do after attempt number `retries + 1` failed, `elapsed` after the first attempt began.
    pub fn decide(
        &self,
        retries: u32,
        elapsed: Duration,
        idempotency: Idempotency,
        failure: &Failure,
    ) -> Decision {
        let retryable = match failure {
            Failure::Status { status, .. } => Self::is_retryable_status(*status),
            Failure::Connect | Failure::Interrupted | Failure::Maintenance { .. } => true,
        };
        if !retryable {
            return Decision::GiveUp;
        }
        if idempotency == Idempotency::CreatesJob && !Self::not_processed(failure) {
            return Decision::MaybeApplied;
        }
        let asked = match failure {
            Failure::Status {
                retry_after: Some(after),
                ..
            }
            | Failure::Maintenance {
                retry_after: Some(after),
            } => Some(*after),
            // Maintenance without a Retry-After: the usual backoff, for as long as the run may wait.
            Failure::Maintenance { retry_after: None } => Some(self.backoff(retries)),
            _ => None,
        };
        if let Some(delay) = asked {
            // The server said when to come back: no retry count or short deadline applies, only the run's.
            return if elapsed + delay > self.wait_deadline {
                Decision::GiveUp
            } else {
                Decision::Retry(delay)
            };
        }
        if retries >= self.max_retries {
            return Decision::GiveUp;
        }
        let delay = self.backoff(retries);
        if elapsed + delay > self.deadline {
            return Decision::GiveUp;
        }
        Decision::Retry(delay)
    }

    /// The jittered delay before retry number `retries + 1`: uniformly between half and all of the
    /// exponential step ("equal jitter"), so it still grows while spreading out simultaneous failures.
    pub fn backoff(&self, retries: u32) -> Duration {
        let step =
            self.initial_backoff.as_secs_f64() * self.multiplier.powi(retries.min(64) as i32);
        let step = step.min(self.max_backoff.as_secs_f64()).max(0.0);
        let jittered = if step > 0.0 {
            rand::random_range(step / 2.0..=step)
        } else {
            0.0
        };
        Duration::from_secs_f64(jittered)
    }
}

/// Parses a `Retry-After` header: delta-seconds, or an HTTP date (the delay until then).
pub fn parse_retry_after(value: &str, now: chrono::DateTime<chrono::Utc>) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    if let Ok(secs) = value.parse::<f64>()
        && secs.is_finite()
        && secs >= 0.0
    {
        return Some(Duration::from_secs_f64(secs));
    }
    let when = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    let delta = when.with_timezone(&chrono::Utc) - now;
    Some(delta.to_std().unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            max_retries: 3,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(1),
            multiplier: 2.0,
            wait_deadline: Duration::from_secs(600),
            deadline: Duration::from_secs(60),
        }
    }

    fn status(s: u16) -> Failure {
        Failure::Status {
            status: s,
            retry_after: None,
        }
    }

    #[test]
    fn idempotent_requests_retry_transient_failures_only() {
        let p = policy();
        for s in [408, 429, 500, 502, 503, 504] {
            assert!(
                matches!(
                    p.decide(0, Duration::ZERO, Idempotency::Idempotent, &status(s)),
                    Decision::Retry(_)
                ),
                "{s}"
            );
        }
        for s in [400, 401, 403, 404, 409, 422, 501, 505] {
            assert_eq!(
                p.decide(0, Duration::ZERO, Idempotency::Idempotent, &status(s)),
                Decision::GiveUp,
                "{s}"
            );
        }
        assert!(matches!(
            p.decide(
                0,
                Duration::ZERO,
                Idempotency::Idempotent,
                &Failure::Interrupted
            ),
            Decision::Retry(_)
        ));
        assert!(matches!(
            p.decide(
                0,
                Duration::ZERO,
                Idempotency::Idempotent,
                &Failure::Connect
            ),
            Decision::Retry(_)
        ));
    }

    #[test]
    fn job_creating_requests_repeat_only_when_not_processed() {
        let p = policy();
        let c = Idempotency::CreatesJob;
        assert!(matches!(
            p.decide(0, Duration::ZERO, c, &Failure::Connect),
            Decision::Retry(_)
        ));
        assert!(matches!(
            p.decide(0, Duration::ZERO, c, &status(429)),
            Decision::Retry(_)
        ));
        assert!(matches!(
            p.decide(
                0,
                Duration::ZERO,
                c,
                &Failure::Maintenance { retry_after: None }
            ),
            Decision::Retry(_)
        ));
        for s in [408, 500, 502, 503, 504] {
            assert_eq!(
                p.decide(0, Duration::ZERO, c, &status(s)),
                Decision::MaybeApplied,
                "{s}"
            );
        }
        assert_eq!(
            p.decide(0, Duration::ZERO, c, &Failure::Interrupted),
            Decision::MaybeApplied
        );
        assert_eq!(
            p.decide(0, Duration::ZERO, c, &status(400)),
            Decision::GiveUp
        );
    }

    #[test]
    fn retries_and_deadline_are_bounded() {
        let p = policy();
        assert_eq!(
            p.decide(3, Duration::ZERO, Idempotency::Idempotent, &status(500)),
            Decision::GiveUp
        );
        assert_eq!(
            p.decide(
                0,
                Duration::from_secs(60),
                Idempotency::Idempotent,
                &status(500)
            ),
            Decision::GiveUp
        );
    }

    #[test]
    fn server_asked_waits_are_honoured_up_to_the_wait_deadline() {
        let p = policy();
        let f = |secs| Failure::Status {
            status: 503,
            retry_after: Some(Duration::from_secs(secs)),
        };
        assert_eq!(
            p.decide(0, Duration::ZERO, Idempotency::Idempotent, &f(7)),
            Decision::Retry(Duration::from_secs(7))
        );
        // Longer than the short deadline and past max_retries, but within the wait deadline: waited.
        let m = |secs| Failure::Maintenance {
            retry_after: Some(Duration::from_secs(secs)),
        };
        assert_eq!(
            p.decide(
                20,
                Duration::from_secs(100),
                Idempotency::CreatesJob,
                &m(400)
            ),
            Decision::Retry(Duration::from_secs(400))
        );
        assert!(matches!(
            p.decide(
                20,
                Duration::from_secs(100),
                Idempotency::CreatesJob,
                &Failure::Maintenance { retry_after: None }
            ),
            Decision::Retry(d) if d <= p.max_backoff
        ));
        // A wait that would end past the wait deadline is not started.
        assert_eq!(
            p.decide(
                0,
                Duration::from_secs(300),
                Idempotency::Idempotent,
                &m(301)
            ),
            Decision::GiveUp
        );
        assert_eq!(
            p.decide(0, Duration::ZERO, Idempotency::Idempotent, &f(3600)),
            Decision::GiveUp
        );
    }

    #[test]
    fn backoff_grows_with_jitter_and_is_capped() {
        let p = policy();
        for n in 0..10 {
            let step = (0.1 * 2f64.powi(n)).min(1.0);
            let d = p.backoff(n as u32).as_secs_f64();
            assert!(
                d >= step / 2.0 - 1e-9 && d <= step + 1e-9,
                "retry {n}: {d} not in [{}, {step}]",
                step / 2.0
            );
        }
    }

    #[test]
    fn parses_retry_after_forms() {
        let now = chrono::DateTime::parse_from_rfc3339("2015-10-21T07:27:00Z")
            .unwrap()
            .with_timezone(&chrono::Utc);
        assert_eq!(
            parse_retry_after("120", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now),
            Some(Duration::from_secs(60))
        );
        assert_eq!(parse_retry_after("soon", now), None);
    }
}
