//! The dedicated writer: takes records from the queue in batches, chains and writes them, rotates
//! and syncs files. One thread, plain blocking I/O: the request path never waits on a disk.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::Receiver;
use std::sync::Arc;
use std::time::{Duration, Instant};

use vendorgate_policy::config::{Fsync, Trail as TrailConfig, TrailSink};

use super::chain::{open, seal_into, GENESIS};
use super::Entry;

/// Shared between the writer and everyone watching it.
#[derive(Default)]
pub struct WriterStatus {
    pub healthy: AtomicBool,
    pub head_seq: AtomicU64,
    pub written: AtomicU64,
    /// Where written records are copied (OTLP log records, `otel.decisions`), if anywhere.
    pub copies: std::sync::OnceLock<crate::telemetry::otel::DecisionCopies>,
}

enum Out {
    File {
        file: File,
        first_seq: u64,
        size: u64,
        opened: Instant,
    },
    Stdout,
}

pub struct Writer {
    config: TrailConfig,
    out: Option<Out>,
    seq: u64,
    prev: String,
    last_sync: Instant,
    status: Arc<WriterStatus>,
    /// A failed write left bytes in the active file that could not be cut away: the file is set
    /// aside before the next one opens, so the chain never holds a partial or repeated record.
    set_aside: bool,
}

/// `decisions.jsonl` → `decisions-000000000042.jsonl` for the file whose first record is seq 42.
pub fn rotated_name(active: &Path, first_seq: u64) -> PathBuf {
    let stem = active
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("decisions");
    let ext = active
        .extension()
        .and_then(|s| s.to_str())
        .unwrap_or("jsonl");
    active.with_file_name(format!("{stem}-{first_seq:012}.{ext}"))
}

/// The last complete, valid record of a file, and whether the file ends in a partial line.
fn tail(path: &Path) -> std::io::Result<(Option<(u64, String)>, bool)> {
    let mut f = File::open(path)?;
    let len = f.metadata()?.len();
    let start = len.saturating_sub(256 * 1024);
    f.seek(SeekFrom::Start(start))?;
    let mut text = String::new();
    f.read_to_string(&mut text)?;
    let partial = !text.is_empty() && !text.ends_with('\n');
    let last = text
        .lines()
        .rev()
        .skip(usize::from(partial))
        .find_map(|l| open(l).ok())
        .map(|s| (s.seq, s.hash));
    Ok((last, partial))
}

impl Writer {
    /// Picks up the chain where the files on disk left it.
    pub fn new(config: TrailConfig, status: Arc<WriterStatus>) -> Self {
        let mut w = Writer {
            config,
            out: None,
            seq: 0,
            prev: GENESIS.to_string(),
            last_sync: Instant::now(),
            status,
            set_aside: false,
        };
        if w.config.sink == TrailSink::File {
            w.resume();
        }
        w.status.head_seq.store(w.seq, Ordering::Relaxed);
        // Open now, so an unwritable log refuses the very first request rather than the second.
        match w.ensure_open() {
            Ok(()) => w.status.healthy.store(true, Ordering::Relaxed),
            Err(e) => {
                w.status.healthy.store(false, Ordering::Relaxed);
                tracing::error!("decision log {} unwritable: {e}", w.config.path.display());
            }
        }
        w
    }

