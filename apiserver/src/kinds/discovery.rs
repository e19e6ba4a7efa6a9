//! `discovery.k8s.io/v1` EndpointSlice: validation as
//! `pkg/apis/discovery/validation`, generation as its strategy keeps it, and
//! the table kube-apiserver prints.

use std::collections::HashSet;
use std::net::{Ipv4Addr, Ipv6Addr};

use k8s_openapi::api::discovery::v1::{Endpoint, EndpointPort, EndpointSlice};
use serde_json::Value;

use super::KindSpec;
use super::table::{Column, age, age_col, col, name_col};
use crate::status::FieldError;

const ADDRESS_TYPES: [&str; 3] = ["IPv4", "IPv6", "FQDN"];
const MAX_ENDPOINTS: usize = 1000;
const MAX_PORTS: usize = 100;
const MAX_ADDRESSES: usize = 100;

/// The fields whose change bumps `metadata.generation`.
fn content(s: &EndpointSlice) -> (&str, &Vec<Endpoint>, &Option<Vec<EndpointPort>>) {
    (s.address_type.as_str(), &s.endpoints, &s.ports)
}

fn address_errors(address_type: &str, field: &str, address: &str) -> Vec<FieldError> {
    let ok = match address_type {
        "IPv4" => address.parse::<Ipv4Addr>().is_ok(),
        "IPv6" => address.parse::<Ipv6Addr>().is_ok(),
        "FQDN" => super::validation::dns1123_subdomain(field, address).is_empty(),
        _ => true,
    };
    if ok {
        return Vec::new();
    }
    let why = match address_type {
        "IPv4" => "must be a valid IPv4 address",
        "IPv6" => "must be a valid IPv6 address",
        _ => "must be a valid DNS subdomain",
    };
    vec![FieldError::invalid(field, address, why)]
}

impl KindSpec for EndpointSlice {
    fn prepare_create(&mut self) {
        self.metadata.generation = Some(1);
    }

    fn prepare_update(&mut self, old: &Self) {
        let g = old.metadata.generation.unwrap_or(0);
        self.metadata.generation = Some(if content(self) != content(old) {
            g + 1
        } else {
            g
        });
    }

    fn validate(&self, old: Option<&Self>) -> Vec<FieldError> {
        let mut errs = Vec::new();
        let at = self.address_type.as_str();
        if at.is_empty() {
            errs.push(FieldError::required("addressType", ""));
        } else if !ADDRESS_TYPES.contains(&at) {
            errs.push(FieldError::not_supported("addressType", at, &ADDRESS_TYPES));
        }
        if let Some(old) = old
            && old.address_type != self.address_type
        {
            errs.push(FieldError::invalid("addressType", at, "field is immutable"));
        }
        if self.endpoints.len() > MAX_ENDPOINTS {
            errs.push(FieldError::forbidden(
                "endpoints",
                format!("must have at most {MAX_ENDPOINTS} items"),
            ));
        }
        for (i, ep) in self.endpoints.iter().enumerate() {
            let field = format!("endpoints[{i}].addresses");
            if ep.addresses.is_empty() {
                errs.push(FieldError::required(
                    &field,
                    "must contain at least 1 address",
                ));
            } else if ep.addresses.len() > MAX_ADDRESSES {
                errs.push(FieldError::forbidden(
                    &field,
                    format!("must have at most {MAX_ADDRESSES} items"),
                ));
            }
            for (j, a) in ep.addresses.iter().enumerate() {
                errs.extend(address_errors(at, &format!("{field}[{j}]"), a));
            }
            if let Some(node) = ep.node_name.as_deref() {
                errs.extend(super::validation::dns1123_subdomain(
                    &format!("endpoints[{i}].nodeName"),
                    node,
                ));
            }
        }
        let ports = self.ports.as_deref().unwrap_or_default();
        if ports.len() > MAX_PORTS {
            errs.push(FieldError::forbidden(
                "ports",
                format!("must have at most {MAX_PORTS} items"),
            ));
        }
        let mut names = HashSet::new();
        for (i, p) in ports.iter().enumerate() {
            let name = p.name.clone().unwrap_or_default();
            if !names.insert(name.clone()) {
                errs.push(FieldError::duplicate(format!("ports[{i}].name"), &name));
            }
            if !name.is_empty() {
                errs.extend(super::validation::dns1123_label(
                    &format!("ports[{i}].name"),
                    &name,
                ));
            }
            if let Some(port) = p.port
                && !(1..=65535).contains(&port)
            {
                errs.push(FieldError::invalid_raw(
                    format!("ports[{i}].port"),
                    port.to_string(),
                    "must be between 1 and 65535, inclusive",
                ));
            }
            if let Some(proto) = p.protocol.as_deref()
                && !["TCP", "UDP", "SCTP"].contains(&proto)
            {
                errs.push(FieldError::not_supported(
                    format!("ports[{i}].protocol"),
                    proto,
                    &["SCTP", "TCP", "UDP"],
                ));
            }
        }
        errs
    }

