//! The container's init stage: the one place that makes an OCI spec real.
//!
//! This runs in a child forked by the shim (a fresh, single-threaded process,
//! never the multi-threaded agent). The shim has already unshared the PID
//! namespace, so this child is PID 1 of a new one. From here on, in order:
//! join the pod's cgroup, join the sandbox's namespaces, new mount namespace,
//! mounts inside the rootfs, pivot_root, mask /proc, drop to the user and
//! capabilities, exec. Any failure is returned to the shim, which reports it
//! as the container's start error.

use std::convert::Infallible;
use std::ffi::CString;
use std::fs;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sched::{CloneFlags, setns, unshare};
use nix::sys::stat::makedev;
use nix::unistd::{
    Gid, Uid, chdir, execve, pivot_root, setgid, setgroups, setsid, setuid, symlinkat,
};
use oci_spec::runtime::{LinuxDeviceType, LinuxNamespaceType, Mount, Spec};

use super::in_root::{self, InRootError, Kind, Root, Scope};

#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error("{step}: {source}")]
    Sys {
        step: String,
        #[source]
        source: nix::Error,
    },
    #[error("{step}: {source}")]
    Io {
        step: String,
        #[source]
        source: std::io::Error,
    },
    #[error("exec: {0:?}: executable file not found in $PATH")]
    NotFound(String),
    #[error("invalid spec: {0}")]
    Spec(String),
    #[error(transparent)]
    Seccomp(super::seccomp::SeccompError),
    #[error("{what}: {source}")]
    Path {
        what: String,
        #[source]
        source: InRootError,
    },
}

trait Step<T> {
    fn step(self, what: impl FnOnce() -> String) -> Result<T, InitError>;
}
impl<T> Step<T> for nix::Result<T> {
    fn step(self, what: impl FnOnce() -> String) -> Result<T, InitError> {
        self.map_err(|source| InitError::Sys {
            step: what(),
            source,
        })
    }
}
impl<T> Step<T> for std::io::Result<T> {
    fn step(self, what: impl FnOnce() -> String) -> Result<T, InitError> {
        self.map_err(|source| InitError::Io {
            step: what(),
            source,
        })
    }
}

/// File descriptors the child's stdio is wired to.
pub struct Stdio {
    /// The read end of the shim's stdin pipe (`stdin: true`); else /dev/null.
    pub stdin: Option<OwnedFd>,
    pub stdout: OwnedFd,
    pub stderr: OwnedFd,
    /// `tty: true`: the socket the terminal's master end goes back over
    /// (runc's console socket); the terminal replaces all three above.
    pub console: Option<OwnedFd>,
}

