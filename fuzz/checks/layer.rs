//! OCI layer unpacking (tar, gzip or not, with whiteouts) into a rootfs dir:
//! any input is unpacked or refused, and nothing is ever written outside
//! the target dir (no `..`, absolute paths or symlink escapes).

use kubelab_agent::runtime::image::unpack::unpack_layer;

/// Panics when `data` breaks the property.
pub fn check(data: &[u8]) {
    let dir = tempfile::tempdir().expect("temp dir");
    let target = dir.path().join("rootfs");
    let outside = dir.path().join("outside");
    std::fs::create_dir(&target).expect("target dir");
    std::fs::create_dir(&outside).expect("outside dir");
    let _ = unpack_layer(data, &target);
    let escaped: Vec<_> = std::fs::read_dir(dir.path())
        .expect("read temp dir")
        .flatten()
        .map(|e| e.file_name())
        .filter(|n| n != "rootfs" && n != "outside")
        .collect();
    assert!(escaped.is_empty(), "written beside the rootfs: {escaped:?}");
    assert!(
        std::fs::read_dir(&outside)
            .expect("outside")
            .next()
            .is_none(),
        "written outside the rootfs"
    );
}
