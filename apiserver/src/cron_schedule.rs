//! CronJob schedules: the standard five-field cron syntax with the
//! `@hourly`-style macros and `@every <duration>` (robfig/cron's
//! `ParseStandard`, which
//! kube-apiserver validates with and the CronJob controller runs on),
//! evaluated in the CronJob's `timeZone` (the controller's own time zone
//! without one), and the controller's `mostRecentScheduleTime`: which
//! start times were missed since the last one.

use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};
use jiff::Timestamp;
use jiff::tz::TimeZone;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    #[error("cannot use TZ or CRON_TZ in schedule, use timeZone field instead")]
    TimeZoneInSchedule,
    #[error("{0}")]
    Unparseable(String),
    #[error("unknown time zone {0}")]
    TimeZone(String),
}

/// A parsed schedule in its time zone.
#[derive(Debug, Clone)]
pub struct Schedule {
    kind: Kind,
    tz: TimeZone,
}

#[derive(Debug, Clone)]
enum Kind {
    Cron(Cron),
    /// `@every <duration>` (robfig's `ConstantDelaySchedule`): whole
    /// seconds, at least one.
    Every(jiff::SignedDuration),
}

/// robfig's `Every`: the delay rounded down to whole seconds, at least one.
fn every(text: &str) -> Result<Kind, ScheduleError> {
    let d = kubelab_rules::duration::parse_go_duration(text).map_err(|e| {
        ScheduleError::Unparseable(format!("failed to parse duration @every {text}: {e}"))
    })?;
    let secs = d.as_secs().max(1);
    Ok(Kind::Every(jiff::SignedDuration::from_secs(secs as i64)))
}

/// The descriptors robfig/cron accepts, as five-field patterns.
fn expand_macro(s: &str) -> Option<&'static str> {
    Some(match s {
        "@yearly" | "@annually" => "0 0 1 1 *",
        "@monthly" => "0 0 1 * *",
        "@weekly" => "0 0 * * 0",
        "@daily" | "@midnight" => "0 0 * * *",
        "@hourly" => "0 * * * *",
        _ => return None,
    })
}

impl Schedule {
    pub fn parse(schedule: &str, time_zone: Option<&str>) -> Result<Self, ScheduleError> {
        let trimmed = schedule.trim();
        if trimmed.starts_with("TZ=") || trimmed.starts_with("CRON_TZ=") {
            return Err(ScheduleError::TimeZoneInSchedule);
        }
        let tz = match time_zone {
            None => TimeZone::system(),
            // `time.LoadLocation` would take "Local"; the API does not.
            Some(name) if name.eq_ignore_ascii_case("local") || name.is_empty() => {
                return Err(ScheduleError::TimeZone(name.to_owned()));
            }
            Some(name) => {
                TimeZone::get(name).map_err(|_| ScheduleError::TimeZone(name.to_owned()))?
            }
        };
        if let Some(text) = trimmed.strip_prefix("@every ") {
            return Ok(Self {
                kind: every(text)?,
                tz,
            });
        }
        let pattern = match trimmed.strip_prefix('@') {
            Some(_) => expand_macro(&trimmed.to_ascii_lowercase()).ok_or_else(|| {
                ScheduleError::Unparseable(format!("unrecognized descriptor: {trimmed}"))
            })?,
            None => trimmed,
        };
        let fields = pattern.split_whitespace().count();
        if fields != 5 {
            return Err(ScheduleError::Unparseable(format!(
                "expected exactly 5 fields, found {fields}: [{}]",
                pattern.split_whitespace().collect::<Vec<_>>().join(" ")
            )));
        }
        let cron = CronParser::builder()
            .seconds(Seconds::Disallowed)
            .year(Year::Disallowed)
            .build()
            .parse(pattern)
            .map_err(|e| ScheduleError::Unparseable(e.to_string()))?;
        Ok(Self {
            kind: Kind::Cron(cron),
            tz,
        })
    }

    /// The first start time strictly after `t` (robfig's `Next`; for
    /// `@every`, the delay after `t`'s whole second).
    pub fn next_after(&self, t: Timestamp) -> Option<Timestamp> {
        match &self.kind {
            Kind::Cron(cron) => cron
                .find_next_occurrence(&t.to_zoned(self.tz.clone()), false)
                .ok()
                .map(|z| z.timestamp()),
            Kind::Every(delay) => Timestamp::from_second(t.as_second())
                .ok()?
                .checked_add(*delay)
                .ok(),
        }
    }

    /// The last start time at or before `t`, walking from `from` (the
    /// start times of `@every` are `from` plus whole delays).
    pub fn at_or_before(&self, from: Timestamp, t: Timestamp) -> Option<Timestamp> {
        match &self.kind {
            Kind::Cron(cron) => cron
                .find_previous_occurrence(&t.to_zoned(self.tz.clone()), true)
                .ok()
                .map(|z| z.timestamp()),
            Kind::Every(delay) => {
                let step = delay.as_secs();
                let from = from.as_second();
                let n = (t.as_second() - from).div_euclid(step);
                (n > 0).then(|| Timestamp::from_second(from + n * step).ok())?
            }
        }
    }
}

