//! `vendorgate audit verify`: walks the chain and reports the first record that was altered,
//! deleted, reordered or cut off, or that the chain is intact.

use std::io::BufRead;
use std::path::{Path, PathBuf};

use crate::trail::chain::{open, LineError, GENESIS};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Intact {
    pub records: u64,
    pub first_seq: u64,
    pub last_seq: u64,
    pub head_hash: String,
    /// The chain did not start at seq 1 (earlier files were not given or were archived).
    pub starts_mid_chain: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}: {problem}")]
pub struct Broken {
    pub file: String,
    pub line: u64,
    pub problem: String,
}

pub fn order_files(files: &[PathBuf]) -> Vec<PathBuf> {
    let mut keyed: Vec<(u64, PathBuf)> = files
        .iter()
        .map(|f| {
            let first = std::fs::File::open(f)
                .ok()
                .and_then(|file| std::io::BufReader::new(file).lines().next())
                .and_then(Result::ok)
                .and_then(|l| open(&l).ok())
                .map_or(u64::MAX, |s| s.seq);
            (first, f.clone())
        })
        .collect();
    keyed.sort();
    keyed.into_iter().map(|(_, f)| f).collect()
}

pub fn verify(files: &[PathBuf], expect_head: Option<u64>) -> Result<Intact, Broken> {
    let mut expected_seq: Option<u64> = None;
    let mut prev = String::new();
    let mut first_seq = 0;
    let mut records = 0;
    let mut starts_mid_chain = false;
    let mut last_place = (String::new(), 0u64);
    for path in order_files(files) {
        let name = path.display().to_string();
        let file = std::fs::File::open(&path).map_err(|e| Broken {
            file: name.clone(),
            line: 0,
            problem: format!("cannot read: {e}"),
        })?;
        let mut reader = std::io::BufReader::new(file);
        let mut line_no = 0u64;
        let mut buf = String::new();
        loop {
            buf.clear();
            let n = reader.read_line(&mut buf).map_err(|e| Broken {
                file: name.clone(),
                line: line_no + 1,
                problem: format!("cannot read: {e}"),
            })?;
            if n == 0 {
                break;
            }
            line_no += 1;
            let broken = |problem: String| Broken {
                file: name.clone(),
                line: line_no,
                problem,
            };
            if !buf.ends_with('\n') {
                return Err(broken(
                    "incomplete record at the end of the file: truncated".into(),
                ));
            }
            let sealed = open(buf.trim_end_matches('\n')).map_err(|e| match e {
                LineError::Altered => broken("hash mismatch: this record was altered".into()),
                LineError::Incomplete => broken("incomplete record: truncated".into()),
                LineError::Malformed => {
                    broken("not a decision record (altered or foreign line)".into())
                }
            })?;
            match expected_seq {
                None => {
                    first_seq = sealed.seq;
                    if sealed.seq == 1 && sealed.prev_hash != GENESIS {
                        return Err(broken("the first record does not start the chain".into()));
                    }
                    starts_mid_chain = sealed.seq != 1;
                }
                Some(want) => {
                    if sealed.seq > want {
                        return Err(broken(format!(
                            "records missing: expected seq {want}, found seq {} (deleted)",
                            sealed.seq
                        )));
                    }
                    if sealed.seq < want {
                        return Err(broken(format!(
                            "out of order: seq {} after seq {} (reordered or duplicated)",
                            sealed.seq,
                            want - 1
                        )));
                    }
                    if sealed.prev_hash != prev {
                        return Err(broken(format!(
                            "chain broken at seq {}: it does not follow the record before it (replaced or reordered)",
                            sealed.seq
                        )));
                    }
                }
            }
            expected_seq = Some(sealed.seq + 1);
            prev = sealed.hash;
            records += 1;
            last_place = (name.clone(), line_no);
        }
    }
    let Some(next) = expected_seq else {
        return Err(Broken {
            file: files
                .first()
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
            line: 0,
            problem: "no records".into(),
        });
    };
    let last_seq = next - 1;
    if let Some(head) = expect_head {
        if last_seq < head {
            return Err(Broken {
                file: last_place.0,
                line: last_place.1,
                problem: format!(
                    "truncated: the log ends at seq {last_seq} but the head is seq {head}"
                ),
            });
        }
    }
    Ok(Intact {
        records,
        first_seq,
        last_seq,
        head_hash: prev,
        starts_mid_chain,
    })
}

/// Every decision log beside `active`: rotated files and the active one, for "verify everything".
pub fn files_beside(active: &Path) -> Vec<PathBuf> {
    let mut out = vec![];
    let dir = active.parent().unwrap_or(Path::new("."));
    let stem = active
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("decisions")
        .to_string();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            if name.starts_with(&format!("{stem}-")) && name.ends_with(".jsonl") {
                out.push(e.path());
            }
        }
    }
    if active.exists() {
        out.push(active.to_path_buf());
    }
    out
}
