//! Pure half of the runtime: a container's CRI config, plus its image's config, becomes an
//! OCI runtime spec (`config.json` in the container's bundle dir). Nothing here
//! touches the system; [`super::init`] is the one place that makes a spec real.
//!
//! Keeping the whole description in a standard `config.json` means a user can
//! `cat` what the agent is about to do, and `runc run` can start the very same
//! bundle (the benchmarks do exactly that).

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use oci_spec::image::ImageConfiguration;
use oci_spec::runtime::{
    Capability, LinuxBuilder, LinuxCapabilitiesBuilder, LinuxCpuBuilder, LinuxDeviceBuilder,
    LinuxDeviceCgroupBuilder, LinuxDeviceType, LinuxMemoryBuilder, LinuxNamespaceBuilder,
    LinuxNamespaceType, LinuxPidsBuilder, LinuxResourcesBuilder, Mount, MountBuilder,
    ProcessBuilder, RootBuilder, Spec, SpecBuilder, UserBuilder,
};

use super::cri::{self, ContainerConfig, PodSandboxMetadata};
use crate::cgroups::CgroupLimits;

/// The default PATH when neither the image nor the pod sets one (containerd's).
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The capabilities a non-privileged container keeps: containerd's and CRI-O's
/// default set, which is what Kubernetes users observe.
pub const DEFAULT_CAPABILITIES: &[&str] = &[
    "CHOWN",
    "DAC_OVERRIDE",
    "FSETID",
    "FOWNER",
    "MKNOD",
    "NET_RAW",
    "SETGID",
    "SETUID",
    "SETFCAP",
    "SETPCAP",
    "NET_BIND_SERVICE",
    "SYS_CHROOT",
    "KILL",
    "AUDIT_WRITE",
];

/// Paths hidden from non-privileged containers (bind-mounted over with /dev/null
/// or an empty read-only tmpfs), as runc's default spec does.
pub const MASKED_PATHS: &[&str] = &[
    "/proc/asound",
    "/proc/acpi",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

/// Paths made read-only for non-privileged containers.
pub const READONLY_PATHS: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error(
        "container {container:?}: no command: the pod sets no command and the image has no Entrypoint or Cmd"
    )]
    NoCommand { container: String },
    #[error(
        "container {container:?}: user {user:?} from the image config is not in the image's /etc/passwd"
    )]
    UnknownUser { container: String, user: String },
    #[error("container {container:?}: securityContext.capabilities: unknown capability {name:?}")]
    UnknownCapability { container: String, name: String },
    #[error("building the OCI spec: {0}")]
    Oci(#[from] oci_spec::OciSpecError),
    #[error(transparent)]
    Seccomp(#[from] super::seccomp::SeccompError),
    /// `procMount` other than `Default`, worded as kube-apiserver's validation.
    #[error("container {container:?}: securityContext.procMount: {message}")]
    ProcMount { container: String, message: String },
    /// `runAsNonRoot` and a user 0, in the kubelet's words.
    #[error("{0}")]
    RunAsNonRoot(String),
}

/// Where the pod's sandbox keeps the namespaces its containers join.
#[derive(Debug, Clone)]
pub struct SandboxNamespaces {
    /// `/proc/<pid>/ns/net`; `None` for `hostNetwork: true`.
    pub net: Option<PathBuf>,
    pub ipc: PathBuf,
    /// `None` for `hostNetwork: true` (such pods share the node's hostname).
    pub uts: Option<PathBuf>,
    /// The pod's PID namespace with `shareProcessNamespace: true`; `None`:
    /// each container gets its own.
    pub pid: Option<PathBuf>,
    /// The pod's user namespace (`hostUsers: false`) and its mappings.
    pub user: Option<(PathBuf, super::userns::UserNamespace)>,
}

impl SandboxNamespaces {
    pub fn of_pid(pid: i32, host_network: bool) -> Self {
        let ns = |kind: &str| PathBuf::from(format!("/proc/{pid}/ns/{kind}"));
        SandboxNamespaces {
            net: (!host_network).then(|| ns("net")),
            ipc: ns("ipc"),
            uts: (!host_network).then(|| ns("uts")),
            pid: None,
            user: None,
        }
    }

    /// Containers join the sandbox's user namespace, with its mappings.
    pub fn in_user_namespace(mut self, pid: i32, ns: super::userns::UserNamespace) -> Self {
        self.user = Some((PathBuf::from(format!("/proc/{pid}/ns/user")), ns));
        self
    }

    /// Containers join the sandbox's PID namespace (its process is PID 1 there).
    pub fn sharing_pids(mut self, pid: i32) -> Self {
        self.pid = Some(PathBuf::from(format!("/proc/{pid}/ns/pid")));
        self
    }
}

/// Everything that decides the spec: the container's CRI config, and what
/// the runtime made for it.
pub struct SpecInputs<'a> {
    pub config: &'a ContainerConfig,
    /// The pod's (for messages that name it, as the kubelet's do).
    pub sandbox: &'a PodSandboxMetadata,
    pub image: &'a ImageConfiguration,
    /// The container's prepared (writable) root filesystem.
    pub rootfs: &'a Path,
    /// Files the sandbox wrote for the pod's containers: `hostname`, `resolv.conf`.
    pub pod_etc_dir: &'a Path,
    /// This run's `termination-log` file (bind-mounted at terminationMessagePath).
    pub termination_log: &'a Path,
    /// Where the container reads it (`terminationMessagePath`).
    pub termination_message_path: &'a str,
    pub namespaces: &'a SandboxNamespaces,
    pub hostname: &'a str,
    pub cgroups_path: &'a str,
    pub limits: &'a CgroupLimits,
    /// Resolves a user name from the image config (`User: "nobody"`) to uid/gid.
    pub passwd: &'a dyn Fn(&str) -> Option<(u32, u32)>,
    /// The seccomp profile the container runs under (`None`: unconfined),
    /// resolved for its capabilities on this architecture and kernel.
    pub seccomp: Option<&'a super::seccomp::Profile>,
    /// The node's kernel (major, minor), which a profile's rules may ask about.
    pub kernel: (u32, u32),
}

