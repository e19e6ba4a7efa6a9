//! What the HPA does with a replica recommendation before it scales
//! (`normalizeDesiredReplicas` and `…WithBehaviors`): stabilization
//! windows (the highest recommendation of the last 5 minutes wins a scale
//! down), the scaling policies' rate limits (or, without `behavior`, at
//! most double or +4), and min/max. Each step names the condition reason
//! upstream reports. Pure over the autoscaler's remembered history.

use k8s_openapi::api::autoscaling::v2::HPAScalingRules;

use crate::kinds::autoscaling::{scale_down_rules, scale_up_rules};

/// `--horizontal-pod-autoscaler-downscale-stabilization`.
pub const DOWNSCALE_STABILIZATION_SECS: i64 = 5 * 60;

/// A recommendation or a scale event, at a time (seconds).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Timed {
    pub at: i64,
    pub value: i32,
}

/// One autoscaler's memory between syncs.
#[derive(Debug, Clone, Default)]
pub struct History {
    pub recommendations: Vec<Timed>,
    /// Replicas added (scale ups) and removed (scale downs), per event.
    pub scale_ups: Vec<Timed>,
    pub scale_downs: Vec<Timed>,
}

/// A condition to set: reason and message.
pub type Reason = (&'static str, &'static str);

const READY_FOR_NEW_SCALE: Reason = ("ReadyForNewScale", "recommended size matches current size");
const SCALE_DOWN_STABILIZED: Reason = (
    "ScaleDownStabilized",
    "recent recommendations were higher than current one, applying the highest recent recommendation",
);
const WITHIN_RANGE: Reason = (
    "DesiredWithinRange",
    "the desired count is within the acceptable range",
);
const TOO_FEW: Reason = (
    "TooFewReplicas",
    "the desired replica count is less than the minimum replica count",
);
const TOO_MANY: Reason = (
    "TooManyReplicas",
    "the desired replica count is more than the maximum replica count",
);
const SCALE_UP_LIMIT: Reason = (
    "ScaleUpLimit",
    "the desired replica count is increasing faster than the maximum scale rate",
);
const SCALE_DOWN_LIMIT: Reason = (
    "ScaleDownLimit",
    "the desired replica count is decreasing faster than the maximum scale rate",
);

/// The normalized count and the AbleToScale and ScalingLimited
/// conditions' reasons (ScalingLimited is True when the limit changed the
/// stabilized count).
#[derive(Debug, Clone, PartialEq)]
pub struct Normalized {
    pub replicas: i32,
    pub able_to_scale: Reason,
    pub scaling_limited: (bool, Reason),
}

/// The inputs of one normalization.
#[derive(Debug, Clone)]
pub struct Proposal {
    pub current: i32,
    pub desired: i32,
    pub min: i32,
    pub max: i32,
    pub now: i64,
}

/// `normalizeDesiredReplicas`: no `behavior`; the highest recommendation
/// within the downscale window, then at most max(2 × current, 4).
pub fn normalize(p: &Proposal, history: &mut History, window_secs: i64) -> Normalized {
    let cutoff = p.now - window_secs;
    history.recommendations.retain(|r| r.at > cutoff);
    let stabilized = history
        .recommendations
        .iter()
        .map(|r| r.value)
        .fold(p.desired, i32::max);
    history.recommendations.push(Timed {
        at: p.now,
        value: p.desired,
    });
    let able = if stabilized != p.desired {
        SCALE_DOWN_STABILIZED
    } else {
        READY_FOR_NEW_SCALE
    };
    let scale_up_limit = (2 * p.current).max(4);
    let (allowed_max, max_reason) = if p.max > scale_up_limit {
        (scale_up_limit, SCALE_UP_LIMIT)
    } else {
        (p.max, TOO_MANY)
    };
    let (replicas, reason) = if stabilized < p.min {
        (p.min, TOO_FEW)
    } else if stabilized > allowed_max {
        (allowed_max, max_reason)
    } else {
        (stabilized, WITHIN_RANGE)
    };
    Normalized {
        replicas,
        able_to_scale: able,
        scaling_limited: (replicas != stabilized, reason),
    }
}

fn change_in_period(events: &[Timed], period: i32, now: i64) -> i32 {
    let cutoff = now - i64::from(period);
    events
        .iter()
        .filter(|e| e.at > cutoff)
        .map(|e| e.value)
        .sum()
}

