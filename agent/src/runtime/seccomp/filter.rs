//! The OCI spec's `linux.seccomp` compiled to BPF (with `seccompiler`) and
//! loaded into the container's init.
//!
//! A seccompiler filter has one action for every rule that matches, while a
//! profile gives each rule its own. So a profile becomes a stack of filters,
//! which the kernel combines by taking the most restrictive answer: one that
//! lets every listed syscall through and answers the default action for the
//! rest, and one per other action that answers it for its rules only.
//! Unknown syscall names are skipped, as runc skips them. Only the node's
//! own architecture is allowed (calls through a 32-bit ABI are killed).

use std::collections::BTreeMap;
use std::str::FromStr;

use oci_spec::runtime::{LinuxSeccomp, LinuxSeccompAction, LinuxSeccompOperator};
use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};

use super::SeccompError;

const EPERM: u32 = libc::EPERM as u32;

fn target_arch() -> Result<TargetArch, SeccompError> {
    match std::env::consts::ARCH {
        "x86_64" => Ok(TargetArch::x86_64),
        "aarch64" => Ok(TargetArch::aarch64),
        other => Err(SeccompError::Compile(format!(
            "architecture {other} is not supported"
        ))),
    }
}

fn action(a: LinuxSeccompAction, errno: Option<u32>) -> Result<SeccompAction, SeccompError> {
    Ok(match a {
        LinuxSeccompAction::ScmpActAllow => SeccompAction::Allow,
        LinuxSeccompAction::ScmpActErrno => SeccompAction::Errno(errno.unwrap_or(EPERM)),
        LinuxSeccompAction::ScmpActKill | LinuxSeccompAction::ScmpActKillThread => {
            SeccompAction::KillThread
        }
        LinuxSeccompAction::ScmpActKillProcess => SeccompAction::KillProcess,
        LinuxSeccompAction::ScmpActTrap => SeccompAction::Trap,
        LinuxSeccompAction::ScmpActTrace => SeccompAction::Trace(errno.unwrap_or(EPERM)),
        LinuxSeccompAction::ScmpActLog => SeccompAction::Log,
        other => {
            return Err(SeccompError::Action {
                action: other.to_string(),
            });
        }
    })
}

fn condition(arg: &oci_spec::runtime::LinuxSeccompArg) -> Result<SeccompCondition, SeccompError> {
    let (op, value) = match arg.op() {
        LinuxSeccompOperator::ScmpCmpNe => (SeccompCmpOp::Ne, arg.value()),
        LinuxSeccompOperator::ScmpCmpLt => (SeccompCmpOp::Lt, arg.value()),
        LinuxSeccompOperator::ScmpCmpLe => (SeccompCmpOp::Le, arg.value()),
        LinuxSeccompOperator::ScmpCmpEq => (SeccompCmpOp::Eq, arg.value()),
        LinuxSeccompOperator::ScmpCmpGe => (SeccompCmpOp::Ge, arg.value()),
        LinuxSeccompOperator::ScmpCmpGt => (SeccompCmpOp::Gt, arg.value()),
        // OCI: `value` is the mask, `valueTwo` what the masked argument must equal.
        LinuxSeccompOperator::ScmpCmpMaskedEq => (
            SeccompCmpOp::MaskedEq(arg.value()),
            arg.value_two().unwrap_or(0),
        ),
    };
    let index = u8::try_from(arg.index())
        .map_err(|_| SeccompError::Compile(format!("argument index {}", arg.index())))?;
    SeccompCondition::new(index, SeccompCmpArgLen::Qword, op, value)
        .map_err(|e| SeccompError::Compile(e.to_string()))
}

/// Rules by syscall number; `None`: matched whatever the arguments.
type Rules = BTreeMap<i64, Option<Vec<SeccompRule>>>;

fn add(rules: &mut Rules, nr: i64, rule: Option<SeccompRule>) {
    let entry = rules.entry(nr).or_insert_with(|| Some(Vec::new()));
    match (entry.as_mut(), rule) {
        (Some(list), Some(rule)) => list.push(rule),
        (_, None) => *entry = None,
        (None, Some(_)) => {}
    }
}

fn program(
    rules: Rules,
    mismatch: SeccompAction,
    matched: SeccompAction,
    arch: TargetArch,
) -> Result<BpfProgram, SeccompError> {
    let rules = rules
        .into_iter()
        .map(|(nr, r)| (nr, r.unwrap_or_default()))
        .collect();
    let filter = SeccompFilter::new(rules, mismatch, matched, arch)
        .map_err(|e| SeccompError::Compile(e.to_string()))?;
    BpfProgram::try_from(filter).map_err(|e| SeccompError::Compile(e.to_string()))
}