/// kubelet's OOM score policy: Guaranteed containers last (-997), BestEffort
/// first (1000), Burstable in between by their share of the node's memory.
pub fn oom_score_adj(
    qos: crate::cgroups::QosClass,
    memory_request_bytes: i64,
    node_memory_bytes: i64,
) -> i32 {
    use crate::cgroups::QosClass;
    match qos {
        QosClass::Guaranteed => -997,
        QosClass::BestEffort => 1000,
        QosClass::Burstable => {
            let adj = 1000 - (1000 * memory_request_bytes) / node_memory_bytes.max(1);
            adj.clamp(3, 999) as i32
        }
    }
}

/// Kubernetes' rule: `command` replaces the image's Entrypoint and `args`
/// replaces its Cmd; a `command` without `args` ignores the image's Cmd.
pub fn effective_argv(
    command: &[String],
    args: &[String],
    image: &ImageConfiguration,
) -> Vec<String> {
    let cfg = image.config().as_ref();
    let entrypoint = cfg.and_then(|c| c.entrypoint().clone()).unwrap_or_default();
    let cmd = cfg.and_then(|c| c.cmd().clone()).unwrap_or_default();
    let (command, args) = (command.to_vec(), args.to_vec());
    match (command.is_empty(), args.is_empty()) {
        (true, true) => [entrypoint, cmd].concat(),
        (true, false) => [entrypoint, args].concat(),
        (false, _) => [command, args].concat(),
    }
}

/// Expands `$(VAR)` the way Kubernetes does in command, args and env values:
/// a known variable is replaced, an unknown reference is left as written, and
/// `$$` escapes a `$`.
pub fn expand_vars(input: &str, lookup: &dyn Fn(&str) -> Option<String>) -> String {
    let bytes = input.as_bytes();
    let mut out = String::with_capacity(input.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'$' && i + 1 < bytes.len() {
            match bytes[i + 1] {
                b'$' => {
                    out.push('$');
                    i += 2;
                    continue;
                }
                b'(' => {
                    if let Some(end) = input[i + 2..].find(')') {
                        let name = &input[i + 2..i + 2 + end];
                        match lookup(name) {
                            Some(value) => out.push_str(&value),
                            None => out.push_str(&input[i..i + 3 + end]),
                        }
                        i += 3 + end;
                        continue;
                    }
                }
                _ => {}
            }
        }
        let ch = input[i..].chars().next().expect("in bounds");
        out.push(ch);
        i += ch.len_utf8();
    }
    out
}