/// Missed start times are counted up to this many: past 100 the
/// controller warns (`TooManyMissedTimes`), the exact count does not matter.
pub const MISSED_COUNT_CAP: u32 = 101;

/// What `mostRecentScheduleTime` finds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScheduleState {
    /// The time missed start times are counted from.
    pub earliest: Timestamp,
    /// The latest start time not yet run (`None`: none is due).
    pub most_recent: Option<Timestamp>,
    /// How many start times were missed since `earliest` (capped).
    pub missed: u32,
}

/// `mostRecentScheduleTime`: counting from the last schedule (or the
/// creation), no earlier than `startingDeadlineSeconds` ago.
pub fn most_recent_schedule(
    schedule: &Schedule,
    created: Timestamp,
    last_scheduled: Option<Timestamp>,
    starting_deadline_seconds: Option<i64>,
    now: Timestamp,
) -> ScheduleState {
    let mut earliest = last_scheduled.unwrap_or(created);
    if let Some(deadline) = starting_deadline_seconds
        && let Ok(d) = now.checked_sub(jiff::SignedDuration::from_secs(deadline))
        && d > earliest
    {
        earliest = d;
    }
    let mut state = ScheduleState {
        earliest,
        most_recent: None,
        missed: 0,
    };
    let mut t = earliest;
    while state.missed < MISSED_COUNT_CAP {
        match schedule.next_after(t) {
            Some(n) if n <= now => {
                state.missed += 1;
                state.most_recent = Some(n);
                t = n;
            }
            _ => return state,
        }
    }
    // Too many to walk: the last one is still exact.
    state.most_recent = schedule.at_or_before(t, now).or(state.most_recent);
    state
}

