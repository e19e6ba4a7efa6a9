//! The kubelet's `AtomicWriter`: how configMap, secret, downwardAPI and
//! projected volumes are written so that a container never sees half an
//! update. The files live in a timestamped dir (`..2024_05_01_10_00_00.123`),
//! `..data` is a symlink to it, and every top-level name the user sees is a
//! symlink through `..data` (`key -> ..data/key`). An update writes a new
//! timestamped dir, points `..data_tmp` at it and renames that over `..data`
//! (one atomic `rename(2)`), then removes what is gone and the old dir.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Component, Path, PathBuf};

/// The symlink to the current version of the payload.
pub const DATA_DIR_NAME: &str = "..data";
const NEW_DATA_DIR_NAME: &str = "..data_tmp";
const MAX_FILE_NAME_LENGTH: usize = 255;
const MAX_PATH_LENGTH: usize = 4096;

/// One file of a volume: its bytes and mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileProjection {
    pub data: Vec<u8>,
    pub mode: u32,
}

/// Relative path → file.
pub type Payload = BTreeMap<String, FileProjection>;

#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("invalid path: {0}")]
    InvalidPath(String),
    #[error("preparing {path}: {source}")]
    Prepare {
        path: PathBuf,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

fn io_err<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> WriteError + 'a {
    move |source| WriteError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

/// `validatePath`: relative, no `..` element, not starting with `..`, within
/// the length limits. Returns the cleaned path.
pub fn validate_path(target: &str) -> Result<String, WriteError> {
    if target.is_empty() {
        return Err(WriteError::InvalidPath("must not be empty: \"\"".into()));
    }
    if target.starts_with('/') {
        return Err(WriteError::InvalidPath(format!(
            "must be relative path: {target}"
        )));
    }
    if target.len() > MAX_PATH_LENGTH {
        return Err(WriteError::InvalidPath(format!(
            "must be less than or equal to {MAX_PATH_LENGTH} characters"
        )));
    }
    let items: Vec<&str> = target.split('/').collect();
    for item in &items {
        if *item == ".." {
            return Err(WriteError::InvalidPath(format!(
                "must not contain '..': {target}"
            )));
        }
        if item.len() > MAX_FILE_NAME_LENGTH {
            return Err(WriteError::InvalidPath(format!(
                "filenames must be less than or equal to {MAX_FILE_NAME_LENGTH} characters"
            )));
        }
    }
    if items[0].starts_with("..") && items[0].len() > 2 {
        return Err(WriteError::InvalidPath(format!(
            "must not start with '..': {target}"
        )));
    }
    // path.Clean for a relative path without `..`: drop `.` and empty parts.
    let clean: Vec<String> = Path::new(target)
        .components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_string_lossy().into_owned()),
            _ => None,
        })
        .collect();
    Ok(clean.join("/"))
}

/// A new `..<UTC time>.<random>` dir under `target`, mode 0755.
fn new_timestamp_dir(target: &Path) -> Result<PathBuf, WriteError> {
    let stamp = jiff::Timestamp::now()
        .strftime("..%Y_%m_%d_%H_%M_%S.")
        .to_string();
    for _ in 0..100 {
        let mut seed = [0u8; 4];
        let _ = std::fs::File::open("/dev/urandom")
            .and_then(|mut f| io::Read::read_exact(&mut f, &mut seed));
        let dir = target.join(format!("{stamp}{}", u32::from_le_bytes(seed)));
        match std::fs::create_dir(&dir) {
            Ok(()) => {
                std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))
                    .map_err(io_err("chmod", &dir))?;
                return Ok(dir);
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(io_err("creating", &dir)(e)),
        }
    }
    Err(io_err("creating a timestamped dir in", target)(
        io::ErrorKind::AlreadyExists.into(),
    ))
}

/// Whether the payload differs from what `old_dir` holds (content or mode).
fn should_write(payload: &Payload, old_dir: &Path) -> bool {
    payload.iter().any(|(path, file)| {
        let p = old_dir.join(path);
        let same_mode = std::fs::metadata(&p)
            .map(|m| m.permissions().mode() & 0o7777 == file.mode & 0o7777)
            .unwrap_or(false);
        !same_mode || std::fs::read(&p).map(|b| b != file.data).unwrap_or(true)
    })
}

