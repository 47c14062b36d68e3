//! Integration tests of the Storage API emulator: each starts it in-process on port 0 and talks to it over
//! real HTTP, the way Keboola clients do (JSON and form bodies, files/prepare + S3 upload, async jobs).
//!
//! One module per resource, as the emulator's routers are; `support` holds what they share.

#[path = "../common/mod.rs"]
mod common;

mod auth;
mod binary;
mod branches;
mod buckets;
mod control;
mod exports;
mod files_s3;
mod jobs;
mod loads;
mod query_service;
mod support;
mod tables;
mod tls;
mod workspaces;
