//! The image store as the agent uses it: import an OCI archive, resolve a
//! pod's `image`, prepare and tear down a container rootfs. Runs as root
//! (overlayfs mounts inside temp dirs, always unmounted on drop).

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Instant;

use flate2::Compression;
use flate2::write::GzEncoder;
use kubelab_agent::runtime::image::{
    ImageCommand, ImageError, ImageStore, RootfsMode, import::host_platform, prepare_rootfs,
    prepare_rootfs_with, remove_rootfs, run_image_command,
};
use serde_json::json;
use sha2::{Digest, Sha256};

// ---- fixture ----

/// A temp root dir plus the container dirs made in it; rootfs mounts are
/// removed on drop, even when the test fails.
struct Fixture {
    tmp: tempfile::TempDir,
    containers: std::cell::RefCell<Vec<PathBuf>>,
}

impl Fixture {
    fn new() -> Self {
        Fixture {
            tmp: tempfile::Builder::new()
                .prefix("kubelab-image-")
                .tempdir()
                .unwrap(),
            containers: Default::default(),
        }
    }

    fn root_dir(&self) -> PathBuf {
        self.tmp.path().join("root")
    }

    fn store(&self) -> ImageStore {
        ImageStore::open(&self.root_dir()).unwrap()
    }

    /// A directory outside the store, for escape attempts to aim at.
    fn outside(&self) -> PathBuf {
        let dir = self.tmp.path().join("outside");
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn container_dir(&self, name: &str) -> PathBuf {
        let dir = self.root_dir().join("containers").join(name);
        self.containers.borrow_mut().push(dir.clone());
        dir
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        for dir in self.containers.borrow().iter() {
            if let Err(e) = remove_rootfs(dir) {
                eprintln!("cleanup of {dir:?} failed: {e}");
            }
        }
    }
}

fn is_mounted(path: &Path) -> bool {
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap();
    let path = path.to_string_lossy();
    info.lines().any(|l| l.split(' ').nth(4) == Some(&*path))
}

fn error_text(e: ImageError) -> String {
    format!("{:#}", anyhow::Error::from(e))
}

/// Every path under `dir` (files, dirs, links), relative.
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            out.push(p.strip_prefix(dir).unwrap().to_path_buf());
            if e.file_type().unwrap().is_dir() {
                stack.push(p);
            }
        }
    }
    out
}

// ---- the busybox test image, built once per test run by the script ----

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/build-test-image.sh")
}

fn build_image(out: &Path, args: &[&str]) {
    let status = Command::new("bash")
        .arg(script())
        .args(args)
        .arg(out)
        .status()
        .expect("running build-test-image.sh");
    assert!(status.success(), "build-test-image.sh failed: {status}");
}

fn busybox_archive() -> &'static Path {
    static ARCHIVE: OnceLock<PathBuf> = OnceLock::new();
    ARCHIVE.get_or_init(|| {
        // Rebuilt once per run (the script writes to a temp name and renames,
        // so concurrent test binaries are fine); the same inputs give the same bytes.
        let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("busybox-test-image.tar");
        build_image(&out, &[]);
        out
    })
}

// ---- crafted images ----

#[derive(Clone, Copy)]
enum Kind {
    File(&'static str),
    Dir,
    Symlink,
    Hardlink,
}

/// A layer tar from raw entries; names are written byte for byte (the tar
/// crate's builder rightly refuses the unsafe ones these tests need).
fn layer(entries: &[(&str, Kind, &str)]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for &(path, kind, link) in entries {
        let mut h = tar::Header::new_gnu();
        assert!(path.len() <= 100, "test entry name too long: {path}");
        h.as_old_mut().name[..path.len()].copy_from_slice(path.as_bytes());
        h.set_mtime(1_700_000_000);
        let data: &[u8] = match kind {
            Kind::File(data) => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(0o644);
                data.as_bytes()
            }
            Kind::Dir => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(0o755);
                &[]
            }
            Kind::Symlink | Kind::Hardlink => {
                h.set_entry_type(if matches!(kind, Kind::Symlink) {
                    tar::EntryType::Symlink
                } else {
                    tar::EntryType::Link
                });
                h.set_mode(0o777);
                h.set_link_name_literal(link.as_bytes()).unwrap();
                &[]
            }
        };
        h.set_size(data.len() as u64);
        h.set_cksum();
        b.append(&h, data).unwrap();
    }
    b.into_inner().unwrap()
}

