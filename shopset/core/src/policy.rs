//! The promotion policy of a Tier (`spec.promotion`): a soak time, allow and deny windows and a
//! hold. [`evaluate`] decides whether a promotion into the tier may start now, and if not, why and
//! when it could. The controller, `shopctl promote` and `shopctl status` call it with the same
//! input; docs/runbook.md says how a person decides the same by hand.
//!
//! Pure: the clock is an argument, as is the moment the cluster first said the `from` tier was
//! Synced and Healthy at the promoted commit.

use std::fmt;

use jiff::ToSpan;
use jiff::civil::{Date, DateTime};
use jiff::tz::TimeZone;
pub use jiff::{SignedDuration, Timestamp};

use crate::api::{Hold, Tier, WindowKind};
use crate::duration::parse_duration;
use crate::rules;

/// How far ahead a window's next start is looked for: long enough for `0 0 29 2 *` (every leap
/// year), short enough to stay cheap.
const HORIZON_DAYS: i64 = 5 * 366;

/// A Tier's promotion policy that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Tier/{tier}: {field}: {problem} (got {value:?}); fix: {fix}")]
pub struct PolicyError {
    pub tier: String,
    pub field: String,
    pub value: String,
    pub problem: String,
    pub fix: String,
}

/// The days and times a 5-field cron expression names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    minutes: u64,
    hours: u32,
    days: u32,
    months: u16,
    weekdays: u8,
    /// Whether day-of-month and day-of-week are restricted (not `*`): when both are, a day
    /// matches either (as cron does).
    days_restricted: bool,
    weekdays_restricted: bool,
}

const MONTHS: [&str; 12] = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"];
const WEEKDAYS: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];

impl Schedule {
    /// Reads a 5-field cron expression, as [`rules::CRON_REGEX`] describes it. A range whose end
    /// is below its start wraps around (`FRI-MON`).
    pub fn parse(text: &str) -> Option<Schedule> {
        if !rules::matches(rules::CRON_REGEX, text) {
            return None;
        }
        let fields: Vec<&str> = text.split_whitespace().collect();
        let [minute, hour, day, month, weekday] = fields.as_slice() else {
            return None;
        };
        let weekdays = field(weekday, 0, 7, &WEEKDAYS)?;
        // 7 is Sunday, as 0.
        let weekdays = ((weekdays | (weekdays >> 7)) & 0x7f) as u8;
        Some(Schedule {
            minutes: field(minute, 0, 59, &[])?,
            hours: field(hour, 0, 23, &[])? as u32,
            days: field(day, 1, 31, &[])? as u32,
            months: field(month, 1, 12, &MONTHS)? as u16,
            weekdays,
            days_restricted: !day.starts_with('*'),
            weekdays_restricted: !weekday.starts_with('*'),
        })
    }

    fn on(&self, date: Date) -> bool {
        if self.months & (1 << date.month()) == 0 {
            return false;
        }
        let day = self.days & (1 << date.day()) != 0;
        let weekday = self.weekdays & (1 << date.weekday().to_sunday_zero_offset()) != 0;
        match (self.days_restricted, self.weekdays_restricted) {
            (true, true) => day || weekday,
            (true, false) => day,
            (false, true) => weekday,
            (false, false) => true,
        }
    }

    /// The local times of `date` it names, in order.
    fn times(&self, date: Date) -> impl Iterator<Item = DateTime> + '_ {
        let on = self.on(date);
        (0..24i8).filter(move |h| on && self.hours & (1 << h) != 0).flat_map(move |h| {
            (0..60i8).filter(move |m| self.minutes & (1 << m) != 0).map(move |m| date.at(h, m, 0, 0))
        })
    }
}

