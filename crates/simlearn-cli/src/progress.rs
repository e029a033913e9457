//! Progress bars (indicatif) for long work; hidden when stderr is not a terminal or with
//! `--json`, so machine-readable output stays clean.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use simlearn::train::{EpochRecord, TrainObserver};

/// A bar over the steps of each epoch, with the running loss terms and an ETA.
pub struct TrainBars {
    bar: Option<ProgressBar>,
    epochs: usize,
    quiet: bool,
    label: String,
}

impl TrainBars {
    /// `quiet` hides the bars and the per-epoch lines (for `--json`).
    pub fn new(label: &str, epochs: usize, quiet: bool) -> Self {
        Self {
            bar: None,
            epochs,
            quiet,
            label: label.to_string(),
        }
    }
}

fn style() -> ProgressStyle {
    ProgressStyle::with_template(
        "{prefix} [{bar:30.cyan/blue}] {pos}/{len} {per_sec} ETA {eta} {msg}",
    )
    .expect("valid template")
    .progress_chars("=> ")
}

impl TrainObserver for TrainBars {
    fn epoch_start(&mut self, epoch: usize, batches: usize) {
        if self.quiet {
            return;
        }
        let bar = ProgressBar::with_draw_target(Some(batches as u64), ProgressDrawTarget::stderr());
        bar.set_style(style());
        bar.set_prefix(format!(
            "{} epoch {}/{}",
            self.label,
            epoch + 1,
            self.epochs
        ));
        self.bar = Some(bar);
    }

    fn step(&mut self, _epoch: usize, _batch: usize, terms: &[(&str, f64)]) {
        if let Some(bar) = &self.bar {
            bar.set_message(
                terms
                    .iter()
                    .map(|(n, v)| format!("{n} {v:.4}"))
                    .collect::<Vec<_>>()
                    .join(" "),
            );
            bar.inc(1);
        }
    }

    fn epoch_end(&mut self, record: &EpochRecord) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
        if self.quiet {
            return;
        }
        let mut line = format!(
            "{} epoch {:>3}/{}  loss {:.4}  lr {:.2e}  {:.1}s",
            self.label,
            record.epoch + 1,
            self.epochs,
            record.loss,
            record.lr,
            record.seconds
        );
        if let Some(v) = &record.validation {
            for key in ["precision_at_1", "map_at_r"] {
                if let Some(x) = v.get(key) {
                    line.push_str(&format!("  {key} {x:.4}"));
                }
            }
        }
        eprintln!("{line}");
    }

    fn note(&mut self, text: &str) {
        // Warnings are the user's to see even with --json (stderr stays out of the JSON).
        if !self.quiet || text.starts_with("warning") {
            eprintln!("{text}");
        }
    }

    fn work(&mut self, what: &str, done: usize, total: usize) {
        if self.quiet {
            return;
        }
        let bar = self
            .bar
            .get_or_insert_with(|| bar(total as u64, what, false));
        bar.set_position(done as u64);
        if done >= total {
            bar.finish_and_clear();
            self.bar = None;
        }
    }
}

/// A bar over `len` items with rate and ETA; hidden with `quiet` (for `--json`).
pub fn bar(len: u64, prefix: &str, quiet: bool) -> ProgressBar {
    if quiet {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr());
    bar.set_style(style());
    bar.set_prefix(prefix.to_string());
    bar
}