fn sha256(b: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(b)))
}

fn gzip(b: &[u8]) -> Vec<u8> {
    let mut gz = GzEncoder::new(Vec::new(), Compression::fast());
    std::io::Write::write_all(&mut gz, b).unwrap();
    gz.finish().unwrap()
}

/// The files of an OCI layout holding one image made of `layers` (bottom first).
fn oci_layout_files(layers: &[Vec<u8>], reference: &str) -> Vec<(String, Vec<u8>)> {
    let mut files = Vec::new();
    let mut blob = |bytes: Vec<u8>| {
        let digest = sha256(&bytes);
        let size = bytes.len();
        files.push((format!("blobs/sha256/{}", &digest[7..]), bytes));
        (digest, size)
    };
    let mut layer_descs = Vec::new();
    let mut diff_ids = Vec::new();
    for l in layers {
        diff_ids.push(sha256(l));
        let (digest, size) = blob(gzip(l));
        layer_descs.push(json!({
            "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
            "digest": digest, "size": size,
        }));
    }
    let (os, arch) = host_platform()
        .split_once('/')
        .map(|(o, a)| (o.to_string(), a.to_string()))
        .unwrap();
    let config = json!({
        "architecture": arch, "os": os,
        "config": {"Cmd": ["sh"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    });
    let (config_digest, config_size) = blob(serde_json::to_vec(&config).unwrap());
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config_size},
        "layers": layer_descs,
    });
    let (manifest_digest, manifest_size) = blob(serde_json::to_vec(&manifest).unwrap());
    let index = json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": manifest_digest, "size": manifest_size,
            "annotations": {"org.opencontainers.image.ref.name": reference},
        }],
    });
    files.push(("index.json".into(), serde_json::to_vec(&index).unwrap()));
    files.push((
        "oci-layout".into(),
        br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec(),
    ));
    files
}

fn write_oci_archive(path: &Path, layers: &[Vec<u8>], reference: &str) {
    let mut b = tar::Builder::new(fs::File::create(path).unwrap());
    for (name, bytes) in oci_layout_files(layers, reference) {
        let mut h = tar::Header::new_ustar();
        h.set_size(bytes.len() as u64);
        h.set_mode(0o644);
        b.append_data(&mut h, name, &bytes[..]).unwrap();
    }
    b.finish().unwrap();
}

fn write_oci_layout(dir: &Path, layers: &[Vec<u8>], reference: &str) {
    for (name, bytes) in oci_layout_files(layers, reference) {
        let p = dir.join(name);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, bytes).unwrap();
    }
}

// ---- (a) the busybox image end to end ----