/// How long until the next start time after `now` (plus the 100 ms
/// upstream adds so the controller wakes after it, not just before).
pub fn next_schedule_in(schedule: &Schedule, now: Timestamp) -> Option<std::time::Duration> {
    let next = schedule.next_after(now)?;
    let wait = next.duration_since(now).unsigned_abs();
    Some(wait + std::time::Duration::from_millis(100))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn a_day_no_month_has_never_comes_and_a_leap_day_does() {
        let feb31 = Schedule::parse("59 23 31 2 *", Some("UTC")).unwrap();
        assert_eq!(feb31.next_after(ts("2025-03-01T00:00:00Z")), None);
        let feb29 = Schedule::parse("0 0 29 2 *", Some("UTC")).unwrap();
        assert_eq!(
            feb29.next_after(ts("2025-03-01T00:00:00Z")),
            Some(ts("2028-02-29T00:00:00Z"))
        );
    }

    #[test]
    fn standard_syntax_and_macros() {
        let s = Schedule::parse("*/15 * * * *", Some("UTC")).unwrap();
        assert_eq!(
            s.next_after(ts("2025-03-01T10:07:30Z")),
            Some(ts("2025-03-01T10:15:00Z"))
        );
        // Strictly after: a start time is not its own next one.
        assert_eq!(
            s.next_after(ts("2025-03-01T10:15:00Z")),
            Some(ts("2025-03-01T10:30:00Z"))
        );
        let hourly = Schedule::parse("@hourly", Some("UTC")).unwrap();
        assert_eq!(
            hourly.next_after(ts("2025-03-01T10:07:00Z")),
            Some(ts("2025-03-01T11:00:00Z"))
        );
        let weekly = Schedule::parse("@weekly", Some("UTC")).unwrap();
        // 2025-03-01 is a Saturday: next Sunday midnight.
        assert_eq!(
            weekly.next_after(ts("2025-03-01T10:00:00Z")),
            Some(ts("2025-03-02T00:00:00Z"))
        );
        let names = Schedule::parse("0 9 * JAN-MAR MON-FRI", Some("UTC")).unwrap();
        assert_eq!(
            names.next_after(ts("2025-03-01T10:00:00Z")),
            Some(ts("2025-03-03T09:00:00Z"))
        );
        assert_eq!(
            Schedule::parse("* * * *", None).unwrap_err().to_string(),
            "expected exactly 5 fields, found 4: [* * * *]"
        );
        assert!(matches!(
            Schedule::parse("61 * * * *", None),
            Err(ScheduleError::Unparseable(_))
        ));
        assert!(matches!(
            Schedule::parse("@fortnightly", None),
            Err(ScheduleError::Unparseable(_))
        ));
        assert_eq!(
            Schedule::parse("CRON_TZ=UTC * * * * *", None).unwrap_err(),
            ScheduleError::TimeZoneInSchedule
        );
    }

    #[test]
    fn time_zones_move_the_start_times() {
        // 09:00 in New York is 14:00 UTC in winter, 13:00 UTC in summer.
        let s = Schedule::parse("0 9 * * *", Some("America/New_York")).unwrap();
        assert_eq!(
            s.next_after(ts("2025-01-15T12:00:00Z")),
            Some(ts("2025-01-15T14:00:00Z"))
        );
        assert_eq!(
            s.next_after(ts("2025-07-15T12:00:00Z")),
            Some(ts("2025-07-15T13:00:00Z"))
        );
        let tokyo = Schedule::parse("@daily", Some("Asia/Tokyo")).unwrap();
        assert_eq!(
            tokyo.next_after(ts("2025-01-15T12:00:00Z")),
            Some(ts("2025-01-15T15:00:00Z"))
        );
        assert_eq!(
            Schedule::parse("* * * * *", Some("Mars/Olympus")).unwrap_err(),
            ScheduleError::TimeZone("Mars/Olympus".into())
        );
        assert!(Schedule::parse("* * * * *", Some("Local")).is_err());
    }

    #[test]
    fn missed_start_times_are_counted_from_the_last_schedule() {
        let s = Schedule::parse("*/1 * * * *", Some("UTC")).unwrap();
        let created = ts("2025-03-01T10:00:30Z");
        // Nothing due before the first start time.
        let st = most_recent_schedule(&s, created, None, None, ts("2025-03-01T10:00:50Z"));
        assert_eq!((st.most_recent, st.missed), (None, 0));
        // One due.
        let st = most_recent_schedule(&s, created, None, None, ts("2025-03-01T10:01:05Z"));
        assert_eq!(
            (st.most_recent, st.missed),
            (Some(ts("2025-03-01T10:01:00Z")), 1)
        );
        // Three missed since the last schedule: the latest one runs.
        let st = most_recent_schedule(
            &s,
            created,
            Some(ts("2025-03-01T10:01:00Z")),
            None,
            ts("2025-03-01T10:04:10Z"),
        );
        assert_eq!(
            (st.most_recent, st.missed),
            (Some(ts("2025-03-01T10:04:00Z")), 3)
        );
        // A starting deadline only looks that far back.
        let st = most_recent_schedule(
            &s,
            created,
            Some(ts("2025-03-01T10:01:00Z")),
            Some(90),
            ts("2025-03-01T10:04:10Z"),
        );
        assert_eq!(st.earliest, ts("2025-03-01T10:02:40Z"));
        assert_eq!(st.missed, 2);
        // A controller down for a day: the count stops at the cap, the
        // most recent time is still right.
        let st = most_recent_schedule(&s, created, None, None, ts("2025-03-02T10:00:10Z"));
        assert_eq!(st.missed, MISSED_COUNT_CAP);
        assert_eq!(st.most_recent, Some(ts("2025-03-02T10:00:00Z")));
        assert_eq!(
            next_schedule_in(&s, ts("2025-03-01T10:00:30Z")),
            Some(std::time::Duration::from_millis(30_100))
        );
    }

    #[test]
    fn every_is_a_constant_delay_in_whole_seconds() {
        let s = Schedule::parse("@every 90s", Some("UTC")).unwrap();
        assert_eq!(
            s.next_after(ts("2026-01-01T00:00:00.700Z")),
            Some(ts("2026-01-01T00:01:30Z"))
        );
        let s = Schedule::parse("@every 1m30s", None).unwrap();
        assert_eq!(
            s.next_after(ts("2026-01-01T10:00:00Z")),
            Some(ts("2026-01-01T10:01:30Z"))
        );
        // Less than a second is one second.
        let s = Schedule::parse("@every 10ms", Some("UTC")).unwrap();
        assert_eq!(
            s.next_after(ts("2026-01-01T00:00:00Z")),
            Some(ts("2026-01-01T00:00:01Z"))
        );
        // Missed start times count in delays from the last one.
        let s = Schedule::parse("@every 1m", Some("UTC")).unwrap();
        let state = most_recent_schedule(
            &s,
            ts("2026-01-01T00:00:00Z"),
            None,
            None,
            ts("2026-01-01T00:03:10Z"),
        );
        assert_eq!(state.missed, 3);
        assert_eq!(state.most_recent, Some(ts("2026-01-01T00:03:00Z")));
        let many = most_recent_schedule(
            &s,
            ts("2026-01-01T00:00:00Z"),
            None,
            None,
            ts("2026-01-02T00:00:30Z"),
        );
        assert_eq!(many.missed, MISSED_COUNT_CAP);
        assert_eq!(many.most_recent, Some(ts("2026-01-02T00:00:00Z")));
        assert_eq!(
            Schedule::parse("@every soon", Some("UTC")).unwrap_err(),
            ScheduleError::Unparseable(
                "failed to parse duration @every soon: time: invalid duration \"soon\"".into()
            )
        );
    }
}
