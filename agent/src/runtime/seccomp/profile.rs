//! Seccomp profiles in the docker/containerd JSON format (what Kubernetes'
//! `Localhost` profiles are written in), and the choice of profile for a
//! container. A profile's `includes`/`excludes` pick rules by the container's
//! capabilities, the node's architecture and kernel; [`Profile::resolve`]
//! turns it into the OCI spec's `linux.seccomp`. Pure.

use oci_spec::runtime::{
    LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArg, LinuxSeccompBuilder, LinuxSyscall,
    LinuxSyscallBuilder,
};
use serde::Deserialize;

use super::SeccompError;

/// containerd's default profile (`RuntimeDefault`), kept as data.
const RUNTIME_DEFAULT: &str = include_str!("runtime_default.json");

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Profile {
    pub default_action: LinuxSeccompAction,
    #[serde(default)]
    pub default_errno_ret: Option<u32>,
    #[serde(default)]
    pub syscalls: Vec<ProfileSyscall>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProfileSyscall {
    #[serde(default)]
    pub names: Vec<String>,
    /// The older single-name form.
    #[serde(default)]
    pub name: Option<String>,
    pub action: LinuxSeccompAction,
    #[serde(default)]
    pub errno_ret: Option<u32>,
    #[serde(default)]
    pub args: Option<Vec<LinuxSeccompArg>>,
    #[serde(default)]
    pub includes: Condition,
    #[serde(default)]
    pub excludes: Condition,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    #[serde(default)]
    pub caps: Vec<String>,
    /// Go's architecture names (`amd64`, `arm64`), as docker writes them.
    #[serde(default)]
    pub arches: Vec<String>,
    #[serde(default)]
    pub min_kernel: Option<String>,
}

/// What a rule is matched against.
#[derive(Debug, Clone)]
pub struct Target<'a> {
    /// The container's bounding set, `CAP_`-prefixed.
    pub caps: &'a [String],
    /// Go's name of the node's architecture.
    pub arch: &'a str,
    /// The node's kernel (major, minor).
    pub kernel: (u32, u32),
}

/// Go's name of the architecture this agent runs on.
pub fn native_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// The running kernel's (major, minor), from `uname`.
pub fn kernel_version() -> (u32, u32) {
    let release = nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default();
    parse_kernel(&release).unwrap_or((0, 0))
}

