//! Runs Keboola's official Query Service SDK `keboola-query-service` (0.3.0), unmodified, against the
//! emulator started in-process on port 0 (tests/conformance/query_service_conformance.py); workspaces and
//! imports from them go through the official Storage client `kbcstorage`. Without the two packages installed
//! the test fails when `CI` is set and is skipped loudly otherwise.

mod common;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_query_service_sdk_works_unmodified() {
    if !common::python::installed(
        "keboola_query_service, kbcstorage, boto3",
        "keboola-query-service==0.3.0 kbcstorage==0.12.0",
        "the Query Service conformance test",
    ) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let emu = common::stack::start_emulator(dir.path(), "conformance-token")
        .await
        .unwrap();
    common::python::conformance(
        emu,
        "conformance-token",
        "query_service_conformance.py",
        Vec::new(),
    )
    .await;
}
