//! Which Storage API stack and token a program uses: the one rule for reading them from the environment,
//! shared by every command so that the same variables mean the same thing everywhere.
//!
//! The rule:
//! - A value given explicitly (a command-line flag, a configuration parameter) wins for its half.
//! - With neither half given, the environment is read **in pairs**: `KBC_URL` with `KBC_TOKEN` when both
//!   are set, else `KEBOOLA_STACK_URL` with `KEBOOLA_TOKEN` when both are set. A half of one pair is never
//!   joined to the other half of the other pair, so a token is only ever sent to the stack it was set
//!   next to (`KBC_URL` with `KEBOOLA_TOKEN` is no pair: nothing is used).
//! - With one half given explicitly, the other half comes from the environment: `KBC_*` first, then
//!   `KEBOOLA_*`.
//! - A variable that is empty or only whitespace is unset.
//!
//! The URL is taken as written: the client normalises it ([`crate::transport::normalize_url`]: a bare host
//! gets `https://`, a trailing `/v2/storage` is dropped) and refuses one that is not an http(s) URL.

use crate::secret::Secret;

/// The environment's `(url, token)` variable pairs, in the order they are tried.
const ENV_PAIRS: [(&str, &str); 2] = [
    ("KBC_URL", "KBC_TOKEN"),
    ("KEBOOLA_STACK_URL", "KEBOOLA_TOKEN"),
];

/// A stack URL (as written) and a token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    pub url: String,
    pub token: Secret,
}

/// What is missing when no credentials could be put together.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MissingCredentials {
    /// No URL anywhere.
    pub url: bool,
    /// No token anywhere.
    pub token: bool,
    /// Variables set without their partner, as `(set, unset)`: `("KBC_URL", "KBC_TOKEN")`.
    pub unpaired: Vec<(&'static str, &'static str)>,
}

impl MissingCredentials {
    /// `; KBC_URL is set without KBC_TOKEN (the environment's URL and token count only in pairs)`, or
    /// nothing when no variable is half of a pair: what a message adds so a half-set pair is not a mystery.
    pub fn unpaired_note(&self) -> String {
        if self.unpaired.is_empty() {
            return String::new();
        }
        let halves: Vec<String> = self
            .unpaired
            .iter()
            .map(|(set, unset)| format!("{set} is set without {unset}"))
            .collect();
        format!(
            "; {} (the environment's URL and token count only in pairs: KBC_URL with KBC_TOKEN, \
             KEBOOLA_STACK_URL with KEBOOLA_TOKEN)",
            halves.join(", ")
        )
    }
}

impl Credentials {
    /// Resolves the URL and token by the rule above. `url` and `token` are the explicitly given halves;
    /// `var` reads an environment variable (the process's, or a test's).
    pub fn resolve(
        url: Option<&str>,
        token: Option<&str>,
        var: impl Fn(&str) -> Option<String>,
    ) -> Result<Credentials, MissingCredentials> {
        let given = |v: Option<&str>| {
            v.map(str::trim)
                .filter(|v| !v.is_empty())
                .map(str::to_owned)
        };
        let get = |name: &str| given(var(name).as_deref());
        let first = |names: [&str; 2]| names.into_iter().find_map(get);
        let urls = ENV_PAIRS.map(|(u, _)| u);
        let tokens = ENV_PAIRS.map(|(_, t)| t);
        let found = |url: String, token: String| Credentials {
            url,
            token: Secret::new(token),
        };
        match (given(url), given(token)) {
            (Some(url), Some(token)) => Ok(found(url, token)),
            (Some(url), None) => first(tokens)
                .map(|t| found(url, t))
                .ok_or(MissingCredentials {
                    token: true,
                    ..Default::default()
                }),
            (None, Some(token)) => first(urls)
                .map(|u| found(u, token))
                .ok_or(MissingCredentials {
                    url: true,
                    ..Default::default()
                }),
            (None, None) => {
                for (u, t) in ENV_PAIRS {
                    if let (Some(url), Some(token)) = (get(u), get(t)) {
                        return Ok(found(url, token));
                    }
                }
                let unpaired = ENV_PAIRS
                    .iter()
                    .filter_map(|&(u, t)| match (get(u).is_some(), get(t).is_some()) {
                        (true, false) => Some((u, t)),
                        (false, true) => Some((t, u)),
                        _ => None,
                    })
                    .collect();
                Err(MissingCredentials {
                    url: first(urls).is_none(),
                    token: first(tokens).is_none(),
                    unpaired,
                })
            }
        }
    }