/// The container's environment as the runtime builds it: the image's, the
/// default PATH if the image sets none, HOSTNAME, then the config's `envs`
/// (resolved by the pod layer), later entries winning.
pub fn effective_env(
    image: &ImageConfiguration,
    hostname: &str,
    pod_env: &[(String, String)],
) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = Vec::new();
    let set = |env: &mut Vec<(String, String)>, k: String, v: String| {
        if let Some(slot) = env.iter_mut().find(|(name, _)| *name == k) {
            slot.1 = v;
        } else {
            env.push((k, v));
        }
    };
    let image_env = image
        .config()
        .as_ref()
        .and_then(|c| c.env().clone())
        .unwrap_or_default();
    for kv in image_env {
        let (k, v) = kv.split_once('=').unwrap_or((&kv, ""));
        set(&mut env, k.to_string(), v.to_string());
    }
    if !env.iter().any(|(k, _)| k == "PATH") {
        set(&mut env, "PATH".into(), DEFAULT_PATH.into());
    }
    set(&mut env, "HOSTNAME".into(), hostname.into());
    for (k, v) in pod_env {
        set(&mut env, k.clone(), v.clone());
    }
    env
}

/// The capability set after the config's add/drop (everything, privileged).
pub fn effective_capabilities(
    container: &str,
    caps: &cri::Capability,
    privileged: bool,
) -> Result<Vec<String>, SpecError> {
    if privileged {
        return Ok(all_capability_names());
    }
    let mut set: Vec<String> = DEFAULT_CAPABILITIES.iter().map(|s| s.to_string()).collect();
    let normalize = |name: &str| name.trim_start_matches("CAP_").to_ascii_uppercase();
    for name in &caps.drop_capabilities {
        let name = normalize(name);
        if name == "ALL" {
            set.clear();
        } else {
            set.retain(|c| *c != name);
        }
    }
    let all = all_capability_names();
    for name in &caps.add_capabilities {
        let name = normalize(name);
        if name == "ALL" {
            set = all.clone();
        } else if !all.contains(&name) {
            return Err(SpecError::UnknownCapability {
                container: container.to_string(),
                name,
            });
        } else if !set.contains(&name) {
            set.push(name);
        }
    }
    Ok(set)
}

fn all_capability_names() -> Vec<String> {
    caps::all()
        .into_iter()
        .map(|c| c.to_string().trim_start_matches("CAP_").to_string())
        .collect()
}

/// The kubelet's `verifyRunAsNonRoot`: with `runAsNonRoot: true`, an explicit
/// `runAsUser: 0`, or an image user that is root (`uid`, resolved from the
/// image's `User`, numeric or named), refuses the container.
pub fn verify_run_as_non_root(
    sandbox: &PodSandboxMetadata,
    config: &ContainerConfig,
    uid: u32,
) -> Result<(), SpecError> {
    let sc = &config.linux.security_context;
    if !sc.run_as_non_root {
        return Ok(());
    }
    // format.Pod: name_namespace(uid)
    let who = format!("{}_{}({})", sandbox.name, sandbox.namespace, sandbox.uid);
    let container = &config.metadata.name;
    match sc.run_as_user {
        Some(0) => Err(SpecError::RunAsNonRoot(format!(
            "container's runAsUser breaks non-root policy (pod: {who:?}, container: {container})"
        ))),
        Some(_) => Ok(()),
        None if uid == 0 => Err(SpecError::RunAsNonRoot(format!(
            "container has runAsNonRoot and image will run as root (pod: {who:?}, container: {container})"
        ))),
        None => Ok(()),
    }
}

