//! `vendorgate audit report --html`: one self-contained page (inline CSS and SVG, no script, no
//! network) with the charts a reviewer would rather look at than read: egress per account over
//! time, denials over time by reason, and the heaviest exporters.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::Value;

use super::read::timestamp;
use super::summary::{human_bytes, Summary};
use crate::trail::schema::{number, text, Field};
use crate::trail::time::rfc3339;

const PALETTE: [&str; 10] = [
    "#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7",
    "#9c755f", "#bab0ac",
];

#[derive(Default)]
pub struct Report {
    summary: Summary,
    /// account → bucket → bytes
    egress: HashMap<String, BTreeMap<u64, u64>>,
    /// reason → bucket → count
    denials: HashMap<String, BTreeMap<u64, u64>>,
    /// account → export-class requests
    exports: HashMap<String, u64>,
    first: u64,
    last: u64,
    records: u64,
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

impl Report {
    pub fn add(&mut self, r: &Value) {
        self.summary.add(r);
        if text(r, Field::Action) != "http_request" {
            return;
        }
        let Some(t) = timestamp(r).map(secs) else {
            return;
        };
        self.records += 1;
        if self.first == 0 || t < self.first {
            self.first = t;
        }
        self.last = self.last.max(t);
        let who = format!("{}/{}", text(r, Field::Vendor), text(r, Field::Account));
        // Minute resolution now; charts re-bucket to fit the span covered.
        let minute = t / 60 * 60;
        if text(r, Field::Decision) == "deny" {
            *self
                .denials
                .entry(text(r, Field::Reason).to_string())
                .or_default()
                .entry(minute)
                .or_default() += 1;
        } else {
            *self
                .egress
                .entry(who.clone())
                .or_default()
                .entry(minute)
                .or_default() += number(r, Field::BytesOut);
            if text(r, Field::Class) == "export" {
                *self.exports.entry(who).or_default() += 1;
            }
        }
    }

    /// Accounts by egress, largest first.
    fn egress_ranking(&self) -> Vec<(&String, u64)> {
        let mut totals: Vec<(&String, u64)> = self
            .egress
            .iter()
            .map(|(k, s)| (k, s.values().sum()))
            .collect();
        totals.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        totals
    }

    /// Bucket width giving at most ~60 columns over the period covered.
    fn bucket(&self) -> u64 {
        let span = self.last.saturating_sub(self.first).max(60);
        [60, 300, 900, 3600, 6 * 3600, 86_400, 7 * 86_400]
            .into_iter()
            .find(|b| span / b <= 60)
            .unwrap_or(30 * 86_400)
    }

    fn rebucket(&self, series: &BTreeMap<u64, u64>, width: u64) -> BTreeMap<u64, u64> {
        let mut out = BTreeMap::new();
        for (t, v) in series {
            *out.entry(t / width * width).or_default() += v;
        }
        out
    }

    fn axis_label(t: u64) -> String {
        rfc3339(UNIX_EPOCH + std::time::Duration::from_secs(t))[5..16].replace('T', " ")
    }

    fn line_chart(&self, title: &str) -> String {
        let width = self.bucket();
        let totals = self.egress_ranking();
        let top: Vec<&String> = totals.iter().take(8).map(|(k, _)| *k).collect();
        let start = self.first / width * width;
        let n = ((self.last / width * width - start) / width + 1).max(2);
        let series: Vec<(&String, Vec<u64>)> = top
            .iter()
            .map(|k| {
                let b = self.rebucket(&self.egress[*k], width);
                (
                    *k,
                    (0..n)
                        .map(|i| *b.get(&(start + i * width)).unwrap_or(&0))
                        .collect(),
                )
            })
            .collect();
        let max = series
            .iter()
            .flat_map(|(_, v)| v.iter().copied())
            .max()
            .unwrap_or(1)
            .max(1);
        let (w, h, left, bottom) = (900.0, 280.0, 70.0, 30.0);
        let x = |i: u64| left + (w - left - 10.0) * i as f64 / (n - 1) as f64;
        let y = |v: u64| 10.0 + (h - bottom - 10.0) * (1.0 - v as f64 / max as f64);
        let mut svg = format!("<figure><figcaption>{}</figcaption><svg class=\"chart\" viewBox=\"0 0 {w} {h}\" role=\"img\" aria-label=\"{}\">", esc(title), esc(title));
        let _ = write!(svg, "<text x=\"4\" y=\"16\" class=\"axis\">{}</text><text x=\"4\" y=\"{}\" class=\"axis\">0</text>", human_bytes(max), h - bottom);
        let _ = write!(
            svg,
            "<line x1=\"{left}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" class=\"grid\"/>",
            h - bottom,
            w - 10.0,
            h - bottom
        );
        for (i, anchor) in [(0, "start"), (n / 2, "middle"), (n - 1, "end")] {
            let _ = write!(
                svg,
                "<text x=\"{}\" y=\"{}\" class=\"axis\" text-anchor=\"{anchor}\">{}</text>",
                x(i),
                h - 8.0,
                Self::axis_label(start + i * width)
            );
        }
        for (idx, (name, values)) in series.iter().enumerate() {
            let points: Vec<String> = values
                .iter()
                .enumerate()
                .map(|(i, v)| format!("{:.1},{:.1}", x(i as u64), y(*v)))
                .collect();
            let _ = write!(
                svg,
                "<polyline fill=\"none\" stroke=\"{}\" stroke-width=\"2\" points=\"{}\"><title>{}</title></polyline>",
                PALETTE[idx % PALETTE.len()],
                points.join(" "),
                esc(name)
            );
        }
        svg.push_str("</svg>");
        svg.push_str(&legend(
            series
                .iter()
                .map(|(k, v)| format!("{} ({})", k, human_bytes(v.iter().sum()))),
        ));
        svg.push_str("</figure>");
        svg
    }