/// Sets the container up and execs its process; returns only on failure.
pub fn exec_container(
    spec: &Spec,
    cgroup_dirs: &[PathBuf],
    stdio: Stdio,
) -> Result<Infallible, InitError> {
    let Stdio {
        stdin,
        stdout,
        stderr,
        console,
    } = stdio;
    match stdin {
        Some(fd) => dup2_raw(fd.as_raw_fd(), 0)?,
        None => {
            let devnull = fs::File::open("/dev/null").step(|| "open /dev/null".into())?;
            dup2_raw(devnull.as_raw_fd(), 0)?;
        }
    }
    dup2_raw(stdout.as_raw_fd(), 1)?;
    dup2_raw(stderr.as_raw_fd(), 2)?;
    drop((stdout, stderr));
    // A session of its own: the agent's terminal signals never reach the container.
    setsid().step(|| "setsid".into())?;

    // Join the cgroup first, so everything below is accounted to the container.
    for dir in cgroup_dirs {
        fs::write(dir.join("cgroup.procs"), "0")
            .step(|| format!("join cgroup {}", dir.display()))?;
    }

    let linux = spec
        .linux()
        .as_ref()
        .ok_or_else(|| InitError::Spec("no linux section".into()))?;
    let namespaces = linux.namespaces().clone().unwrap_or_default();
    for ns in &namespaces {
        // A shared PID namespace was joined by the shim before the fork
        // (setns for PID namespaces only moves children).
        // The user namespace is joined last (see below), once everything
        // that needs the node's root is done.
        if matches!(ns.typ(), LinuxNamespaceType::Pid | LinuxNamespaceType::User) {
            continue;
        }
        if let Some(path) = ns.path() {
            let flag = clone_flag(ns.typ());
            let file = fs::File::open(path).step(|| format!("open {}", path.display()))?;
            setns(&file, flag).step(|| format!("setns {}", path.display()))?;
        }
    }
    let new_uts = namespaces
        .iter()
        .any(|ns| ns.typ() == LinuxNamespaceType::Uts && ns.path().is_none());
    if new_uts {
        unshare(CloneFlags::CLONE_NEWUTS).step(|| "unshare uts".into())?;
    }
    unshare(CloneFlags::CLONE_NEWNS).step(|| "unshare mount namespace".into())?;
    // Nothing we mount may propagate back to the node.
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .step(|| "make / rprivate".into())?;

    let root = spec
        .root()
        .as_ref()
        .ok_or_else(|| InitError::Spec("no root".into()))?;
    let rootfs = root.path().clone();
    // The pod's user namespace (`hostUsers: false`): every mount below is
    // made here, as the node's root, idmapped into it; the process joins it
    // last, before it drops to the container's user.
    let userns = UserNs::of(linux)?;
    match &userns {
        None => {
            // pivot_root needs the new root to be a mount point of its own.
            mount(
                Some(&rootfs),
                &rootfs,
                None::<&str>,
                MsFlags::MS_BIND | MsFlags::MS_REC,
                None::<&str>,
            )
            .step(|| format!("bind rootfs {}", rootfs.display()))?;
        }
        Some(ns) => {
            let node_path = |what: String| move |e| InitError::Path { what, source: e };
            let source = in_root::open_node_path(&rootfs)
                .map_err(node_path(format!("rootfs {}", rootfs.display())))?;
            let tree = super::idmap::idmapped_tree(source.as_fd(), ns.fd.as_fd(), false)
                .map_err(|e| InitError::Spec(format!("idmapped rootfs: {e}")))?;
            super::idmap::move_onto(tree.as_fd(), source.as_fd())
                .step(|| format!("idmapped rootfs at {}", rootfs.display()))?;
        }
    }

    // Every path below is looked up inside the rootfs, held open from here.
    let in_rootfs = Root::open(&rootfs, Scope::InRoot).map_err(|e| InitError::Path {
        what: "rootfs".into(),
        source: e,
    })?;
    for m in spec.mounts().as_deref().unwrap_or_default() {
        mount_into(&in_rootfs, m, userns.as_ref())?;
    }
    create_devices(
        &in_rootfs,
        linux.devices().as_deref().unwrap_or_default(),
        userns.as_ref(),
    )?;
    drop(in_rootfs);

    chdir(&rootfs).step(|| "chdir rootfs".into())?;
    pivot_root(".", ".").step(|| "pivot_root".into())?;
    // The old root now sits on top of the new one; detach it.
    umount2(".", MntFlags::MNT_DETACH).step(|| "detach old root".into())?;
    chdir("/").step(|| "chdir /".into())?;

    for path in linux.masked_paths().as_deref().unwrap_or_default() {
        mask_path(path)?;
    }
    for path in linux.readonly_paths().as_deref().unwrap_or_default() {
        readonly_path(path)?;
    }
    if root.readonly().unwrap_or(false) {
        mount(
            None::<&str>,
            "/",
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
            None::<&str>,
        )
        .step(|| "remount / read-only".into())?;
    }
    if new_uts && let Some(hostname) = spec.hostname() {
        nix::unistd::sethostname(hostname).step(|| "sethostname".into())?;
    }
    let process = spec
        .process()
        .as_ref()
        .ok_or_else(|| InitError::Spec("no process".into()))?;
    if let Some(adj) = process.oom_score_adj() {
        // Raising a score always works; lowering one (Guaranteed: -997) needs
        // CAP_SYS_RESOURCE, which a confined node (or a user namespace) lacks:
        // then the container keeps the score it inherited rather than failing.
        let _ = fs::write("/proc/self/oom_score_adj", adj.to_string());
    }
    if let Some(ns) = &userns {
        // From here on this process is root of the pod's user namespace
        // only; its capabilities count there, not on the node.
        setns(&ns.fd, CloneFlags::CLONE_NEWUSER).step(|| "join the pod's user namespace".into())?;
    }
    if let Some(socket) = console {
        // In the container's devpts now, so the terminal is named there.
        let slave = super::exec::open_console_and_send_master(socket.as_raw_fd())
            .map_err(|e| InitError::Spec(format!("making the terminal: {e:#}")))?;
        drop(socket);
        for fd in 0..3 {
            dup2_raw(slave.as_raw_fd(), fd)?;
        }
        drop(slave);
        // The session setsid made above gets the terminal as its own.
        // SAFETY: TIOCSCTTY takes an int argument; fd 0 is the terminal.
        if unsafe { libc::ioctl(0, libc::TIOCSCTTY, 0) } < 0 {
            return Err(InitError::Spec(format!(
                "making the terminal the controlling one: {}",
                std::io::Error::last_os_error()
            )));
        }
    }

    let env: Vec<String> = process.env().clone().unwrap_or_default();
    let args: Vec<String> = process.args().clone().unwrap_or_default();
    let program = args
        .first()
        .ok_or_else(|| InitError::Spec("empty args".into()))?;
    let path_var = env
        .iter()
        .find_map(|kv| kv.strip_prefix("PATH="))
        .unwrap_or(super::spec::DEFAULT_PATH);
    let executable = find_executable(program, path_var)?;

    // Seccomp goes on last, just before exec, when no_new_privs allows it
    // unprivileged; otherwise before the capabilities go (loading needs
    // CAP_SYS_ADMIN then), as runc does.
    let seccomp = match linux.seccomp() {
        Some(profile) => {
            Some(super::seccomp::filter::compile(profile).map_err(InitError::Seccomp)?)
        }
        None => None,
    };
    let no_new_privileges = process.no_new_privileges().unwrap_or(false);
    if !no_new_privileges && let Some(programs) = &seccomp {
        super::seccomp::filter::load(programs).map_err(InitError::Seccomp)?;
    }
    drop_privileges(process)?;

    let cwd = process.cwd();
    if chdir(cwd).is_err() {
        fs::create_dir_all(cwd).step(|| format!("create workingDir {}", cwd.display()))?;
        chdir(cwd).step(|| format!("chdir {}", cwd.display()))?;
    }
    if no_new_privileges {
        nix::sys::prctl::set_no_new_privs().step(|| "set no_new_privs".into())?;
        if let Some(programs) = &seccomp {
            super::seccomp::filter::load(programs).map_err(InitError::Seccomp)?;
        }
    }

    let c = |s: &str| CString::new(s).map_err(|_| InitError::Spec(format!("NUL in {s:?}")));
    let c_args = args.iter().map(|a| c(a)).collect::<Result<Vec<_>, _>>()?;
    let c_env = env.iter().map(|e| c(e)).collect::<Result<Vec<_>, _>>()?;
    let c_path = c(&executable.to_string_lossy())?;
    execve(&c_path, &c_args, &c_env).step(|| format!("exec {program:?}"))
}

