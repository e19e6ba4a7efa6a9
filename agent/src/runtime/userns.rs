//! Pod user namespaces (`hostUsers: false`), as the kubelet's userns manager
//! hands them out: each pod gets its own range of 65536 host IDs, mapped to
//! 0–65535 inside, from a node-wide pool that starts above the node's own
//! IDs (65536) and has room for 110 pods (kubelet's default `maxPods`).
//!
//! A range belongs to a pod while its pod dir holds the `userns` file (the
//! kubelet's name and JSON format): that file is written, and synced, before
//! any process uses the range, and it goes with the pod dir, which is only
//! removed once nothing of the pod is left. The pool is read from the pod
//! dirs under the allocator's lock on every allocation, so an agent restart
//! can neither forget a range nor hand it out twice.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

/// IDs per pod (kubelet's `userNsUnitLength`).
pub const IDS_PER_POD: u32 = 65536;
/// The first host ID given to pods: 0–65535 stay the node's.
pub const FIRST_POD_ID: u32 = IDS_PER_POD;
/// Ranges in the pool: kubelet's default `maxPods`.
pub const POD_RANGES: u32 = 110;
/// The file in a pod dir that records its range.
pub const MAPPINGS_FILE: &str = "userns";

/// One contiguous mapping (kubelet's `idMapping`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IdMapping {
    pub host_id: u32,
    pub container_id: u32,
    pub length: u32,
}

/// A pod's user namespace: what `<pod dir>/userns` holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UserNamespace {
    pub uid_mappings: Vec<IdMapping>,
    pub gid_mappings: Vec<IdMapping>,
}

#[derive(Debug, thiserror::Error)]
pub enum UsernsError {
    #[error("invalid user namespace mappings file {path}: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error("could not find an empty slot to allocate a user namespace")]
    Exhausted,
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl UserNamespace {
    /// The single range `[host_id, host_id + 65536)` mapped to 0–65535.
    pub fn from_host_id(host_id: u32) -> Self {
        let m = IdMapping {
            host_id,
            container_id: 0,
            length: IDS_PER_POD,
        };
        UserNamespace {
            uid_mappings: vec![m],
            gid_mappings: vec![m],
        }
    }

    /// The host ID a container's uid stands for (`None`: not mapped).
    pub fn host_uid(&self, id: u32) -> Option<u32> {
        map_id(&self.uid_mappings, id)
    }

    pub fn host_gid(&self, id: u32) -> Option<u32> {
        map_id(&self.gid_mappings, id)
    }

    /// The mappings as `/proc/<pid>/uid_map` takes them.
    pub fn uid_map(&self) -> String {
        proc_map(&self.uid_mappings)
    }

    pub fn gid_map(&self) -> String {
        proc_map(&self.gid_mappings)
    }

    /// Checks a file's content the way the kubelet does before trusting it:
    /// one mapping, identical for UIDs and GIDs, root mapped, a whole range
    /// of the pool.
    pub fn parse(content: &[u8]) -> Result<Self, String> {
        let ns: UserNamespace = serde_json::from_slice(content).map_err(|e| e.to_string())?;
        if ns.uid_mappings.len() != 1 {
            return Err("no more than one mapping allowed".into());
        }
        if ns.uid_mappings != ns.gid_mappings {
            return Err("GID and UID mapping should be identical".into());
        }
        let m = ns.uid_mappings[0];
        if m.container_id != 0 {
            return Err("UID 0 must be mapped".into());
        }
        if m.length != IDS_PER_POD {
            return Err(format!("wrong user namespace length {}", m.length));
        }
        if slot_of(m.host_id).is_none() {
            return Err(format!("id {} is out of range", m.host_id));
        }
        Ok(ns)
    }
}

fn map_id(mappings: &[IdMapping], id: u32) -> Option<u32> {
    mappings.iter().find_map(|m| {
        (id >= m.container_id && id - m.container_id < m.length)
            .then(|| m.host_id + (id - m.container_id))
    })
}

fn proc_map(mappings: &[IdMapping]) -> String {
    mappings
        .iter()
        .map(|m| format!("{} {} {}\n", m.container_id, m.host_id, m.length))
        .collect()
}

/// The pool slot a range's first host ID is, if it is one.
fn slot_of(host_id: u32) -> Option<u32> {
    if host_id < FIRST_POD_ID || !host_id.is_multiple_of(IDS_PER_POD) {
        return None;
    }
    let slot = (host_id - FIRST_POD_ID) / IDS_PER_POD;
    (slot < POD_RANGES).then_some(slot)
}

/// The lowest slot no pod holds.
pub fn first_free_slot(taken: &[u32]) -> Option<u32> {
    (0..POD_RANGES).find(|s| !taken.contains(s))
}

/// The node-wide pool of pod ranges.
pub struct UserNamespaceAllocator {
    pods_dir: PathBuf,
    lock: Mutex<()>,
}

impl UserNamespaceAllocator {
    pub fn new(pods_dir: PathBuf) -> Self {
        UserNamespaceAllocator {
            pods_dir,
            lock: Mutex::new(()),
        }
    }

