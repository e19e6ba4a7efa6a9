//! Kubernetes service environment variables (kubelet's `pkg/kubelet/envvars`
//! and `getServiceEnvVarMap`): for every service a container may see,
//! `<NAME>_SERVICE_HOST`, `<NAME>_SERVICE_PORT`, `<NAME>_SERVICE_PORT_<PORT>`
//! and the Docker-link style `<NAME>_PORT*` variables. Pure.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Service;

/// The services in the default namespace whose variables every pod gets,
/// even with `enableServiceLinks: false` (kubelet's `masterServices`).
const MASTER_SERVICES: &[&str] = &["kubernetes"];

/// The services a pod in `namespace` sees, by name: `kubernetes` from
/// `default` always, the namespace's own services when `enable_service_links`.
/// Services without a cluster IP (headless, ExternalName) have no variables.
pub fn visible_services<'a>(
    services: impl IntoIterator<Item = &'a Service>,
    namespace: &str,
    enable_service_links: bool,
) -> Vec<&'a Service> {
    let mut by_name: BTreeMap<String, &Service> = BTreeMap::new();
    for svc in services {
        if !has_cluster_ip(svc) {
            continue;
        }
        let name = svc.metadata.name.clone().unwrap_or_default();
        let ns = svc.metadata.namespace.as_deref().unwrap_or("default");
        if ns == "default" && MASTER_SERVICES.contains(&name.as_str()) {
            // The pod's own namespace wins over the master service of the same name.
            by_name.entry(name).or_insert(svc);
        } else if ns == namespace && enable_service_links {
            by_name.insert(name, svc);
        }
    }
    by_name.into_values().collect()
}

fn has_cluster_ip(svc: &Service) -> bool {
    let ip = svc
        .spec
        .as_ref()
        .and_then(|s| s.cluster_ip.as_deref())
        .unwrap_or("");
    !ip.is_empty() && ip != "None"
}

/// `my-svc` → `MY_SVC`.
fn env_name(name: &str) -> String {
    name.replace('-', "_").to_uppercase()
}

/// `host:port`, with brackets for IPv6 as Go's `net.JoinHostPort` writes it.
fn join_host_port(host: &str, port: i32) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// The variables of these services, in kubelet's order (`envvars.FromServices`).
pub fn from_services(services: &[&Service]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for svc in services {
        let Some(spec) = svc.spec.as_ref() else {
            continue;
        };
        let ports = spec.ports.as_deref().unwrap_or_default();
        let (Some(first), true) = (ports.first(), has_cluster_ip(svc)) else {
            continue;
        };
        let ip = spec.cluster_ip.clone().unwrap_or_default();
        let prefix = env_name(svc.metadata.name.as_deref().unwrap_or_default());
        out.push((format!("{prefix}_SERVICE_HOST"), ip.clone()));
        let port_var = format!("{prefix}_SERVICE_PORT");
        out.push((port_var.clone(), first.port.to_string()));
        for p in ports {
            if let Some(name) = p.name.as_deref().filter(|n| !n.is_empty()) {
                out.push((format!("{port_var}_{}", env_name(name)), p.port.to_string()));
            }
        }
        // Docker-compatible link variables; Docker special-cases the first port.
        for (i, p) in ports.iter().enumerate() {
            let proto = p.protocol.as_deref().unwrap_or("TCP");
            let lower = proto.to_lowercase();
            let url = format!("{lower}://{}", join_host_port(&ip, p.port));
            if i == 0 {
                out.push((format!("{prefix}_PORT"), url.clone()));
            }
            let port_prefix = format!("{prefix}_PORT_{}_{}", p.port, proto.to_uppercase());
            out.push((port_prefix.clone(), url));
            out.push((format!("{port_prefix}_PROTO"), lower));
            out.push((format!("{port_prefix}_PORT"), p.port.to_string()));
            out.push((format!("{port_prefix}_ADDR"), ip.clone()));
        }
    }
    out
}