/// uid, gid: the config's (the container's securityContext over the pod's)
/// win over the image's `User`.
fn effective_user(inputs: &SpecInputs) -> Result<(u32, u32), SpecError> {
    let sc = &inputs.config.linux.security_context;
    let (mut uid, mut gid) = (0u32, 0u32);
    let image_user = inputs
        .image
        .config()
        .as_ref()
        .and_then(|c| c.user().clone())
        .unwrap_or_default();
    if !image_user.is_empty() {
        let (user, group) = match image_user.split_once(':') {
            Some((u, g)) => (u, Some(g)),
            None => (image_user.as_str(), None),
        };
        match user.parse::<u32>() {
            Ok(n) => uid = n,
            Err(_) => {
                let (u, g) = (inputs.passwd)(user).ok_or_else(|| SpecError::UnknownUser {
                    container: inputs.config.metadata.name.clone(),
                    user: user.to_string(),
                })?;
                uid = u;
                gid = g;
            }
        }
        if let Some(g) = group.and_then(|g| g.parse::<u32>().ok()) {
            gid = g;
        }
    }
    if let Some(u) = sc.run_as_user {
        uid = u as u32;
    }
    if let Some(g) = sc.run_as_group {
        gid = g as u32;
    }
    Ok((uid, gid))
}

fn mount(dest: &str, typ: &str, source: &str, options: &[&str]) -> Result<Mount, SpecError> {
    Ok(MountBuilder::default()
        .destination(dest)
        .typ(typ)
        .source(source)
        .options(options.iter().map(|s| s.to_string()).collect::<Vec<_>>())
        .build()?)
}

fn bind(dest: &str, source: &Path, readonly: bool) -> Result<Mount, SpecError> {
    let mut options = vec!["rbind", "rprivate"];
    if readonly {
        options.push("ro");
    }
    mount(dest, "bind", &source.to_string_lossy(), &options)
}

/// A volume's bind mount. `recursive_read_only` is runc's `rro`
/// (`mount_setattr(AT_RECURSIVE)`): submounts read-only too. Volumes are
/// mounted rprivate whatever their propagation, as they always were here.
fn bind_volume(m: &super::cri::Mount) -> Result<Mount, SpecError> {
    let mut options = vec!["rbind", "rprivate"];
    if m.readonly {
        options.push("ro");
        if m.recursive_read_only {
            options.push("rro");
        }
    }
    mount(
        &m.container_path,
        "bind",
        &m.host_path.to_string_lossy(),
        &options,
    )
}