#[test]
fn busybox_imports_resolves_and_runs_from_a_writable_overlay() {
    let fx = Fixture::new();
    let store = fx.store();
    let imported = store.import(busybox_archive()).unwrap();
    assert_eq!(imported.len(), 1);
    assert_eq!(
        imported[0].reference.as_deref(),
        Some("docker.io/library/busybox:latest")
    );

    let listed = store.list().unwrap();
    assert_eq!(listed, imported);
    assert_eq!(
        listed[0].repository_and_tag(),
        ("docker.io/library/busybox".into(), "latest".into())
    );
    run_image_command(&fx.root_dir(), ImageCommand::Ls).unwrap();

    let image = store.resolve("busybox").unwrap();
    assert_eq!(image.reference, "docker.io/library/busybox:latest");
    assert_eq!(image.id, imported[0].id);
    let config = image.config.config().clone().unwrap();
    assert_eq!(config.cmd().as_deref(), Some(&["sh".to_string()][..]));
    assert!(config.entrypoint().as_ref().is_none_or(|e| e.is_empty()));
    assert_eq!(config.working_dir().as_deref(), Some("/"));
    assert_eq!(
        config.env().as_deref(),
        Some(
            &["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_string()][..]
        )
    );
    assert_eq!(image.layer_dirs.len(), 1);
    assert!(image.layer_dirs[0].starts_with(fx.root_dir().join("images/layers")));

    // Other spellings of the same image.
    for alias in [
        "docker.io/library/busybox:latest".to_string(),
        "library/busybox".to_string(),
        image.id.clone(),
        format!("busybox@{}", image.manifest_digest),
    ] {
        assert_eq!(store.resolve(&alias).unwrap().id, image.id, "{alias}");
    }
    match store.resolve("busybox:1.35") {
        Err(ImageError::NotFound { reference }) => assert_eq!(reference, "busybox:1.35"),
        other => panic!("expected NotFound, got {other:?}"),
    }

    // resolve runs per container start: index + config only.
    let n = 200;
    let started = Instant::now();
    for _ in 0..n {
        store.resolve("busybox").unwrap();
    }
    let per_call = started.elapsed() / n;
    eprintln!("resolve: {per_call:?} per call");
    assert!(
        per_call.as_micros() < 1000,
        "resolve took {per_call:?} per call"
    );

    let container = fx.container_dir("c1");
    let rootfs = prepare_rootfs(&image, &container).unwrap();
    assert!(rootfs.overlay, "overlayfs should work on this host");
    assert_eq!(rootfs.path, container.join("rootfs"));
    assert!(is_mounted(&rootfs.path));
    for applet in [
        "bin/sh",
        "usr/sbin/httpd",
        "usr/bin/wget",
        "bin/dd",
        "bin/sleep",
    ] {
        let meta = fs::symlink_metadata(rootfs.path.join(applet))
            .unwrap_or_else(|e| panic!("{applet}: {e}"));
        assert!(
            meta.file_type().is_symlink(),
            "{applet} is an applet symlink"
        );
    }
    assert!(rootfs.path.join("bin/busybox").is_file());
    assert_eq!(
        fs::metadata(rootfs.path.join("tmp")).unwrap().mode() & 0o7777,
        0o1777
    );
    let passwd = fs::read_to_string(rootfs.path.join("etc/passwd")).unwrap();
    assert!(passwd.contains("nobody:x:65534:65534:"), "{passwd}");

    // Writable, and writes land in the container's upper dir, not the shared layer.
    fs::write(rootfs.path.join("tmp/hello"), "hi").unwrap();
    fs::remove_file(rootfs.path.join("bin/dd")).unwrap();
    assert_eq!(
        fs::read_to_string(container.join("overlay/upper/tmp/hello")).unwrap(),
        "hi"
    );
    assert!(!image.layer_dirs[0].join("tmp/hello").exists());
    assert!(fs::symlink_metadata(image.layer_dirs[0].join("bin/dd")).is_ok());

    // The image actually runs.
    let out = Command::new("chroot")
        .arg(&rootfs.path)
        .args([
            "/bin/sh",
            "-c",
            "cat /tmp/hello; echo; wget --help 2>&1 | head -1; id -u",
        ])
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.starts_with("hi\nBusyBox"), "{stdout}");

    // Unprivileged processes read the image too, though the store is root-only
    // (overlayfs reaches lower layers with the mounter's credentials).
    let out = Command::new("chroot")
        .args(["--userspec=65534:65534"])
        .arg(&rootfs.path)
        .args(["/bin/sh", "-c", "id -u; head -1 /etc/passwd"])
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "65534\nroot:x:0:0:root:/root:/bin/sh\n",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // A second container shares the layer and sees none of the first one's writes.
    let container2 = fx.container_dir("c2");
    let rootfs2 = prepare_rootfs(&image, &container2).unwrap();
    assert!(!rootfs2.path.join("tmp/hello").exists());
    assert!(fs::symlink_metadata(rootfs2.path.join("bin/dd")).is_ok());

    // Preparing over an existing rootfs is refused rather than stacked.
    assert!(prepare_rootfs(&image, &container).is_err());

    remove_rootfs(&container).unwrap();
    assert!(!is_mounted(&container.join("rootfs")));
    assert!(!container.join("rootfs").exists());
    assert!(!container.join("overlay").exists());
    remove_rootfs(&container).unwrap(); // idempotent
    remove_rootfs(&container2).unwrap();
    assert!(
        image.layer_dirs[0].join("bin/busybox").is_file(),
        "teardown keeps the shared layer"
    );

    // Re-importing is a no-op for content.
    let again = store.import(busybox_archive()).unwrap();
    assert_eq!(again, imported);
    assert_eq!(
        fs::read_dir(fx.root_dir().join("images/layers"))
            .unwrap()
            .count(),
        1
    );
    assert_eq!(
        fs::read_dir(fx.root_dir().join("images/tmp"))
            .unwrap()
            .count(),
        0
    );
}

