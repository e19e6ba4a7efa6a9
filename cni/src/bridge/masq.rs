//! `ipMasq`: traffic from the pod to anywhere outside its network leaves
//! masqueraded, as the reference plugin arranges it: a per-container chain in
//! the nat table, jumped to from POSTROUTING for the pod's source address.
//! Done with the `iptables` tools of the namespace the plugin runs in, each
//! change as one `iptables-restore --noflush` transaction: every separate
//! `iptables -A/-N/-F/-X` is a ruleset commit of its own, and commits, not
//! listings, are what cost (about 10 ms each with the nf_tables backend).

use std::io::Write;
use std::net::IpAddr;
use std::process::{Command, Stdio};

use sha2::{Digest, Sha256};

use crate::ip::IpPrefix;

/// `CNI-<24 hex>`: one chain per (network, container), within iptables' 28 characters.
pub fn chain_name(network: &str, container_id: &str) -> String {
    let digest = Sha256::digest(format!("{network}{container_id}").as_bytes());
    format!("CNI-{}", &hex::encode(digest)[..24])
}

/// The address families the rules are written for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    pub const BOTH: [Family; 2] = [Family::V4, Family::V6];

    pub fn of(ip: IpAddr) -> Family {
        if ip.is_ipv4() { Family::V4 } else { Family::V6 }
    }

    fn tool(self) -> &'static str {
        match self {
            Family::V4 => "iptables",
            Family::V6 => "ip6tables",
        }
    }

    fn restore_tool(self) -> &'static str {
        match self {
            Family::V4 => "iptables-restore",
            Family::V6 => "ip6tables-restore",
        }
    }

    fn multicast(self) -> &'static str {
        match self {
            Family::V4 => "224.0.0.0/4",
            Family::V6 => "ff00::/8",
        }
    }
}

