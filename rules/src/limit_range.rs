//! LimitRange: the defaults a namespace's LimitRanges put into containers
//! that name no requests or limits, and the min/max/ratio constraints a new
//! pod must meet (kube-apiserver's LimitRanger admission), with its
//! messages. Amounts compare exactly (nano-units).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, LimitRange, LimitRangeItem, Pod};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use crate::quantity::{self, QuantityError};

pub const TYPE_CONTAINER: &str = "Container";
pub const TYPE_POD: &str = "Pod";
/// The annotation naming what the admission filled in.
pub const ANNOTATION: &str = "kubernetes.io/limit-ranger";

type List = BTreeMap<String, Quantity>;

/// `SetDefaults_LimitRangeItem`: for containers, a missing default limit is
/// the max, a missing default request the default limit, else the min.
pub fn default_item(item: &mut LimitRangeItem) {
    if item.type_ != TYPE_CONTAINER {
        return;
    }
    let mut default = item.default.take().unwrap_or_default();
    for (k, v) in item.max.iter().flatten() {
        default.entry(k.clone()).or_insert_with(|| v.clone());
    }
    let mut default_request = item.default_request.take().unwrap_or_default();
    for (k, v) in default.iter().chain(item.min.iter().flatten()) {
        default_request
            .entry(k.clone())
            .or_insert_with(|| v.clone());
    }
    item.default = (!default.is_empty()).then_some(default);
    item.default_request = (!default_request.is_empty()).then_some(default_request);
}

/// Fills each container's (and init container's) missing requests and
/// limits from the Container items' defaults, as `mergePodResourceRequirements`
/// does; returns the annotation saying what was set, if anything.
pub fn apply_defaults(ranges: &[LimitRange], pod: &mut Pod) -> Option<String> {
    let mut limits = List::new();
    let mut requests = List::new();
    for item in items(ranges).filter(|i| i.type_ == TYPE_CONTAINER) {
        let mut item = item.clone();
        default_item(&mut item);
        limits.extend(item.default.unwrap_or_default());
        requests.extend(item.default_request.unwrap_or_default());
    }
    if limits.is_empty() && requests.is_empty() {
        return None;
    }
    let spec = pod.spec.as_mut()?;
    let mut notes = Vec::new();
    let all = spec
        .init_containers
        .iter_mut()
        .flatten()
        .chain(spec.containers.iter_mut());
    for c in all {
        let res = c.resources.get_or_insert_with(Default::default);
        let mut set_requests: Vec<&str> = Vec::new();
        let mut set_limits: Vec<&str> = Vec::new();
        let lim = res.limits.get_or_insert_with(Default::default);
        for (k, v) in &limits {
            if !lim.contains_key(k) {
                lim.insert(k.clone(), v.clone());
                set_limits.push(k);
            }
        }
        let req = res.requests.get_or_insert_with(Default::default);
        for (k, v) in &requests {
            if !req.contains_key(k) {
                req.insert(k.clone(), v.clone());
                set_requests.push(k);
            }
        }
        if !set_requests.is_empty() {
            notes.push(format!(
                "{} request for container {}",
                set_requests.join(", "),
                c.name
            ));
        }
        if !set_limits.is_empty() {
            notes.push(format!(
                "{} limit for container {}",
                set_limits.join(", "),
                c.name
            ));
        }
    }
    (!notes.is_empty()).then(|| format!("LimitRanger plugin set: {}", notes.join("; ")))
}

fn items(ranges: &[LimitRange]) -> impl Iterator<Item = &LimitRangeItem> {
    ranges
        .iter()
        .filter_map(|r| r.spec.as_ref())
        .flat_map(|s| s.limits.iter())
}

fn nanos(q: &Quantity) -> Result<i128, QuantityError> {
    quantity::nano_value(q)
}

