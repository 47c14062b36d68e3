//! The Keboola Storage API client (not implemented yet).

/// Errors of the Storage API client.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Other(String),
}

impl Error {
    /// Whether the user can fix this (bad token, missing table, rejected request).
    pub fn is_user(&self) -> bool {
        false
    }
}