fn dup2_raw(from: RawFd, to: RawFd) -> Result<(), InitError> {
    // SAFETY: both descriptors are open; replacing 0/1/2 is the point.
    let res = unsafe { libc::dup2(from, to) };
    if res < 0 {
        return Err(InitError::Sys {
            step: format!("dup2 {from} -> {to}"),
            source: nix::Error::last(),
        });
    }
    Ok(())
}

fn clone_flag(typ: LinuxNamespaceType) -> CloneFlags {
    match typ {
        LinuxNamespaceType::Mount => CloneFlags::CLONE_NEWNS,
        LinuxNamespaceType::Cgroup => CloneFlags::CLONE_NEWCGROUP,
        LinuxNamespaceType::Uts => CloneFlags::CLONE_NEWUTS,
        LinuxNamespaceType::Ipc => CloneFlags::CLONE_NEWIPC,
        LinuxNamespaceType::User => CloneFlags::CLONE_NEWUSER,
        LinuxNamespaceType::Pid => CloneFlags::CLONE_NEWPID,
        LinuxNamespaceType::Network => CloneFlags::CLONE_NEWNET,
        LinuxNamespaceType::Time => CloneFlags::empty(),
    }
}

/// Splits OCI mount options into flags and the filesystem's data string.
/// Mount options as flags: (flags, read-only, recursively read-only, data).
fn mount_flags(options: &[String]) -> (MsFlags, bool, bool, String) {
    let mut flags = MsFlags::empty();
    let mut readonly = false;
    let mut recursive_ro = false;
    let mut data = Vec::new();
    for opt in options {
        match opt.as_str() {
            "ro" => readonly = true,
            "rro" => recursive_ro = true,
            "rw" => {}
            "nosuid" => flags |= MsFlags::MS_NOSUID,
            "noexec" => flags |= MsFlags::MS_NOEXEC,
            "nodev" => flags |= MsFlags::MS_NODEV,
            "strictatime" => flags |= MsFlags::MS_STRICTATIME,
            "relatime" => flags |= MsFlags::MS_RELATIME,
            "noatime" => flags |= MsFlags::MS_NOATIME,
            "bind" => flags |= MsFlags::MS_BIND,
            "rbind" => flags |= MsFlags::MS_BIND | MsFlags::MS_REC,
            "private" | "rprivate" | "slave" | "rslave" | "shared" | "rshared" => {}
            other => data.push(other.to_string()),
        }
    }
    (flags, readonly, recursive_ro, data.join(","))
}

