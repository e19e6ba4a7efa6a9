//! How tools name a container's state in one word, as kubectl's STATUS
//! column does: the agent's status and the user tools agree on it.

use k8s_openapi::api::core::v1::ContainerStatus;

/// One word for a container's state, as tools show it: `Running`, or the
/// waiting or terminated reason (`CrashLoopBackOff`, `OOMKilled`, ...).
pub fn state_word(s: &ContainerStatus) -> String {
    let Some(state) = &s.state else {
        return "Unknown".into();
    };
    if state.running.is_some() {
        "Running".into()
    } else if let Some(w) = &state.waiting {
        w.reason.clone().unwrap_or_else(|| "Waiting".into())
    } else if let Some(t) = &state.terminated {
        t.reason.clone().unwrap_or_else(|| "Terminated".into())
    } else {
        "Unknown".into()
    }
}
