//! The Python `kubernetes` client (Debian's python3-kubernetes) runs a
//! create / list-with-selectors / watch / patch / delete workflow.

mod common;

use common::ApiServer;

#[test]
fn python_kubernetes_client_lists_watches_patches_and_deletes_pods() {
    // The watch counts only the client's own writes: no scheduler reports
    // the node-less pod unschedulable in between.
    let s = ApiServer::start_with(&["--disable-scheduler"]);
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/python/client_workflow.py"
    );
    let out = std::process::Command::new("/usr/bin/python3")
        .arg(script)
        .arg(s.kubeconfig())
        .output()
        .expect("run /usr/bin/python3");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "python client workflow failed:\n{stdout}\n{}\nserver log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        s.log()
    );
    assert!(stdout.contains("python client workflow: OK"), "{stdout}");
}