fn parse_kernel(s: &str) -> Option<(u32, u32)> {
    let mut parts = s.split(|c: char| !c.is_ascii_digit());
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

impl Profile {
    pub fn parse(json: &[u8]) -> Result<Profile, serde_json::Error> {
        serde_json::from_slice(json)
    }

    pub fn runtime_default() -> Profile {
        Profile::parse(RUNTIME_DEFAULT.as_bytes()).expect("the embedded profile parses")
    }

    /// The rules that apply to `target`, as the OCI spec's `linux.seccomp`.
    pub fn resolve(&self, target: &Target) -> Result<LinuxSeccomp, SeccompError> {
        let mut syscalls: Vec<LinuxSyscall> = Vec::new();
        for rule in &self.syscalls {
            if !applies(rule, target) {
                continue;
            }
            let mut names = rule.names.clone();
            names.extend(rule.name.clone());
            let mut b = LinuxSyscallBuilder::default()
                .names(names)
                .action(rule.action);
            if let Some(errno) = rule.errno_ret {
                b = b.errno_ret(errno);
            }
            if let Some(args) = rule.args.clone().filter(|a| !a.is_empty()) {
                b = b.args(args);
            }
            syscalls.push(b.build()?);
        }
        let mut b = LinuxSeccompBuilder::default()
            .default_action(self.default_action)
            .syscalls(syscalls);
        if let Some(errno) = self.default_errno_ret {
            b = b.default_errno_ret(errno);
        }
        Ok(b.build()?)
    }
}

/// docker's rule selection: every included capability held, none of the
/// excluded ones; the architecture listed (or not excluded); a new enough kernel.
fn applies(rule: &ProfileSyscall, target: &Target) -> bool {
    let has = |cap: &String| target.caps.iter().any(|c| c == cap);
    let inc = &rule.includes;
    let exc = &rule.excludes;
    if !inc.caps.iter().all(has) || exc.caps.iter().any(has) {
        return false;
    }
    if !inc.arches.is_empty() && !inc.arches.iter().any(|a| a == target.arch) {
        return false;
    }
    if exc.arches.iter().any(|a| a == target.arch) {
        return false;
    }
    if let Some(min) = inc.min_kernel.as_deref().and_then(parse_kernel)
        && target.kernel < min
    {
        return false;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(s: &LinuxSeccomp) -> Vec<String> {
        s.syscalls()
            .iter()
            .flatten()
            .flat_map(|r| r.names().clone())
            .collect()
    }

    fn target(caps: &[String]) -> Target<'_> {
        Target {
            caps,
            arch: "amd64",
            kernel: (6, 1),
        }
    }

    #[test]
    fn runtime_default_is_containerds_allow_list_by_capability() {
        let profile = Profile::runtime_default();
        let default_caps: Vec<String> = crate::runtime::spec::DEFAULT_CAPABILITIES
            .iter()
            .map(|c| format!("CAP_{c}"))
            .collect();
        let s = profile.resolve(&target(&default_caps)).unwrap();
        assert_eq!(s.default_action(), LinuxSeccompAction::ScmpActErrno);
        assert_eq!(s.default_errno_ret(), Some(1));
        let allowed = names(&s);
        for call in ["read", "execve", "arch_prctl", "chroot", "ptrace", "clone"] {
            assert!(allowed.iter().any(|n| n == call), "{call} is allowed");
        }
        for call in ["unshare", "mount", "setns", "bpf", "reboot", "kexec_load"] {
            assert!(!allowed.iter().any(|n| n == call), "{call} is refused");
        }
        // clone only without namespace flags; clone3 says ENOSYS so libc falls back to clone.
        let clone = s
            .syscalls()
            .iter()
            .flatten()
            .find(|r| r.names() == &["clone"])
            .unwrap();
        let arg = clone.args().as_ref().unwrap()[0];
        assert_eq!((arg.index(), arg.value()), (0, 0x7e02_0000));
        let clone3 = s
            .syscalls()
            .iter()
            .flatten()
            .find(|r| r.names() == &["clone3"])
            .unwrap();
        assert_eq!(clone3.errno_ret(), Some(38));

        let admin: Vec<String> = vec!["CAP_SYS_ADMIN".into()];
        let s = profile.resolve(&target(&admin)).unwrap();
        let allowed = names(&s);
        assert!(allowed.iter().any(|n| n == "unshare"));
        assert!(allowed.iter().any(|n| n == "clone3"));
        assert!(
            s.syscalls()
                .iter()
                .flatten()
                .all(|r| r.errno_ret().is_none()),
            "clone3 is simply allowed with CAP_SYS_ADMIN"
        );
        assert!(!allowed.iter().any(|n| n == "chroot"), "no CAP_SYS_CHROOT");
    }

    #[test]
    fn kernel_and_arch_conditions() {
        let rule = |inc: Condition| ProfileSyscall {
            names: vec!["x".into()],
            name: None,
            action: LinuxSeccompAction::ScmpActAllow,
            errno_ret: None,
            args: None,
            includes: inc,
            excludes: Condition::default(),
        };
        let t = target(&[]);
        assert!(applies(
            &rule(Condition {
                min_kernel: Some("4.8".into()),
                ..Default::default()
            }),
            &t
        ));
        assert!(!applies(
            &rule(Condition {
                min_kernel: Some("6.12".into()),
                ..Default::default()
            }),
            &t
        ));
        assert!(!applies(
            &rule(Condition {
                arches: vec!["arm64".into()],
                ..Default::default()
            }),
            &t
        ));
        assert_eq!(parse_kernel("6.18.0-1-amd64"), Some((6, 18)));
    }
}
