//! `ipMasq`: traffic from the pod to anywhere outside its network leaves
//! masqueraded, as the reference plugin arranges it: a per-container chain in
//! the nat table, jumped to from POSTROUTING for the pod's source address.
//! Done with the `iptables` binary of the namespace the plugin runs in.

use std::net::IpAddr;
use std::process::Command;

use sha2::{Digest, Sha256};

use crate::ip::IpPrefix;

/// `CNI-<24 hex>`: one chain per (network, container), within iptables' 28 characters.
pub fn chain_name(network: &str, container_id: &str) -> String {
    let digest = Sha256::digest(format!("{network}{container_id}").as_bytes());
    format!("CNI-{}", &hex::encode(digest)[..24])
}

fn tool(ip: IpAddr) -> &'static str {
    if ip.is_ipv4() {
        "iptables"
    } else {
        "ip6tables"
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

/// Masquerades traffic from `ip` (in `subnet`) that leaves the subnet.
pub fn setup(ip: IpPrefix, chain: &str, comment: &str) -> Result<(), String> {
    let t = tool(ip.addr);
    let multicast = if ip.addr.is_ipv4() {
        "224.0.0.0/4"
    } else {
        "ff00::/8"
    };
    let subnet = ip.masked().to_string();
    if run(t, &["-t", "nat", "-S", chain]).is_err() {
        run(t, &["-t", "nat", "-N", chain])?;
    }
    let rules: [&[&str]; 2] = [
        &[
            "-d",
            &subnet,
            "-j",
            "ACCEPT",
            "-m",
            "comment",
            "--comment",
            comment,
        ],
        &[
            "!",
            "-d",
            multicast,
            "-j",
            "MASQUERADE",
            "-m",
            "comment",
            "--comment",
            comment,
        ],
    ];
    for rule in rules {
        let mut check = vec!["-t", "nat", "-C", chain];
        check.extend_from_slice(rule);
        if run(t, &check).is_err() {
            let mut add = vec!["-t", "nat", "-A", chain];
            add.extend_from_slice(rule);
            run(t, &add)?;
        }
    }
    let src = ip.addr.to_string();
    let jump = [
        "-s",
        src.as_str(),
        "-j",
        chain,
        "-m",
        "comment",
        "--comment",
        comment,
    ];
    let mut check = vec!["-t", "nat", "-C", "POSTROUTING"];
    check.extend_from_slice(&jump);
    if run(t, &check).is_err() {
        let mut add = vec!["-t", "nat", "-A", "POSTROUTING"];
        add.extend_from_slice(&jump);
        run(t, &add)?;
    }
    Ok(())
}

/// Removes the chain and every POSTROUTING jump to it, for both families.
/// Nothing there is fine (DEL is idempotent).
pub fn teardown(chain: &str) {
    for t in ["iptables", "ip6tables"] {
        let Ok(rules) = run(t, &["-t", "nat", "-S", "POSTROUTING"]) else {
            continue;
        };
        let target = format!("-j {chain}");
        for line in rules.lines().filter(|l| l.contains(&target)) {
            let Some(spec) = line.strip_prefix("-A POSTROUTING ") else {
                continue;
            };
            let words = shell_words(spec);
            let mut del = vec!["-t", "nat", "-D", "POSTROUTING"];
            del.extend(words.iter().map(String::as_str));
            let _ = run(t, &del);
        }
        let _ = run(t, &["-t", "nat", "-F", chain]);
        let _ = run(t, &["-t", "nat", "-X", chain]);
    }
}

/// Splits an `iptables -S` rule into arguments (double quotes group words).
fn shell_words(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut any = false;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                quoted = !quoted;
                any = true;
            }
            '\\' if quoted => cur.extend(chars.next()),
            c if c.is_whitespace() && !quoted => {
                if any || !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                    any = false;
                }
            }
            c => cur.push(c),
        }
    }
    if any || !cur.is_empty() {
        out.push(cur);
    }
    out
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
    fn iptables_save_lines_split_like_a_shell() {
        assert_eq!(
            shell_words(
                r#"-s 10.1.0.2/32 -m comment --comment "name: \"net\" id: \"x\"" -j CNI-abc"#
            ),
            vec![
                "-s",
                "10.1.0.2/32",
                "-m",
                "comment",
                "--comment",
                r#"name: "net" id: "x""#,
                "-j",
                "CNI-abc"
            ]
        );
    }
}
