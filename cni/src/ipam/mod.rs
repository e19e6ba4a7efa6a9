//! `kubelab-host-local`: IPAM compatible with the reference `host-local`
//! plugin. Same config (`ranges` of range sets, or the legacy top-level
//! `subnet`), same store (one file per address under `<dataDir>/<network>`,
//! holding `<containerID>\r\n<ifname>`, plus `last_reserved_ip.<set>`), same
//! lock (`flock` on `<dataDir>/<network>/lock`), so the two can share a data dir.

pub mod allocator;
pub mod config;
pub mod store;

use std::net::IpAddr;

use crate::skel::{CmdArgs, Plugin};
use crate::types::{CniError, CniResult, IpConfig, code};

pub use allocator::allocate;
pub use config::{IpamConfig, Range};
pub use store::Store;

pub struct HostLocal;

impl HostLocal {
    fn open(cfg: &IpamConfig) -> Result<Store, CniError> {
        Store::open(&cfg.data_dir, &cfg.network).map_err(|e| {
            CniError::io(
                format!(
                    "opening the IPAM store {}",
                    cfg.data_dir.join(&cfg.network).display()
                ),
                e,
            )
        })
    }
}

impl Plugin for HostLocal {
    fn add(&self, args: &CmdArgs) -> Result<CniResult, CniError> {
        let cfg = IpamConfig::parse(&args.stdin, &args.cni_args())?;
        let store = Self::open(&cfg)?;
        let allocated = allocate(&store, &cfg, &args.container_id, &args.ifname);
        let ips: Vec<(IpAddr, &Range)> = match allocated {
            Ok(ips) => ips,
            Err(e) => {
                // Nothing half-done stays reserved.
                let _ = store.release_by_id(&args.container_id, &args.ifname);
                return Err(e);
            }
        };
        let dns = match &cfg.resolv_conf {
            Some(path) => config::parse_resolv_conf(path)?,
            None => Default::default(),
        };
        Ok(CniResult {
            cni_version: cfg.cni_version.clone(),
            ips: ips
                .into_iter()
                .map(|(ip, range)| IpConfig {
                    address: crate::ip::IpPrefix::new(ip, range.subnet.prefix),
                    gateway: range.gateway,
                    interface: None,
                    version: None,
                })
                .collect(),
            routes: cfg.routes.clone(),
            dns,
            ..Default::default()
        })
    }

    fn del(&self, args: &CmdArgs) -> Result<(), CniError> {
        let cfg = IpamConfig::parse(&args.stdin, &args.cni_args())?;
        let store = Self::open(&cfg)?;
        store
            .release_by_id(&args.container_id, &args.ifname)
            .map_err(|e| CniError::io("releasing addresses", e))
    }

    fn check(&self, args: &CmdArgs) -> Result<(), CniError> {
        let cfg = IpamConfig::parse(&args.stdin, &args.cni_args())?;
        let store = Self::open(&cfg)?;
        let held = store
            .find_by_id(&args.container_id, &args.ifname)
            .map_err(|e| CniError::io("reading the IPAM store", e))?;
        if held.is_empty() {
            return Err(CniError::new(
                code::INTERNAL,
                format!(
                    "host-local: no address is allocated to container {} ({})",
                    args.container_id, args.ifname
                ),
            ));
        }
        Ok(())
    }

    fn status(&self, args: &CmdArgs) -> Result<(), CniError> {
        let cfg = IpamConfig::parse(&args.stdin, &[])?;
        Self::open(&cfg).map(|_| ()).map_err(|e| CniError {
            code: code::PLUGIN_NOT_AVAILABLE,
            ..e
        })
    }

    /// Releases every allocation not in `cni.dev/valid-attachments`.
    fn gc(&self, args: &CmdArgs) -> Result<(), CniError> {
        let cfg = IpamConfig::parse(&args.stdin, &[])?;
        let valid = config::valid_attachments(&args.stdin)?;
        let store = Self::open(&cfg)?;
        let all = store
            .all()
            .map_err(|e| CniError::io("reading the IPAM store", e))?;
        for (ip, id, ifname) in all {
            if !valid
                .iter()
                .any(|(v_id, v_if)| *v_id == id && *v_if == ifname)
            {
                store
                    .release_ip(ip)
                    .map_err(|e| CniError::io(format!("releasing {ip}"), e))?;
            }
        }
        Ok(())
    }
}
