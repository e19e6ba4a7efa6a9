//! Which devices a non-privileged container may use: runc's default
//! allow-list. On cgroup v1 it is written to `devices.allow`; cgroup v2 has
//! no devices file, only an eBPF program of type `BPF_PROG_TYPE_CGROUP_DEVICE`
//! attached to the cgroup, which the kernel asks on every open and mknod of
//! a device node. [`program`] assembles it from the rules (pure, as runc and
//! youki build theirs); [`attach`] loads it with `bpf(2)`.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

/// runc's default allow list for a non-privileged container, in the
/// devices cgroup's syntax: mknod of anything; null, zero, full, random,
/// urandom, tty, console, ptmx, the pty slaves (136:*), /dev/net/tun.
pub const DEFAULT_DEVICE_RULES: [&str; 12] = [
    "c *:* m",
    "b *:* m",
    "c 1:3 rwm",
    "c 1:5 rwm",
    "c 1:7 rwm",
    "c 1:8 rwm",
    "c 1:9 rwm",
    "c 5:0 rwm",
    "c 5:1 rwm",
    "c 5:2 rwm",
    "c 136:* rwm",
    "c 10:200 rwm",
];

#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    #[error("device rule {rule:?}: {problem}")]
    Rule { rule: String, problem: &'static str },
    #[error("{op} for {path}: {source}")]
    Bpf {
        op: &'static str,
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// One allow rule: type (`None`: any), major and minor (`None`: any), access.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceRule {
    pub typ: Option<DeviceType>,
    pub major: Option<u32>,
    pub minor: Option<u32>,
    /// `BPF_DEVCG_ACC_*` bits: mknod 1, read 2, write 4.
    pub access: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceType {
    Block,
    Char,
}

impl DeviceType {
    /// `BPF_DEVCG_DEV_BLOCK` / `BPF_DEVCG_DEV_CHAR`.
    fn bpf(self) -> i32 {
        match self {
            DeviceType::Block => 1,
            DeviceType::Char => 2,
        }
    }
}

/// Parses `c 1:3 rwm` (the devices cgroup's syntax).
pub fn parse_rule(rule: &str) -> Result<DeviceRule, DeviceError> {
    let bad = |problem| DeviceError::Rule {
        rule: rule.to_string(),
        problem,
    };
    let parts: Vec<&str> = rule.split_whitespace().collect();
    let [typ, numbers, access] = parts[..] else {
        return Err(bad("want \"<type> <major>:<minor> <access>\""));
    };
    let typ = match typ {
        "a" => None,
        "b" => Some(DeviceType::Block),
        "c" => Some(DeviceType::Char),
        _ => return Err(bad("type must be a, b or c")),
    };
    let (major, minor) = numbers
        .split_once(':')
        .ok_or_else(|| bad("no major:minor"))?;
    let number = |s: &str| -> Result<Option<u32>, DeviceError> {
        match s {
            "*" => Ok(None),
            n => n.parse().map(Some).map_err(|_| bad("bad device number")),
        }
    };
    let mut bits = 0;
    for c in access.chars() {
        bits |= match c {
            'm' => 1,
            'r' => 2,
            'w' => 4,
            _ => return Err(bad("access must be of r, w, m")),
        };
    }
    Ok(DeviceRule {
        typ,
        major: number(major)?,
        minor: number(minor)?,
        access: bits,
    })
}

/// One eBPF instruction (`struct bpf_insn`).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Insn {
    pub code: u8,
    /// dst register in the low nibble, src in the high one.
    pub regs: u8,
    pub off: i16,
    pub imm: i32,
}

const fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
    Insn {
        code,
        regs: (src << 4) | (dst & 0x0f),
        off,
        imm,
    }
}