/// min, max and maxLimitRequestRatio of one item against requests and
/// limits (a container's, or a pod's sums).
fn check_item(
    item: &LimitRangeItem,
    requests: &List,
    limits: &List,
    errs: &mut Vec<String>,
) -> Result<(), QuantityError> {
    let kind = &item.type_;
    for (name, enforced) in item.min.iter().flatten() {
        let e = nanos(enforced)?;
        match (requests.get(name), limits.get(name)) {
            (None, _) => errs.push(format!(
                "minimum {name} usage per {kind} is {}.  No request is specified",
                enforced.0
            )),
            (Some(r), _) if nanos(r)? < e => errs.push(format!(
                "minimum {name} usage per {kind} is {}, but request is {}",
                enforced.0, r.0
            )),
            (_, Some(l)) if nanos(l)? < e => errs.push(format!(
                "minimum {name} usage per {kind} is {}, but limit is {}",
                enforced.0, l.0
            )),
            _ => {}
        }
    }
    for (name, enforced) in item.max.iter().flatten() {
        let e = nanos(enforced)?;
        match (requests.get(name), limits.get(name)) {
            (_, None) => errs.push(format!(
                "maximum {name} usage per {kind} is {}.  No limit is specified",
                enforced.0
            )),
            (_, Some(l)) if nanos(l)? > e => errs.push(format!(
                "maximum {name} usage per {kind} is {}, but limit is {}",
                enforced.0, l.0
            )),
            (Some(r), _) if nanos(r)? > e => errs.push(format!(
                "maximum {name} usage per {kind} is {}, but request is {}",
                enforced.0, r.0
            )),
            _ => {}
        }
    }
    for (name, enforced) in item.max_limit_request_ratio.iter().flatten() {
        let r = requests.get(name).map(nanos).transpose()?.unwrap_or(0);
        let l = limits.get(name).map(nanos).transpose()?.unwrap_or(0);
        if r == 0 {
            errs.push(format!("{name} max limit to request ratio per {kind} is {}, but no request is specified or request is 0", enforced.0));
        } else if l == 0 {
            errs.push(format!("{name} max limit to request ratio per {kind} is {}, but no limit is specified or limit is 0", enforced.0));
        } else {
            let ratio = l as f64 / r as f64;
            let max = nanos(enforced)? as f64 / quantity::NANOS_PER_UNIT as f64;
            if ratio > max {
                errs.push(format!(
                    "{name} max limit to request ratio per {kind} is {}, but provided ratio is {ratio:.6}",
                    enforced.0
                ));
            }
        }
    }
    Ok(())
}

fn container_lists(c: &Container) -> (List, List) {
    let r = c.resources.clone().unwrap_or_default();
    (r.requests.unwrap_or_default(), r.limits.unwrap_or_default())
}

/// The sum of every container's amount of each resource all of them name
/// (a resource one container leaves out is not summed, as upstream).
fn sum(lists: &[List]) -> Result<List, QuantityError> {
    let mut out = List::new();
    let Some(first) = lists.first() else {
        return Ok(out);
    };
    'names: for name in first.keys() {
        let mut total: i128 = 0;
        for l in lists {
            let Some(q) = l.get(name) else {
                continue 'names;
            };
            total += nanos(q)?;
        }
        out.insert(name.clone(), Quantity(quantity::format_nanos(total, name)));
    }
    Ok(out)
}

/// The constraints a pod (defaults already applied) breaks, each in
/// LimitRanger's words; empty when it may be admitted.
pub fn violations(ranges: &[LimitRange], pod: &Pod) -> Result<Vec<String>, QuantityError> {
    let mut errs = Vec::new();
    let Some(spec) = pod.spec.as_ref() else {
        return Ok(errs);
    };
    for item in items(ranges) {
        match item.type_.as_str() {
            TYPE_CONTAINER => {
                for c in &spec.containers {
                    let (req, lim) = container_lists(c);
                    check_item(item, &req, &lim, &mut errs)?;
                }
            }
            TYPE_POD => {
                let (reqs, lims): (Vec<List>, Vec<List>) =
                    spec.containers.iter().map(container_lists).unzip();
                check_item(item, &sum(&reqs)?, &sum(&lims)?, &mut errs)?;
            }
            _ => {}
        }
    }
    Ok(errs)
}

