//! `vendorgate simulate`: runs [`vendorgate::simulate`] and prints its figures.

use std::path::Path;

use anyhow::Context;
use vendorgate::simulate::{self, Thief};
use vendorgate_policy::detect::{human_bytes, DetectRules};

pub fn run(
    config: Option<&Path>,
    seed: u64,
    runs: u64,
    curve: Option<&Path>,
    baselines: Option<&Path>,
) -> anyhow::Result<()> {
    let rules = match config {
        Some(path) => {
            let config = vendorgate::settings::load_config(path)?;
            anyhow::ensure!(
                config.detect.is_some(),
                "{}: no [detect] section",
                path.display()
            );
            config.policy.detect
        }
        None => DetectRules {
            enabled: true,
            ..DetectRules::default()
        },
    };
    if let Some(path) = baselines {
        let n = simulate::write_baselines(seed, &rules, path)
            .with_context(|| format!("writing {}", path.display()))?;
        println!("{}: 6 weeks of history for {n} accounts", path.display());
        return Ok(());
    }

    println!("honest traffic: 50 agents of 5 vendors, 6 weeks (judged from week 2), {runs} run(s)");
    let mut total = std::collections::BTreeMap::new();
    let mut weeks = 0.0;
    for s in seed..seed + runs.max(1) {
        let out = simulate::run(s, Thief::None, &rules);
        weeks += out.account_weeks;
        for (k, n) in out.false_findings {
            *total.entry(k).or_insert(0u64) += n;
        }
    }
    let per_100 = |n: u64| n as f64 * 100.0 / weeks;
    let (mut alerts, mut locks) = (0, 0);
    for ((detector, action), n) in &total {
        println!(
            "  {detector:<16} {action:<6} {n:>5}   {:>6.2} per 100 account-weeks",
            per_100(*n)
        );
        if *action == "lock" {
            locks += n;
        } else {
            alerts += n;
        }
    }
    println!(
        "  false locks  {:.2} per 100 account-weeks; false alerts {:.2} ({weeks:.0} account-weeks)",
        per_100(locks),
        per_100(alerts)
    );

    for thief in [Thief::Bulk, Thief::Triple, Thief::NightDrip] {
        let out = simulate::run(seed, thief, &rules);
        println!("thief: {}", thief.as_str());
        let show = |what: &str, r: &Option<(u64, u64, String)>| match r {
            Some((secs, bytes, by)) => println!(
                "  {what:<9} after {secs:>5} s, {:>10} taken, by {by}",
                human_bytes(*bytes)
            ),
            None => println!("  {what:<9} never"),
        };
        show("detected", &out.detected_after);
        show("locked", &out.locked_after);
        if thief == Thief::Bulk {
            if let Some(path) = curve {
                let locked = out.locked_after.as_ref().map(|l| l.0);
                let mut text = String::from("seconds,bytes,locked\n");
                for (t, b) in &out.thief_curve {
                    text.push_str(&format!("{t},{b},{}\n", locked.is_some_and(|l| *t >= l)));
                }
                std::fs::write(path, text)
                    .with_context(|| format!("writing {}", path.display()))?;
            }
        }
    }
    Ok(())
}