/// Builds the OCI spec for one run of one container.
pub fn build_spec(inputs: &SpecInputs) -> Result<Spec, SpecError> {
    let config = inputs.config;
    let name = &config.metadata.name;
    let sc = &config.linux.security_context;
    let privileged = sc.privileged;

    let env = effective_env(inputs.image, inputs.hostname, &config.envs);
    // The pod layer expanded `$(VAR)` in command and args, as the kubelet does.
    let argv = effective_argv(&config.command, &config.args, inputs.image);
    if argv.is_empty() {
        return Err(SpecError::NoCommand {
            container: name.clone(),
        });
    }
    let cwd = Some(config.working_dir.clone())
        .filter(|d| !d.is_empty())
        .or_else(|| {
            inputs
                .image
                .config()
                .as_ref()
                .and_then(|c| c.working_dir().clone())
                .filter(|d| !d.is_empty())
        })
        .unwrap_or_else(|| "/".into());

    let (uid, gid) = effective_user(inputs)?;
    verify_run_as_non_root(inputs.sandbox, config, uid)?;
    let additional_gids: Vec<u32> = sc.supplemental_groups.iter().map(|g| *g as u32).collect();

    let cap_names = effective_capabilities(name, &sc.capabilities, privileged)?;
    let caps: HashSet<Capability> = cap_names
        .iter()
        .filter_map(|n| n.parse::<Capability>().ok())
        .collect();
    // A non-root user keeps no effective capabilities across exec unless they
    // are ambient; Kubernetes never sets ambient ones, so neither do we.
    let capabilities = LinuxCapabilitiesBuilder::default()
        .bounding(caps.clone())
        .permitted(caps.clone())
        .effective(caps.clone())
        .inheritable(caps)
        .build()?;
    let no_new_privileges = sc.no_new_privs;

    let process = ProcessBuilder::default()
        .terminal(config.tty)
        .user(
            UserBuilder::default()
                .uid(uid)
                .gid(gid)
                .additional_gids(additional_gids)
                .build()?,
        )
        .args(argv)
        .env(
            env.iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>(),
        )
        .cwd(cwd)
        .capabilities(capabilities)
        .no_new_privileges(no_new_privileges)
        .oom_score_adj(config.linux.resources.oom_score_adj as i32)
        .build()?;

    let readonly_rootfs = sc.readonly_rootfs;
    let root = RootBuilder::default()
        .path(inputs.rootfs)
        .readonly(readonly_rootfs)
        .build()?;

    let etc = inputs.pod_etc_dir;
    let termination_path = inputs.termination_message_path;
    let mut mounts = vec![
        mount("/proc", "proc", "proc", &["nosuid", "noexec", "nodev"])?,
        mount(
            "/dev",
            "tmpfs",
            "tmpfs",
            &["nosuid", "nodev", "strictatime", "mode=755", "size=65536k"],
        )?,
        mount(
            "/dev/pts",
            "devpts",
            "devpts",
            &[
                "nosuid",
                "noexec",
                "newinstance",
                "ptmxmode=0666",
                "mode=0620",
                "gid=5",
            ],
        )?,
        mount(
            "/dev/shm",
            "tmpfs",
            "shm",
            &["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
        )?,
        mount(
            "/dev/mqueue",
            "mqueue",
            "mqueue",
            &["nosuid", "noexec", "nodev"],
        )?,
        mount(
            "/sys",
            "sysfs",
            "sysfs",
            if privileged {
                &["nosuid", "noexec", "nodev"]
            } else {
                &["nosuid", "noexec", "nodev", "ro"]
            },
        )?,
        // The container's own cgroup, read-only unless privileged (containerd's rule).
        mount(
            "/sys/fs/cgroup",
            "cgroup",
            "cgroup",
            if privileged {
                &["nosuid", "noexec", "nodev", "relatime"]
            } else {
                &["nosuid", "noexec", "nodev", "relatime", "ro"]
            },
        )?,
        bind("/etc/hostname", &etc.join("hostname"), false)?,
        bind("/etc/resolv.conf", &etc.join("resolv.conf"), false)?,
        bind(termination_path, inputs.termination_log, false)?,
    ];
    for m in &config.mounts {
        mounts.push(bind_volume(m)?);
    }
    if let Some((_, ns)) = &inputs.namespaces.user {
        // Every bind mount from the node is idmapped with the pod's own
        // mappings (the kubelet's CRI Mount.uid_mappings/gid_mappings).
        for m in mounts
            .iter_mut()
            .filter(|m| m.typ().as_deref() == Some("bind"))
        {
            m.set_uid_mappings(Some(oci_id_mappings(&ns.uid_mappings)?));
            m.set_gid_mappings(Some(oci_id_mappings(&ns.gid_mappings)?));
        }
    }
    if privileged {
        // A privileged container sees the node's devices, as on Kubernetes.
        mounts[1] = bind("/dev", Path::new("/dev"), false)?;
        mounts.retain(|m| {
            let d = m.destination().to_string_lossy();
            d != "/dev/pts" && d != "/dev/shm" && d != "/dev/mqueue"
        });
    }

    let mut pid_ns = LinuxNamespaceBuilder::default().typ(LinuxNamespaceType::Pid);
    if let Some(path) = &inputs.namespaces.pid {
        pid_ns = pid_ns.path(path.clone());
    }
    let mut namespaces = vec![
        pid_ns.build()?,
        LinuxNamespaceBuilder::default()
            .typ(LinuxNamespaceType::Mount)
            .build()?,
        LinuxNamespaceBuilder::default()
            .typ(LinuxNamespaceType::Ipc)
            .path(inputs.namespaces.ipc.clone())
            .build()?,
        // Its own cgroup namespace, rooted at the container's cgroup, so
        // /proc/self/cgroup and the /sys/fs/cgroup view agree.
        LinuxNamespaceBuilder::default()
            .typ(LinuxNamespaceType::Cgroup)
            .build()?,
    ];
    if let Some(net) = &inputs.namespaces.net {
        namespaces.push(
            LinuxNamespaceBuilder::default()
                .typ(LinuxNamespaceType::Network)
                .path(net.clone())
                .build()?,
        );
    }
    if let Some(uts) = &inputs.namespaces.uts {
        namespaces.push(
            LinuxNamespaceBuilder::default()
                .typ(LinuxNamespaceType::Uts)
                .path(uts.clone())
                .build()?,
        );
    }

    if let Some((path, _)) = &inputs.namespaces.user {
        namespaces.push(
            LinuxNamespaceBuilder::default()
                .typ(LinuxNamespaceType::User)
                .path(path.clone())
                .build()?,
        );
    }

    let char_dev = |path: &str, major: i64, minor: i64| {
        LinuxDeviceBuilder::default()
            .path(path)
            .typ(LinuxDeviceType::C)
            .major(major)
            .minor(minor)
            .file_mode(0o666u32)
            .uid(0u32)
            .gid(0u32)
            .build()
    };
    let devices = if privileged {
        vec![]
    } else {
        vec![
            char_dev("/dev/null", 1, 3)?,
            char_dev("/dev/zero", 1, 5)?,
            char_dev("/dev/full", 1, 7)?,
            char_dev("/dev/random", 1, 8)?,
            char_dev("/dev/urandom", 1, 9)?,
            char_dev("/dev/tty", 5, 0)?,
        ]
    };

    let limits = inputs.limits;
    let mut cpu = LinuxCpuBuilder::default().period(limits.cpu_period_us);
    if let Some(shares) = limits.cpu_shares {
        cpu = cpu.shares(shares);
    }
    if let Some(quota) = limits.cpu_quota_us {
        cpu = cpu.quota(quota);
    }
    let mut resources = LinuxResourcesBuilder::default()
        .cpu(cpu.build()?)
        .devices(device_cgroup_rules(privileged)?);
    if let Some(bytes) = limits.memory_limit_bytes {
        resources = resources.memory(LinuxMemoryBuilder::default().limit(bytes).build()?);
    }
    if let Some(max) = limits.pids_max {
        resources = resources.pids(LinuxPidsBuilder::default().limit(max).build()?);
    }

    let bounding: Vec<String> = cap_names.iter().map(|c| format!("CAP_{c}")).collect();
    let seccomp = inputs
        .seccomp
        .map(|profile| {
            profile.resolve(&super::seccomp::Target {
                caps: &bounding,
                arch: super::seccomp::profile::native_arch(),
                kernel: inputs.kernel,
            })
        })
        .transpose()?;

    let mut linux = LinuxBuilder::default()
        .namespaces(namespaces)
        .cgroups_path(PathBuf::from(inputs.cgroups_path))
        .resources(resources.build()?)
        .devices(devices);
    if let Some(seccomp) = seccomp {
        linux = linux.seccomp(seccomp);
    }
    if let Some((_, ns)) = &inputs.namespaces.user {
        linux = linux
            .uid_mappings(oci_id_mappings(&ns.uid_mappings)?)
            .gid_mappings(oci_id_mappings(&ns.gid_mappings)?);
    }
    // oci-spec's defaults mask runc's paths: an unmasked /proc (the pod
    // layer's `procMount: Unmasked`) or a privileged container says so.
    if privileged {
        linux = linux
            .masked_paths(Vec::<String>::new())
            .readonly_paths(Vec::<String>::new());
    } else {
        linux = linux
            .masked_paths(sc.masked_paths.clone())
            .readonly_paths(sc.readonly_paths.clone());
    }

    let mut spec = SpecBuilder::default()
        .version("1.0.2")
        .process(process)
        .root(root)
        .mounts(mounts)
        .linux(linux.build()?)
        .build()?;
    // A hostname is only the container's own with a UTS namespace (OCI
    // runtimes refuse one without); `hostNetwork` pods keep the node's.
    if inputs.namespaces.uts.is_some() {
        spec.set_hostname(Some(inputs.hostname.to_string()));
    }
    Ok(spec)
}

/// The devices cgroup as an OCI runtime applies it: a privileged container
/// may use every device, any other only runc's default set
/// ([`crate::cgroups::devices::DEFAULT_DEVICE_RULES`], which the built-in
/// runtime writes itself) after a deny-all.
fn device_cgroup_rules(
    privileged: bool,
) -> Result<Vec<oci_spec::runtime::LinuxDeviceCgroup>, SpecError> {
    use crate::cgroups::devices::{DEFAULT_DEVICE_RULES, DeviceType, parse_rule};
    let everything = LinuxDeviceCgroupBuilder::default()
        .allow(privileged)
        .access("rwm")
        .build()?;
    if privileged {
        return Ok(vec![everything]);
    }
    let mut rules = vec![everything];
    for text in DEFAULT_DEVICE_RULES {
        let rule = parse_rule(text).expect("the default device rules parse");
        let access: String = [(2, 'r'), (4, 'w'), (1, 'm')]
            .iter()
            .filter(|(bit, _)| rule.access & bit != 0)
            .map(|(_, c)| *c)
            .collect();
        let mut builder = LinuxDeviceCgroupBuilder::default()
            .allow(true)
            .typ(match rule.typ {
                None => LinuxDeviceType::A,
                Some(DeviceType::Block) => LinuxDeviceType::B,
                Some(DeviceType::Char) => LinuxDeviceType::C,
            })
            .access(access);
        if let Some(major) = rule.major {
            builder = builder.major(major as i64);
        }
        if let Some(minor) = rule.minor {
            builder = builder.minor(minor as i64);
        }
        rules.push(builder.build()?);
    }
    Ok(rules)
}

fn oci_id_mappings(
    mappings: &[super::userns::IdMapping],
) -> Result<Vec<oci_spec::runtime::LinuxIdMapping>, SpecError> {
    mappings
        .iter()
        .map(|m| {
            Ok(oci_spec::runtime::LinuxIdMappingBuilder::default()
                .host_id(m.host_id)
                .container_id(m.container_id)
                .size(m.length)
                .build()?)
        })
        .collect()
}

/// Looks a user name up in the rootfs's `/etc/passwd`.
pub fn passwd_lookup(rootfs: &Path, user: &str) -> Option<(u32, u32)> {
    let text = std::fs::read_to_string(rootfs.join("etc/passwd")).ok()?;
    text.lines().find_map(|line| {
        let fields: Vec<&str> = line.split(':').collect();
        (fields.len() >= 4 && fields[0] == user)
            .then(|| Some((fields[2].parse().ok()?, fields[3].parse().ok()?)))
            .flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::image::{ConfigBuilder, ImageConfigurationBuilder};

    fn image(entrypoint: &[&str], cmd: &[&str]) -> ImageConfiguration {
        let v = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        ImageConfigurationBuilder::default()
            .config(
                ConfigBuilder::default()
                    .entrypoint(v(entrypoint))
                    .cmd(v(cmd))
                    .env(vec!["PATH=/bin".to_string(), "GREETING=hi".to_string()])
                    .build()
                    .unwrap(),
            )
            .build()
            .unwrap()
    }

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    fn argv(command: &[&str], args: &[&str], image: &ImageConfiguration) -> Vec<String> {
        effective_argv(&strings(command), &strings(args), image)
    }

    #[test]
    fn oom_score_follows_qos() {
        use crate::cgroups::QosClass;
        let gib = 1 << 30;
        assert_eq!(oom_score_adj(QosClass::Guaranteed, gib, 4 * gib), -997);
        assert_eq!(oom_score_adj(QosClass::BestEffort, 0, 4 * gib), 1000);
        assert_eq!(oom_score_adj(QosClass::Burstable, gib, 4 * gib), 750);
        assert_eq!(oom_score_adj(QosClass::Burstable, 0, 4 * gib), 999);
        assert_eq!(oom_score_adj(QosClass::Burstable, 4 * gib, 4 * gib), 3);
    }

    #[test]
    fn argv_follows_kubernetes_rules() {
        let img = image(&["/entry"], &["cmd-arg"]);
        assert_eq!(argv(&[], &[], &img), ["/entry", "cmd-arg"]);
        assert_eq!(argv(&[], &["a"], &img), ["/entry", "a"]);
        assert_eq!(argv(&["sh"], &[], &img), ["sh"]);
        assert_eq!(argv(&["sh"], &["-c", "x"], &img), ["sh", "-c", "x"]);
        let no_entry = image(&[], &["sh"]);
        assert_eq!(argv(&[], &[], &no_entry), ["sh"]);
    }

    #[test]
    fn var_expansion_matches_kubernetes() {
        let lookup = |n: &str| (n == "A").then(|| "1".to_string());
        assert_eq!(expand_vars("x$(A)y", &lookup), "x1y");
        assert_eq!(expand_vars("$(B)", &lookup), "$(B)");
        assert_eq!(expand_vars("$$(A)", &lookup), "$(A)");
        assert_eq!(expand_vars("$(A", &lookup), "$(A");
        assert_eq!(expand_vars("cost: $5", &lookup), "cost: $5");
        assert_eq!(expand_vars("ünï$(A)", &lookup), "ünï1");
    }

    #[test]
    fn env_layers_image_then_pod() {
        let img = image(&[], &["sh"]);
        let pod_env = vec![
            ("GREETING".to_string(), "hello".to_string()),
            ("POD".to_string(), "web-node1".to_string()),
        ];
        let env = effective_env(&img, "web-node1", &pod_env);
        let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("PATH"), Some("/bin"));
        assert_eq!(get("GREETING"), Some("hello"), "the pod's value wins");
        assert_eq!(get("POD"), Some("web-node1"));
        assert_eq!(get("HOSTNAME"), Some("web-node1"));
        let no_path = ImageConfigurationBuilder::default().build().unwrap();
        let env = effective_env(&no_path, "h", &[]);
        assert_eq!(env[0], ("PATH".to_string(), DEFAULT_PATH.to_string()));
    }

    #[test]
    fn capabilities_add_and_drop() {
        let none = cri::Capability::default();
        assert_eq!(
            effective_capabilities("c", &none, false).unwrap().len(),
            DEFAULT_CAPABILITIES.len()
        );
        let caps = cri::Capability {
            drop_capabilities: strings(&["ALL"]),
            add_capabilities: strings(&["NET_ADMIN", "CAP_KILL"]),
        };
        assert_eq!(
            effective_capabilities("c", &caps, false).unwrap(),
            ["NET_ADMIN", "KILL"]
        );
        assert_eq!(
            effective_capabilities("c", &none, true).unwrap().len(),
            all_capability_names().len(),
            "privileged: every capability"
        );
        let unknown = cri::Capability {
            add_capabilities: strings(&["FLY"]),
            ..Default::default()
        };
        assert_eq!(
            effective_capabilities("c", &unknown, false)
                .unwrap_err()
                .to_string(),
            "container \"c\": securityContext.capabilities: unknown capability \"FLY\""
        );
    }

    #[test]
    fn run_as_non_root_refuses_user_zero_from_any_source() {
        let pod = PodSandboxMetadata {
            name: "web".into(),
            namespace: "default".into(),
            uid: "1234".into(),
            attempt: 0,
        };
        let mut c = ContainerConfig::default();
        c.metadata.name = "c".into();
        c.linux.security_context.run_as_non_root = true;
        assert_eq!(
            verify_run_as_non_root(&pod, &c, 0).unwrap_err().to_string(),
            "container has runAsNonRoot and image will run as root (pod: \"web_default(1234)\", container: c)"
        );
        verify_run_as_non_root(&pod, &c, 65534).unwrap();
        c.linux.security_context.run_as_user = Some(0);
        assert_eq!(
            verify_run_as_non_root(&pod, &c, 65534)
                .unwrap_err()
                .to_string(),
            "container's runAsUser breaks non-root policy (pod: \"web_default(1234)\", container: c)"
        );
        c.linux.security_context.run_as_user = Some(1000);
        verify_run_as_non_root(&pod, &c, 0).unwrap();
        c.linux.security_context.run_as_non_root = false;
        c.linux.security_context.run_as_user = None;
        verify_run_as_non_root(&pod, &c, 0).unwrap();
    }

    #[test]
    fn only_privileged_containers_may_use_every_device() {
        let privileged = device_cgroup_rules(true).unwrap();
        assert_eq!(privileged.len(), 1);
        assert!(privileged[0].allow());
        let confined = device_cgroup_rules(false).unwrap();
        assert!(!confined[0].allow());
        assert_eq!(confined[0].access().as_deref(), Some("rwm"));
        let null = confined
            .iter()
            .find(|r| r.major() == Some(1) && r.minor() == Some(3))
            .expect("/dev/null allowed");
        assert!(null.allow());
        assert_eq!(null.typ(), Some(LinuxDeviceType::C));
        assert_eq!(null.access().as_deref(), Some("rwm"));
    }
}