/// The pod's user namespace, held open, and its mappings.
struct UserNs {
    fd: fs::File,
    mappings: super::userns::UserNamespace,
}

impl UserNs {
    fn of(linux: &oci_spec::runtime::Linux) -> Result<Option<UserNs>, InitError> {
        let Some(path) = linux
            .namespaces()
            .as_deref()
            .unwrap_or_default()
            .iter()
            .find(|ns| ns.typ() == LinuxNamespaceType::User)
            .and_then(|ns| ns.path().clone())
        else {
            return Ok(None);
        };
        let convert = |m: &Option<Vec<oci_spec::runtime::LinuxIdMapping>>| {
            m.as_deref()
                .unwrap_or_default()
                .iter()
                .map(|m| super::userns::IdMapping {
                    host_id: m.host_id(),
                    container_id: m.container_id(),
                    length: m.size(),
                })
                .collect::<Vec<_>>()
        };
        let mappings = super::userns::UserNamespace {
            uid_mappings: convert(linux.uid_mappings()),
            gid_mappings: convert(linux.gid_mappings()),
        };
        if mappings.host_uid(0).is_none() || mappings.host_gid(0).is_none() {
            return Err(InitError::Spec(
                "a user namespace without root mapped".into(),
            ));
        }
        let fd = fs::File::open(&path).step(|| format!("open {}", path.display()))?;
        Ok(Some(UserNs { fd, mappings }))
    }

