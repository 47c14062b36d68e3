//! Helpers shared by every integration test crate (each crate includes this module with `mod common;`):
//! - [`stack`]: the in-process emulator on a runtime of its own, seeded and faulted;
//! - [`binary`]: the built `kbc-runner` with a clean environment, and what it printed;
//! - [`python`]: official Python clients run against the emulator (installed? one script's checks);
//! - [`rows`]: CSV text as a header and a sorted row set, to compare tables regardless of order;
//! - [`tls`]: a throwaway CA and server certificate for the HTTPS tests;
//! - [`doubles`]: a hand-written Storage API + S3 double for the client's edge cases.
#![allow(dead_code, unused_imports, unreachable_pub)] // each test crate uses a different part

pub mod binary;
pub mod doubles;
pub mod python;
pub mod rows;
pub mod stack;
pub mod tls;

pub use doubles::*;
