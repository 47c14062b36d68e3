//! The in-process Storage API emulator for tests: started on a free loopback port with a temporary
//! store, either inside a test's own runtime ([`start_emulator`]) or on a runtime of its own for tests
//! that drive the built binary synchronously ([`Stack`]).

use kbc_emulator::{Emulator, EmulatorConfig, FaultRule};
use std::path::Path;

/// A two-worker runtime, like the binary's.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

/// An emulator with its store in `store`, accepting `token`.
pub async fn start_emulator(store: &Path, token: &str) -> Result<Emulator, String> {
    Emulator::start(EmulatorConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        store: store.to_owned(),
        tokens: vec![token.to_owned()],
    })
    .await
    .map_err(|e| format!("starting the emulator: {e:#}"))
}

/// A fault rule from its JSON form (the control API's).
pub fn fault(rule: serde_json::Value) -> FaultRule {
    serde_json::from_value(rule).expect("a valid fault rule")
}

/// An emulator on a runtime of its own, with a temporary store; both live as long as the value.
pub struct Stack {
    pub runtime: tokio::runtime::Runtime,
    pub emulator: Emulator,
    _store: tempfile::TempDir,
}

impl Stack {
    /// Starts the emulator; panics when it cannot.
    pub fn start(token: &str) -> Stack {
        Stack::try_start(token).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Starts the emulator, reporting instead of panicking.
    pub fn try_start(token: &str) -> Result<Stack, String> {
        let runtime = runtime();
        let store = tempfile::tempdir().map_err(|e| e.to_string())?;
        let emulator = runtime.block_on(start_emulator(store.path(), token))?;
        Ok(Stack {
            runtime,
            emulator,
            _store: store,
        })
    }

    /// Creates (or fully reloads) a table from CSV text with a header.
    pub fn seed(&self, table_id: &str, csv: &str, primary_key: &[&str]) {
        let pk: Vec<String> = primary_key.iter().map(|s| (*s).to_owned()).collect();
        self.runtime
            .block_on(self.emulator.seed_table(table_id, csv.as_bytes(), &pk))
            .expect("seeding works");
    }

    /// The table as CSV with a header, `None` when it does not exist.
    pub fn dump(&self, table_id: &str) -> Option<String> {
        self.runtime
            .block_on(self.emulator.dump_table(table_id))
            .expect("dump works")
    }

    /// Adds a fault rule given in its JSON form.
    pub fn fault(&self, rule: serde_json::Value) {
        self.emulator
            .add_fault(fault(rule))
            .expect("a fault rule the emulator accepts");
    }

    pub fn url(&self) -> String {
        self.emulator.url()
    }
}