    /// Mount options naming owners as host IDs: a tmpfs or devpts mounted
    /// here (the node's side) belongs to the pod's root, and devpts' `gid=5`
    /// is the pod's tty group, as they would be if mounted inside.
    fn host_owner_options(&self, typ: &str, data: &str) -> String {
        let mut opts: Vec<String> = data
            .split(',')
            .filter(|o| !o.is_empty())
            .map(|o| match (typ, o.strip_prefix("gid=")) {
                ("devpts", Some(gid)) => gid
                    .parse()
                    .ok()
                    .and_then(|g| self.mappings.host_gid(g))
                    .map_or(o.to_string(), |g| format!("gid={g}")),
                _ => o.to_string(),
            })
            .collect();
        if typ == "tmpfs" {
            let (has_uid, has_gid) = (
                opts.iter().any(|o| o.starts_with("uid=")),
                opts.iter().any(|o| o.starts_with("gid=")),
            );
            if !has_uid {
                opts.push(format!("uid={}", self.mappings.host_uid(0).unwrap_or(0)));
            }
            if !has_gid {
                opts.push(format!("gid={}", self.mappings.host_gid(0).unwrap_or(0)));
            }
        }
        opts.join(",")
    }
}

/// [`Root::mount_target`]; in a pod user namespace, whatever it creates is
/// made as the pod's root (an idmapped mount refuses, with EOVERFLOW, a file
/// made by an ID it does not map, such as the node's root).
fn mount_target(
    root: &Root,
    dest: &Path,
    kind: Kind,
    userns: Option<&UserNs>,
) -> Result<OwnedFd, InRootError> {
    let Some(ns) = userns else {
        return root.mount_target(dest, kind);
    };
    let (uid, gid) = (
        ns.mappings.host_uid(0).unwrap_or(0),
        ns.mappings.host_gid(0).unwrap_or(0),
    );
    // Only the filesystem IDs change, for this call: the node's root is back
    // (with its filesystem capabilities) right after.
    nix::unistd::setfsgid(Gid::from_raw(gid));
    nix::unistd::setfsuid(Uid::from_raw(uid));
    let made = root.mount_target(dest, kind);
    nix::unistd::setfsuid(Uid::from_raw(0));
    nix::unistd::setfsgid(Gid::from_raw(0));
    made
}

fn mount_into(root: &Root, m: &Mount, userns: Option<&UserNs>) -> Result<(), InitError> {
    let dest = m.destination();
    let (mut flags, readonly, recursive_ro, mut data) =
        mount_flags(m.options().as_deref().unwrap_or_default());
    let source = m.source().clone().unwrap_or_default();
    let is_bind = flags.contains(MsFlags::MS_BIND) || m.typ().as_deref() == Some("bind");
    let in_root = |e| InitError::Path {
        what: format!("mount destination {}", dest.display()),
        source: e,
    };
    if is_bind {
        flags |= MsFlags::MS_BIND;
        // The source is the node's (a volume, the pod's /etc files): held
        // open so what is checked is what gets mounted.
        let source_fd = in_root::open_node_path(&source).map_err(|e| InitError::Path {
            what: format!("bind source for {}", dest.display()),
            source: e,
        })?;
        let kind =
            in_root::kind_of(source_fd.as_fd()).step(|| format!("stat {}", source.display()))?;
        let target = mount_target(root, dest, kind, userns).map_err(in_root)?;
        if let Some(ns) = userns.filter(|_| m.uid_mappings().is_some()) {
            // The volume as the pod's user namespace sees it: files owned by
            // 0 on the node are its root's, and what its root writes is 0
            // on the node (the kubelet's idmapped volumes).
            let recursive = flags.contains(MsFlags::MS_REC);
            let tree = super::idmap::idmapped_tree(source_fd.as_fd(), ns.fd.as_fd(), recursive)
                .map_err(|e| {
                    InitError::Spec(format!(
                        "idmapped mount of {} at {}: {e}",
                        source.display(),
                        dest.display()
                    ))
                })?;
            if readonly {
                super::idmap::set_read_only(tree.as_fd(), recursive_ro)
                    .step(|| format!("make {} read-only", dest.display()))?;
            }
            super::idmap::move_onto(tree.as_fd(), target.as_fd())
                .step(|| format!("idmapped {} at {}", source.display(), dest.display()))?;
            return Ok(());
        }
        mount(
            Some(&in_root::fd_path(source_fd.as_fd())),
            &in_root::fd_path(target.as_fd()),
            None::<&str>,
            flags,
            None::<&str>,
        )
        .step(|| format!("bind {} at {}", source.display(), dest.display()))?;
        if readonly {
            // The remount goes to the new mount, found again inside the root
            // (the old descriptor names what lies beneath it).
            let mounted = root.mount_target(dest, kind).map_err(in_root)?;
            mount(
                None::<&str>,
                &in_root::fd_path(mounted.as_fd()),
                None::<&str>,
                flags | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
                None::<&str>,
            )
            .step(|| format!("remount {} read-only", dest.display()))?;
            if recursive_ro {
                super::idmap::set_read_only(mounted.as_fd(), true)
                    .step(|| format!("make {} recursively read-only", dest.display()))?;
            }
        }
        return Ok(());
    }
    // proc, sysfs, tmpfs...: only ever on a real directory of the rootfs
    // (never through a symlink an image planted, runc's GHSA-fh74-hm69-rqjw).
    let target = mount_target(root, dest, Kind::Dir, userns).map_err(in_root)?;
    if readonly {
        flags |= MsFlags::MS_RDONLY;
    }
    let typ = m.typ().clone().unwrap_or_default();
    if let Some(ns) = userns {
        data = ns.host_owner_options(&typ, &data);
    }
    mount(
        Some(&source),
        &in_root::fd_path(target.as_fd()),
        Some(typ.as_str()),
        flags,
        (!data.is_empty()).then_some(data.as_str()),
    )
    .step(|| format!("mount {typ} at {}", dest.display()))?;
    Ok(())
}