    /// Resolves from the environment alone (no explicit halves).
    pub fn from_env(
        var: impl Fn(&str) -> Option<String>,
    ) -> Result<Credentials, MissingCredentials> {
        Self::resolve(None, None, var)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |name| {
            pairs
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| (*v).to_owned())
        }
    }

    fn pair(c: Result<Credentials, MissingCredentials>) -> (String, String) {
        let c = c.unwrap();
        (c.url, c.token.expose().to_owned())
    }

    #[test]
    fn the_environment_is_read_in_pairs() {
        let both = env(&[
            ("KEBOOLA_STACK_URL", "kb.example.com"),
            ("KEBOOLA_TOKEN", "kb-token-1"),
            ("KBC_URL", " https://kbc.example.com "),
            ("KBC_TOKEN", "kbc-token-2"),
        ]);
        assert_eq!(
            pair(Credentials::from_env(&both)),
            ("https://kbc.example.com".into(), "kbc-token-2".into())
        );
        let keboola = env(&[
            ("KEBOOLA_STACK_URL", "kb.example.com"),
            ("KEBOOLA_TOKEN", "kb-token-1"),
            ("KBC_URL", "  "),
        ]);
        assert_eq!(
            pair(Credentials::from_env(&keboola)),
            ("kb.example.com".into(), "kb-token-1".into())
        );
        // Halves of two pairs are no pair: the token never goes to another pair's stack.
        let crossed = env(&[
            ("KBC_URL", "kbc.example.com"),
            ("KEBOOLA_TOKEN", "kb-token-1"),
        ]);
        let missing = Credentials::from_env(&crossed).unwrap_err();
        assert!(!missing.url && !missing.token);
        assert_eq!(
            missing.unpaired,
            [
                ("KBC_URL", "KBC_TOKEN"),
                ("KEBOOLA_TOKEN", "KEBOOLA_STACK_URL")
            ]
        );
        assert!(
            missing
                .unpaired_note()
                .starts_with("; KBC_URL is set without KBC_TOKEN, KEBOOLA_TOKEN is set without")
        );
        let url_only = env(&[("KBC_URL", "kbc.example.com"), ("KBC_TOKEN", " ")]);
        let missing = Credentials::from_env(&url_only).unwrap_err();
        assert!(missing.token && !missing.url);
        let nothing = Credentials::from_env(env(&[])).unwrap_err();
        assert_eq!(
            nothing,
            MissingCredentials {
                url: true,
                token: true,
                unpaired: vec![]
            }
        );
        assert_eq!(nothing.unpaired_note(), "");
    }

    #[test]
    fn an_explicit_half_wins_and_takes_the_other_half_from_the_environment() {
        let crossed = env(&[
            ("KBC_URL", "kbc.example.com"),
            ("KEBOOLA_TOKEN", "kb-token-1"),
        ]);
        assert_eq!(
            pair(Credentials::resolve(None, Some("flag-token-3"), &crossed)),
            ("kbc.example.com".into(), "flag-token-3".into())
        );
        assert_eq!(
            pair(Credentials::resolve(
                Some("flag.example.com"),
                None,
                &crossed
            )),
            ("flag.example.com".into(), "kb-token-1".into())
        );
        assert_eq!(
            pair(Credentials::resolve(
                Some("f.example.com"),
                Some("flag-token-3"),
                &crossed
            )),
            ("f.example.com".into(), "flag-token-3".into())
        );
        let missing = Credentials::resolve(Some("f.example.com"), Some(" "), env(&[])).unwrap_err();
        assert!(missing.token && !missing.url);
        // A resolved token is a Secret: registered for redaction, hidden in Debug.
        let c =
            Credentials::resolve(Some("f.example.com"), Some("flag-token-4567"), env(&[])).unwrap();
        assert!(!format!("{c:?}").contains("flag-token-4567"));
        assert_eq!(
            crate::secret::redact("flag-token-4567"),
            crate::secret::MASK
        );
    }
}