// Opcodes (linux/bpf_common.h, linux/bpf.h).
const LDX_MEM_W: u8 = 0x61; // BPF_LDX | BPF_MEM | BPF_W
const ALU32_AND_K: u8 = 0x54; // BPF_ALU | BPF_AND | BPF_K
const ALU32_RSH_K: u8 = 0x74; // BPF_ALU | BPF_RSH | BPF_K
const ALU32_MOV_X: u8 = 0xbc; // BPF_ALU | BPF_MOV | BPF_X
const ALU64_MOV_K: u8 = 0xb7; // BPF_ALU64 | BPF_MOV | BPF_K
const JMP_JNE_K: u8 = 0x55; // BPF_JMP | BPF_JNE | BPF_K
const JMP_EXIT: u8 = 0x95; // BPF_JMP | BPF_EXIT

/// The program: load the request (`struct bpf_cgroup_dev_ctx`: access_type
/// = access << 16 | type, major, minor) into r2..r5, then one block per rule
/// that jumps to the next block on any mismatch and returns 1 (allow) when
/// all match; nothing matched returns 0 (deny).
pub fn program(rules: &[DeviceRule]) -> Vec<Insn> {
    let mut prog = vec![
        insn(LDX_MEM_W, 2, 1, 0, 0),
        insn(ALU32_AND_K, 2, 0, 0, 0xffff), // r2 = type
        insn(LDX_MEM_W, 3, 1, 0, 0),
        insn(ALU32_RSH_K, 3, 0, 0, 16), // r3 = access
        insn(LDX_MEM_W, 4, 1, 4, 0),    // r4 = major
        insn(LDX_MEM_W, 5, 1, 8, 0),    // r5 = minor
    ];
    for rule in rules {
        // Each check is a conditional jump; offsets are patched to the
        // block's end once its length is known.
        let mut block: Vec<Insn> = Vec::new();
        let mut jumps = Vec::new();
        if let Some(t) = rule.typ {
            jumps.push(block.len());
            block.push(insn(JMP_JNE_K, 2, 0, 0, t.bpf()));
        }
        if rule.access & 7 != 7 {
            // Every requested access must be in the rule's set.
            block.push(insn(ALU32_MOV_X, 1, 3, 0, 0));
            block.push(insn(ALU32_AND_K, 1, 0, 0, (!rule.access & 7) as i32));
            jumps.push(block.len());
            block.push(insn(JMP_JNE_K, 1, 0, 0, 0));
        }
        if let Some(major) = rule.major {
            jumps.push(block.len());
            block.push(insn(JMP_JNE_K, 4, 0, 0, major as i32));
        }
        if let Some(minor) = rule.minor {
            jumps.push(block.len());
            block.push(insn(JMP_JNE_K, 5, 0, 0, minor as i32));
        }
        block.push(insn(ALU64_MOV_K, 0, 0, 0, 1));
        block.push(insn(JMP_EXIT, 0, 0, 0, 0));
        let len = block.len();
        for j in jumps {
            block[j].off = (len - j - 1) as i16;
        }
        prog.extend(block);
    }
    prog.push(insn(ALU64_MOV_K, 0, 0, 0, 0));
    prog.push(insn(JMP_EXIT, 0, 0, 0, 0));
    prog
}

/// The default rules, parsed.
pub fn default_rules() -> Vec<DeviceRule> {
    DEFAULT_DEVICE_RULES
        .iter()
        .map(|r| parse_rule(r).expect("the default rules parse"))
        .collect()
}

// bpf(2) commands and constants (linux/bpf.h).
const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_ATTACH: libc::c_long = 8;
const BPF_PROG_TYPE_CGROUP_DEVICE: u32 = 15;
const BPF_CGROUP_DEVICE: u32 = 6;
const BPF_F_ALLOW_MULTI: u32 = 2;

/// The `BPF_PROG_LOAD` part of `union bpf_attr`, up to the fields used.
#[repr(C)]
#[derive(Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

/// The `BPF_PROG_ATTACH` part of `union bpf_attr`.
#[repr(C)]
#[derive(Default)]
struct ProgAttachAttr {
    target_fd: u32,
    attach_bpf_fd: u32,
    attach_type: u32,
    attach_flags: u32,
    replace_bpf_fd: u32,
}