/// The spec's device nodes, each a bind mount of the node's own node (as
/// runc does in user namespaces): the container's /dev is mounted `nodev`,
/// so a node made there with mknod opens nothing, while a bind mount keeps
/// the flags of the node's /dev.
fn create_devices(
    root: &Root,
    devices: &[oci_spec::runtime::LinuxDevice],
    userns: Option<&UserNs>,
) -> Result<(), InitError> {
    let in_root = |what: String| move |e| InitError::Path { what, source: e };
    for d in devices {
        let path = d.path();
        let want_kind = match d.typ() {
            LinuxDeviceType::B => libc::S_IFBLK,
            _ => libc::S_IFCHR,
        };
        let want_rdev = makedev(d.major() as u64, d.minor() as u64);
        let node = nix::sys::stat::stat(path).step(|| format!("stat {}", path.display()))?;
        if node.st_mode & libc::S_IFMT != want_kind || node.st_rdev != want_rdev {
            return Err(InitError::Spec(format!(
                "the node's {} is not device {}:{}",
                path.display(),
                d.major(),
                d.minor()
            )));
        }
        let target = mount_target(root, path, Kind::File, userns)
            .map_err(in_root(format!("device {}", path.display())))?;
        mount(
            Some(path),
            &in_root::fd_path(target.as_fd()),
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .step(|| format!("bind device {}", path.display()))?;
    }
    if let Ok(dev) = root.resolve(Path::new("/dev")) {
        for (link, target) in [
            ("fd", "/proc/self/fd"),
            ("stdin", "/proc/self/fd/0"),
            ("stdout", "/proc/self/fd/1"),
            ("stderr", "/proc/self/fd/2"),
            ("ptmx", "pts/ptmx"),
            ("core", "/proc/kcore"),
        ] {
            match symlinkat(target, &dev, link) {
                Ok(()) | Err(nix::errno::Errno::EEXIST) => {}
                Err(e) => return Err(e).step(|| format!("symlink /dev/{link}")),
            }
        }
    }
    Ok(())
}

fn mask_path(path: &str) -> Result<(), InitError> {
    let p = Path::new(path);
    match fs::metadata(p) {
        Err(_) => Ok(()),
        Ok(meta) if meta.is_dir() => mount(
            Some("tmpfs"),
            p,
            Some("tmpfs"),
            MsFlags::MS_RDONLY,
            None::<&str>,
        )
        .step(|| format!("mask {path}")),
        Ok(_) => mount(
            Some("/dev/null"),
            p,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .step(|| format!("mask {path}")),
    }
}

fn readonly_path(path: &str) -> Result<(), InitError> {
    let p = Path::new(path);
    if fs::symlink_metadata(p).is_err() {
        return Ok(());
    }
    mount(
        Some(p),
        p,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .step(|| format!("bind {path}"))?;
    mount(
        Some(p),
        p,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
        None::<&str>,
    )
    .step(|| format!("remount {path} read-only"))
}

/// PATH lookup in the container's own PATH (glibc's execvpe would use ours).
pub(crate) fn find_executable(program: &str, path_var: &str) -> Result<PathBuf, InitError> {
    let is_exec = |p: &Path| {
        fs::metadata(p)
            .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            .unwrap_or(false)
    };
    if program.contains('/') {
        let p = PathBuf::from(program);
        return if is_exec(&p) {
            Ok(p)
        } else {
            Err(InitError::NotFound(program.to_string()))
        };
    }
    path_var
        .split(':')
        .filter(|d| !d.is_empty())
        .map(|d| Path::new(d).join(program))
        .find(|p| is_exec(p))
        .ok_or_else(|| InitError::NotFound(program.to_string()))
}

/// Bounding set first (needs CAP_SETPCAP), then groups and ids with the
/// permitted set kept across setuid, then the final capability sets.
pub(crate) fn drop_privileges(process: &oci_spec::runtime::Process) -> Result<(), InitError> {
    use caps::{CapSet, Capability as Cap};
    // Only what this process holds can be kept (a privileged container asks
    // for every capability; the node may have fewer, e.g. a confined agent).
    let held = caps::read(None, CapSet::Permitted).unwrap_or_else(|_| caps::all());
    let wanted: std::collections::HashSet<Cap> = process
        .capabilities()
        .as_ref()
        .and_then(|c| c.bounding().clone())
        .unwrap_or_default()
        .iter()
        .filter_map(|c| format!("CAP_{c}").parse::<Cap>().ok())
        .filter(|c| held.contains(c))
        .collect();
    let cap_err = |what: &str, e: caps::errors::CapsError| InitError::Io {
        step: what.to_string(),
        source: std::io::Error::other(e.to_string()),
    };
    for cap in caps::all() {
        if !wanted.contains(&cap) {
            caps::drop(None, CapSet::Bounding, cap).map_err(|e| cap_err("drop bounding cap", e))?;
        }
    }
    let user = process.user();
    nix::sys::prctl::set_keepcaps(true).step(|| "PR_SET_KEEPCAPS".into())?;
    let mut groups: Vec<Gid> = user
        .additional_gids()
        .clone()
        .unwrap_or_default()
        .into_iter()
        .map(Gid::from_raw)
        .collect();
    groups.dedup();
    setgroups(&groups).step(|| "setgroups".into())?;
    setgid(Gid::from_raw(user.gid())).step(|| format!("setgid {}", user.gid()))?;
    setuid(Uid::from_raw(user.uid())).step(|| format!("setuid {}", user.uid()))?;
    nix::sys::prctl::set_keepcaps(false).step(|| "PR_CLEAR_KEEPCAPS".into())?;
    // Effective first: the kernel refuses a permitted set smaller than the
    // effective one.
    caps::set(None, CapSet::Effective, &wanted).map_err(|e| cap_err("set effective caps", e))?;
    caps::set(None, CapSet::Inheritable, &wanted)
        .map_err(|e| cap_err("set inheritable caps", e))?;
    caps::set(None, CapSet::Permitted, &wanted).map_err(|e| cap_err("set permitted caps", e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_options_split_into_flags_and_data() {
        let opts: Vec<String> = ["nosuid", "ro", "rro", "mode=755", "size=65536k"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let (flags, ro, rro, data) = mount_flags(&opts);
        assert!(flags.contains(MsFlags::MS_NOSUID));
        assert!(ro && rro);
        assert_eq!(data, "mode=755,size=65536k");
    }
}