    fn resume(&mut self) {
        let active = self.config.path.clone();
        let mut source = Some(active.clone()).filter(|p| p.exists());
        if source.is_none() {
            // No active file: continue from the newest rotated one, if any.
            let dir = active.parent().unwrap_or(Path::new("."));
            let probe = rotated_name(&active, 0);
            let prefix = probe
                .file_name()
                .and_then(|n| n.to_str())
                .map(|n| n[..n.len().saturating_sub(18)].to_string());
            if let (Ok(entries), Some(prefix)) = (std::fs::read_dir(dir), prefix) {
                source = entries
                    .filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| {
                        p.file_name()
                            .and_then(|n| n.to_str())
                            .is_some_and(|n| n.starts_with(&prefix) && n.len() == prefix.len() + 18)
                    })
                    .max();
            }
        }
        let Some(path) = source else { return };
        match tail(&path) {
            Ok((last, partial)) => {
                if let Some((seq, hash)) = last {
                    self.seq = seq;
                    self.prev = hash;
                }
                if partial && path == active {
                    // A crash mid-write: keep the damaged file as it is (verify will point at it)
                    // and carry on in a fresh one.
                    self.move_aside("ended in a partial record");
                }
            }
            Err(e) => tracing::error!("reading the decision log tail {}: {e}", path.display()),
        }
    }

    /// Moves the active file out of the chain's way, as `decisions-<next seq>.damaged`.
    fn move_aside(&mut self, why: &str) {
        let active = &self.config.path;
        let aside = rotated_name(active, self.seq + 1).with_extension("damaged");
        match std::fs::rename(active, &aside) {
            Ok(()) => tracing::warn!("decision log {why}; moved to {}", aside.display()),
            Err(e) => tracing::error!("decision log {why}; moving it to {}: {e}", aside.display()),
        }
    }

    fn ensure_open(&mut self) -> std::io::Result<()> {
        if self.out.is_some() {
            return Ok(());
        }
        if std::mem::take(&mut self.set_aside) {
            self.move_aside("kept part of a failed write");
        }
        self.out = Some(match self.config.sink {
            TrailSink::Stdout => Out::Stdout,
            _ => {
                if let Some(dir) = self.config.path.parent() {
                    if !dir.as_os_str().is_empty() {
                        std::fs::create_dir_all(dir)?;
                    }
                }
                let file = OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&self.config.path)?;
                let size = file.metadata()?.len();
                let first_seq = if size == 0 {
                    self.seq + 1
                } else {
                    first_seq_of(&self.config.path).unwrap_or(self.seq + 1)
                };
                Out::File {
                    file,
                    first_seq,
                    size,
                    opened: Instant::now(),
                }
            }
        });
        Ok(())
    }

    /// Writes a batch, all or nothing as far as the chain is concerned: seq and prev only advance
    /// once the bytes are out. Returns the error to retry on.
    fn write_batch(&mut self, batch: &[Entry]) -> std::io::Result<()> {
        self.ensure_open()?;
        let mut seq = self.seq;
        let mut prev = self.prev.clone();
        // Sized for the batch at once: each line is its fields and under 200 bytes of chain.
        let mut buf = String::with_capacity(batch.iter().map(|e| e.fields.len() + 200).sum());
        for entry in batch {
            seq += 1;
            let object = entry.fields.as_str();
            let members = object
                .strip_prefix('{')
                .and_then(|o| o.strip_suffix('}'))
                .unwrap_or(object);
            let hash = seal_into(&mut buf, seq, &prev, members);
            prev.clear();
            prev.push_str(hash.as_str());
        }
        match self.out.as_mut() {
            Some(Out::File { file, size, .. }) => {
                if let Err(e) = file.write_all(buf.as_bytes()) {
                    // A short write (disk full, the file size limit) leaves part of the batch in
                    // the file, and the retry writes all of it again: cut the file back to where
                    // the batch began, or, failing that, set it aside.
                    if let Err(cut) = file.set_len(*size) {
                        tracing::error!("cutting a failed write from the decision log: {cut}");
                        self.set_aside = true;
                    }
                    return Err(e);
                }
                *size += buf.len() as u64;
            }
            Some(Out::Stdout) => {
                let mut out = std::io::stdout().lock();
                out.write_all(buf.as_bytes())?;
                out.flush()?;
            }
            None => return Err(std::io::Error::other("no output")),
        }
        self.seq = seq;
        self.prev = prev;
        if let Some(copies) = self.status.copies.get() {
            copies.offer(buf, batch.len());
        }
        self.status.head_seq.store(seq, Ordering::Relaxed);
        self.status
            .written
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
        Ok(())
    }

    fn sync(&mut self, force: bool) {
        let due = match self.config.fsync {
            Fsync::Always => true,
            Fsync::Interval => force || self.last_sync.elapsed() >= Duration::from_secs(1),
            Fsync::Never => false,
        };
        if due {
            if let Some(Out::File { file, .. }) = &self.out {
                if let Err(e) = file.sync_data() {
                    tracing::error!("fsync of the decision log failed: {e}");
                }
            }
            self.last_sync = Instant::now();
        }
    }

    fn rotate_if_due(&mut self) {
        let Some(Out::File {
            size,
            opened,
            first_seq,
            ..
        }) = &self.out
        else {
            return;
        };
        if *size < self.config.max_file_size.0 && opened.elapsed() < self.config.rotate_every.0 {
            return;
        }
        let first = *first_seq;
        self.sync(true);
        self.out = None;
        let target = rotated_name(&self.config.path, first);
        match std::fs::rename(&self.config.path, &target) {
            Ok(()) => {
                tracing::info!(file = %target.display(), head_seq = self.seq, head_hash = %self.prev, "decision log rotated")
            }
            Err(e) => tracing::error!("rotating the decision log to {}: {e}", target.display()),
        }
    }

    /// Runs until every sender is gone and the queue is empty.
    pub fn run(mut self, rx: Receiver<Entry>) {
        let mut batch: Vec<Entry> = Vec::with_capacity(1024);
        let mut idle_ticks = 0u64;
        loop {
            if batch.is_empty() {
                // Drain on a short tick rather than blocking on the channel: a blocked receiver
                // makes every sender pay a wake-up syscall, and records only need to be on disk
                // within milliseconds, not instantly.
                match rx.try_recv() {
                    Ok(e) => batch.push(e),
                    Err(std::sync::mpsc::TryRecvError::Empty) => {
                        std::thread::sleep(Duration::from_millis(2));
                        idle_ticks += 1;
                        if idle_ticks.is_multiple_of(250) {
                            self.sync(false);
                            if self.config.sink == TrailSink::File {
                                self.rotate_if_due();
                            }
                        }
                        continue;
                    }
                    Err(std::sync::mpsc::TryRecvError::Disconnected) => break,
                }
            }
            while batch.len() < 1024 {
                match rx.try_recv() {
                    Ok(e) => batch.push(e),
                    Err(_) => break,
                }
            }
            match self.write_batch(&batch) {
                Ok(()) => {
                    if !self.status.healthy.swap(true, Ordering::Relaxed) {
                        tracing::info!("decision log writable");
                    }
                    batch.clear();
                    self.sync(false);
                    if self.config.sink == TrailSink::File {
                        self.rotate_if_due();
                    }
                }
                Err(e) => {
                    if self.status.healthy.swap(false, Ordering::Relaxed) {
                        tracing::error!(
                            "decision log unwritable ({e}); {} records waiting",
                            batch.len()
                        );
                    }
                    self.out = None;
                    std::thread::sleep(Duration::from_millis(250));
                }
            }
        }
        // Shutdown: everything queued has been written above (or is still failing).
        if !batch.is_empty() {
            tracing::error!(
                "{} decision records could not be written at shutdown",
                batch.len()
            );
        }
        self.sync(true);
        tracing::info!(head_seq = self.seq, head_hash = %self.prev, "decision log closed");
    }
}

fn first_seq_of(path: &Path) -> Option<u64> {
    let f = File::open(path).ok()?;
    let mut line = String::new();
    BufReader::new(f).read_line(&mut line).ok()?;
    open(line.trim_end()).ok().map(|s| s.seq)
}