/// `calculateScaleUpLimitWithScalingRules`.
fn scale_up_limit(current: i32, history: &History, rules: &HPAScalingRules, now: i64) -> i32 {
    let select = rules.select_policy.as_deref().unwrap_or("Max");
    if select == "Disabled" {
        return current;
    }
    let proposals = rules.policies.iter().flatten().map(|policy| {
        let start = current - change_in_period(&history.scale_ups, policy.period_seconds, now)
            + change_in_period(&history.scale_downs, policy.period_seconds, now);
        if policy.type_ == "Pods" {
            start + policy.value
        } else {
            (f64::from(start) * (1.0 + f64::from(policy.value) / 100.0)).ceil() as i32
        }
    });
    if select == "Min" {
        proposals.min().unwrap_or(i32::MAX)
    } else {
        proposals.max().unwrap_or(i32::MIN)
    }
}

/// `calculateScaleDownLimitWithBehaviors`: `Max` picks the policy that
/// removes the most, that is the lowest limit.
fn scale_down_limit(current: i32, history: &History, rules: &HPAScalingRules, now: i64) -> i32 {
    let select = rules.select_policy.as_deref().unwrap_or("Max");
    if select == "Disabled" {
        return current;
    }
    let proposals = rules.policies.iter().flatten().map(|policy| {
        let start = current - change_in_period(&history.scale_ups, policy.period_seconds, now)
            + change_in_period(&history.scale_downs, policy.period_seconds, now);
        if policy.type_ == "Pods" {
            start - policy.value
        } else {
            (f64::from(start) * (1.0 - f64::from(policy.value) / 100.0)) as i32
        }
    });
    if select == "Min" {
        proposals.max().unwrap_or(i32::MIN)
    } else {
        proposals.min().unwrap_or(i32::MAX)
    }
}

/// `normalizeDesiredReplicasWithBehaviors`: the up and down
/// stabilization windows bound the recommendation, then the policies
/// limit the rate, then min/max.
pub fn normalize_with_behavior(
    p: &Proposal,
    history: &mut History,
    up: Option<&HPAScalingRules>,
    down: Option<&HPAScalingRules>,
    default_down_window_secs: i64,
) -> Normalized {
    let up = scale_up_rules(up.cloned());
    let down = scale_down_rules(down.cloned());
    let up_window = i64::from(up.stabilization_window_seconds.unwrap_or(0));
    let down_window = down
        .stabilization_window_seconds
        .map_or(default_down_window_secs, i64::from);
    let (up_cutoff, down_cutoff) = (p.now - up_window, p.now - down_window);
    let (mut up_bound, mut down_bound) = (p.desired, p.desired);
    for r in &history.recommendations {
        if r.at > up_cutoff {
            up_bound = up_bound.min(r.value);
        }
        if r.at > down_cutoff {
            down_bound = down_bound.max(r.value);
        }
    }
    let stabilized = p.current.max(up_bound).min(down_bound);
    let keep = up_window.max(down_window);
    history.recommendations.retain(|r| r.at > p.now - keep);
    history.recommendations.push(Timed {
        at: p.now,
        value: p.desired,
    });
    let able = if stabilized != p.desired {
        SCALE_DOWN_STABILIZED
    } else {
        READY_FOR_NEW_SCALE
    };
    let (replicas, reason) = if stabilized > p.current {
        let limit = scale_up_limit(p.current, history, &up, p.now).max(p.current);
        let (allowed, why) = if p.max > limit {
            (limit, SCALE_UP_LIMIT)
        } else {
            (p.max, TOO_MANY)
        };
        if stabilized > allowed {
            (allowed, why)
        } else {
            (stabilized, WITHIN_RANGE)
        }
    } else if stabilized < p.current {
        let limit = scale_down_limit(p.current, history, &down, p.now).min(p.current);
        let (allowed, why) = if p.min < limit {
            (limit, SCALE_DOWN_LIMIT)
        } else {
            (p.min, TOO_FEW)
        };
        if stabilized < allowed {
            (allowed, why)
        } else {
            (stabilized, WITHIN_RANGE)
        }
    } else {
        (stabilized, WITHIN_RANGE)
    };
    Normalized {
        replicas,
        able_to_scale: able,
        scaling_limited: (replicas != stabilized, reason),
    }
}

