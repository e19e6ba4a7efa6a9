//! `meta.k8s.io/v1` Table output, the server-side printing kubectl shows.
//! Column sets and cell formats follow `pkg/printers/internalversion`.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde_json::{Value, json};

#[derive(Debug, Clone)]
pub struct Column {
    pub name: &'static str,
    pub type_: &'static str,
    pub format: &'static str,
    pub description: &'static str,
    /// 0: always shown; 1: only with `-o wide`.
    pub priority: i32,
}

pub const fn col(name: &'static str, type_: &'static str, priority: i32) -> Column {
    Column {
        name,
        type_,
        format: "",
        description: "",
        priority,
    }
}

pub const fn name_col() -> Column {
    Column {
        name: "Name",
        type_: "string",
        format: "name",
        description: "Name must be unique within a namespace.",
        priority: 0,
    }
}

pub const fn age_col() -> Column {
    col("Age", "string", 0)
}

impl Column {
    pub fn to_json(&self) -> Value {
        json!({"name": self.name, "type": self.type_, "format": self.format, "description": self.description, "priority": self.priority})
    }
}

/// `duration.HumanDuration`: the short ages kubectl prints (`5s`, `3m20s`, `4h`, `2d`).
pub fn human_duration(secs: i64) -> String {
    if secs < -1 {
        return "<invalid>".into();
    }
    if secs < 0 {
        return "0s".into();
    }
    let (minutes, hours) = (secs / 60, secs / 3600);
    if secs < 120 {
        format!("{secs}s")
    } else if minutes < 10 {
        let s = secs % 60;
        if s == 0 {
            format!("{minutes}m")
        } else {
            format!("{minutes}m{s}s")
        }
    } else if minutes < 180 {
        format!("{minutes}m")
    } else if hours < 8 {
        let m = minutes % 60;
        if m == 0 {
            format!("{hours}h")
        } else {
            format!("{hours}h{m}m")
        }
    } else if hours < 48 {
        format!("{hours}h")
    } else if hours < 24 * 8 {
        let h = hours % 24;
        if h == 0 {
            format!("{}d", hours / 24)
        } else {
            format!("{}d{h}h", hours / 24)
        }
    } else if hours < 24 * 365 * 2 {
        format!("{}d", hours / 24)
    } else if hours < 24 * 365 * 8 {
        let d = (hours / 24) % 365;
        if d == 0 {
            format!("{}y", hours / 24 / 365)
        } else {
            format!("{}y{d}d", hours / 24 / 365)
        }
    } else {
        format!("{}y", hours / 24 / 365)
    }
}

/// `translateTimestampSince`: `<unknown>` for a missing time.
pub fn age(t: Option<&Time>, now: jiff::Timestamp) -> Value {
    match t {
        Some(t) => human_duration(now.as_second() - t.0.as_second()).into(),
        None => "<unknown>".into(),
    }
}

pub fn none_if_empty(s: impl Into<String>) -> Value {
    let s = s.into();
    if s.is_empty() {
        "<none>".into()
    } else {
        s.into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_durations_match_kubectl() {
        for (secs, want) in [
            (0, "0s"),
            (59, "59s"),
            (119, "119s"),
            (120, "2m"),
            (200, "3m20s"),
            (600, "10m"),
            (3 * 3600, "3h"),
            (3 * 3600 + 60 * 5, "3h5m"),
            (47 * 3600, "47h"),
            (50 * 3600, "2d2h"),
            (30 * 86400, "30d"),
            (3 * 365 * 86400, "3y"),
        ] {
            assert_eq!(human_duration(secs), want, "{secs}");
        }
    }
}