    /// The pod's range: the one it holds, or a free one recorded for it now.
    pub fn get_or_create(&self, pod_uid: &str) -> Result<UserNamespace, UsernsError> {
        let _held = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        let dir = self.pods_dir.join(pod_uid);
        if let Some(ns) = read_mappings(&dir)? {
            return Ok(ns);
        }
        let mut taken = Vec::new();
        if let Ok(entries) = std::fs::read_dir(&self.pods_dir) {
            for entry in entries.flatten() {
                // A file this agent cannot read still holds its range: refuse
                // rather than hand it out again.
                if let Some(ns) = read_mappings(&entry.path())? {
                    taken.extend(slot_of(ns.uid_mappings[0].host_id));
                }
            }
        }
        let slot = first_free_slot(&taken).ok_or(UsernsError::Exhausted)?;
        let ns = UserNamespace::from_host_id(FIRST_POD_ID + slot * IDS_PER_POD);
        write_mappings(&dir, &ns)?;
        Ok(ns)
    }
}

/// The range recorded in a pod dir, if any.
pub fn read_mappings(pod_dir: &Path) -> Result<Option<UserNamespace>, UsernsError> {
    let path = pod_dir.join(MAPPINGS_FILE);
    match std::fs::read(&path) {
        Ok(content) => UserNamespace::parse(&content)
            .map(Some)
            .map_err(|message| UsernsError::Invalid { path, message }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(UsernsError::Io {
            what: "reading",
            path,
            source,
        }),
    }
}

/// Writes `<pod dir>/userns` atomically and durably (file and dir synced):
/// after a crash the range is either recorded or was never used.
fn write_mappings(pod_dir: &Path, ns: &UserNamespace) -> Result<(), UsernsError> {
    let io = |what, path: &Path| {
        let path = path.to_path_buf();
        move |source| UsernsError::Io { what, path, source }
    };
    std::fs::create_dir_all(pod_dir).map_err(io("creating", pod_dir))?;
    let path = pod_dir.join(MAPPINGS_FILE);
    let tmp = pod_dir.join(format!(".{MAPPINGS_FILE}.tmp"));
    let data = serde_json::to_vec(ns).expect("plain struct");
    let mut f = std::fs::File::create(&tmp).map_err(io("writing", &tmp))?;
    f.write_all(&data)
        .and_then(|_| f.sync_all())
        .map_err(io("writing", &tmp))?;
    std::fs::rename(&tmp, &path).map_err(io("renaming", &path))?;
    std::fs::File::open(pod_dir)
        .and_then(|d| d.sync_all())
        .map_err(io("syncing", pod_dir))
}

/// Writes a new user namespace's maps (`/proc/<pid>/{uid,gid}_map`); the
/// process must have unshared it and not yet used it.
pub fn write_id_maps(pid: i32, ns: &UserNamespace) -> std::io::Result<()> {
    std::fs::write(format!("/proc/{pid}/uid_map"), ns.uid_map())?;
    std::fs::write(format!("/proc/{pid}/gid_map"), ns.gid_map())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_whole_slots_above_the_node_ids() {
        let ns = UserNamespace::from_host_id(FIRST_POD_ID + 2 * IDS_PER_POD);
        assert_eq!(ns.uid_map(), "0 196608 65536\n");
        assert_eq!(ns.host_uid(0), Some(196608));
        assert_eq!(ns.host_gid(65535), Some(262143));
        assert_eq!(ns.host_uid(65536), None);
        assert_eq!(slot_of(65536), Some(0));
        assert_eq!(slot_of(0), None);
        assert_eq!(slot_of(65537), None);
        assert_eq!(slot_of(FIRST_POD_ID + POD_RANGES * IDS_PER_POD), None);
        assert_eq!(first_free_slot(&[0, 1, 3]), Some(2));
        assert_eq!(first_free_slot(&(0..POD_RANGES).collect::<Vec<_>>()), None);
    }

    #[test]
    fn the_kubelet_file_format_is_checked_before_it_is_trusted() {
        let good = br#"{"uidMappings":[{"hostId":131072,"containerId":0,"length":65536}],"gidMappings":[{"hostId":131072,"containerId":0,"length":65536}]}"#;
        assert_eq!(
            UserNamespace::parse(good).unwrap(),
            UserNamespace::from_host_id(131072)
        );
        let bad = [
            (
                r#"{"uidMappings":[],"gidMappings":[]}"#,
                "no more than one mapping allowed",
            ),
            (
                r#"{"uidMappings":[{"hostId":131072,"containerId":0,"length":65536}],"gidMappings":[{"hostId":65536,"containerId":0,"length":65536}]}"#,
                "GID and UID mapping should be identical",
            ),
            (
                r#"{"uidMappings":[{"hostId":131072,"containerId":1,"length":65536}],"gidMappings":[{"hostId":131072,"containerId":1,"length":65536}]}"#,
                "UID 0 must be mapped",
            ),
            (
                r#"{"uidMappings":[{"hostId":0,"containerId":0,"length":65536}],"gidMappings":[{"hostId":0,"containerId":0,"length":65536}]}"#,
                "id 0 is out of range",
            ),
        ];
        for (content, want) in bad {
            assert_eq!(UserNamespace::parse(content.as_bytes()).unwrap_err(), want);
        }
    }

    #[test]
    fn ranges_survive_a_new_allocator_and_are_not_reused_while_held() {
        let dir = tempfile::tempdir().unwrap();
        let pods = dir.path().join("pods");
        let a = UserNamespaceAllocator::new(pods.clone());
        let first = a.get_or_create("pod-a").unwrap();
        let second = a.get_or_create("pod-b").unwrap();
        assert_eq!(first.uid_mappings[0].host_id, 65536);
        assert_eq!(second.uid_mappings[0].host_id, 131072);
        assert_eq!(a.get_or_create("pod-a").unwrap(), first);
        // A restarted agent: the ranges come from the pod dirs.
        let b = UserNamespaceAllocator::new(pods.clone());
        assert_eq!(b.get_or_create("pod-b").unwrap(), second);
        assert_eq!(
            b.get_or_create("pod-c").unwrap().uid_mappings[0].host_id,
            196608
        );
        // pod-a's dir is gone: its range is free again.
        std::fs::remove_dir_all(pods.join("pod-a")).unwrap();
        assert_eq!(b.get_or_create("pod-d").unwrap(), first);
        // A damaged file holds on to the pool rather than risk sharing.
        std::fs::write(pods.join("pod-d").join(MAPPINGS_FILE), "{").unwrap();
        assert!(matches!(
            b.get_or_create("pod-e"),
            Err(UsernsError::Invalid { .. })
        ));
    }
}