/// `storeScaleEvent`: remembers a rescale for the policies' periods
/// (events older than the longest period are dropped).
pub fn record_scale(history: &mut History, from: i32, to: i32, now: i64, longest_period: i64) {
    let cutoff = now - longest_period;
    history.scale_ups.retain(|e| e.at > cutoff);
    history.scale_downs.retain(|e| e.at > cutoff);
    if to > from {
        history.scale_ups.push(Timed {
            at: now,
            value: to - from,
        });
    } else if to < from {
        history.scale_downs.push(Timed {
            at: now,
            value: from - to,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::autoscaling::v2::HPAScalingPolicy;

    fn proposal(current: i32, desired: i32, now: i64) -> Proposal {
        Proposal {
            current,
            desired,
            min: 1,
            max: 10,
            now,
        }
    }

    #[test]
    fn a_scale_down_waits_for_the_highest_recommendation_of_the_window() {
        let mut h = History::default();
        let n = normalize(&proposal(1, 3, 0), &mut h, DOWNSCALE_STABILIZATION_SECS);
        assert_eq!(n.replicas, 3);
        assert_eq!(n.able_to_scale.0, "ReadyForNewScale");
        // Load gone a minute later: 3 stays, stabilized.
        let n = normalize(&proposal(3, 1, 60), &mut h, DOWNSCALE_STABILIZATION_SECS);
        assert_eq!(n.replicas, 3);
        assert_eq!(n.able_to_scale.0, "ScaleDownStabilized");
        // Past the 300 s window the low recommendation wins.
        let n = normalize(&proposal(3, 1, 301), &mut h, DOWNSCALE_STABILIZATION_SECS);
        assert_eq!(n.replicas, 1);
    }

    #[test]
    fn without_behavior_a_scale_up_is_at_most_double_or_four_and_at_most_max() {
        let mut h = History::default();
        let n = normalize(&proposal(1, 9, 0), &mut h, 0);
        assert_eq!(n.replicas, 4);
        assert_eq!(n.scaling_limited, (true, SCALE_UP_LIMIT));
        let n = normalize(&proposal(8, 30, 10), &mut h, 0);
        assert_eq!(n.replicas, 10);
        assert_eq!(n.scaling_limited, (true, TOO_MANY));
        let n = normalize(
            &Proposal {
                min: 2,
                ..proposal(3, 1, 20)
            },
            &mut History::default(),
            0,
        );
        assert_eq!((n.replicas, n.scaling_limited.1.0), (2, "TooFewReplicas"));
    }

    #[test]
    fn behavior_policies_limit_the_rate_and_the_window_is_the_hpas() {
        let mut h = History::default();
        let down = HPAScalingRules {
            stabilization_window_seconds: Some(10),
            select_policy: None,
            tolerance: None,
            policies: Some(vec![HPAScalingPolicy {
                type_: "Pods".into(),
                value: 1,
                period_seconds: 60,
            }]),
        };
        // Defaults up: +4 pods or +100% per 15 s, the larger.
        let n = normalize_with_behavior(&proposal(2, 9, 0), &mut h, None, Some(&down), 300);
        assert_eq!(n.replicas, 6);
        assert_eq!(n.scaling_limited.1.0, "ScaleUpLimit");
        record_scale(&mut h, 2, 6, 0, 60);
        // Within 15 s of that scale up, the period started at 2 again.
        let n = normalize_with_behavior(&proposal(6, 9, 5), &mut h, None, Some(&down), 300);
        assert_eq!(n.replicas, 6);
        // Down: the 10 s window holds 9 until it passes.
        let n = normalize_with_behavior(&proposal(6, 1, 12), &mut h, None, Some(&down), 300);
        assert_eq!(n.replicas, 6);
        assert_eq!(n.able_to_scale.0, "ScaleDownStabilized");
        // Then one pod a minute, counted from the replicas at the period's start.
        let n = normalize_with_behavior(&proposal(6, 1, 70), &mut h, None, Some(&down), 300);
        assert_eq!(n.replicas, 5);
        assert_eq!(n.scaling_limited.1.0, "ScaleDownLimit");
        record_scale(&mut h, 6, 5, 70, 60);
        let n = normalize_with_behavior(&proposal(5, 1, 80), &mut h, None, Some(&down), 300);
        assert_eq!(n.replicas, 5);
    }
}