fn bpf<T>(cmd: libc::c_long, attr: &mut T) -> std::io::Result<libc::c_long> {
    // SAFETY: `attr` is a valid, initialised bpf_attr prefix of the size given.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *mut T,
            std::mem::size_of::<T>() as libc::c_uint,
        )
    };
    if rc < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

/// Loads the program for `rules` and attaches it to the cgroup v2 directory
/// `cgroup_dir` (alongside any program a parent has: `BPF_F_ALLOW_MULTI`, so
/// a device must pass every level). The attachment lives as long as the cgroup.
pub fn attach(cgroup_dir: &Path, rules: &[DeviceRule]) -> Result<(), DeviceError> {
    let path = cgroup_dir.display().to_string();
    let err = |op| {
        let path = path.clone();
        move |source| DeviceError::Bpf { op, path, source }
    };
    let insns = program(rules);
    let license = c"Apache-2.0";
    let mut name = [0u8; 16];
    name[..10].copy_from_slice(b"kubelab_dv");
    let mut load = ProgLoadAttr {
        prog_type: BPF_PROG_TYPE_CGROUP_DEVICE,
        insn_cnt: insns.len() as u32,
        insns: insns.as_ptr() as u64,
        license: license.as_ptr() as u64,
        prog_name: name,
        ..Default::default()
    };
    let prog_fd = bpf(BPF_PROG_LOAD, &mut load).map_err(err("loading the device program"))?;
    // SAFETY: BPF_PROG_LOAD returned a new descriptor that we own.
    let prog = unsafe { OwnedFd::from_raw_fd(prog_fd as i32) };
    let dir = std::fs::File::open(cgroup_dir).map_err(err("opening the cgroup"))?;
    let mut attach = ProgAttachAttr {
        target_fd: dir.as_raw_fd() as u32,
        attach_bpf_fd: prog.as_raw_fd() as u32,
        attach_type: BPF_CGROUP_DEVICE,
        attach_flags: BPF_F_ALLOW_MULTI,
        ..Default::default()
    };
    bpf(BPF_PROG_ATTACH, &mut attach).map_err(err("attaching the device program"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_parse_as_the_devices_cgroup_writes_them() {
        assert_eq!(
            parse_rule("c 136:* rwm").unwrap(),
            DeviceRule {
                typ: Some(DeviceType::Char),
                major: Some(136),
                minor: None,
                access: 7
            }
        );
        assert_eq!(parse_rule("b *:* m").unwrap().access, 1);
        assert!(parse_rule("x 1:3 rwm").is_err());
        assert_eq!(default_rules().len(), 12);
    }

    #[test]
    fn each_rule_is_a_block_that_skips_to_the_next_on_mismatch() {
        let prog = program(&[parse_rule("c 1:3 rwm").unwrap()]);
        // 6 loads, type/major/minor checks, return 1, then return 0.
        assert_eq!(prog.len(), 6 + 3 + 2 + 2);
        assert_eq!(
            prog[6],
            insn(JMP_JNE_K, 2, 0, 4, 2),
            "not a char device: skip 4"
        );
        assert_eq!(prog[7], insn(JMP_JNE_K, 4, 0, 3, 1));
        assert_eq!(prog[8], insn(JMP_JNE_K, 5, 0, 2, 3));
        assert_eq!(prog[9], insn(ALU64_MOV_K, 0, 0, 0, 1));
        assert_eq!(prog[11], insn(ALU64_MOV_K, 0, 0, 0, 0));
        // mknod only: any other access bit set skips the block.
        let prog = program(&[parse_rule("b *:* m").unwrap()]);
        assert_eq!(prog[7], insn(ALU32_MOV_X, 1, 3, 0, 0));
        assert_eq!(prog[8], insn(ALU32_AND_K, 1, 0, 0, 6));
        assert_eq!(prog[9], insn(JMP_JNE_K, 1, 0, 2, 0));
    }
}
