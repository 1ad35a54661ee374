//! `vendorgate simulate`: synthetic agents' traffic, with a virtual clock, through the detection
//! code the proxy runs ([`crate::state::activity::Activity`] and the policy's trackers), to measure
//! what the detectors cost in false alerts and what they catch.
//!
//! **The world**: 5 vendors in 5 time zones (two change to winter time during the run), 10 agents
//! each on their vendor's shift (some start an hour late), working weekdays (one vendor Saturdays
//! too) for 6 weeks from Monday 2026-10-05. Each agent has its own pace (20 to 70 requests an
//! hour, Poisson), a day-to-day mood (±25%, lognormal), sick days (3%), overtime (an hour more on
//! 5% of days), a home network on some days (1 in 5 agents), tickets of a few KiB and attachments
//! of around a MiB (1% of requests); two agents per vendor also run reports (incremental export
//! pages of 1.5 MiB, about two an hour), four times as many on the month's last two working days,
//! when everyone is 30% busier. A public holiday for two vendors; a new hire in week 3.
//!
//! **The thieves** (each in a run of its own, on a Lisbon agent's account in week 6): the
//! ManoMano bulk export at full speed (a 2.5 MiB page every 6 s, Zendesk's 10 a minute), the same
//! at three times the account's usual hourly volume, and a slow drip at night (a 250 KiB page a
//! minute from 02:00).

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};

use vendorgate_policy::detect::{Action, DetectRules, Detector, Finding, TimeZone};

use crate::state::activity::Activity;

/// Monday 2026-10-05 00:00 UTC.
pub const START: u64 = 1_791_158_400;
pub const WEEKS: u64 = 6;
const DAY: u64 = 86_400;

/// A small, seedable generator (SplitMix64): the same seed, the same world.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    fn normal(&mut self) -> f64 {
        let (u1, u2) = (self.unit().max(1e-12), self.unit());
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }

    /// Lognormal with this median and σ of the log.
    fn lognormal(&mut self, median: f64, sigma: f64) -> f64 {
        median * (sigma * self.normal()).exp()
    }

    fn poisson(&mut self, mean: f64) -> u64 {
        if mean > 50.0 {
            return (mean + mean.sqrt() * self.normal()).round().max(0.0) as u64;
        }
        let (limit, mut p, mut k) = ((-mean).exp(), 1.0, 0);
        loop {
            p *= self.unit();
            if p <= limit {
                return k;
            }
            k += 1;
        }
    }
}

struct Vendor {
    id: &'static str,
    zone: &'static str,
    /// Local shift start and length in hours; Saturdays worked too.
    start: u64,
    hours: u64,
    saturdays: bool,
    /// A public holiday: days after START.
    holiday: Option<u64>,
    office: [u8; 3],
}

const VENDORS: [Vendor; 5] = [
    Vendor {
        id: "tunis-cx",
        zone: "Africa/Tunis",
        start: 8,
        hours: 9,
        saturdays: false,
        holiday: None,
        office: [198, 51, 100],
    },
    Vendor {
        id: "lisbon-bpo",
        zone: "Europe/Lisbon",
        start: 9,
        hours: 9,
        saturdays: false,
        holiday: None,
        office: [203, 0, 113],
    },
    Vendor {
        id: "manila-support",
        zone: "Asia/Manila",
        start: 15,
        hours: 9,
        saturdays: false,
        holiday: None,
        office: [192, 0, 2],
    },
    Vendor {
        id: "bogota-care",
        zone: "America/Bogota",
        start: 7,
        hours: 9,
        saturdays: true,
        holiday: Some(7),
        office: [100, 64, 10],
    },
    Vendor {
        id: "warsaw-tech",
        zone: "Europe/Warsaw",
        start: 8,
        hours: 8,
        saturdays: false,
        holiday: Some(37),
        office: [100, 64, 20],
    },
];

struct Agent {
    vendor: usize,
    name: String,
    pace: f64,
    late: u64,
    reporting: bool,
    home: Option<[u8; 3]>,
    /// First day worked (days after START).
    joins: u64,
}

