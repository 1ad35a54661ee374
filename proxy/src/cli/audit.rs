//! `vendorgate audit …`

use std::path::PathBuf;

use anyhow::{bail, Context};
use vendorgate::audit::read::{client_address, for_each, parse_time, Filter};
use vendorgate::audit::summary::{human_bytes, Summary};
use vendorgate::audit::verify;
use vendorgate::trail::schema::{number, text, Field};

pub fn verify(files: &[PathBuf], expect_head: Option<u64>) -> anyhow::Result<()> {
    match verify::verify(files, expect_head) {
        Ok(ok) => {
            println!(
                "intact: {} records, seq {}–{}, head hash {}",
                ok.records, ok.first_seq, ok.last_seq, ok.head_hash
            );
            if ok.starts_mid_chain {
                println!(
                    "note: the chain starts at seq {} (earlier files were not given)",
                    ok.first_seq
                );
            }
            Ok(())
        }
        Err(broken) => bail!("chain broken: {broken}"),
    }
}

#[allow(clippy::too_many_arguments)]
pub fn query(
    files: &[PathBuf],
    account: Option<String>,
    vendor: Option<String>,
    decision: Option<String>,
    reason: Option<String>,
    since: Option<String>,
    until: Option<String>,
    json: bool,
) -> anyhow::Result<()> {
    let filter = Filter {
        account,
        vendor,
        decision,
        reason,
        since: since
            .as_deref()
            .map(parse_time)
            .transpose()
            .map_err(anyhow::Error::msg)?,
        until: until
            .as_deref()
            .map(parse_time)
            .transpose()
            .map_err(anyhow::Error::msg)?,
    };
    let mut rows: Vec<[String; 10]> = Vec::new();
    let mut shown = 0u64;
    for_each(files, |line, r| {
        if !filter.matches(r) {
            return;
        }
        shown += 1;
        if json {
            println!("{line}");
            return;
        }
        let client = client_address(r);
        let path = match text(r, Field::Original) {
            "" => text(r, Field::Action),
            p => p,
        };
        rows.push([
            text(r, Field::Timestamp).to_string(),
            text(r, Field::Decision).to_string(),
            text(r, Field::Reason).to_string(),
            text(r, Field::Vendor).to_string(),
            text(r, Field::Account).to_string(),
            client.to_string(),
            text(r, Field::Method).to_string(),
            path.to_string(),
            number(r, Field::Status).to_string(),
            human_bytes(number(r, Field::BytesOut)),
        ]);
    })
    .context("reading the decision log")?;
    if !json {
        let head = [
            "TIME",
            "DECISION",
            "REASON",
            "VENDOR",
            "ACCOUNT",
            "CLIENT",
            "METHOD",
            "PATH",
            "STATUS",
            "BYTES OUT",
        ];
        let mut widths = head.map(str::len);
        for row in &rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count().min(60));
            }
        }
        let print = |cells: &[&str]| {
            let line: Vec<String> = cells
                .iter()
                .zip(widths)
                .map(|(c, w)| {
                    let c: String = c.chars().take(60).collect();
                    format!("{c:<w$}")
                })
                .collect();
            println!("{}", line.join("  ").trim_end());
        };
        print(&head);
        for row in &rows {
            print(&row.iter().map(String::as_str).collect::<Vec<_>>());
        }
        eprintln!("{shown} matching records");
    }
    Ok(())
}

pub fn summary(files: &[PathBuf]) -> anyhow::Result<()> {
    let mut s = Summary::default();
    let n = for_each(files, |_, r| s.add(r)).context("reading the decision log")?;
    print!("{}", s.render());
    eprintln!("{n} records read");
    Ok(())
}

pub fn report(files: &[PathBuf], out: &std::path::Path) -> anyhow::Result<()> {
    let mut r = vendorgate::audit::report::Report::default();
    let n = for_each(files, |_, rec| r.add(rec)).context("reading the decision log")?;
    std::fs::write(out, r.html()).with_context(|| format!("writing {}", out.display()))?;
    eprintln!("{n} records read; report written to {}", out.display());
    Ok(())
}
