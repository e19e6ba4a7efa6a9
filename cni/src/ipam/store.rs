//! The on-disk allocation store, laid out as the reference `host-local` lays
//! it out, held under an exclusive `flock` for as long as the [`Store`] lives:
//! concurrent ADDs (ours or the reference plugin's) serialize on it.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};

const LAST_RESERVED_PREFIX: &str = "last_reserved_ip.";
const LOCK_FILE: &str = "lock";
const LINE_BREAK: &str = "\r\n";

pub struct Store {
    dir: PathBuf,
    _lock: Flock<File>,
}

impl Store {
    /// Opens (creating) `<data_dir>/<network>` and takes its lock.
    pub fn open(data_dir: &Path, network: &str) -> std::io::Result<Store> {
        let dir = data_dir.join(network);
        std::fs::create_dir_all(&dir)?;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(dir.join(LOCK_FILE))?;
        let lock =
            Flock::lock(file, FlockArg::LockExclusive).map_err(|(_, e)| std::io::Error::from(e))?;
        Ok(Store { dir, _lock: lock })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Claims `ip` for the container; `false` if someone holds it already.
    pub fn reserve(
        &self,
        id: &str,
        ifname: &str,
        ip: IpAddr,
        range_id: usize,
    ) -> std::io::Result<bool> {
        let path = self.dir.join(ip.to_string());
        let mut f = match OpenOptions::new().write(true).create_new(true).open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Ok(false),
            Err(e) => return Err(e),
        };
        if let Err(e) = f.write_all(format!("{}{LINE_BREAK}{ifname}", id.trim()).as_bytes()) {
            let _ = std::fs::remove_file(&path);
            return Err(e);
        }
        std::fs::write(
            self.dir.join(format!("{LAST_RESERVED_PREFIX}{range_id}")),
            ip.to_string(),
        )?;
        Ok(true)
    }

    pub fn last_reserved(&self, range_id: usize) -> Option<IpAddr> {
        std::fs::read_to_string(self.dir.join(format!("{LAST_RESERVED_PREFIX}{range_id}")))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// Every allocation: (address, container id, ifname).
    pub fn all(&self) -> std::io::Result<Vec<(IpAddr, String, String)>> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(&self.dir)? {
            let entry = entry?;
            let Ok(ip) = entry.file_name().to_string_lossy().parse::<IpAddr>() else {
                continue; // lock, last_reserved_ip.N, strays
            };
            let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
            let (id, ifname) = match text.split_once(LINE_BREAK) {
                Some((id, ifname)) => (id.trim().to_string(), ifname.trim().to_string()),
                // Stores written before ifnames were recorded hold the id alone.
                None => (text.trim().to_string(), String::new()),
            };
            out.push((ip, id, ifname));
        }
        out.sort();
        Ok(out)
    }

    fn matches(entry_id: &str, entry_if: &str, id: &str, ifname: &str) -> bool {
        entry_id == id.trim() && (entry_if.is_empty() || entry_if == ifname)
    }

    pub fn find_by_id(&self, id: &str, ifname: &str) -> std::io::Result<Vec<IpAddr>> {
        Ok(self
            .all()?
            .into_iter()
            .filter(|(_, i, f)| Self::matches(i, f, id, ifname))
            .map(|(ip, _, _)| ip)
            .collect())
    }

    /// Releases the container's addresses; nothing held is not an error.
    pub fn release_by_id(&self, id: &str, ifname: &str) -> std::io::Result<()> {
        for ip in self.find_by_id(id, ifname)? {
            self.release_ip(ip)?;
        }
        Ok(())
    }

    pub fn release_ip(&self, ip: IpAddr) -> std::io::Result<()> {
        match std::fs::remove_file(self.dir.join(ip.to_string())) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}