/// One request of the simulated traffic.
#[derive(Clone, Copy)]
struct Event {
    at: u64,
    agent: usize,
    export: bool,
    bytes: u64,
    ip: IpAddr,
    record: u64,
    thief: bool,
}

/// Which thief, if any, a run carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Thief {
    None,
    Bulk,
    Triple,
    NightDrip,
}

impl Thief {
    pub fn as_str(self) -> &'static str {
        match self {
            Thief::None => "none",
            Thief::Bulk => "bulk export at full speed",
            Thief::Triple => "the same at 3x the account's usual volume",
            Thief::NightDrip => "slow drip at night",
        }
    }
}

/// What a run found.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Findings on honest traffic, by (detector, action), in weeks 2–6 (week 1 builds baselines).
    pub false_findings: BTreeMap<(String, &'static str), u64>,
    /// Account-weeks of honest traffic judged (weeks 2–6).
    pub account_weeks: f64,
    /// The thief: seconds from its first request to its first finding and to a lock, the bytes
    /// it had by then, what fired first, and its bytes over time (seconds, cumulative bytes).
    pub detected_after: Option<(u64, u64, String)>,
    pub locked_after: Option<(u64, u64, String)>,
    pub thief_curve: Vec<(u64, u64)>,
}

fn world(rng: &mut Rng) -> Vec<Agent> {
    let mut agents = Vec::new();
    for (v, vendor) in VENDORS.iter().enumerate() {
        for i in 0..10 {
            agents.push(Agent {
                vendor: v,
                name: format!("{}-agent-{i}", vendor.id),
                pace: 20.0 + 50.0 * rng.unit(),
                late: u64::from(rng.unit() < 0.3),
                reporting: i < 2,
                home: (rng.unit() < 0.2).then_some([10, v as u8, i as u8]),
                // One new hire, in week 3.
                joins: if v == 0 && i == 9 { 14 } else { 0 },
            });
        }
    }
    agents
}

/// Whether `day` (days after START, local calendar) is a working day for `vendor`.
fn works(vendor: &Vendor, day: u64) -> bool {
    let weekday = day % 7; // START is a Monday
    (weekday < 5 || (weekday == 5 && vendor.saturdays)) && vendor.holiday != Some(day)
}

/// The month's last two working days (month-end reporting): October 29–30 2026.
fn month_end(day: u64) -> bool {
    day == 24 || day == 25
}

/// The instant of local `hour` on `day` in `zone` (seconds), through the zone's rules.
fn local_instant(zone: &TimeZone, day: u64, hour: u64) -> u64 {
    let date = jiff::civil::date(2026, 10, 5)
        .checked_add(jiff::Span::new().days(day as i64))
        .unwrap_or(jiff::civil::date(2026, 10, 5));
    let dt = date.at(hour.min(23) as i8, 0, 0, 0);
    let extra = hour.saturating_sub(23) * 3600;
    zone.to_ambiguous_zoned_datetime(dt)
        .compatible()
        .map(|z| z.timestamp().as_second() as u64 + extra)
        .unwrap_or(START + day * DAY + hour * 3600)
}