fn run(tool: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new(tool)
        .arg("-w")
        .args(args)
        .output()
        .map_err(|e| format!("running {tool}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "{tool} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Applies `script` (iptables-save format) as one transaction, on top of what is there.
fn restore(family: Family, script: &str) -> Result<(), String> {
    let tool = family.restore_tool();
    let mut child = Command::new(tool)
        .args(["-w", "--noflush"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("running {tool}: {e}"))?;
    // A tool that exits early closes the pipe; its status says why.
    let _ = child
        .stdin
        .take()
        .expect("piped")
        .write_all(script.as_bytes());
    let out = child
        .wait_with_output()
        .map_err(|e| format!("running {tool}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{tool}: {}; input:\n{script}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// A word as iptables-save writes it, read back by iptables-restore.
fn quote(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// The chain's rules: accept traffic to the pod's own subnets, masquerade the rest
/// (multicast aside); then the POSTROUTING jumps for `sources`.
fn rules(family: Family, ips: &[IpPrefix], chain: &str, comment: &str) -> (String, Vec<String>) {
    let c = quote(comment);
    let mut body = String::new();
    let mut subnets: Vec<String> = Vec::new();
    for ip in ips {
        let subnet = ip.masked().to_string();
        if !subnets.contains(&subnet) {
            body += &format!("-A {chain} -d {subnet} -j ACCEPT -m comment --comment {c}\n");
            subnets.push(subnet);
        }
    }
    body += &format!(
        "-A {chain} ! -d {} -j MASQUERADE -m comment --comment {c}\n",
        family.multicast()
    );
    let jumps = ips
        .iter()
        .map(|ip| {
            format!(
                "-A POSTROUTING -s {} -j {chain} -m comment --comment {c}\n",
                ip.addr
            )
        })
        .collect();
    (body, jumps)
}

/// The first ADD's transaction: it fails as a whole, changing nothing, if the chain exists.
fn setup_script(family: Family, ips: &[IpPrefix], chain: &str, comment: &str) -> String {
    let (body, jumps) = rules(family, ips, chain, comment);
    format!("*nat\n-N {chain}\n{body}{}COMMIT\n", jumps.concat())
}

/// A repeated ADD's: the chain redeclared (which empties it) and refilled, the
/// jumps not there yet added.
fn resetup_script(
    family: Family,
    ips: &[IpPrefix],
    chain: &str,
    comment: &str,
    missing: impl Fn(&IpPrefix) -> bool,
) -> String {
    let (body, jumps) = rules(family, ips, chain, comment);
    let jumps: String = ips
        .iter()
        .zip(jumps)
        .filter(|(ip, _)| missing(ip))
        .map(|(_, j)| j)
        .collect();
    format!("*nat\n:{chain} - [0:0]\n{body}{jumps}COMMIT\n")
}

/// Masquerades traffic from the pod's addresses `ips` (all of one family)
/// that leaves their subnets: one transaction in the common case.
pub fn setup(ips: &[IpPrefix], chain: &str, comment: &str) -> Result<(), String> {
    let Some(first) = ips.first() else {
        return Ok(());
    };
    let family = Family::of(first.addr);
    if restore(family, &setup_script(family, ips, chain, comment)).is_ok() {
        return Ok(());
    }
    let has_jump = |ip: &IpPrefix| {
        let src = ip.addr.to_string();
        run(
            family.tool(),
            &[
                "-t",
                "nat",
                "-C",
                "POSTROUTING",
                "-s",
                &src,
                "-j",
                chain,
                "-m",
                "comment",
                "--comment",
                comment,
            ],
        )
        .is_ok()
    };
    restore(
        family,
        &resetup_script(family, ips, chain, comment, |ip| !has_jump(ip)),
    )
}

/// The teardown transaction: `postrouting` is `iptables -S POSTROUTING`'s
/// output; its jumps to the chain go, then the chain (declared first, so that
/// deleting it works whether or not it is there).
fn teardown_script(chain: &str, postrouting: &str) -> Option<String> {
    let jumps: Vec<&str> = postrouting
        .lines()
        .filter_map(|l| l.strip_prefix("-A POSTROUTING "))
        // iptables -S writes the target last.
        .filter(|spec| {
            let words: Vec<&str> = spec.split_whitespace().collect();
            words.ends_with(&["-j", chain])
        })
        .collect();
    if jumps.is_empty() {
        return None;
    }
    let mut s = String::from("*nat\n");
    for spec in jumps {
        s += &format!("-D POSTROUTING {spec}\n");
    }
    s += &format!(":{chain} - [0:0]\n-X {chain}\nCOMMIT\n");
    Some(s)
}

/// Removes the chain and every POSTROUTING jump to it, for `families` (the
/// pod's, or both when they are not known). Nothing there is fine (DEL is
/// idempotent); failing to remove what is there is an error.
pub fn teardown(chain: &str, families: &[Family]) -> Result<(), String> {
    for &family in families {
        let t = family.tool();
        // No nat table for this family (e.g. no IPv6 in the kernel): nothing to remove.
        let Ok(postrouting) = run(t, &["-t", "nat", "-S", "POSTROUTING"]) else {
            continue;
        };
        let script = match teardown_script(chain, &postrouting) {
            Some(s) => s,
            // No jump left; a chain may be, from an ADD that stopped half-way.
            None if run(t, &["-t", "nat", "-S", chain]).is_ok() => {
                format!("*nat\n:{chain} - [0:0]\n-X {chain}\nCOMMIT\n")
            }
            None => continue,
        };
        restore(family, &script)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_names_fit_iptables() {
        let c = chain_name("kubelab", "0123456789abcdef");
        assert!(c.starts_with("CNI-") && c.len() == 28, "{c}");
        assert_eq!(c, chain_name("kubelab", "0123456789abcdef"));
        assert_ne!(c, chain_name("kubelab", "other"));
    }

    #[test]
    fn setup_is_one_transaction_with_quoted_comments() {
        let ips: Vec<IpPrefix> = vec!["10.1.0.7/16".parse().unwrap()];
        let s = setup_script(Family::V4, &ips, "CNI-abc", r#"name: "net" id: "x""#);
        assert_eq!(
            s,
            "*nat\n-N CNI-abc\n\
             -A CNI-abc -d 10.1.0.0/16 -j ACCEPT -m comment --comment \"name: \\\"net\\\" id: \\\"x\\\"\"\n\
             -A CNI-abc ! -d 224.0.0.0/4 -j MASQUERADE -m comment --comment \"name: \\\"net\\\" id: \\\"x\\\"\"\n\
             -A POSTROUTING -s 10.1.0.7 -j CNI-abc -m comment --comment \"name: \\\"net\\\" id: \\\"x\\\"\"\n\
             COMMIT\n"
        );
        let again = resetup_script(Family::V4, &ips, "CNI-abc", "c", |_| false);
        assert!(again.starts_with("*nat\n:CNI-abc - [0:0]\n"), "{again}");
        assert!(!again.contains("POSTROUTING"), "{again}");
    }

    #[test]
    fn teardown_deletes_the_listed_jumps_then_the_chain() {
        let listed = "-P POSTROUTING ACCEPT\n\
            -A POSTROUTING -s 10.1.0.7/32 -m comment --comment \"name: \\\"n\\\" id: \\\"x\\\"\" -j CNI-abc\n\
            -A POSTROUTING -s 10.1.0.8/32 -m comment --comment \"other\" -j CNI-abcd\n\
            -A POSTROUTING -s 10.1.0.9/32 -j CNI-abc\n";
        assert_eq!(
            teardown_script("CNI-abc", listed).unwrap(),
            "*nat\n\
             -D POSTROUTING -s 10.1.0.7/32 -m comment --comment \"name: \\\"n\\\" id: \\\"x\\\"\" -j CNI-abc\n\
             -D POSTROUTING -s 10.1.0.9/32 -j CNI-abc\n\
             :CNI-abc - [0:0]\n-X CNI-abc\nCOMMIT\n"
        );
        assert_eq!(teardown_script("CNI-zzz", listed), None);
    }
}
