//! `CreateContainer` + `StartContainer` of the built-in runtime (and of
//! runc, which only swaps who creates the process): image, rootfs, cgroup,
//! OCI spec, bundle, shim.

use std::path::{Path, PathBuf};

use super::remove::remove_run;
use crate::context::AgentContext;
use crate::runtime::container::{self, ShimLaunch, StartOutcome};
use crate::runtime::cri::{SecurityProfile, TERMINATION_MESSAGE_PATH_ANNOTATION};
use crate::runtime::image;
use crate::runtime::service::{ContainerRequest, CreateError, CurrentRun};
use crate::runtime::shim::ContainerExit;
use crate::runtime::spec::{self, SandboxNamespaces, SpecInputs};
use jiff::Timestamp;

/// Everything blocking about one container start, in one place: image, rootfs,
/// cgroup, spec, shim. Returns the run and, if its process never ran, its exit.
/// `runc`: the OCI runtime that creates the container's process (`None`:
/// the agent's own init).
pub(crate) fn create_and_start(
    ctx: &AgentContext,
    req: &ContainerRequest,
    runc: Option<&crate::runtime::runc::Runc>,
) -> Result<(CurrentRun, Option<ContainerExit>), CreateError> {
    let ContainerRequest {
        config,
        sandbox_config,
        sandbox,
        pod_dir,
        id,
    } = *req;
    let pod_cgroup = super::run_sandbox::pod_cgroup(sandbox_config).map_err(CreateError::Other)?;
    let pod_cgroup = &pod_cgroup;
    let image_ref = config.image.clone();
    // The image manager has made sure it is in the store (unless it was
    // removed since).
    let image = ctx.images.resolve(&image_ref).map_err(|e| match e {
        image::ImageError::NotFound { .. } => CreateError::ImageMissing(e.to_string()),
        other => CreateError::Other(crate::error_chain(&other)),
    })?;
    let bundle = pod_dir.join("containers").join(id);
    let cgroup = ctx.cgroups.container_path(pod_cgroup, id);
    let fail = |e: CreateError| {
        remove_run(ctx, &bundle, &cgroup);
        e
    };
    std::fs::create_dir_all(&bundle)
        .map_err(|e| CreateError::Other(format!("{}: {e}", bundle.display())))?;
    // overlayfs refuses idmapped mounts: a pod in its own user namespace
    // gets a copy of the image's layers, idmapped as its volumes are.
    let rootfs_mode = if sandbox.user_namespace.is_some() {
        image::RootfsMode::Copy
    } else {
        image::RootfsMode::Auto
    };
    let rootfs = image::prepare_rootfs_with(&image, &bundle, rootfs_mode).map_err(|e| {
        fail(CreateError::Other(format!(
            "preparing the rootfs: {}",
            crate::error_chain(&e)
        )))
    })?;
    let limits = config.linux.resources.to_limits();
    ctx.cgroups.create(&cgroup, &limits).map_err(|e| {
        fail(CreateError::Other(format!(
            "creating the container cgroup: {}",
            crate::error_chain(&e)
        )))
    })?;
    let privileged = config.linux.security_context.privileged;
    if !privileged {
        ctx.cgroups.restrict_devices(&cgroup).map_err(|e| {
            fail(CreateError::Other(format!(
                "restricting the container's devices: {}",
                crate::error_chain(&e)
            )))
        })?;
    }
    let termination_log = bundle.join("termination-log");
    // 0666 as kubelet makes it: a container running as any user may write its message.
    std::fs::write(&termination_log, b"")
        .and_then(|_| {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&termination_log, std::fs::Permissions::from_mode(0o666))
        })
        .map_err(|e| fail(CreateError::Other(crate::error_chain(&e))))?;
    let hostname = &sandbox_config.hostname;
    let host_network = sandbox.host_network;
    let mut namespaces = SandboxNamespaces::of_pid(sandbox.pid, host_network);
    if sandbox.share_pid {
        namespaces = namespaces.sharing_pids(sandbox.pid);
    }
    if let Some(ns) = &sandbox.user_namespace {
        namespaces = namespaces.in_user_namespace(sandbox.pid, ns.clone());
    }
    let rootfs_path = rootfs.path.clone();
    let passwd = move |user: &str| spec::passwd_lookup(&rootfs_path, user);
    use crate::runtime::seccomp;
    let seccomp_profile = match config.linux.security_context.seccomp.clone() {
        None | Some(SecurityProfile::Unconfined) => None,
        Some(SecurityProfile::RuntimeDefault) => Some(seccomp::Profile::runtime_default()),
        Some(SecurityProfile::Localhost(path)) => Some(
            seccomp::load_localhost(&ctx.root_dir.join("seccomp"), &path)
                .map_err(|e| fail(CreateError::Other(e.to_string())))?,
        ),
    };
    let oci = spec::build_spec(&SpecInputs {
        config,
        sandbox: &sandbox_config.metadata,
        image: &image.config,
        rootfs: &rootfs.path,
        pod_etc_dir: &pod_dir.join("etc"),
        termination_log: &termination_log,
        termination_message_path: config
            .annotations
            .get(TERMINATION_MESSAGE_PATH_ANNOTATION)
            .map_or("/dev/termination-log", String::as_str),
        namespaces: &namespaces,
        hostname,
        cgroups_path: &ctx.cgroups.oci_cgroups_path(&cgroup),
        limits: &limits,
        passwd: &passwd,
        seccomp: seccomp_profile.as_ref(),
        kernel: seccomp::profile::kernel_version(),
    })
    .map_err(|e| fail(CreateError::Config(crate::error_chain(&e))))?;
    let mut oci = oci;
    if runc.is_some() {
        crate::runtime::runc::adapt_spec(
            &mut oci,
            crate::runtime::runc::unlowerable_oom_score_adj(),
        );
    }
    container::write_bundle(&bundle, &oci)
        .map_err(|e| fail(CreateError::Other(crate::error_chain(&e))))?;
    let cgroup_dirs: Vec<PathBuf> = ctx
        .cgroups
        .procs_files(&cgroup)
        .into_iter()
        .filter_map(|p| p.parent().map(Path::to_path_buf))
        .collect();
    let log_path = Path::new(&sandbox_config.log_directory).join(&config.log_path);
    let outcome = container::start_shim(&ShimLaunch {
        agent_exe: &ctx.agent_exe,
        bundle: &bundle,
        log_path: &log_path,
        log_max_size: ctx.log_max_size,
        log_max_files: ctx.log_max_files,
        cgroup_dirs: &cgroup_dirs,
        stdin: config.stdin,
        stdin_once: config.stdin_once,
        runc,
    })
    .map_err(|e| fail(CreateError::Other(crate::error_chain(&e))))?;
    match outcome {
        StartOutcome::Running(started) => Ok((
            CurrentRun {
                container_id: id.to_string(),
                started,
                image_id: image.id.clone(),
            },
            None,
        )),
        StartOutcome::Failed(msg) => {
            let exit = container::read_exit(&bundle).unwrap_or(ContainerExit {
                exit_code: crate::runtime::shim::START_ERROR_EXIT_CODE,
                signal: None,
                oom_killed: false,
                start_error: Some(msg),
                started_at: None,
                finished_at: Timestamp::now(),
            });
            let run = CurrentRun {
                container_id: id.to_string(),
                started: crate::runtime::shim::ContainerStarted {
                    pid: 0,
                    shim_pid: 0,
                    started_at: exit.finished_at,
                },
                image_id: image.id.clone(),
            };
            remove_run(ctx, &bundle, &cgroup);
            Ok((run, Some(exit)))
        }
    }
}