    fn columns() -> Vec<Column> {
        vec![
            name_col(),
            col("AddressType", "string", 0),
            col("Ports", "string", 0),
            col("Endpoints", "string", 0),
            age_col(),
        ]
    }

    fn cells(&self, now: jiff::Timestamp) -> Vec<Value> {
        let ports: Vec<String> = self
            .ports
            .iter()
            .flatten()
            .map(|p| match (p.port, &p.name) {
                (Some(n), _) => n.to_string(),
                (None, Some(name)) => name.clone(),
                (None, None) => "*".into(),
            })
            .collect();
        let addresses: Vec<String> = self
            .endpoints
            .iter()
            .flat_map(|e| e.addresses.iter().cloned())
            .collect();
        vec![
            self.metadata.name.clone().unwrap_or_default().into(),
            self.address_type.clone().into(),
            list_with_more(&ports).into(),
            list_with_more(&addresses).into(),
            age(self.metadata.creation_timestamp.as_ref(), now),
        ]
    }
}

/// `listWithMoreString`: the first three, then `+ N more...`; `<unset>` when empty.
fn list_with_more(items: &[String]) -> String {
    const MAX: usize = 3;
    if items.len() > MAX {
        return format!("{} + {} more...", items[..MAX].join(","), items.len() - MAX);
    }
    if items.is_empty() {
        return "<unset>".into();
    }
    items.join(",")
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::discovery::v1::EndpointConditions;

    fn slice(addresses: &[&str], ports: &[i32]) -> EndpointSlice {
        EndpointSlice {
            address_type: "IPv4".into(),
            endpoints: addresses
                .iter()
                .map(|a| Endpoint {
                    addresses: vec![a.to_string()],
                    conditions: Some(EndpointConditions {
                        ready: Some(true),
                        ..Default::default()
                    }),
                    ..Default::default()
                })
                .collect(),
            ports: Some(
                ports
                    .iter()
                    .map(|p| EndpointPort {
                        port: Some(*p),
                        protocol: Some("TCP".into()),
                        ..Default::default()
                    })
                    .collect(),
            ),
            metadata: Default::default(),
        }
    }

    #[test]
    fn cells_list_three_then_more_as_kubectl_prints() {
        let now = jiff::Timestamp::now();
        let s = slice(
            &["10.244.0.2", "10.244.0.3", "10.244.0.4", "10.244.0.5"],
            &[8080],
        );
        let cells = s.cells(now);
        assert_eq!(cells[1], "IPv4");
        assert_eq!(cells[2], "8080");
        assert_eq!(cells[3], "10.244.0.2,10.244.0.3,10.244.0.4 + 1 more...");
        let empty = EndpointSlice {
            ports: None,
            ..slice(&[], &[])
        };
        assert_eq!(empty.cells(now)[2], "<unset>");
        assert_eq!(empty.cells(now)[3], "<unset>");
    }

    #[test]
    fn validation_names_the_field() {
        let mut s = slice(&["10.244.0.300"], &[80, 80]);
        s.address_type = "IPv5".into();
        let errs: Vec<String> = s.validate(None).iter().map(|e| e.to_string()).collect();
        assert!(
            errs.iter()
                .any(|e| e.starts_with("addressType: Unsupported value: \"IPv5\"")),
            "{errs:?}"
        );
        let mut s = slice(&["10.244.0.300"], &[80]);
        s.ports.as_mut().unwrap().push(EndpointPort {
            port: Some(70000),
            ..Default::default()
        });
        let errs: Vec<String> = s.validate(None).iter().map(|e| e.to_string()).collect();
        assert!(
            errs.contains(
                &"endpoints[0].addresses[0]: Invalid value: \"10.244.0.300\": must be a valid IPv4 address"
                    .to_string()
            ),
            "{errs:?}"
        );
        assert!(
            errs.iter()
                .any(|e| e.starts_with("ports[1].name: Duplicate value")),
            "{errs:?}"
        );
        assert!(
            errs.iter()
                .any(|e| e.starts_with("ports[1].port: Invalid value: 70000")),
            "{errs:?}"
        );
        let old = slice(&["10.244.0.2"], &[80]);
        let mut changed = old.clone();
        changed.address_type = "IPv6".into();
        changed.endpoints.clear();
        assert!(
            changed.validate(Some(&old)).iter().any(
                |e| e.to_string() == "addressType: Invalid value: \"IPv6\": field is immutable"
            )
        );
    }

    #[test]
    fn generation_follows_content_changes() {
        let mut old = slice(&["10.244.0.2"], &[80]);
        old.prepare_create();
        assert_eq!(old.metadata.generation, Some(1));
        let mut same = old.clone();
        same.metadata.labels = Some([("a".to_string(), "b".to_string())].into());
        same.prepare_update(&old);
        assert_eq!(same.metadata.generation, Some(1));
        let mut more = slice(&["10.244.0.2", "10.244.0.3"], &[80]);
        more.metadata.generation = old.metadata.generation;
        more.prepare_update(&old);
        assert_eq!(more.metadata.generation, Some(2));
    }
}