fn honest_traffic(rng: &mut Rng, agents: &[Agent], zones: &[TimeZone]) -> Vec<Event> {
    let mut events = Vec::new();
    for (a, agent) in agents.iter().enumerate() {
        let vendor = &VENDORS[agent.vendor];
        let zone = &zones[agent.vendor];
        for day in agent.joins..WEEKS * 7 {
            if !works(vendor, day) || rng.unit() < 0.03 {
                continue;
            }
            let mood = rng.lognormal(1.0, 0.25) * if month_end(day) { 1.3 } else { 1.0 };
            let overtime = u64::from(rng.unit() < 0.05);
            let from_home = agent.home.filter(|_| rng.unit() < 0.1);
            let net = from_home.unwrap_or(vendor.office);
            let ip = IpAddr::V4(Ipv4Addr::new(net[0], net[1], net[2], 10 + a as u8));
            let start = vendor.start + agent.late;
            for hour in start..start + vendor.hours + overtime {
                let lunch = hour == start + 4;
                let at = local_instant(zone, day, hour);
                let pace = agent.pace * mood * if lunch { 0.4 } else { 1.0 };
                let tickets: Vec<u64> = (0..8).map(|_| rng.below(5_000_000)).collect();
                for _ in 0..rng.poisson(pace) {
                    let bytes = if rng.unit() < 0.01 {
                        rng.lognormal(800.0 * 1024.0, 1.0)
                    } else {
                        rng.lognormal(5.0 * 1024.0, 0.8)
                    };
                    events.push(Event {
                        at: at + rng.below(3600),
                        agent: a,
                        export: false,
                        bytes: bytes as u64,
                        ip,
                        record: tickets[rng.below(8) as usize],
                        thief: false,
                    });
                }
                if agent.reporting {
                    let pages = if month_end(day) { 8.0 } else { 2.0 };
                    for _ in 0..rng.poisson(pages) {
                        events.push(Event {
                            at: at + rng.below(3600),
                            agent: a,
                            export: true,
                            bytes: rng.lognormal(1.5 * 1024.0 * 1024.0, 0.3) as u64,
                            ip,
                            record: 0,
                            thief: false,
                        });
                    }
                }
            }
        }
    }
    events
}

/// The victim: a Lisbon agent (reporting, for the 3× thief, whose usual hour is large enough to
/// triple), and the thief's requests.
fn thief_traffic(rng: &mut Rng, thief: Thief, agents: &[Agent], zones: &[TimeZone]) -> Vec<Event> {
    let lisbon = 1;
    let victim = agents
        .iter()
        .position(|a| a.vendor == lisbon && a.reporting == (thief == Thief::Triple))
        .unwrap_or(0);
    let zone = &zones[lisbon];
    let office = VENDORS[lisbon].office;
    let ip = IpAddr::V4(Ipv4Addr::new(office[0], office[1], office[2], 200));
    // Wednesday of week 6.
    let day = 5 * 7 + 2;
    let mut events = Vec::new();
    let mut push = |at: u64, export: bool, bytes: u64, record: u64| {
        events.push(Event {
            at,
            agent: victim,
            export,
            bytes,
            ip,
            record,
            thief: true,
        })
    };
    match thief {
        Thief::None => {}
        Thief::Bulk => {
            let start = local_instant(zone, day, 14);
            for page in 0..1200 {
                push(start + page * 6, true, 2_500_000, 0);
            }
        }
        Thief::Triple => {
            // Twice the victim's usual hour on top of its own work (three times in all), as
            // export pages, for four hours.
            let agent = &agents[victim];
            let usual_bytes = agent.pace * 6.9 * 1024.0 + 2.0 * 1.5 * 1024.0 * 1024.0;
            let page = 1_500_000u64;
            let pages_per_hour = ((2.0 * usual_bytes) / page as f64).ceil() as u64;
            let start = local_instant(zone, day, 10);
            for hour in 0..4u64 {
                for p in 0..pages_per_hour {
                    push(
                        start + hour * 3600 + p * 3600 / pages_per_hour,
                        true,
                        page,
                        0,
                    );
                }
                for r in 0..(2.0 * agent.pace) as u64 {
                    push(
                        start + hour * 3600 + r * 3600 / (2 * agent.pace as u64).max(1),
                        false,
                        7_000,
                        rng.below(5_000_000),
                    );
                }
            }
        }
        Thief::NightDrip => {
            let start = local_instant(zone, day, 2);
            for minute in 0..180 {
                push(start + minute * 60, false, 250_000, rng.below(5_000_000));
            }
        }
    }
    events
}

fn zones() -> Vec<TimeZone> {
    VENDORS
        .iter()
        .map(|v| TimeZone::get(v.zone).unwrap_or(TimeZone::UTC))
        .collect()
}