/// A bit set of the values one cron field names; `names` are the values' names from `low` on.
fn field(text: &str, low: u8, high: u8, names: &[&str]) -> Option<u64> {
    let value = |v: &str| -> Option<u8> {
        let lower = v.to_ascii_lowercase();
        match names.iter().position(|n| *n == lower) {
            Some(i) => Some(i as u8 + if names.len() == 12 { 1 } else { 0 }),
            None => v.parse().ok().filter(|n| (low..=high).contains(n)),
        }
    };
    let mut set = 0u64;
    for item in text.split(',') {
        let (range, step) = match item.split_once('/') {
            Some((range, step)) => (range, step.parse::<u8>().ok().filter(|s| *s > 0)?),
            None => (item, 1),
        };
        let (from, to) = match range {
            "*" => (low, high),
            _ => match range.split_once('-') {
                Some((a, b)) => (value(a)?, value(b)?),
                // `5/15`: from 5 on, every 15.
                None if item.contains('/') => (value(range)?, high),
                None => (value(range)?, value(range)?),
            },
        };
        let mut v = from;
        let mut taken = 0u32;
        loop {
            if taken.is_multiple_of(step as u32) {
                set |= 1 << v;
            }
            taken += 1;
            if v == to {
                break;
            }
            // A wrapping range (`FRI-MON`) goes on from the lowest value.
            v = if v >= high { low } else { v + 1 };
        }
    }
    Some(set)
}

/// A promotion window, read.
#[derive(Debug, Clone)]
pub struct Window {
    pub kind: WindowKind,
    pub schedule: Schedule,
    pub duration: SignedDuration,
    pub zone: TimeZone,
    pub zone_name: String,
    /// `window 'weekend'`, or the schedule when the window has no name.
    pub label: String,
}

impl Window {
    /// The end of the latest of its periods that holds `at`, if one does.
    pub fn open_until(&self, at: Timestamp) -> Option<Timestamp> {
        let local = at.to_zoned(self.zone.clone()).date();
        // Starts up to `duration` (plus a day for offsets) before `at` can still hold it.
        let back = self.duration.as_secs() / 86_400 + 2;
        let mut end = None;
        let mut date = local.checked_sub(back.days()).ok()?;
        while date <= local {
            for start in self.schedule.times(date) {
                let Some(start) = self.start(start) else { continue };
                if let Ok(until) = start.checked_add(self.duration)
                    && start <= at
                    && at < until
                {
                    end = end.max(Some(until));
                }
            }
            date = date.tomorrow().ok()?;
        }
        end
    }

    /// Its first start at or after `at`, within a few years.
    pub fn next_start(&self, at: Timestamp) -> Option<Timestamp> {
        let mut date = at.to_zoned(self.zone.clone()).date().yesterday().ok()?;
        for _ in 0..HORIZON_DAYS {
            if let Some(start) = self.schedule.times(date).filter_map(|t| self.start(t)).find(|s| *s >= at) {
                return Some(start);
            }
            date = date.tomorrow().ok()?;
        }
        None
    }

    /// A local start time as an instant. A time that a DST change skips starts when the clocks
    /// have moved on (02:30 is 03:30); one that happens twice starts the first time (as cron does).
    fn start(&self, local: DateTime) -> Option<Timestamp> {
        self.zone.to_ambiguous_zoned(local).compatible().ok().map(|z| z.timestamp())
    }

    /// `at` as a person in the window's zone reads it: `Mon 09:00 Europe/Berlin`, with the date
    /// when it is not within the coming week of `now`.
    pub fn show(&self, at: Timestamp, now: Timestamp) -> String {
        let zoned = at.to_zoned(self.zone.clone());
        let format =
            if at.duration_since(now) < SignedDuration::from_hours(6 * 24) { "%a %H:%M" } else { "%a %Y-%m-%d %H:%M" };
        format!("{} {}", zoned.strftime(format), self.zone_name)
    }
}

/// A Tier's promotion policy, read.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    /// The Tier promoted into.
    pub tier: String,
    /// The Tier promoted from.
    pub from: String,
    pub soak: SignedDuration,
    pub windows: Vec<Window>,
    pub hold: Option<Hold>,
}