#[test]
fn copy_rootfs_when_asked() {
    let fx = Fixture::new();
    let store = fx.store();
    store.import(busybox_archive()).unwrap();
    let image = store.resolve("busybox:latest").unwrap();
    let container = fx.container_dir("copy");
    let rootfs = prepare_rootfs_with(&image, &container, RootfsMode::Copy).unwrap();
    assert!(!rootfs.overlay);
    assert!(!is_mounted(&rootfs.path));
    assert_eq!(
        fs::read_link(rootfs.path.join("bin/sh")).unwrap(),
        Path::new("busybox")
    );
    fs::write(rootfs.path.join("tmp/x"), "x").unwrap();
    assert!(!image.layer_dirs[0].join("tmp/x").exists());
    remove_rootfs(&container).unwrap();
    assert!(!rootfs.path.exists());

    // Auto falls back to a copy where overlayfs cannot be used (here: a `:`
    // in the upperdir path, which overlayfs' options cannot carry).
    let odd = fx.container_dir("with:colon");
    let rootfs = prepare_rootfs(&image, &odd).unwrap();
    assert!(!rootfs.overlay);
    assert!(rootfs.path.join("bin/busybox").is_file());
    remove_rootfs(&odd).unwrap();
}

#[test]
fn concurrent_imports_leave_a_consistent_store() {
    let fx = Fixture::new();
    let other = fx.tmp.path().join("other.tar");
    build_image(
        &other,
        &[
            "--ref",
            "localhost:5000/tools:v1",
            "--cmd",
            r#"["sleep","3600"]"#,
        ],
    );
    let root = fx.root_dir();
    let threads: Vec<_> = [
        busybox_archive().to_path_buf(),
        busybox_archive().to_path_buf(),
        other.clone(),
    ]
    .into_iter()
    .map(|archive| {
        let root = root.clone();
        std::thread::spawn(move || ImageStore::open(&root).unwrap().import(&archive))
    })
    .collect();
    for t in threads {
        t.join().unwrap().unwrap();
    }
    let store = fx.store();
    let refs: Vec<_> = store
        .list()
        .unwrap()
        .into_iter()
        .map(|i| i.reference.unwrap())
        .collect();
    assert_eq!(
        refs,
        [
            "docker.io/library/busybox:latest",
            "localhost:5000/tools:v1"
        ]
    );
    let tools = store.resolve("localhost:5000/tools:v1").unwrap();
    assert_eq!(
        tools.config.config().as_ref().unwrap().cmd().as_deref(),
        Some(&["sleep".to_string(), "3600".to_string()][..])
    );
    store.resolve("busybox").unwrap();
    assert_eq!(fs::read_dir(root.join("images/tmp")).unwrap().count(), 0);
}

