//! The training curve: one row per logging window, the columns of `curves.{parquet,csv}`.
//! The row's columns are fixed (the table has one schema for every method); a method fills
//! the terms it has and leaves the others NaN (empty cells), starting from [`CurvePoint::at`].

use serde::{Deserialize, Serialize};

use super::checkpoint;

/// One row of the training-curve table (means over the logging window).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct CurvePoint {
    pub step: usize,
    #[serde(with = "checkpoint::exact_f64")]
    pub loss: f64,
    #[serde(with = "checkpoint::exact_f64")]
    pub charbonnier: f64,
    /// Diffusion MSE with the true (positive) conditions; NaN for source-only.
    #[serde(with = "checkpoint::exact_f64")]
    pub mse_pos: f64,
    /// Diffusion MSE with residual-swapped (negative) conditions.
    #[serde(with = "checkpoint::exact_f64")]
    pub mse_neg: f64,
    #[serde(with = "checkpoint::exact_f64")]
    pub hinge: f64,
    /// Fraction of steps in the window whose hinge was active.
    #[serde(with = "checkpoint::exact_f64")]
    pub hinge_active: f64,
    /// Noise-DA's α, or DANN's λ.
    #[serde(with = "checkpoint::exact_f64")]
    pub alpha: f64,
    /// DANN's domain-classifier loss (binary cross-entropy; ln 2 ≈ 0.693 = chance).
    #[serde(with = "checkpoint::exact_f64", default = "nan")]
    pub domain: f64,
    /// Neighbor2Neighbor's reconstruction term ‖G(g1(y)) − g2(y)‖² and regulariser.
    #[serde(with = "checkpoint::exact_f64", default = "nan")]
    pub rec: f64,
    #[serde(with = "checkpoint::exact_f64", default = "nan")]
    pub reg: f64,
    /// PixelDA's discriminator loss (ln 2 ≈ 0.693 = chance), the translator's adversarial
    /// term and its content term.
    #[serde(with = "checkpoint::exact_f64", default = "nan")]
    pub disc: f64,
    #[serde(with = "checkpoint::exact_f64", default = "nan")]
    pub adv: f64,
    #[serde(with = "checkpoint::exact_f64", default = "nan")]
    pub content: f64,
    /// Training seconds so far (all sessions of a resumed run).
    #[serde(with = "checkpoint::exact_f64")]
    pub elapsed_s: f64,
    /// Norm of the diffusion loss's gradient on G's synthetic / real residuals (Noise-DA, at
    /// logged steps): how much of the adaptation signal reaches G through each domain.
    #[serde(with = "checkpoint::exact_f64", default = "nan")]
    pub grad_syn: f64,
    #[serde(with = "checkpoint::exact_f64", default = "nan")]
    pub grad_real: f64,
    /// Mean PSNR of each validation set, when scored at this step (in the sets' order).
    #[serde(default)]
    pub val_psnr: Vec<f64>,
}

fn nan() -> f64 {
    f64::NAN
}

impl CurvePoint {
    /// A row for `step` with no terms yet (every loss term NaN).
    pub(crate) fn at(step: usize) -> CurvePoint {
        let n = f64::NAN;
        CurvePoint {
            step,
            loss: n,
            charbonnier: n,
            mse_pos: n,
            mse_neg: n,
            hinge: n,
            hinge_active: n,
            alpha: n,
            domain: n,
            rec: n,
            reg: n,
            disc: n,
            adv: n,
            content: n,
            elapsed_s: 0.0,
            grad_syn: n,
            grad_real: n,
            val_psnr: Vec::new(),
        }
    }

    /// The row of a logging window: means of its steps' terms; α, time, gradient norms and
    /// validation scores as at its last step.
    pub(crate) fn mean(w: &[CurvePoint]) -> CurvePoint {
        let n = w.len() as f64;
        let m = |f: fn(&CurvePoint) -> f64| w.iter().map(f).sum::<f64>() / n;
        let last = w.last().expect("non-empty window");
        CurvePoint {
            step: last.step,
            loss: m(|p| p.loss),
            charbonnier: m(|p| p.charbonnier),
            mse_pos: m(|p| p.mse_pos),
            mse_neg: m(|p| p.mse_neg),
            hinge: m(|p| p.hinge),
            hinge_active: m(|p| p.hinge_active),
            alpha: last.alpha,
            domain: m(|p| p.domain),
            rec: m(|p| p.rec),
            reg: m(|p| p.reg),
            disc: m(|p| p.disc),
            adv: m(|p| p.adv),
            content: m(|p| p.content),
            elapsed_s: last.elapsed_s,
            grad_syn: last.grad_syn,
            grad_real: last.grad_real,
            val_psnr: last.val_psnr.clone(),
        }
    }
}