    fn stacked_bars(&self, title: &str) -> String {
        let width = self.bucket();
        let start = self.first / width * width;
        let n = (self.last / width * width - start) / width + 1;
        let mut reasons: Vec<(&String, u64)> = self
            .denials
            .iter()
            .map(|(k, s)| (k, s.values().sum()))
            .collect();
        reasons.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        let buckets: Vec<(&String, BTreeMap<u64, u64>)> = reasons
            .iter()
            .map(|(k, _)| (*k, self.rebucket(&self.denials[*k], width)))
            .collect();
        let column = |i: u64| {
            buckets
                .iter()
                .map(|(_, b)| *b.get(&(start + i * width)).unwrap_or(&0))
                .sum::<u64>()
        };
        let max = (0..n).map(column).max().unwrap_or(1).max(1);
        let (w, h, left, bottom) = (900.0, 280.0, 70.0, 30.0);
        let bar = (w - left - 10.0) / n as f64;
        let mut svg = format!("<figure><figcaption>{}</figcaption><svg class=\"chart\" viewBox=\"0 0 {w} {h}\" role=\"img\" aria-label=\"{}\">", esc(title), esc(title));
        let _ = write!(svg, "<text x=\"4\" y=\"16\" class=\"axis\">{max}</text><text x=\"4\" y=\"{}\" class=\"axis\">0</text>", h - bottom);
        for i in 0..n {
            let mut top = h - bottom;
            for (idx, (reason, b)) in buckets.iter().enumerate() {
                let v = *b.get(&(start + i * width)).unwrap_or(&0);
                if v == 0 {
                    continue;
                }
                let height = (h - bottom - 10.0) * v as f64 / max as f64;
                top -= height;
                let _ = write!(
                    svg,
                    "<rect x=\"{:.1}\" y=\"{top:.1}\" width=\"{:.1}\" height=\"{height:.1}\" fill=\"{}\"><title>{} {}: {v}</title></rect>",
                    left + bar * i as f64,
                    (bar - 1.0).max(1.0),
                    PALETTE[idx % PALETTE.len()],
                    esc(reason),
                    Self::axis_label(start + i * width)
                );
            }
        }
        for (i, anchor) in [
            (0, "start"),
            (n / 2, "middle"),
            (n.saturating_sub(1), "end"),
        ] {
            let _ = write!(
                svg,
                "<text x=\"{:.1}\" y=\"{}\" class=\"axis\" text-anchor=\"{anchor}\">{}</text>",
                left + bar * (i as f64 + 0.5),
                h - 8.0,
                Self::axis_label(start + i * width)
            );
        }
        svg.push_str("</svg>");
        svg.push_str(&legend(reasons.iter().map(|(k, v)| format!("{k} ({v})"))));
        svg.push_str("</figure>");
        svg
    }

    fn top_exporters(&self, title: &str) -> String {
        let mut totals = self.egress_ranking();
        totals.truncate(10);
        let max = totals.first().map_or(1, |t| t.1.max(1));
        let row = 26.0;
        let h = 10.0 + row * totals.len().max(1) as f64;
        let mut svg = format!("<figure><figcaption>{}</figcaption><svg class=\"chart\" viewBox=\"0 0 900 {h}\" role=\"img\" aria-label=\"{}\">", esc(title), esc(title));
        for (i, (who, bytes)) in totals.iter().enumerate() {
            let y = 5.0 + row * i as f64;
            let len = 380.0 * *bytes as f64 / max as f64;
            let exports = self.exports.get(*who).copied().unwrap_or(0);
            let _ = write!(
                svg,
                "<text x=\"4\" y=\"{:.1}\" class=\"label\">{}</text><rect x=\"300\" y=\"{y:.1}\" width=\"{len:.1}\" height=\"18\" fill=\"{}\"/><text x=\"{:.1}\" y=\"{:.1}\" class=\"label\">{} · {exports} export requests</text>",
                y + 14.0,
                esc(who),
                PALETTE[0],
                306.0 + len,
                y + 14.0,
                human_bytes(*bytes)
            );
        }
        svg.push_str("</svg></figure>");
        svg
    }