// ---- (b) malicious layers are refused, and nothing lands outside ----

/// Imports a one-layer image made of `entries`; returns the error text.
fn import_malicious(fx: &Fixture, name: &str, entries: &[(&str, Kind, &str)]) -> String {
    let archive = fx.tmp.path().join(format!("{name}.tar"));
    write_oci_archive(&archive, &[layer(entries)], &format!("evil/{name}:1"));
    let store = fx.store();
    let err = store
        .import(&archive)
        .expect_err("malicious layer must be refused");
    let text = error_text(err);
    assert!(
        store.list().unwrap().is_empty(),
        "{name}: nothing is indexed"
    );
    let images = fx.root_dir().join("images");
    assert_eq!(
        walk(&images.join("layers")),
        Vec::<PathBuf>::new(),
        "{name}: no layer kept"
    );
    assert_eq!(
        walk(&images.join("tmp")),
        Vec::<PathBuf>::new(),
        "{name}: temp files removed"
    );
    text
}

#[test]
fn parent_dir_entry_is_refused() {
    let fx = Fixture::new();
    let err = import_malicious(
        &fx,
        "dotdot",
        &[
            ("ok", Kind::File("fine"), ""),
            ("../escape", Kind::File("pwned"), ""),
        ],
    );
    assert!(
        err.contains(r#""../escape""#) && err.contains("`..`"),
        "{err}"
    );
    let escaped: Vec<_> = walk(fx.tmp.path())
        .into_iter()
        .filter(|p| p.ends_with("escape"))
        .collect();
    assert!(escaped.is_empty(), "{escaped:?}");
}

#[test]
fn absolute_entry_is_refused() {
    let fx = Fixture::new();
    let target = fx.outside().join("abs-pwned");
    let name = target.to_str().unwrap();
    let err = import_malicious(&fx, "abs", &[(name, Kind::File("pwned"), "")]);
    assert!(
        err.contains(&format!("{name:?}")) && err.contains("absolute path"),
        "{err}"
    );
    assert!(!target.exists());
}

#[test]
fn writing_through_an_escaping_symlink_is_refused() {
    let fx = Fixture::new();
    let outside = fx.outside();
    let absolute = outside.to_str().unwrap().to_string();
    let relative = format!("{}{}", "../".repeat(16), absolute.trim_start_matches('/'));
    for (case, link) in [
        ("symlink-abs", absolute.as_str()),
        ("symlink-rel", relative.as_str()),
    ] {
        let err = import_malicious(
            &fx,
            case,
            &[
                ("evil", Kind::Symlink, link),
                ("evil/pwned", Kind::File("pwned"), ""),
            ],
        );
        assert!(
            err.contains(r#"layer entry "evil/pwned""#) && err.contains("symlink \"evil\""),
            "{case}: {err}"
        );
        assert!(
            !outside.join("pwned").exists(),
            "{case}: wrote through the symlink"
        );
    }
}

#[test]
fn hardlink_to_outside_is_refused() {
    let fx = Fixture::new();
    let secret = fx.outside().join("secret");
    fs::write(&secret, "secret").unwrap();
    let absolute = secret.to_str().unwrap().to_string();
    let relative = format!("{}{}", "../".repeat(16), absolute.trim_start_matches('/'));
    let outside_dir = fx.outside().to_str().unwrap().to_string();
    type Case<'a> = (&'a str, Vec<(&'a str, Kind, &'a str)>, String);
    let cases: Vec<Case> = vec![
        (
            "hardlink-abs",
            vec![("hl", Kind::Hardlink, &absolute)],
            absolute.clone(),
        ),
        (
            "hardlink-rel",
            vec![("hl", Kind::Hardlink, &relative)],
            relative.clone(),
        ),
        (
            "hardlink-via-symlink",
            vec![
                ("evil", Kind::Symlink, &outside_dir),
                ("hl", Kind::Hardlink, "evil/secret"),
            ],
            "evil/secret".to_string(),
        ),
    ];
    for (case, entries, target) in cases {
        let err = import_malicious(&fx, case, &entries);
        assert!(
            err.contains(r#"layer entry "hl" is a hardlink to"#)
                && err.contains(&format!("{target:?}")),
            "{case}: {err}"
        );
        let meta = fs::metadata(&secret).unwrap();
        assert_eq!(meta.nlink(), 1, "{case}: secret was linked");
        assert_eq!(fs::read_to_string(&secret).unwrap(), "secret");
    }
}

#[test]
fn tampered_blob_is_refused() {
    let fx = Fixture::new();
    let layout = fx.tmp.path().join("layout");
    write_oci_layout(
        &layout,
        &[layer(&[("f", Kind::File("1"), "")])],
        "tampered:1",
    );
    // Swap the layer's content, keeping its name (the digest) and size.
    let blob = walk(&layout.join("blobs/sha256"))
        .into_iter()
        .map(|p| layout.join("blobs/sha256").join(p))
        .max_by_key(|p| fs::metadata(p).unwrap().len())
        .unwrap();
    let mut bytes = fs::read(&blob).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    fs::write(&blob, bytes).unwrap();
    let err = error_text(fx.store().import(&layout).unwrap_err());
    assert!(err.contains("hashes to"), "{err}");
    assert!(fx.store().list().unwrap().is_empty());
}

// ---- (c) whiteouts across layers ----

#[test]
fn whiteouts_delete_files_and_opaque_dirs_hide_lower_content() {
    let fx = Fixture::new();
    let layout = fx.tmp.path().join("whiteouts");
    let bottom = layer(&[
        ("etc/", Kind::Dir, ""),
        ("etc/keep", Kind::File("keep"), ""),
        ("etc/gone", Kind::File("gone"), ""),
        ("data/", Kind::Dir, ""),
        ("data/a", Kind::File("a"), ""),
        ("data/sub/", Kind::Dir, ""),
        ("data/sub/b", Kind::File("b"), ""),
        ("olddir/", Kind::Dir, ""),
        ("olddir/x", Kind::File("x"), ""),
    ]);
    let top = layer(&[
        ("etc/.wh.gone", Kind::File(""), ""),
        ("data/", Kind::Dir, ""),
        ("data/.wh..wh..opq", Kind::File(""), ""),
        ("data/new", Kind::File("new"), ""),
        (".wh.olddir", Kind::File(""), ""),
    ]);
    write_oci_layout(&layout, &[bottom, top], "whiteouts:1");
    let store = fx.store();
    store.import(&layout).unwrap();
    let image = store.resolve("whiteouts:1").unwrap();
    assert_eq!(image.layer_dirs.len(), 2);

    for mode in [RootfsMode::Overlay, RootfsMode::Copy] {
        let container = fx.container_dir(&format!("{mode:?}"));
        let rootfs = prepare_rootfs_with(&image, &container, mode).unwrap();
        assert_eq!(rootfs.overlay, mode == RootfsMode::Overlay);
        let r = &rootfs.path;
        assert_eq!(
            fs::read_to_string(r.join("etc/keep")).unwrap(),
            "keep",
            "{mode:?}"
        );
        assert!(
            fs::symlink_metadata(r.join("etc/gone")).is_err(),
            "{mode:?}: etc/gone deleted"
        );
        assert!(
            fs::symlink_metadata(r.join("olddir")).is_err(),
            "{mode:?}: olddir deleted"
        );
        let mut data: Vec<_> = fs::read_dir(r.join("data"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        data.sort();
        assert_eq!(
            data,
            ["new"],
            "{mode:?}: opaque data/ shows only the top layer"
        );
        assert_eq!(fs::read_to_string(r.join("data/new")).unwrap(), "new");
        // No whiteout marker shows through as a file.
        for p in walk(r) {
            let meta = fs::symlink_metadata(r.join(&p)).unwrap();
            assert!(
                !meta.file_type().is_char_device(),
                "{mode:?}: {p:?} is a device"
            );
            assert!(!p.to_string_lossy().contains(".wh."), "{mode:?}: {p:?}");
        }
        remove_rootfs(&container).unwrap();
    }
}

// ---- garbage collection ----

#[test]
fn garbage_collection_removes_unused_images_and_keeps_content_an_image_in_use_shares() {
    use kubelab_agent::events::EventRecorder;
    use kubelab_agent::runtime::image::{
        ImageGcManager, ImageGcPolicy, RegistryOptions, StoreImageService,
    };
    let fx = Fixture::new();
    let store = fx.store();
    // `app` (in use) and `job` (unused) share their base layer.
    let base = layer(&[("bin", Kind::Dir, ""), ("bin/tool", Kind::File("base"), "")]);
    let app = layer(&[("app", Kind::File("app"), "")]);
    let job = layer(&[("job", Kind::File("job"), "")]);
    for (name, layers) in [("app:v1", [&base, &app]), ("job:v1", [&base, &job])] {
        let dir = fx.tmp.path().join(name.replace(':', "-"));
        write_oci_layout(&dir, &layers.map(Clone::clone), name);
        store.import(&dir).unwrap();
    }
    let app_image = store.resolve("app:v1").unwrap();
    let job_image = store.resolve("job:v1").unwrap();
    assert_eq!(app_image.layer_dirs[0], job_image.layer_dirs[0]);
    let job_manifest = fx
        .root_dir()
        .join("images/blobs/sha256")
        .join(&job_image.manifest_digest["sha256:".len()..]);
    assert!(job_manifest.exists());

    let events = EventRecorder::default();
    // Any disk is at a 1% high threshold, and a low one of 0% asks for
    // more than unused images can give.
    let policy = ImageGcPolicy {
        high_threshold_percent: 1,
        low_threshold_percent: 0,
        min_age: std::time::Duration::ZERO,
        max_age: std::time::Duration::ZERO,
    };
    let service = StoreImageService::new(store.clone(), RegistryOptions::default());
    let gc = ImageGcManager::new(
        std::sync::Arc::new(service),
        policy,
        events.clone(),
        "node1",
    );
    let in_use = std::collections::BTreeSet::from([app_image.id.clone()]);
    let message = gc.garbage_collect(&in_use).unwrap_err().to_string();

    let left: Vec<_> = store
        .list()
        .unwrap()
        .into_iter()
        .map(|i| i.reference)
        .collect();
    assert_eq!(left, [Some("docker.io/library/app:v1".to_string())]);
    assert!(matches!(
        store.resolve("job:v1"),
        Err(ImageError::NotFound { .. })
    ));
    assert!(!job_image.layer_dirs[1].exists(), "job's own layer is gone");
    assert!(!job_manifest.exists(), "job's manifest is gone");
    for dir in &app_image.layer_dirs {
        assert!(dir.join(".").exists(), "{dir:?} of the image in use stays");
    }
    assert!(app_image.layer_dirs[0].join("bin/tool").exists());
    store.resolve("app:v1").unwrap();

    assert!(
        message
            .starts_with("Failed to garbage collect required amount of images. Attempted to free ")
            && message.ends_with(" bytes eligible to free.")
            && !message.contains("only found 0 bytes"),
        "{message}"
    );
    let event = events
        .list()
        .into_iter()
        .find(|e| e.reason == "FreeDiskSpaceFailed")
        .expect("a FreeDiskSpaceFailed event");
    assert_eq!(
        (event.type_, event.kind, event.object.as_str()),
        ("Warning", "Node", "node1")
    );
    assert_eq!(event.message, message);
}