/// BPF programs for `seccomp`, in the order they are to be loaded.
pub fn compile(seccomp: &LinuxSeccomp) -> Result<Vec<BpfProgram>, SeccompError> {
    let arch = target_arch()?;
    let default = action(seccomp.default_action(), seccomp.default_errno_ret())?;
    let mut listed = Rules::new();
    let mut by_action: Vec<(SeccompAction, Rules)> = Vec::new();
    for rule in seccomp.syscalls().iter().flatten() {
        let act = action(rule.action(), rule.errno_ret())?;
        if act == default {
            continue;
        }
        let conditions = rule
            .args()
            .iter()
            .flatten()
            .map(condition)
            .collect::<Result<Vec<_>, _>>()?;
        let seccomp_rule = if conditions.is_empty() {
            None
        } else {
            Some(SeccompRule::new(conditions).map_err(|e| SeccompError::Compile(e.to_string()))?)
        };
        let idx = match by_action.iter().position(|(a, _)| *a == act) {
            Some(i) => i,
            None => {
                by_action.push((act.clone(), Rules::new()));
                by_action.len() - 1
            }
        };
        for name in rule.names() {
            let Ok(sysno) = syscalls::Sysno::from_str(name) else {
                continue;
            };
            let nr = i64::from(sysno.id());
            add(&mut listed, nr, seccomp_rule.clone());
            add(&mut by_action[idx].1, nr, seccomp_rule.clone());
        }
    }
    // Filters with an allow-all fallback first: loading a filter needs the
    // seccomp syscall, which the default-deny one may refuse.
    let mut programs = Vec::new();
    for (act, rules) in by_action {
        if act != SeccompAction::Allow && !rules.is_empty() {
            programs.push(program(rules, SeccompAction::Allow, act, arch)?);
        }
    }
    if default != SeccompAction::Allow {
        programs.push(program(listed, default, SeccompAction::Allow, arch)?);
    }
    Ok(programs)
}

/// Loads `programs` into the calling process (and what it execs). Without
/// `no_new_privs` this needs CAP_SYS_ADMIN, as in runc: seccompiler's own
/// loader would always set `no_new_privs`, which Kubernetes only sets for
/// `allowPrivilegeEscalation: false`.
pub fn load(programs: &[BpfProgram]) -> Result<(), SeccompError> {
    for p in programs {
        let prog = libc::sock_fprog {
            len: u16::try_from(p.len())
                .map_err(|_| SeccompError::Apply(format!("{} instructions", p.len())))?,
            // seccompiler's sock_filter is the kernel's struct, as libc's is.
            filter: p.as_ptr() as *mut libc::sock_filter,
        };
        // SAFETY: the kernel copies the program; `p` outlives the call.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_seccomp,
                libc::SECCOMP_SET_MODE_FILTER,
                0,
                &prog as *const libc::sock_fprog,
            )
        };
        if rc != 0 {
            return Err(SeccompError::Apply(
                std::io::Error::last_os_error().to_string(),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::seccomp::{Profile, Target};

    #[test]
    fn runtime_default_compiles_to_a_deny_filter_and_an_enosys_one() {
        let caps: Vec<String> = vec!["CAP_CHOWN".into()];
        let spec = Profile::runtime_default()
            .resolve(&Target {
                caps: &caps,
                arch: "amd64",
                kernel: (6, 1),
            })
            .unwrap();
        let programs = compile(&spec).unwrap();
        assert_eq!(programs.len(), 2, "clone3's ENOSYS, then the allow-list");
        assert!(programs.iter().all(|p| !p.is_empty() && p.len() < 4096));
    }

    #[test]
    fn an_allow_by_default_profile_needs_only_its_exceptions() {
        let spec: LinuxSeccomp = serde_json::from_str(
            r#"{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
                {"names": ["mkdir", "no_such_call"], "action": "SCMP_ACT_ERRNO"}]}"#,
        )
        .unwrap();
        assert_eq!(compile(&spec).unwrap().len(), 1);
        let notify: LinuxSeccomp = serde_json::from_str(
            r#"{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
                {"names": ["mkdir"], "action": "SCMP_ACT_NOTIFY"}]}"#,
        )
        .unwrap();
        assert!(compile(&notify).is_err());
    }
}