impl Policy {
    /// The policy of promotions into `tier`; `None` for a tier promoted from none.
    ///
    /// # Errors
    /// A field the CRD's rules would refuse (the controller may see one written before them).
    pub fn of(tier: &Tier) -> Result<Option<Policy>, PolicyError> {
        let name = kube::ResourceExt::name_any(tier);
        let Some(p) = &tier.spec.promotion else { return Ok(None) };
        let error = |field: String, value: &str, problem: &str, fix: &str| PolicyError {
            tier: name.clone(),
            field,
            value: value.to_string(),
            problem: problem.to_string(),
            fix: fix.to_string(),
        };
        let duration = |field: String, value: &str| {
            parse_duration(value).and_then(|d| SignedDuration::try_from(d).ok()).ok_or_else(|| {
                error(field, value, rules::DURATION[0].message, "write a duration such as `30m` or `2h`")
            })
        };
        let soak = match &p.soak {
            Some(soak) => duration("spec.promotion.soak".into(), soak)?,
            None => SignedDuration::ZERO,
        };
        let mut windows = Vec::new();
        for (i, w) in p.windows.iter().enumerate() {
            let at = |f: &str| format!("spec.promotion.windows[{i}].{f}");
            let schedule = Schedule::parse(&w.schedule).ok_or_else(|| {
                error(
                    at("schedule"),
                    &w.schedule,
                    rules::CRON_INVALID,
                    "write when the window opens, e.g. `0 18 * * FRI`",
                )
            })?;
            let zone = time_zone(&w.time_zone).ok_or_else(|| {
                error(at("timeZone"), &w.time_zone, rules::TIME_ZONE_INVALID, "name a zone of the IANA database")
            })?;
            let length = duration(at("duration"), &w.duration)?;
            if length.is_zero() {
                return Err(error(at("duration"), &w.duration, rules::WINDOW_TOO_SHORT, "write e.g. `1h`"));
            }
            let label = match &w.name {
                Some(n) => format!("window '{n}'"),
                None => format!("window '{}'", w.schedule),
            };
            windows.push(Window {
                kind: w.kind,
                schedule,
                duration: length,
                zone,
                zone_name: w.time_zone.clone(),
                label,
            });
        }
        Ok(Some(Policy { tier: name.clone(), from: p.from.clone(), soak, windows, hold: p.hold.clone() }))
    }

    /// The end of the deny windows open at `at` (a deny window opening as another closes
    /// included): `Some((None, w))` when it does not end within a few years (a window that opens
    /// again as it closes).
    fn frozen_until(&self, at: Timestamp) -> Option<(Option<Timestamp>, &Window)> {
        let horizon = at.checked_add(SignedDuration::from_hours(HORIZON_DAYS * 24)).unwrap_or(Timestamp::MAX);
        let mut found: Option<(Timestamp, &Window)> = None;
        // Each step moves to the end of a later period; the steps are bounded as the horizon is.
        for _ in 0..1000 {
            let t = found.map_or(at, |(t, _)| t);
            if t > horizon {
                break;
            }
            let next = self
                .windows
                .iter()
                .filter(|w| w.kind == WindowKind::Deny)
                .filter_map(|w| w.open_until(t).map(|u| (u, w)))
                .max_by_key(|(u, _)| *u);
            match next {
                Some((until, w)) if found.is_none_or(|(t, _)| until > t) => found = Some((until, w)),
                _ => return found.map(|(t, w)| (Some(t), w)),
            }
        }
        found.map(|(_, w)| (None, w))
    }

    /// Whether an allow window holds `at`, when the tier has any: `Ok` when promotion may start as
    /// far as allow windows go, else the next allow start (if any) and its window.
    fn allowed_at(&self, at: Timestamp) -> Result<Option<&Window>, Option<(Timestamp, &Window)>> {
        let mut allow = self.windows.iter().filter(|w| w.kind == WindowKind::Allow).peekable();
        if allow.peek().is_none() {
            return Ok(None);
        }
        let allow: Vec<&Window> = allow.collect();
        if let Some(w) = allow.iter().find(|w| w.open_until(at).is_some()) {
            return Ok(Some(*w));
        }
        Err(allow.iter().filter_map(|w| w.next_start(at).map(|s| (s, *w))).min_by_key(|(s, _)| *s))
    }

    /// The first moment at or after `at` when the windows let a promotion start.
    pub fn windows_open(&self, at: Timestamp) -> Option<Timestamp> {
        let mut t = at;
        // Each step jumps to the end of a freeze or the start of an allow window: a few suffice,
        // unless the windows never let anything through.
        for _ in 0..1000 {
            match self.frozen_until(t) {
                Some((Some(until), _)) => {
                    t = until;
                    continue;
                }
                Some((None, _)) => return None,
                None => {}
            }
            match self.allowed_at(t) {
                Ok(_) => return Some(t),
                Err(Some((start, _))) => t = start,
                Err(None) => return None,
            }
        }
        None
    }
}

