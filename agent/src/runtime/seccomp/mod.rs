//! Seccomp: a profile resolved for a container ([`profile`], pure: the
//! profile the pod layer chose ([`crate::pod::seccomp`]) → the OCI spec's
//! `linux.seccomp`) and the filter made from it ([`filter`]: BPF compiled
//! and loaded by the container's init just before it execs).

pub mod filter;
pub mod profile;

pub use profile::{Profile, Target};

#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    /// containerd's wording for a Localhost profile it cannot read.
    #[error("cannot load seccomp profile {path:?}: {message}")]
    Load { path: String, message: String },
    #[error("seccomp action {action} is not supported")]
    Action { action: String },
    #[error("seccomp filter: {0}")]
    Compile(String),
    #[error("loading the seccomp filter: {0}")]
    Apply(String),
    #[error("building the OCI spec: {0}")]
    Oci(#[from] oci_spec::OciSpecError),
}

/// Reads a `Localhost` profile: `<root-dir>/seccomp/<localhost_profile>`,
/// looked up beneath that directory (a profile path cannot leave it).
pub fn load_localhost(
    seccomp_dir: &std::path::Path,
    localhost_profile: &str,
) -> Result<Profile, SeccompError> {
    use std::io::Read;
    let path = seccomp_dir.join(localhost_profile);
    let load = |message: String| SeccompError::Load {
        path: path.display().to_string(),
        message,
    };
    let root = super::in_root::Root::open(seccomp_dir, super::in_root::Scope::Beneath)
        .map_err(|e| load(e.to_string()))?;
    let fd = root
        .open_at(
            std::path::Path::new(localhost_profile),
            nix::fcntl::OFlag::O_RDONLY,
        )
        .map_err(|e| load(e.to_string()))?;
    let mut text = Vec::new();
    std::fs::File::from(fd)
        .read_to_end(&mut text)
        .map_err(|e| load(e.to_string()))?;
    Profile::parse(&text).map_err(|e| load(e.to_string()))
}