    pub fn html(&self) -> String {
        let period = if self.records == 0 {
            "no requests".to_string()
        } else {
            format!(
                "{} … {}",
                rfc3339(UNIX_EPOCH + std::time::Duration::from_secs(self.first)),
                rfc3339(UNIX_EPOCH + std::time::Duration::from_secs(self.last))
            )
        };
        let mut rows = String::new();
        for ((vendor, account), s) in &self.summary.accounts {
            let denials: u64 = s.denials.values().sum();
            let reasons = s
                .denials
                .iter()
                .map(|(r, n)| format!("{r} {n}"))
                .collect::<Vec<_>>()
                .join(", ");
            let _ = write!(
                rows,
                "<tr><td>{}</td><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{denials}</td><td>{}</td><td class=\"n\">{}</td><td>{} … {}</td></tr>",
                esc(vendor),
                esc(account),
                s.requests,
                esc(&reasons),
                human_bytes(s.egress_bytes),
                esc(&s.first_seen),
                esc(&s.last_seen)
            );
        }
        let mut events = String::new();
        for e in &self.summary.events {
            let mark = match e.kind.as_str() {
                "anomaly" => "alert",
                k if k.starts_with("grant") => "grant",
                _ => "lock",
            };
            let _ = write!(
                events,
                "<tr class=\"{mark}\"><td>{}</td><td><span class=\"mark\">{}</span></td><td>{}</td><td>{}</td></tr>",
                esc(&e.at),
                esc(&e.kind),
                esc(&e.who),
                esc(&e.what)
            );
        }
        let events = if events.is_empty() {
            "<p>none</p>".to_string()
        } else {
            format!("<table><thead><tr><th>when</th><th>what</th><th>who</th><th>detail</th></tr></thead><tbody>{events}</tbody></table>")
        };
        format!(
            r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>vendorgate decision report</title>
<style>
body {{ font: 14px/1.4 system-ui, sans-serif; margin: 24px auto; max-width: 960px; color: #222; }}
h1 {{ font-size: 22px; margin-bottom: 4px; }} .meta {{ color: #666; margin-top: 0; }}
figure {{ margin: 24px 0; }} figcaption {{ font-weight: 600; margin-bottom: 6px; }}
.chart {{ width: 100%; height: auto; background: #fafafa; border: 1px solid #ddd; }}
.axis, .label {{ font-size: 11px; fill: #444; }} .grid {{ stroke: #bbb; }}
.legend {{ display: flex; flex-wrap: wrap; gap: 12px; margin-top: 6px; font-size: 12px; }}
.legend span::before {{ content: ""; display: inline-block; width: 10px; height: 10px; margin-right: 4px; background: var(--c); }}
table {{ border-collapse: collapse; width: 100%; font-size: 12px; }} th, td {{ border-bottom: 1px solid #ddd; padding: 4px 6px; text-align: left; }}
td.n {{ text-align: right; font-variant-numeric: tabular-nums; }}
.mark {{ padding: 1px 6px; border-radius: 3px; color: #fff; }} tr.alert .mark {{ background: #c0392b; }}
tr.lock .mark {{ background: #6c3483; }} tr.grant .mark {{ background: #1f618d; }}
</style></head><body>
<h1>vendorgate decision report</h1>
<p class="meta">{records} requests · {period}</p>
{egress}
{denials}
{top}
<h2>Anomalies, locks and grants</h2>
{events}
<h2>Accounts</h2>
<table><thead><tr><th>vendor</th><th>account</th><th>requests</th><th>denials</th><th>by reason</th><th>egress</th><th>seen</th></tr></thead><tbody>{rows}</tbody></table>
</body></html>
"#,
            records = self.records,
            egress = self.line_chart("Egress per account over time"),
            denials = self.stacked_bars("Denials over time, by reason"),
            top = self.top_exporters("Heaviest exporters"),
        )
    }
}

fn legend(items: impl Iterator<Item = String>) -> String {
    let mut out = String::from("<div class=\"legend\">");
    for (i, item) in items.enumerate() {
        let _ = write!(
            out,
            "<span style=\"--c:{}\">{}</span>",
            PALETTE[i % PALETTE.len()],
            esc(&item)
        );
    }
    out.push_str("</div>");
    out
}