/// Since when the cluster says `from` runs `commit` (its system branch head): the
/// lastTransitionTime of the Tier's `Deployed` condition while it is True at that commit (its
/// message reads `2/2 at 1a2b3c4`). `None` when it is not, or says so of another commit.
pub fn ready_since(from: &Tier, commit: &str) -> Option<Timestamp> {
    let status = from.status.as_ref()?;
    let deployed = status.conditions.iter().find(|c| c.type_ == "Deployed" && c.status == "True")?;
    let at = deployed.message.split(';').next()?.rsplit(" at ").next()?;
    (at == crate::revision::short(commit)).then_some(deployed.last_transition_time.0)
}

/// A time zone of the IANA database, by name.
pub fn time_zone(name: &str) -> Option<TimeZone> {
    if !rules::matches(rules::TIME_ZONE_REGEX, name) {
        return None;
    }
    TimeZone::get(name).ok()
}

/// What the policy says about a promotion now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// It may start; `why` says which policy let it through.
    Allowed { why: String },
    /// It may not: every reason, and the first moment it could (`None`: a person must act, e.g.
    /// release a hold, or the `from` tier must become Healthy first).
    Refused { reasons: Vec<String>, next_possible: Option<Timestamp> },
}

impl Decision {
    pub fn allowed(&self) -> bool {
        matches!(self, Decision::Allowed { .. })
    }
}

impl fmt::Display for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Decision::Allowed { why } => write!(f, "allowed: {why}"),
            Decision::Refused { reasons, .. } => write!(f, "{}", reasons.join("; ")),
        }
    }
}

/// A duration as the policy's fields write them: `12m`, `1h5m`, `45s` (to the minute from a
/// minute on).
pub fn show_duration(d: SignedDuration) -> String {
    let secs = d.as_secs().max(0);
    let (h, m, s) = (secs / 3600, secs % 3600 / 60, secs % 60);
    let mut out = String::new();
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if m > 0 {
        out.push_str(&format!("{m}m"));
    }
    if secs < 60 {
        out.push_str(&format!("{s}s"));
    }
    out
}