/// The honest world's six weeks, moved by whole weeks to end in the week before now, through the
/// detectors; every account's history written to `path` as the proxy keeps it (`baselines.json`).
/// Accounts are named `<vendor>-agent-<n>` (vendors `tunis-cx`, `lisbon-bpo`, `manila-support`,
/// `bogota-care`, `warsaw-tech`). Returns how many.
pub fn write_baselines(
    seed: u64,
    rules: &DetectRules,
    path: &std::path::Path,
) -> std::io::Result<usize> {
    let mut rng = Rng::new(seed);
    let zones = zones();
    let agents = world(&mut rng);
    let mut events = honest_traffic(&mut rng, &agents, &zones);
    events.sort_by_key(|e| e.at);
    let now = crate::clock::now_ms() / 1000;
    let end = START + WEEKS * 7 * DAY;
    let week = 7 * DAY;
    let shift = now.saturating_sub(end) / week * week;
    let activity = Activity::new(None);
    for e in events.iter().filter(|e| e.at + shift < now) {
        let agent = &agents[e.agent];
        let vendor = VENDORS[agent.vendor].id;
        let at = e.at + shift;
        let account = activity.account(vendor, &agent.name, &zones[agent.vendor], at, rules);
        account.request(at, rules, e.export, e.ip, &[e.record]);
        account.bytes(at, e.bytes, rules);
    }
    activity.save(path)
}

/// One run: the world's honest traffic (and the thief's, if any) through the detectors.
pub fn run(seed: u64, thief: Thief, rules: &DetectRules) -> Outcome {
    let mut rng = Rng::new(seed);
    let zones = zones();
    let agents = world(&mut rng);
    let mut events = honest_traffic(&mut rng, &agents, &zones);
    let mut thief_rng = Rng::new(seed ^ 0x7417);
    events.extend(thief_traffic(&mut thief_rng, thief, &agents, &zones));
    events.sort_by_key(|e| e.at);

    let activity = Activity::new(None);
    let mut out = Outcome::default();
    let judged_from = START + 7 * DAY;
    let mut locked_at: Option<u64> = None;
    let (mut thief_start, mut thief_bytes) = (None, 0u64);
    let victim = events_victim(&events);
    for e in &events {
        let agent = &agents[e.agent];
        let vendor = VENDORS[agent.vendor].id;
        let account = activity.account(vendor, &agent.name, &zones[agent.vendor], e.at, rules);
        if e.thief {
            // Once locked, the proxy refuses the thief's requests: they move nothing.
            if locked_at.is_some() {
                continue;
            }
            thief_start.get_or_insert(e.at);
        }
        let mut found = account.request(e.at, rules, e.export, e.ip, &[e.record]);
        found.extend(account.bytes(e.at, e.bytes, rules));
        if e.thief {
            thief_bytes += e.bytes;
            let since = e.at - thief_start.unwrap_or(e.at);
            out.thief_curve.push((since, thief_bytes));
        }
        // From the thief's first request on, what fires on the victim's account is the thief's.
        let stolen = e.agent == victim && e.at >= thief_start.unwrap_or(u64::MAX);
        for f in found {
            if stolen {
                note_thief(
                    &mut out,
                    &f,
                    e.at - thief_start.unwrap_or(e.at),
                    thief_bytes,
                );
                if f.action == Action::Lock {
                    locked_at.get_or_insert(e.at);
                }
            } else if e.at >= judged_from {
                *out.false_findings
                    .entry((f.detector.to_string(), f.action.as_str()))
                    .or_default() += 1;
            }
        }
    }
    out.account_weeks = agents
        .iter()
        .map(|a| ((WEEKS * 7).saturating_sub(a.joins.max(7))) as f64 / 7.0)
        .sum();
    out
}

/// The agent the thief's requests belong to.
fn events_victim(events: &[Event]) -> usize {
    events
        .iter()
        .find(|e| e.thief)
        .map_or(usize::MAX, |e| e.agent)
}

fn note_thief(out: &mut Outcome, f: &Finding, since: u64, bytes: u64) {
    let what = match f.detector {
        Detector::Volume(m) => format!("volume.{}", m.as_str()),
        d => d.as_str().to_string(),
    };
    if out.detected_after.is_none() {
        out.detected_after = Some((since, bytes, what.clone()));
    }
    if f.action == Action::Lock && out.locked_after.is_none() {
        out.locked_after = Some((since, bytes, what));
    }
}
