//! KubeSchedulerConfiguration (`kubescheduler.config.k8s.io/v1`, the file
//! `kube-scheduler --config` reads): profiles, each a `schedulerName` with
//! plugins enabled, disabled and weighted per extension point, plugin
//! arguments, back-off and leader election. k8s-openapi has no type for
//! it (it is not served by the API), so these are its fields as serde
//! structs; unknown fields are errors, as kube-scheduler's strict decoding.

use std::collections::HashSet;
use std::time::Duration;

use k8s_openapi::api::core::v1::TopologySpreadConstraint;
use serde::Deserialize;
use serde_json::Value;

use super::framework::Profile;
use super::plugins::Plugin;
use super::plugins::node_resources::{ScoringStrategy, StrategyKind};
use super::plugins::pod_topology_spread::SpreadDefaults;

pub const API_VERSION: &str = "kubescheduler.config.k8s.io/v1";
pub const KIND: &str = "KubeSchedulerConfiguration";
pub const DEFAULT_SCHEDULER_NAME: &str = "default-scheduler";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("decoding {path}: {source}")]
    Decode {
        path: String,
        source: serde_yaml::Error,
    },
    #[error(
        "no kind {kind:?} is registered for version {api_version:?} (want {KIND} in {API_VERSION})"
    )]
    Kind { api_version: String, kind: String },
    #[error("profiles[{index}].plugins: plugin {name:?} does not exist")]
    UnknownPlugin { index: usize, name: String },
    #[error("profiles[{index}].schedulerName: Duplicate value: {name:?}")]
    DuplicateProfile { index: usize, name: String },
    #[error("profiles[{index}].pluginConfig[{name}].args: {reason}")]
    PluginArgs {
        index: usize,
        name: String,
        reason: String,
    },
    #[error("{field}: Invalid value: {value:?}: {reason}")]
    Invalid {
        field: String,
        value: String,
        reason: String,
    },
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KubeSchedulerConfiguration {
    pub api_version: Option<String>,
    pub kind: Option<String>,
    pub parallelism: Option<i32>,
    pub leader_election: Option<LeaderElectionConfiguration>,
    pub client_connection: Option<Value>,
    pub health_bind_address: Option<String>,
    pub metrics_bind_address: Option<String>,
    pub enable_profiling: Option<bool>,
    pub enable_contention_profiling: Option<bool>,
    pub percentage_of_nodes_to_score: Option<i32>,
    pub pod_initial_backoff_seconds: Option<i64>,
    pub pod_max_backoff_seconds: Option<i64>,
    pub profiles: Option<Vec<ProfileConfig>>,
    pub extenders: Option<Vec<Value>>,
    pub delay_cache_until_active: Option<bool>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LeaderElectionConfiguration {
    pub leader_elect: Option<bool>,
    pub lease_duration: Option<String>,
    pub renew_deadline: Option<String>,
    pub retry_period: Option<String>,
    pub resource_lock: Option<String>,
    pub resource_name: Option<String>,
    pub resource_namespace: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProfileConfig {
    pub scheduler_name: Option<String>,
    pub percentage_of_nodes_to_score: Option<i32>,
    pub plugins: Option<Plugins>,
    pub plugin_config: Option<Vec<PluginConfig>>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Plugins {
    pub pre_enqueue: Option<PluginSet>,
    pub queue_sort: Option<PluginSet>,
    pub pre_filter: Option<PluginSet>,
    pub filter: Option<PluginSet>,
    pub post_filter: Option<PluginSet>,
    pub pre_score: Option<PluginSet>,
    pub score: Option<PluginSet>,
    pub reserve: Option<PluginSet>,
    pub permit: Option<PluginSet>,
    pub pre_bind: Option<PluginSet>,
    pub bind: Option<PluginSet>,
    pub post_bind: Option<PluginSet>,
    pub multi_point: Option<PluginSet>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PluginSet {
    pub enabled: Option<Vec<PluginRef>>,
    pub disabled: Option<Vec<PluginRef>>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PluginRef {
    pub name: String,
    pub weight: Option<i32>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PluginConfig {
    pub name: String,
    pub args: Option<Value>,
}

/// What the scheduler runs with, from the file and flags.
#[derive(Debug, Clone)]
pub struct SchedulerSettings {
    pub profiles: Vec<Profile>,
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    pub leader_elect: bool,
    pub lease_name: String,
    pub lease_namespace: String,
    pub lease_duration: Duration,
    pub renew_deadline: Duration,
    pub retry_period: Duration,
}

impl Default for SchedulerSettings {
    fn default() -> Self {
        KubeSchedulerConfiguration::default()
            .resolve()
            .expect("the default configuration is valid")
    }
}

impl SchedulerSettings {
    pub fn profile(&self, scheduler_name: &str) -> Option<&Profile> {
        self.profiles
            .iter()
            .find(|p| p.scheduler_name == scheduler_name)
    }
}

/// `15s`, `1m30s`, `500ms`: metav1.Duration as Go prints it.
fn duration(field: &str, s: &Option<String>, default: Duration) -> Result<Duration, ConfigError> {
    let Some(s) = s else { return Ok(default) };
    crate::controllers::node_lifecycle::parse_duration(s).map_err(|e| ConfigError::Invalid {
        field: field.into(),
        value: s.clone(),
        reason: e.to_string(),
    })
}

impl KubeSchedulerConfiguration {
    pub fn from_file(path: &std::path::Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_yaml(&text).map_err(|e| match e {
            ConfigError::Decode { source, .. } => ConfigError::Decode {
                path: path.display().to_string(),
                source,
            },
            other => other,
        })
    }

    pub fn from_yaml(text: &str) -> Result<Self, ConfigError> {
        let cfg: Self = serde_yaml::from_str(text).map_err(|source| ConfigError::Decode {
            path: String::new(),
            source,
        })?;
        let api_version = cfg.api_version.clone().unwrap_or_default();
        let kind = cfg.kind.clone().unwrap_or_default();
        if api_version != API_VERSION || kind != KIND {
            return Err(ConfigError::Kind { api_version, kind });
        }
        Ok(cfg)
    }

    /// Applies kube-scheduler's defaults and each profile's plugin changes.
    pub fn resolve(&self) -> Result<SchedulerSettings, ConfigError> {
        let le = self.leader_election.clone().unwrap_or_default();
        let profiles_cfg = self
            .profiles
            .clone()
            .unwrap_or_else(|| vec![ProfileConfig::default()]);
        let mut profiles = Vec::new();
        let mut names = HashSet::new();
        for (index, pc) in profiles_cfg.iter().enumerate() {
            let mut p = resolve_profile(index, pc)?;
            if p.percentage_of_nodes_to_score.is_none() {
                p.percentage_of_nodes_to_score = self.percentage_of_nodes_to_score;
            }
            if !names.insert(p.scheduler_name.clone()) {
                return Err(ConfigError::DuplicateProfile {
                    index,
                    name: p.scheduler_name,
                });
            }
            profiles.push(p);
        }
        let initial = self.pod_initial_backoff_seconds.unwrap_or(1);
        let max = self.pod_max_backoff_seconds.unwrap_or(10);
        if initial <= 0 || max < initial {
            return Err(ConfigError::Invalid {
                field: "podMaxBackoffSeconds".into(),
                value: max.to_string(),
                reason: "must be greater than or equal to PodInitialBackoffSeconds".into(),
            });
        }
        Ok(SchedulerSettings {
            profiles,
            initial_backoff: Duration::from_secs(initial as u64),
            max_backoff: Duration::from_secs(max as u64),
            leader_elect: le.leader_elect.unwrap_or(true),
            lease_name: le.resource_name.unwrap_or_else(|| "kube-scheduler".into()),
            lease_namespace: le
                .resource_namespace
                .unwrap_or_else(|| "kube-system".into()),
            lease_duration: duration(
                "leaderElection.leaseDuration",
                &le.lease_duration,
                crate::leader_election::LEASE_DURATION,
            )?,
            renew_deadline: duration(
                "leaderElection.renewDeadline",
                &le.renew_deadline,
                crate::leader_election::RENEW_DEADLINE,
            )?,
            retry_period: duration(
                "leaderElection.retryPeriod",
                &le.retry_period,
                crate::leader_election::RETRY_PERIOD,
            )?,
        })
    }
}

fn plugin(index: usize, name: &str) -> Result<Plugin, ConfigError> {
    Plugin::from_name(name).ok_or_else(|| ConfigError::UnknownPlugin {
        index,
        name: name.to_owned(),
    })
}

fn resolve_profile(index: usize, pc: &ProfileConfig) -> Result<Profile, ConfigError> {
    let name = pc
        .scheduler_name
        .clone()
        .unwrap_or_else(|| DEFAULT_SCHEDULER_NAME.into());
    let mut p = Profile::default_named(&name);
    p.percentage_of_nodes_to_score = pc.percentage_of_nodes_to_score;
    let defaults = Profile::default_named(&name);
    let plugins = pc.plugins.clone().unwrap_or_default();
    let empty = PluginSet::default();
    let multi = plugins.multi_point.as_ref().unwrap_or(&empty);

    // Disabling: "*" drops every default of that extension point.
    let disabled = |set: &PluginSet| -> Result<(bool, Vec<Plugin>), ConfigError> {
        let mut all = false;
        let mut named = Vec::new();
        for r in set.disabled.iter().flatten() {
            if r.name == "*" {
                all = true;
            } else {
                named.push(plugin(index, &r.name)?);
            }
        }
        Ok((all, named))
    };
    let (multi_all, multi_named) = disabled(multi)?;
    let (filter_all, filter_named) = disabled(plugins.filter.as_ref().unwrap_or(&empty))?;
    let (score_all, score_named) = disabled(plugins.score.as_ref().unwrap_or(&empty))?;
    let (post_all, post_named) = disabled(plugins.post_filter.as_ref().unwrap_or(&empty))?;
    p.filters.retain(|f| {
        !(multi_all || filter_all || multi_named.contains(f) || filter_named.contains(f))
    });
    p.scores.retain(|(s, _)| {
        !(multi_all || score_all || multi_named.contains(s) || score_named.contains(s))
    });
    if multi_all
        || post_all
        || multi_named.contains(&Plugin::DefaultPreemption)
        || post_named.contains(&Plugin::DefaultPreemption)
    {
        p.preemption = false;
    }

    let default_weight = |pl: Plugin| {
        defaults
            .scores
            .iter()
            .find(|(d, _)| *d == pl)
            .map(|(_, w)| *w)
            .unwrap_or(1)
    };
    let enable_filter = |pl: Plugin, p: &mut Profile| {
        if pl.is_filter() && !p.filters.contains(&pl) {
            p.filters.push(pl);
        }
    };
    let enable_score = |pl: Plugin, weight: Option<i32>, p: &mut Profile| {
        if !pl.is_score() {
            return;
        }
        let w = weight.map(i64::from).unwrap_or_else(|| default_weight(pl));
        match p.scores.iter_mut().find(|(s, _)| *s == pl) {
            Some(e) if weight.is_some() => e.1 = w,
            Some(_) => {}
            None => p.scores.push((pl, w)),
        }
    };
    for r in multi.enabled.iter().flatten() {
        let pl = plugin(index, &r.name)?;
        enable_filter(pl, &mut p);
        enable_score(pl, r.weight, &mut p);
        if pl == Plugin::DefaultPreemption {
            p.preemption = true;
        }
    }
    for r in plugins
        .filter
        .iter()
        .flat_map(|s| s.enabled.iter().flatten())
    {
        enable_filter(plugin(index, &r.name)?, &mut p);
    }
    for r in plugins
        .score
        .iter()
        .flat_map(|s| s.enabled.iter().flatten())
    {
        enable_score(plugin(index, &r.name)?, r.weight, &mut p);
    }
    for r in plugins
        .post_filter
        .iter()
        .flat_map(|s| s.enabled.iter().flatten())
    {
        if plugin(index, &r.name)? == Plugin::DefaultPreemption {
            p.preemption = true;
        }
    }
    for set in [
        &plugins.pre_enqueue,
        &plugins.queue_sort,
        &plugins.pre_filter,
        &plugins.pre_score,
        &plugins.reserve,
        &plugins.permit,
        &plugins.pre_bind,
        &plugins.bind,
        &plugins.post_bind,
    ] {
        for r in set.iter().flat_map(|s| {
            s.enabled
                .iter()
                .flatten()
                .chain(s.disabled.iter().flatten())
        }) {
            if r.name != "*" {
                plugin(index, &r.name)?;
            }
        }
    }

    for pcfg in pc.plugin_config.iter().flatten() {
        let args = pcfg.args.clone().unwrap_or(Value::Null);
        let bad = |reason: String| ConfigError::PluginArgs {
            index,
            name: pcfg.name.clone(),
            reason,
        };
        match plugin(index, &pcfg.name)? {
            Plugin::NodeResourcesFit => {
                if let Some(s) = args.get("scoringStrategy") {
                    p.fit_strategy = scoring_strategy(s).map_err(bad)?;
                }
            }
            Plugin::InterPodAffinity => {
                if let Some(w) = args.get("hardPodAffinityWeight") {
                    let w = w
                        .as_i64()
                        .filter(|w| (0..=100).contains(w))
                        .ok_or_else(|| {
                            bad("hardPodAffinityWeight: not in valid range [0-100]".into())
                        })?;
                    p.hard_pod_affinity_weight = w;
                }
            }
            Plugin::PodTopologySpread => {
                p.spread_defaults = spread_defaults(&args).map_err(bad)?;
            }
            _ => {}
        }
    }
    Ok(p)
}

/// `PodTopologySpreadArgs`: `defaultingType` System (kube-scheduler's
/// built-in constraints) or List (`defaultConstraints`, without selectors).
fn spread_defaults(args: &Value) -> Result<SpreadDefaults, String> {
    let listed: Vec<TopologySpreadConstraint> = match args.get("defaultConstraints") {
        Some(v) => {
            serde_json::from_value(v.clone()).map_err(|e| format!("defaultConstraints: {e}"))?
        }
        None => Vec::new(),
    };
    match args
        .get("defaultingType")
        .and_then(Value::as_str)
        .unwrap_or("System")
    {
        "System" if !listed.is_empty() => {
            Err("defaultingType: Invalid value: \"System\": when .defaultConstraints are not empty must be \"List\"".into())
        }
        "System" => Ok(SpreadDefaults::default()),
        "List" => {
            let mut seen = Vec::new();
            for (i, c) in listed.iter().enumerate() {
                let at = format!("defaultConstraints[{i}]");
                if c.max_skew <= 0 {
                    return Err(format!("{at}.maxSkew: Invalid value: {}: must be greater than zero", c.max_skew));
                }
                if c.topology_key.is_empty() {
                    return Err(format!("{at}.topologyKey: Required value: can not be empty"));
                }
                if !matches!(c.when_unsatisfiable.as_str(), "DoNotSchedule" | "ScheduleAnyway") {
                    return Err(format!("{at}.whenUnsatisfiable: Unsupported value: {:?}: supported values: \"DoNotSchedule\", \"ScheduleAnyway\"", c.when_unsatisfiable));
                }
                if c.label_selector.is_some() {
                    return Err(format!("{at}.labelSelector: Forbidden: constraint must not define a selector, as they deduced for each pod"));
                }
                let pair = (c.topology_key.as_str(), c.when_unsatisfiable.as_str());
                if seen.contains(&pair) {
                    return Err(format!("{at}.{{topologyKey, whenUnsatisfiable}}: Duplicate value: {{{:?}, {:?}}}", pair.0, pair.1));
                }
                seen.push(pair);
            }
            Ok(SpreadDefaults { constraints: listed, system: false })
        }
        other => Err(format!(
            "defaultingType: Unsupported value: {other:?}: supported values: \"List\", \"System\""
        )),
    }
}

fn scoring_strategy(v: &Value) -> Result<ScoringStrategy, String> {
    let mut s = ScoringStrategy::default();
    if let Some(resources) = v.get("resources").and_then(Value::as_array) {
        s.resources = resources
            .iter()
            .map(|r| {
                let name = r["name"].as_str().ok_or("resources[].name is required")?;
                Ok((name.to_owned(), r["weight"].as_i64().unwrap_or(1)))
            })
            .collect::<Result<_, String>>()?;
    }
    s.kind = match v
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("LeastAllocated")
    {
        "LeastAllocated" => StrategyKind::LeastAllocated,
        "MostAllocated" => StrategyKind::MostAllocated,
        "RequestedToCapacityRatio" => {
            let shape = v["requestedToCapacityRatio"]["shape"]
                .as_array()
                .ok_or("requestedToCapacityRatio.shape is required")?;
            let mut points: Vec<(i64, i64)> = shape
                .iter()
                .map(|p| {
                    (
                        p["utilization"].as_i64().unwrap_or(0),
                        p["score"].as_i64().unwrap_or(0),
                    )
                })
                .collect();
            if points.is_empty() {
                return Err("requestedToCapacityRatio.shape: Required value".into());
            }
            points.sort();
            StrategyKind::RequestedToCapacityRatio(points)
        }
        other => {
            return Err(format!(
                "scoringStrategy.type: Unsupported value: {other:?}"
            ));
        }
    };
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_file_means_one_default_profile_with_leader_election() {
        let s = SchedulerSettings::default();
        assert_eq!(s.profiles.len(), 1);
        assert_eq!(s.profiles[0], Profile::default_named("default-scheduler"));
        assert!(s.leader_elect);
        assert_eq!(s.lease_name, "kube-scheduler");
        assert_eq!(s.initial_backoff, Duration::from_secs(1));
    }

    #[test]
    fn profiles_enable_disable_and_weigh_plugins() {
        let cfg = KubeSchedulerConfiguration::from_yaml(
            r#"
apiVersion: kubescheduler.config.k8s.io/v1
kind: KubeSchedulerConfiguration
leaderElection:
  leaderElect: false
  resourceName: my-scheduler
profiles:
- schedulerName: default-scheduler
- schedulerName: no-scoring-scheduler
  plugins:
    preScore:
      disabled:
      - name: '*'
    score:
      disabled:
      - name: '*'
- schedulerName: bin-packer
  plugins:
    filter:
      disabled:
      - name: TaintToleration
    score:
      enabled:
      - name: NodeResourcesFit
        weight: 5
    postFilter:
      disabled:
      - name: DefaultPreemption
  pluginConfig:
  - name: NodeResourcesFit
    args:
      scoringStrategy:
        type: MostAllocated
        resources:
        - name: cpu
          weight: 2
"#,
        )
        .unwrap();
        let s = cfg.resolve().unwrap();
        assert!(!s.leader_elect);
        assert_eq!(s.lease_name, "my-scheduler");
        assert_eq!(s.profiles.len(), 3);
        assert!(s.profile("no-scoring-scheduler").unwrap().scores.is_empty());
        let bp = s.profile("bin-packer").unwrap();
        assert!(!bp.filters.contains(&Plugin::TaintToleration));
        assert!(bp.scores.contains(&(Plugin::NodeResourcesFit, 5)));
        assert!(!bp.preemption);
        assert_eq!(bp.fit_strategy.kind, StrategyKind::MostAllocated);
        assert_eq!(bp.fit_strategy.resources, vec![("cpu".to_string(), 2)]);
    }

    #[test]
    fn topology_spread_defaults_are_the_systems_or_listed() {
        let resolve = |args: &str| {
            KubeSchedulerConfiguration::from_yaml(&format!(
                "apiVersion: kubescheduler.config.k8s.io/v1\nkind: KubeSchedulerConfiguration\nprofiles:\n- pluginConfig:\n  - name: PodTopologySpread\n    args:\n{args}"
            ))
            .unwrap()
            .resolve()
        };
        let system = SchedulerSettings::default().profiles[0]
            .spread_defaults
            .clone();
        assert!(system.system);
        let keys: Vec<(&str, i32)> = system
            .constraints
            .iter()
            .map(|c| (c.topology_key.as_str(), c.max_skew))
            .collect();
        assert_eq!(
            keys,
            vec![
                ("kubernetes.io/hostname", 3),
                ("topology.kubernetes.io/zone", 5)
            ]
        );

        let listed = resolve("      defaultingType: List\n      defaultConstraints:\n      - maxSkew: 1\n        topologyKey: rack\n        whenUnsatisfiable: DoNotSchedule\n").unwrap();
        let d = &listed.profiles[0].spread_defaults;
        assert!(!d.system);
        assert_eq!(d.constraints.len(), 1);
        assert_eq!(d.constraints[0].topology_key, "rack");

        // List with nothing listed: no default spreading at all.
        let none = resolve("      defaultingType: List\n").unwrap();
        assert!(none.profiles[0].spread_defaults.constraints.is_empty());

        let err = resolve("      defaultConstraints:\n      - maxSkew: 1\n        topologyKey: rack\n        whenUnsatisfiable: DoNotSchedule\n").unwrap_err();
        assert_eq!(
            err.to_string(),
            "profiles[0].pluginConfig[PodTopologySpread].args: defaultingType: Invalid value: \"System\": when .defaultConstraints are not empty must be \"List\""
        );
        let err = resolve("      defaultingType: List\n      defaultConstraints:\n      - maxSkew: 1\n        topologyKey: rack\n        whenUnsatisfiable: ScheduleAnyway\n        labelSelector: {matchLabels: {app: web}}\n").unwrap_err();
        assert!(err.to_string().ends_with("defaultConstraints[0].labelSelector: Forbidden: constraint must not define a selector, as they deduced for each pod"), "{err}");
    }

    #[test]
    fn mistakes_are_named() {
        let unknown = KubeSchedulerConfiguration::from_yaml(
            "apiVersion: kubescheduler.config.k8s.io/v1\nkind: KubeSchedulerConfiguration\nprofiles:\n- plugins:\n    score:\n      enabled:\n      - name: NodeMagic\n",
        )
        .unwrap()
        .resolve()
        .unwrap_err();
        assert_eq!(
            unknown.to_string(),
            "profiles[0].plugins: plugin \"NodeMagic\" does not exist"
        );
        let dup = KubeSchedulerConfiguration::from_yaml(
            "apiVersion: kubescheduler.config.k8s.io/v1\nkind: KubeSchedulerConfiguration\nprofiles:\n- schedulerName: a\n- schedulerName: a\n",
        )
        .unwrap()
        .resolve()
        .unwrap_err();
        assert!(dup.to_string().contains("Duplicate value"));
        assert!(matches!(
            KubeSchedulerConfiguration::from_yaml("apiVersion: v1\nkind: Pod\n"),
            Err(ConfigError::Kind { .. })
        ));
        assert!(matches!(
            KubeSchedulerConfiguration::from_yaml(
                "apiVersion: kubescheduler.config.k8s.io/v1\nkind: KubeSchedulerConfiguration\nprofile: []\n"
            ),
            Err(ConfigError::Decode { .. })
        ));
    }
}