/// Whether a promotion from `policy.from` into `policy.tier` may start at `now`, given when the
/// cluster first said `from` was Synced and Healthy at the promoted commit (`None`: it does not).
pub fn evaluate(policy: &Policy, ready_since: Option<Timestamp>, now: Timestamp) -> Decision {
    let (from, to) = (&policy.from, &policy.tier);
    let mut reasons = Vec::new();
    let mut why = Vec::new();
    // When the reasons that pass with time have passed; None when time alone will not do.
    let mut earliest = Some(now);

    if let Some(hold) = &policy.hold {
        let by = hold.by.as_deref().map(|b| format!(" by {b}")).unwrap_or_default();
        reasons.push(format!("{to} is on hold since {}{by}: {}", hold.since.0, hold.reason));
        earliest = None;
    }
    match ready_since {
        // Without a soak, the promotion gate's own check of the Applications is all it takes.
        _ if policy.soak.is_zero() => {}
        None => {
            reasons.push(format!(
                "{from} is not Synced and Healthy at the promoted commit, so its soak of {} has not begun",
                show_duration(policy.soak)
            ));
            earliest = None;
        }
        Some(since) => {
            let healthy = now.duration_since(since);
            if healthy < policy.soak {
                reasons.push(format!(
                    "{from} has been Healthy for {} of {}",
                    show_duration(healthy),
                    show_duration(policy.soak)
                ));
                earliest = earliest.map(|e| e.max(since.checked_add(policy.soak).unwrap_or(e)));
            } else if !policy.soak.is_zero() {
                why.push(format!(
                    "soak {} met ({from} Healthy for {})",
                    show_duration(policy.soak),
                    show_duration(healthy)
                ));
            }
        }
    }
    if let Some((until, w)) = policy.frozen_until(now) {
        reasons.push(match until {
            Some(until) => format!("{to} is frozen until {} ({})", w.show(until, now), w.label),
            None => format!("{to} is frozen with no end in sight ({} opens again as it closes)", w.label),
        });
    } else {
        match policy.allowed_at(now) {
            Ok(Some(w)) => why.push(format!("inside allow {}", w.label)),
            Ok(None) => {}
            Err(Some((start, w))) => {
                reasons.push(format!("{to} is outside its allow windows until {} ({})", w.show(start, now), w.label))
            }
            Err(None) => reasons.push(format!("{to} is outside its allow windows, and none opens again")),
        }
    }
    if reasons.is_empty() {
        if policy.windows.iter().any(|w| w.kind == WindowKind::Deny) {
            why.push("no deny window open".into());
        }
        if why.is_empty() {
            why.push(format!("{to} sets no soak, windows or hold"));
        }
        return Decision::Allowed { why: why.join(", ") };
    }
    // The first moment after the soak when the windows also let it through.
    let next_possible = earliest.and_then(|e| policy.windows_open(e));
    Decision::Refused { reasons, next_possible }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    use super::*;
    use crate::api::{Promotion, PromotionWindow};

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn window(kind: WindowKind, name: &str, schedule: &str, duration: &str, zone: &str) -> PromotionWindow {
        PromotionWindow {
            kind,
            schedule: schedule.into(),
            duration: duration.into(),
            time_zone: zone.into(),
            name: Some(name.into()),
        }
    }

    fn policy(soak: Option<&str>, windows: Vec<PromotionWindow>, hold: Option<Hold>) -> Policy {
        let tier = Tier::new(
            "tier-1",
            crate::api::TierSpec {
                branch: None,
                app: crate::api::AppSource { url: "https://git.example/app".into(), path: ".".into() },
                system: crate::api::SystemRepository { url: "https://git.example/system".into() },
                promotion: Some(Promotion {
                    from: "tier-0".into(),
                    soak: soak.map(String::from),
                    windows,
                    hold,
                    ..Promotion::default()
                }),
                argocd: Default::default(),
                credentials: None,
                interval: "1m".into(),
                deletion_policy: Default::default(),
            },
        );
        Policy::of(&tier).unwrap().unwrap()
    }

    /// Friday 18:00 to Monday 09:00 in Berlin: 63 hours.
    fn weekend() -> PromotionWindow {
        window(WindowKind::Deny, "weekend", "0 18 * * FRI", "63h", "Europe/Berlin")
    }

    /// What, the policy, ready since, now, the refusal's words (empty: allowed), next possible.
    type Row =
        (&'static str, Policy, Option<&'static str>, &'static str, &'static [&'static str], Option<&'static str>);

    #[test]
    fn decisions() {
        use WindowKind::{Allow, Deny};
        let hold = Hold {
            reason: "rolled back 1a2b3c4".into(),
            since: Time(ts("2026-12-03T05:00:00Z")),
            by: Some("alice".into()),
        };
        let rows: Vec<Row> = vec![
            ("no policy", policy(None, vec![], None), Some("2026-12-03T10:00:00Z"), "2026-12-03T10:00:01Z", &[], None),
            (
                "not Healthy at the promoted commit",
                policy(Some("30m"), vec![], None),
                None,
                "2026-12-03T10:00:00Z",
                &["tier-0 is not Synced and Healthy at the promoted commit, so its soak of 30m has not begun"],
                None,
            ),
            (
                "no soak: the gate alone decides health",
                policy(None, vec![], None),
                None,
                "2026-12-03T10:00:00Z",
                &[],
                None,
            ),
            (
                "soak unmet",
                policy(Some("30m"), vec![], None),
                Some("2026-12-03T10:00:00Z"),
                "2026-12-03T10:12:30Z",
                &["tier-0 has been Healthy for 12m of 30m"],
                Some("2026-12-03T10:30:00Z"),
            ),
            (
                "soak met",
                policy(Some("30m"), vec![], None),
                Some("2026-12-03T10:00:00Z"),
                "2026-12-03T10:30:00Z",
                &[],
                None,
            ),
            (
                "hold",
                policy(None, vec![], Some(hold.clone())),
                Some("2026-12-03T10:00:00Z"),
                "2026-12-03T11:00:00Z",
                &["tier-1 is on hold since 2026-12-03T05:00:00Z by alice: rolled back 1a2b3c4"],
                None,
            ),
            (
                // Saturday 2026-12-05, 12:00 in Berlin (UTC+1).
                "inside a deny window across midnight",
                policy(None, vec![weekend()], None),
                Some("2026-12-01T00:00:00Z"),
                "2026-12-05T11:00:00Z",
                &["tier-1 is frozen until Mon 09:00 Europe/Berlin (window 'weekend')"],
                Some("2026-12-07T08:00:00Z"),
            ),
            (
                "a deny window is over at its end",
                policy(None, vec![weekend()], None),
                Some("2026-12-01T00:00:00Z"),
                "2026-12-07T08:00:00Z",
                &[],
                None,
            ),
            (
                "soak ends inside a freeze: next possible is the freeze's end",
                policy(Some("1h"), vec![weekend()], None),
                Some("2026-12-04T16:30:00Z"),
                "2026-12-04T17:00:00Z",
                &[
                    "tier-0 has been Healthy for 30m of 1h",
                    "tier-1 is frozen until Mon 09:00 Europe/Berlin (window 'weekend')",
                ],
                Some("2026-12-07T08:00:00Z"),
            ),
            (
                // Night window 22:00-02:00 Berlin; at 01:30 local on the next day it still holds.
                "inside an allow window across midnight",
                policy(None, vec![window(Allow, "night", "0 22 * * *", "4h", "Europe/Berlin")], None),
                Some("2026-12-01T00:00:00Z"),
                "2026-12-03T00:30:00Z",
                &[],
                None,
            ),
            (
                "outside every allow window",
                policy(None, vec![window(Allow, "night", "0 22 * * *", "4h", "Europe/Berlin")], None),
                Some("2026-12-01T00:00:00Z"),
                "2026-12-03T01:00:00Z",
                &["tier-1 is outside its allow windows until Thu 22:00 Europe/Berlin (window 'night')"],
                Some("2026-12-03T21:00:00Z"),
            ),
            (
                "a deny window that opens again as it closes never ends",
                policy(None, vec![window(Deny, "freeze", "0 0 * * *", "24h", "UTC")], None),
                Some("2026-12-01T00:00:00Z"),
                "2026-12-03T12:30:00Z",
                &["tier-1 is frozen with no end in sight (window 'freeze' opens again as it closes)"],
                None,
            ),
            (
                "deny wins over allow",
                policy(
                    None,
                    vec![
                        window(Allow, "always", "0 0 * * *", "24h", "UTC"),
                        window(Deny, "lunch", "0 12 * * *", "1h", "UTC"),
                    ],
                    None,
                ),
                Some("2026-12-01T00:00:00Z"),
                "2026-12-03T12:30:00Z",
                &["tier-1 is frozen until Thu 13:00 UTC (window 'lunch')"],
                Some("2026-12-03T13:00:00Z"),
            ),
            (
                // Spring forward: 2027-03-28 02:00 CET becomes 03:00 CEST. A 09:00-17:00 allow
                // window is 09:00 local on both sides of it: 08:00 UTC before, 07:00 UTC after.
                "allow window after a DST change opens at local time",
                policy(None, vec![window(Allow, "office", "0 9 * * MON-FRI", "8h", "Europe/Berlin")], None),
                Some("2027-03-01T00:00:00Z"),
                "2027-03-29T07:30:00Z",
                &[],
                None,
            ),
            (
                "before the allow window on the Monday after the DST change",
                policy(None, vec![window(Allow, "office", "0 9 * * MON-FRI", "8h", "Europe/Berlin")], None),
                Some("2027-03-01T00:00:00Z"),
                "2027-03-29T06:30:00Z",
                &["tier-1 is outside its allow windows until Mon 09:00 Europe/Berlin (window 'office')"],
                Some("2027-03-29T07:00:00Z"),
            ),
            (
                // Fall back: 2026-10-25 03:00 CEST becomes 02:00 CET; a deny window from Saturday
                // 18:00 for 39h ends on Monday 08:00 CET (the night has 25 hours).
                "deny window across the DST change lasts its duration",
                policy(None, vec![window(Deny, "weekend", "0 18 * * SAT", "39h", "Europe/Berlin")], None),
                Some("2026-10-01T00:00:00Z"),
                "2026-10-26T06:30:00Z",
                &["tier-1 is frozen until Mon 08:00 Europe/Berlin (window 'weekend')"],
                Some("2026-10-26T07:00:00Z"),
            ),
            (
                // A time the clocks skip (02:30 on 2027-03-28) starts when they have moved on.
                "a start skipped by DST starts after the change",
                policy(None, vec![window(Deny, "night", "30 2 * * *", "30m", "Europe/Berlin")], None),
                Some("2027-03-01T00:00:00Z"),
                "2027-03-28T01:45:00Z",
                &["tier-1 is frozen until Sun 04:00 Europe/Berlin (window 'night')"],
                Some("2027-03-28T02:00:00Z"),
            ),
        ];
        for (what, policy, ready, now, words, next) in rows {
            let decision = evaluate(&policy, ready.map(ts), ts(now));
            if words.is_empty() {
                assert!(decision.allowed(), "{what}: {decision}");
                continue;
            }
            let Decision::Refused { reasons, next_possible } = decision else {
                panic!("{what}: allowed, expected {words:?}");
            };
            assert_eq!(reasons, words, "{what}");
            assert_eq!(next_possible, next.map(ts), "{what}");
        }
    }

    #[test]
    fn the_allowed_decision_says_which_policy_let_it_through() {
        let p = policy(
            Some("30m"),
            vec![window(WindowKind::Allow, "office", "0 9 * * MON-FRI", "8h", "Europe/Berlin"), weekend()],
            None,
        );
        let d = evaluate(&p, Some(ts("2026-12-03T08:00:00Z")), ts("2026-12-03T09:00:00Z"));
        assert_eq!(
            d,
            Decision::Allowed {
                why: "soak 30m met (tier-0 Healthy for 1h), inside allow window 'office', no deny window open".into()
            }
        );
    }

    #[test]
    fn schedules() {
        let s = Schedule::parse("*/15 9-17 * * mon-fri").unwrap();
        let wed = Date::constant(2026, 12, 2);
        let times: Vec<String> = s.times(wed).map(|t| t.time().to_string()).take(5).collect();
        assert_eq!(times, ["09:00:00", "09:15:00", "09:30:00", "09:45:00", "10:00:00"]);
        assert_eq!(s.times(Date::constant(2026, 12, 5)).count(), 0, "Saturday");
        // Both day fields restricted: either matches, as cron does.
        let s = Schedule::parse("0 0 1 * SUN").unwrap();
        assert!(s.on(Date::constant(2026, 12, 1)) && s.on(Date::constant(2026, 12, 6)));
        assert!(!s.on(Date::constant(2026, 12, 2)));
        // A wrapping range (2026-12-04 is a Friday), and Sunday as 7.
        let s = Schedule::parse("0 0 * * FRI-MON").unwrap();
        let on: Vec<bool> = (1..=7).map(|d| s.on(Date::constant(2026, 12, d))).collect();
        assert_eq!(on, [false, false, false, true, true, true, true]);
        assert!(Schedule::parse("0 0 * * 7").unwrap().on(Date::constant(2026, 12, 6)));
        for bad in [
            "",
            "* * * *",
            "60 * * * *",
            "* 24 * * *",
            "* * 0 * *",
            "* * * 13 *",
            "* * * * 8",
            "*/0 * * * *",
            "0 18 * * FRIDAY",
        ] {
            assert!(Schedule::parse(bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn a_window_that_never_opens_has_no_next_start() {
        let p = policy(None, vec![window(WindowKind::Allow, "feb-31", "0 0 31 2 *", "1h", "UTC")], None);
        assert_eq!(p.windows[0].next_start(ts("2026-12-03T00:00:00Z")), None);
        let d = evaluate(&p, Some(ts("2026-12-01T00:00:00Z")), ts("2026-12-03T00:00:00Z"));
        assert_eq!(
            d,
            Decision::Refused {
                reasons: vec!["tier-1 is outside its allow windows, and none opens again".into()],
                next_possible: None
            }
        );
        // Leap days are found.
        let p = policy(None, vec![window(WindowKind::Allow, "leap", "0 0 29 2 *", "1h", "UTC")], None);
        assert_eq!(p.windows[0].next_start(ts("2026-12-03T00:00:00Z")), Some(ts("2028-02-29T00:00:00Z")));
    }

    #[test]
    fn unknown_zones_are_refused_with_the_rules_words() {
        let tier = Tier::new(
            "tier-1",
            crate::api::TierSpec {
                branch: None,
                app: crate::api::AppSource { url: "https://git.example/app".into(), path: ".".into() },
                system: crate::api::SystemRepository { url: "https://git.example/system".into() },
                promotion: Some(Promotion {
                    from: "tier-0".into(),
                    windows: vec![window(WindowKind::Deny, "w", "0 0 * * *", "1h", "Mars/Olympus")],
                    ..Promotion::default()
                }),
                argocd: Default::default(),
                credentials: None,
                interval: "1m".into(),
                deletion_policy: Default::default(),
            },
        );
        let err = Policy::of(&tier).unwrap_err();
        assert_eq!(err.field, "spec.promotion.windows[0].timeZone");
        assert_eq!(err.problem, rules::TIME_ZONE_INVALID);
    }
}