/// A LimitRange's own rules (`ValidateLimitRange`): for each resource,
/// min ≤ defaultRequest ≤ default ≤ max and min ≤ max; `(field, value,
/// message)` per breach.
pub fn validate(lr: &LimitRange) -> Vec<(String, String, String)> {
    let mut errs = Vec::new();
    let Some(spec) = lr.spec.as_ref() else {
        return errs;
    };
    for (i, item) in spec.limits.iter().enumerate() {
        let get = |l: &Option<List>, k: &str| {
            l.as_ref()
                .and_then(|l| l.get(k))
                .and_then(|q| nanos(q).ok().map(|n| (n, q.0.clone())))
        };
        let mut names: Vec<&String> = [&item.min, &item.max, &item.default, &item.default_request]
            .into_iter()
            .flatten()
            .flat_map(|l| l.keys())
            .collect();
        names.sort();
        names.dedup();
        for k in names {
            let min = get(&item.min, k);
            let max = get(&item.max, k);
            let def = get(&item.default, k);
            let req = get(&item.default_request, k);
            let at = |f: &str| format!("spec.limits[{i}].{f}[{k}]");
            if let (Some(mn), Some(mx)) = (&min, &max)
                && mn.0 > mx.0
            {
                errs.push((
                    at("min"),
                    mn.1.clone(),
                    format!("min value {} is greater than max value {}", mn.1, mx.1),
                ));
            }
            if let (Some(r), Some(mn)) = (&req, &min)
                && r.0 < mn.0
            {
                errs.push((
                    at("defaultRequest"),
                    r.1.clone(),
                    format!(
                        "min value {} is greater than default request value {}",
                        mn.1, r.1
                    ),
                ));
            }
            if let (Some(r), Some(mx)) = (&req, &max)
                && r.0 > mx.0
            {
                errs.push((
                    at("defaultRequest"),
                    r.1.clone(),
                    format!(
                        "default request value {} is greater than max value {}",
                        r.1, mx.1
                    ),
                ));
            }
            if let (Some(r), Some(d)) = (&req, &def)
                && r.0 > d.0
            {
                errs.push((
                    at("defaultRequest"),
                    r.1.clone(),
                    format!(
                        "default request value {} is greater than default limit value {}",
                        r.1, d.1
                    ),
                ));
            }
            if let (Some(d), Some(mx)) = (&def, &max)
                && d.0 > mx.0
            {
                errs.push((
                    at("default"),
                    d.1.clone(),
                    format!("default value {} is greater than max value {}", d.1, mx.1),
                ));
            }
            if let (Some(d), Some(mn)) = (&def, &min)
                && d.0 < mn.0
            {
                errs.push((
                    at("default"),
                    d.1.clone(),
                    format!("min value {} is greater than default value {}", mn.1, d.1),
                ));
            }
        }
        if item.type_ != TYPE_CONTAINER
            && (item.default.is_some() || item.default_request.is_some())
        {
            errs.push((
                format!("spec.limits[{i}].default"),
                String::new(),
                "may not be specified when `type` is not 'Container'".to_owned(),
            ));
        }
    }
    errs
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn range(limits: serde_json::Value) -> LimitRange {
        serde_json::from_value(json!({"metadata": {"name": "lr"}, "spec": {"limits": limits}}))
            .unwrap()
    }

    fn pod(resources: serde_json::Value) -> Pod {
        serde_json::from_value(json!({"metadata": {"name": "p"}, "spec": {"containers": [
            {"name": "app", "image": "busybox", "resources": resources}]}}))
        .unwrap()
    }

    fn res(p: &Pod) -> serde_json::Value {
        serde_json::to_value(&p.spec.as_ref().unwrap().containers[0].resources).unwrap()
    }

    #[test]
    fn container_defaults_fill_only_what_is_missing_and_say_so() {
        let lr = range(json!([{"type": "Container",
            "default": {"cpu": "500m"}, "defaultRequest": {"cpu": "500m"}, "max": {"cpu": "1"}, "min": {"cpu": "100m"}}]));
        let mut p = pod(json!({}));
        let note = apply_defaults(std::slice::from_ref(&lr), &mut p).unwrap();
        assert_eq!(
            res(&p),
            json!({"limits": {"cpu": "500m"}, "requests": {"cpu": "500m"}})
        );
        assert_eq!(
            note,
            "LimitRanger plugin set: cpu request for container app; cpu limit for container app"
        );
        assert!(violations(&[lr.clone()], &p).unwrap().is_empty());

        // A limit given keeps its value; the request still comes from the default.
        let mut p = pod(json!({"limits": {"cpu": "700m"}}));
        apply_defaults(std::slice::from_ref(&lr), &mut p);
        assert_eq!(
            res(&p),
            json!({"limits": {"cpu": "700m"}, "requests": {"cpu": "500m"}})
        );
    }

    #[test]
    fn a_max_alone_becomes_the_default_limit_and_request() {
        let mut item: LimitRangeItem =
            serde_json::from_value(json!({"type": "Container", "max": {"memory": "1Gi"}})).unwrap();
        default_item(&mut item);
        assert_eq!(item.default.unwrap()["memory"].0, "1Gi");
        assert_eq!(item.default_request.unwrap()["memory"].0, "1Gi");
        let mut item: LimitRangeItem =
            serde_json::from_value(json!({"type": "Container", "min": {"cpu": "100m"}})).unwrap();
        default_item(&mut item);
        assert!(item.default.is_none());
        assert_eq!(item.default_request.unwrap()["cpu"].0, "100m");
    }

    #[test]
    fn breaches_are_named_in_limit_rangers_words() {
        let lr = range(
            json!([{"type": "Container", "max": {"cpu": "800m"}, "min": {"cpu": "200m"},
            "maxLimitRequestRatio": {"memory": "2"}}]),
        );
        let p = pod(
            json!({"limits": {"cpu": "1500m", "memory": "1Gi"}, "requests": {"cpu": "100m", "memory": "256Mi"}}),
        );
        assert_eq!(
            violations(&[lr], &p).unwrap(),
            [
                "minimum cpu usage per Container is 200m, but request is 100m",
                "maximum cpu usage per Container is 800m, but limit is 1500m",
                "memory max limit to request ratio per Container is 2, but provided ratio is 4.000000",
            ]
        );
        let lr = range(json!([{"type": "Container", "max": {"memory": "1Gi"}}]));
        assert_eq!(
            violations(&[lr], &pod(json!({}))).unwrap(),
            ["maximum memory usage per Container is 1Gi.  No limit is specified"]
        );
    }

    #[test]
    fn pod_items_weigh_the_sum_of_the_containers() {
        let lr = range(json!([{"type": "Pod", "max": {"memory": "1Gi"}}]));
        let p: Pod =
            serde_json::from_value(json!({"metadata": {"name": "p"}, "spec": {"containers": [
            {"name": "a", "resources": {"limits": {"memory": "768Mi"}}},
            {"name": "b", "resources": {"limits": {"memory": "512Mi"}}}]}}))
            .unwrap();
        assert_eq!(
            violations(&[lr], &p).unwrap(),
            ["maximum memory usage per Pod is 1Gi, but limit is 1280Mi"]
        );
    }

    #[test]
    fn a_limit_range_keeps_its_own_order_of_amounts() {
        let lr =
            range(json!([{"type": "Container", "default": {"cpu": "2"}, "max": {"cpu": "1"}}]));
        let errs = validate(&lr);
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert_eq!(errs[0].0, "spec.limits[0].default[cpu]");
        assert_eq!(errs[0].2, "default value 2 is greater than max value 1");
        let lr = range(json!([{"type": "Pod", "default": {"cpu": "1"}}]));
        assert_eq!(
            validate(&lr)[0].2,
            "may not be specified when `type` is not 'Container'"
        );
    }
}