/// Every service variable a container of a pod in `namespace` gets.
pub fn service_env<'a>(
    services: impl IntoIterator<Item = &'a Service>,
    namespace: &str,
    enable_service_links: bool,
) -> BTreeMap<String, String> {
    from_services(&visible_services(services, namespace, enable_service_links))
        .into_iter()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{ServicePort, ServiceSpec};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn svc(ns: &str, name: &str, ip: &str, ports: &[(Option<&str>, i32, Option<&str>)]) -> Service {
        Service {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some(ns.into()),
                ..Default::default()
            },
            spec: Some(ServiceSpec {
                cluster_ip: Some(ip.into()),
                ports: Some(
                    ports
                        .iter()
                        .map(|(n, p, proto)| ServicePort {
                            name: n.map(String::from),
                            port: *p,
                            protocol: proto.map(String::from),
                            ..Default::default()
                        })
                        .collect(),
                ),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn variables_match_the_kubelets_names_and_values() {
        // The same service as kubelet's envvars_test.go "super-ipv6"-less cases.
        let s = svc(
            "ns",
            "foo-bar",
            "1.2.3.4",
            &[
                (Some("http"), 8080, Some("TCP")),
                (Some("dns-udp"), 53, Some("UDP")),
            ],
        );
        let vars = from_services(&[&s]);
        let expected: Vec<(String, String)> = [
            ("FOO_BAR_SERVICE_HOST", "1.2.3.4"),
            ("FOO_BAR_SERVICE_PORT", "8080"),
            ("FOO_BAR_SERVICE_PORT_HTTP", "8080"),
            ("FOO_BAR_SERVICE_PORT_DNS_UDP", "53"),
            ("FOO_BAR_PORT", "tcp://1.2.3.4:8080"),
            ("FOO_BAR_PORT_8080_TCP", "tcp://1.2.3.4:8080"),
            ("FOO_BAR_PORT_8080_TCP_PROTO", "tcp"),
            ("FOO_BAR_PORT_8080_TCP_PORT", "8080"),
            ("FOO_BAR_PORT_8080_TCP_ADDR", "1.2.3.4"),
            ("FOO_BAR_PORT_53_UDP", "udp://1.2.3.4:53"),
            ("FOO_BAR_PORT_53_UDP_PROTO", "udp"),
            ("FOO_BAR_PORT_53_UDP_PORT", "53"),
            ("FOO_BAR_PORT_53_UDP_ADDR", "1.2.3.4"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(vars, expected);
    }

    #[test]
    fn unnamed_first_port_and_ipv6() {
        let s = svc("ns", "v6", "2001:db8::1", &[(None, 80, None)]);
        let vars: BTreeMap<_, _> = from_services(&[&s]).into_iter().collect();
        assert_eq!(vars["V6_SERVICE_PORT"], "80");
        assert_eq!(vars["V6_PORT"], "tcp://[2001:db8::1]:80");
        assert_eq!(vars["V6_PORT_80_TCP_ADDR"], "2001:db8::1");
        assert_eq!(vars.len(), 7);
    }

    #[test]
    fn which_services_a_pod_sees() {
        let k8s = svc(
            "default",
            "kubernetes",
            "10.96.0.1",
            &[(Some("https"), 443, Some("TCP"))],
        );
        let web = svc("shop", "web", "10.96.0.20", &[(None, 80, None)]);
        let other = svc("other", "db", "10.96.0.30", &[(None, 5432, None)]);
        let headless = svc("shop", "peers", "None", &[(None, 7000, None)]);
        let all = [k8s.clone(), web, other, headless];

        let env = service_env(&all, "shop", true);
        assert_eq!(env["KUBERNETES_SERVICE_HOST"], "10.96.0.1");
        assert_eq!(env["KUBERNETES_SERVICE_PORT"], "443");
        assert_eq!(env["KUBERNETES_SERVICE_PORT_HTTPS"], "443");
        assert_eq!(env["KUBERNETES_PORT"], "tcp://10.96.0.1:443");
        assert_eq!(env["WEB_SERVICE_HOST"], "10.96.0.20");
        assert!(
            !env.contains_key("DB_SERVICE_HOST"),
            "other namespaces are not visible"
        );
        assert!(
            !env.keys().any(|k| k.starts_with("PEERS_")),
            "headless services have none"
        );

        // enableServiceLinks: false keeps only the master service.
        let env = service_env(&all, "shop", false);
        assert!(env.contains_key("KUBERNETES_SERVICE_HOST"));
        assert!(!env.contains_key("WEB_SERVICE_HOST"));

        // A pod's own `kubernetes` service shadows the master one.
        let own = svc("shop", "kubernetes", "10.96.0.99", &[(None, 8443, None)]);
        let env = service_env(&[k8s, own], "shop", true);
        assert_eq!(env["KUBERNETES_SERVICE_HOST"], "10.96.0.99");
    }
}
