//! A training stage's progress: an indicatif bar on a terminal, plain log lines otherwise.

use indicatif::{ProgressBar, ProgressStyle};
use tracing::info;

use super::LogMode;
use crate::training::StepInfo;

/// A training stage's progress: an indicatif bar on a terminal, else a plain log line every
/// `log_every` steps (and at the last) with the loss terms and an ETA.
pub(super) struct Progress {
    bar: Option<ProgressBar>,
    stage: String,
    log_every: usize,
}

impl Progress {
    pub(super) fn new(mode: LogMode, stage: &str, steps: usize, log_every: usize) -> Progress {
        let bar = (mode == LogMode::Bars).then(|| {
            let b = ProgressBar::new(steps as u64);
            b.set_style(
                ProgressStyle::with_template("{prefix:>24} [{bar:30}] {pos}/{len} {per_sec} eta {eta} {msg}")
                    .expect("template")
                    .progress_chars("=> "),
            );
            b.set_prefix(stage.to_string());
            b
        });
        Progress { bar, stage: stage.to_string(), log_every: log_every.max(1) }
    }

    pub(super) fn step(&self, s: StepInfo) {
        let p = s.latest;
        let msg = if p.mse_pos.is_finite() {
            format!(
                "loss {:.4} char {:.4} mse+ {:.4} mse- {:.4} α {:.3}",
                p.loss, p.charbonnier, p.mse_pos, p.mse_neg, p.alpha
            )
        } else {
            format!("loss {:.4}", p.loss)
        };
        match &self.bar {
            Some(b) => {
                b.set_position(s.step as u64);
                b.set_message(msg);
            }
            None if s.step % self.log_every == 0 || s.step == s.steps => {
                let rate = s.step as f64 / p.elapsed_s.max(1e-9);
                let eta = (s.steps - s.step) as f64 / rate.max(1e-9);
                info!(stage = %self.stage, step = s.step, steps = s.steps, eta_s = format!("{eta:.0}"), "{msg}");
            }
            None => {}
        }
    }

    pub(super) fn finish(self) {
        if let Some(b) = self.bar {
            b.finish();
        }
    }
}
