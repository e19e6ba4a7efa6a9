//! `kubelab-agent proxy-bench` (hidden): times the proxy's syncs on a
//! synthetic cluster in the current network namespace (`bench/proxy_bench.sh`
//! runs it in throwaway ones and times the plain tools on the same ruleset).

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use super::apply::{Iptables, IptablesBackend};
use super::iptables::{RenderOptions, render_ruleset};
use super::model::{Endpoint, Protocol, ProxyModel, ServicePort, ServicePortName};
use super::nftables::{NftOptions, NftRuleset, NftSyncer};
use super::sync::{IptablesSyncer, RuleSyncer};

#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    #[arg(long, default_value_t = 1000)]
    services: usize,
    #[arg(long, default_value_t = 5)]
    endpoints: usize,
    /// iptables or nftables.
    #[arg(long, default_value = "iptables")]
    mode: String,
    /// The iptables backend: nft or legacy.
    #[arg(long, default_value = "nft")]
    backend: String,
    /// One-service changes to time (the median is reported).
    #[arg(long, default_value_t = 5)]
    changes: usize,
    /// Print the full ruleset (the input of a first sync) and exit.
    #[arg(long)]
    print_ruleset: bool,
}

const CLUSTER_CIDR: &str = "10.0.0.0/8";

fn nth_ip(base: [u8; 2], n: usize) -> Ipv4Addr {
    let n = n as u32 + 1;
    let base = u32::from(Ipv4Addr::new(base[0], base[1], 0, 0));
    Ipv4Addr::from(base + n)
}

/// `services` ClusterIP services of `endpoints` endpoints each; `generation`
/// moves one endpoint of service 0 (a pod replaced).
pub fn synthetic_model(services: usize, endpoints: usize, generation: usize) -> ProxyModel {
    let mut model = ProxyModel::default();
    for s in 0..services {
        let name = ServicePortName {
            namespace: "bench".into(),
            name: format!("svc{s}"),
            port: "http".into(),
        };
        let mut eps: Vec<Endpoint> = (0..endpoints)
            .map(|e| Endpoint {
                ip: nth_ip([10, 1], s * endpoints + e),
                port: 8080,
            })
            .collect();
        if s == 0 && generation > 0 && !eps.is_empty() {
            eps[0].ip = nth_ip([10, 200], generation);
        }
        eps.sort();
        model.services.insert(
            name.clone(),
            ServicePort {
                name,
                protocol: Protocol::Tcp,
                cluster_ip: nth_ip([10, 96], s),
                port: 80,
                node_port: None,
                external_ips: vec![],
                affinity_timeout: None,
                external_local: false,
                internal_local: false,
                endpoints: eps,
                local_endpoints: vec![],
            },
        );
    }
    model
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    let model = synthetic_model(args.services, args.endpoints, 0);
    let nft_opts = NftOptions {
        cluster_cidr: Some(CLUSTER_CIDR.into()),
        node_ips: vec![],
    };
    let mut syncer: Box<dyn RuleSyncer> = match args.mode.as_str() {
        "iptables" => {
            let backend = match args.backend.as_str() {
                "nft" => IptablesBackend::Nft,
                "legacy" => IptablesBackend::Legacy,
                other => anyhow::bail!("--backend {other:?}: expected nft or legacy"),
            };
            let ipt = Iptables::with_backend(backend)?;
            if args.print_ruleset {
                let opts = RenderOptions {
                    cluster_cidr: Some(CLUSTER_CIDR.into()),
                    random_fully: ipt.has_random_fully(),
                };
                print!("{}", render_ruleset(&model, &opts));
                return Ok(());
            }
            Box::new(IptablesSyncer::new(ipt, Some(CLUSTER_CIDR.into())))
        }
        "nftables" => {
            if args.print_ruleset {
                print!("{}", NftRuleset::render(&model, &nft_opts).full_text());
                return Ok(());
            }
            Box::new(NftSyncer::new(nft_opts))
        }
        other => anyhow::bail!("--mode {other:?}: expected iptables or nftables"),
    };
    let t = Instant::now();
    let first = syncer.sync(&model, true)?;
    let first_s = secs(t.elapsed());
    let t = Instant::now();
    syncer.sync(&model, true)?;
    let resync_s = secs(t.elapsed());
    let mut partial = Vec::new();
    let mut partial_tool = Vec::new();
    let mut written = 0;
    for g in 1..=args.changes.max(1) {
        let changed = synthetic_model(args.services, args.endpoints, g);
        let t = Instant::now();
        let o = syncer.sync(&changed, false)?;
        partial.push(secs(t.elapsed()));
        partial_tool.push(secs(o.tool_elapsed));
        written = o.written_chains.len() + o.deleted_chains.len();
        anyhow::ensure!(!o.full, "the one-service change was not a partial sync");
    }
    partial.sort_by(f64::total_cmp);
    let median = partial[partial.len() / 2];
    partial_tool.sort_by(f64::total_cmp);
    let median_tool = partial_tool[partial_tool.len() / 2];
    println!(
        "{}",
        serde_json::json!({
            "mode": args.mode,
            "backend": if args.mode == "iptables" { args.backend.as_str() } else { "nft" },
            "services": args.services,
            "endpoints_per_service": args.endpoints,
            "full_sync_s": first_s,
            "full_resync_s": resync_s,
            "full_sync_input_lines": first.input.lines().count(),
            "full_sync_tool_s": secs(first.tool_elapsed),
            "one_service_change_s": median,
            "one_service_change_tool_s": median_tool,
            "one_service_change_chains_touched": written,
        })
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_synthetic_change_moves_one_endpoint_of_one_service() {
        let a = synthetic_model(3, 2, 0);
        let b = synthetic_model(3, 2, 1);
        assert_eq!(a.endpoint_count(), 6);
        let changed = crate::proxy::model::changed_services(&a, &b);
        assert_eq!(changed.len(), 1);
        assert_eq!(
            changed.iter().next().unwrap().to_string(),
            "bench/svc0:http"
        );
        assert_eq!(
            a.services.values().nth(1).unwrap().cluster_ip.to_string(),
            "10.96.0.2"
        );
    }
}