/// Every relative path (files and dirs) below `dir`.
fn walk(dir: &Path, prefix: &str, out: &mut BTreeSet<String>) {
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let rel = if prefix.is_empty() {
            name
        } else {
            format!("{prefix}/{name}")
        };
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            walk(&entry.path(), &rel, out);
        }
        out.insert(rel);
    }
}

/// Paths of the old version that the new payload no longer has.
fn paths_to_remove(payload: &Payload, old_dir: &Path) -> BTreeSet<String> {
    let mut old = BTreeSet::new();
    walk(old_dir, "", &mut old);
    let mut keep = BTreeSet::new();
    for path in payload.keys() {
        let mut cur = String::new();
        for part in path.split('/') {
            if !cur.is_empty() {
                cur.push('/');
            }
            cur.push_str(part);
            keep.insert(cur.clone());
        }
    }
    old.difference(&keep).cloned().collect()
}

fn write_payload(payload: &Payload, dir: &Path) -> Result<(), WriteError> {
    for (path, file) in payload {
        let full = dir.join(path);
        if let Some(parent) = full.parent() {
            std::fs::create_dir_all(parent).map_err(io_err("creating", parent))?;
        }
        std::fs::write(&full, &file.data).map_err(io_err("writing", &full))?;
        // The umask must not decide the mode the user asked for.
        std::fs::set_permissions(&full, std::fs::Permissions::from_mode(file.mode))
            .map_err(io_err("chmod", &full))?;
    }
    Ok(())
}

/// Writes `payload` into `target` (which must exist) the atomic way. Returns
/// whether anything changed.
pub fn write(target: &Path, payload: &Payload) -> Result<bool, WriteError> {
    write_with(target, payload, &|_| Ok(()))
}

/// A hook run on a new version's timestamped dir, once it is written and
/// before it becomes visible (the kubelet's `setPerms`: fsGroup ownership).
pub type Prepare<'a> = &'a dyn Fn(&Path) -> Result<(), Box<dyn std::error::Error + Send + Sync>>;

