//! User errors versus application errors, the distinction the Keboola platform draws with exit codes
//! (1 = the user can fix it, 2 = our fault). Modules return their own typed errors; this module decides,
//! in one place, which of them are the user's to fix.

use std::fmt;

/// An error the user can fix: bad configuration, a missing table, a rejected token.
///
/// The message must say what is wrong and where, and must never contain a secret.
#[derive(Debug)]
pub struct UserError {
    message: String,
}

impl UserError {
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
        }
    }

    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for UserError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for UserError {}

/// Shorthand for `Err(UserError::new(..).into())`.
#[macro_export]
macro_rules! user_bail {
    ($($arg:tt)*) => {
        return Err($crate::error::UserError::new(format!($($arg)*)).into())
    };
}

/// Whose fault a failure is, which decides the exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// Exit 1: the message is shown to the user.
    User,
    /// Exit 2: the platform shows a generic message and logs ours internally.
    Application,
}

impl ErrorClass {
    pub fn exit_code(self) -> i32 {
        match self {
            ErrorClass::User => 1,
            ErrorClass::Application => 2,
        }
    }
}

/// Classifies an error by walking its whole `source()` chain: any link that is a user error makes the
/// whole failure a user error (context added on top does not change whose fault it is).
pub fn classify(err: &anyhow::Error) -> ErrorClass {
    for cause in err.chain() {
        if cause.downcast_ref::<UserError>().is_some() {
            return ErrorClass::User;
        }
        if let Some(e) = cause.downcast_ref::<crate::interface::Error>()
            && e.is_user()
        {
            return ErrorClass::User;
        }
        if let Some(e) = cause.downcast_ref::<kbc_storage::Error>()
            && e.is_user()
        {
            return ErrorClass::User;
        }
        if let Some(e) = cause.downcast_ref::<kbc_storage::QueryError>()
            && e.is_user()
        {
            return ErrorClass::User;
        }
        // A malformed table or bucket id, wherever it was given.
        if cause.is::<kbc_storage::IdError>() {
            return ErrorClass::User;
        }
    }
    ErrorClass::Application
}

/// The one-line message printed on stderr for a failure: the context chain joined with `: `, redacted.
pub fn render(err: &anyhow::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for cause in err.chain() {
        let text = cause.to_string();
        // Context layers often repeat their source's text; keep the message short.
        if parts.last().is_some_and(|last| last.contains(&text)) {
            continue;
        }
        parts.push(text);
    }
    crate::secrets::redact(&parts.join(": ")).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context;

    #[test]
    fn user_error_stays_user_under_context() {
        let err = anyhow::Error::from(UserError::new("table in.c-a.b not found"))
            .context("exporting in.c-a.b");
        assert_eq!(classify(&err), ErrorClass::User);
        assert_eq!(render(&err), "exporting in.c-a.b: table in.c-a.b not found");
    }

    #[test]
    fn other_errors_are_application_errors() {
        let err = std::fs::read("/nonexistent/kbc-runner").context("reading x");
        let err = err.unwrap_err();
        assert_eq!(classify(&err), ErrorClass::Application);
        assert_eq!(ErrorClass::Application.exit_code(), 2);
    }
}