/// [`write`], with `prepare` run on each new version before the swap.
pub fn write_with(target: &Path, payload: &Payload, prepare: Prepare) -> Result<bool, WriteError> {
    let mut clean = Payload::new();
    for (path, file) in payload {
        clean.insert(validate_path(path)?, file.clone());
    }
    let data_dir = target.join(DATA_DIR_NAME);
    let old_ts = match std::fs::read_link(&data_dir) {
        Ok(p) => Some(p),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(io_err("reading", &data_dir)(e)),
    };
    let old_ts_path = old_ts.as_ref().map(|p| target.join(p));
    let (remove, changed) = match &old_ts_path {
        Some(old) => (
            paths_to_remove(&clean, old),
            should_write(&clean, old) || !paths_to_remove(&clean, old).is_empty(),
        ),
        None => (BTreeSet::new(), true),
    };
    if changed {
        let ts_dir = new_timestamp_dir(target)?;
        let ts_name = ts_dir.file_name().expect("named").to_owned();
        let written = write_payload(&clean, &ts_dir).and_then(|()| {
            prepare(&ts_dir).map_err(|source| WriteError::Prepare {
                path: ts_dir.clone(),
                source,
            })
        });
        if let Err(e) = written {
            let _ = std::fs::remove_dir_all(&ts_dir);
            return Err(e);
        }
        let tmp_link = target.join(NEW_DATA_DIR_NAME);
        let _ = std::fs::remove_file(&tmp_link);
        if let Err(e) = symlink(&ts_name, &tmp_link) {
            let _ = std::fs::remove_dir_all(&ts_dir);
            return Err(io_err("linking", &tmp_link)(e));
        }
        std::fs::rename(&tmp_link, &data_dir).map_err(io_err("renaming over", &data_dir))?;
    }
    // The names the user sees: one symlink per top-level entry.
    for path in clean.keys() {
        let top = path.split('/').next().expect("validated: not empty");
        let visible = target.join(top);
        if std::fs::symlink_metadata(&visible).is_err() {
            let through = Path::new(DATA_DIR_NAME).join(top);
            symlink(&through, &visible).map_err(io_err("linking", &visible))?;
        }
    }
    for path in remove.iter().filter(|p| !p.contains('/')) {
        let visible = target.join(path);
        if std::fs::symlink_metadata(&visible).is_ok_and(|m| m.file_type().is_symlink()) {
            std::fs::remove_file(&visible).map_err(io_err("removing", &visible))?;
        }
    }
    if changed && let Some(old) = old_ts_path {
        let _ = std::fs::remove_dir_all(old);
    }
    Ok(changed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(data: &str, mode: u32) -> FileProjection {
        FileProjection {
            data: data.as_bytes().to_vec(),
            mode,
        }
    }

    fn ts_dirs(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("..") && n != DATA_DIR_NAME)
            .collect();
        v.sort();
        v
    }

    #[test]
    fn payload_layout_is_the_kubelets() {
        let dir = tempfile::tempdir().unwrap();
        let t = dir.path();
        let payload: Payload = [
            ("nginx.conf".to_string(), file("server {}\n", 0o644)),
            ("sub/inner.txt".to_string(), file("inner", 0o400)),
        ]
        .into();
        assert!(write(t, &payload).unwrap());

        let data = std::fs::read_link(t.join(DATA_DIR_NAME)).unwrap();
        let name = data.to_string_lossy().into_owned();
        assert!(name.starts_with(".."), "{name}");
        // ..YYYY_MM_DD_HH_MM_SS.<n>
        assert!(name.len() > 22 && &name[6..7] == "_", "{name}");
        assert_eq!(ts_dirs(t), std::slice::from_ref(&name));
        assert_eq!(
            std::fs::read_link(t.join("nginx.conf")).unwrap(),
            Path::new("..data/nginx.conf")
        );
        assert_eq!(
            std::fs::read_link(t.join("sub")).unwrap(),
            Path::new("..data/sub")
        );
        assert_eq!(
            std::fs::read_to_string(t.join("nginx.conf")).unwrap(),
            "server {}\n"
        );
        assert_eq!(
            std::fs::read_to_string(t.join("sub/inner.txt")).unwrap(),
            "inner"
        );
        let mode = |p: &str| std::fs::metadata(t.join(p)).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode("nginx.conf"), 0o644);
        assert_eq!(mode("sub/inner.txt"), 0o400);
        assert_eq!(mode(&name), 0o755);

        // The same payload again changes nothing.
        assert!(!write(t, &payload).unwrap());
        assert_eq!(ts_dirs(t), std::slice::from_ref(&name));

        // An update: new version dir, the old one gone, a dropped key's link gone.
        let update: Payload = [(
            "nginx.conf".to_string(),
            file("server { listen 81; }\n", 0o644),
        )]
        .into();
        assert!(write(t, &update).unwrap());
        let new_name = std::fs::read_link(t.join(DATA_DIR_NAME))
            .unwrap()
            .to_string_lossy()
            .into_owned();
        assert_ne!(new_name, name);
        assert_eq!(ts_dirs(t), [new_name]);
        assert!(std::fs::symlink_metadata(t.join("sub")).is_err());
        assert_eq!(
            std::fs::read_to_string(t.join("nginx.conf")).unwrap(),
            "server { listen 81; }\n"
        );
        assert!(std::fs::symlink_metadata(t.join("..data_tmp")).is_err());

        // A mode change alone is an update.
        let chmod: Payload = [(
            "nginx.conf".to_string(),
            file("server { listen 81; }\n", 0o600),
        )]
        .into();
        assert!(write(t, &chmod).unwrap());
        assert_eq!(mode("nginx.conf"), 0o600);
    }

    #[test]
    fn paths_are_validated_as_the_kubelet_does() {
        assert_eq!(validate_path("a/./b").unwrap(), "a/b");
        for (bad, msg) in [
            ("", "invalid path: must not be empty: \"\""),
            ("/etc/x", "invalid path: must be relative path: /etc/x"),
            ("a/../b", "invalid path: must not contain '..': a/../b"),
            ("..x/y", "invalid path: must not start with '..': ..x/y"),
        ] {
            assert_eq!(validate_path(bad).unwrap_err().to_string(), msg);
        }
    }
}
