//! run-pipeline: batch pipelines for real-world image restoration with Noise-DA
//! ("Denoising as Adaptation", Liao et al., ICLR 2025).
//!
//! Layout (one module per concept): [`pipeline`] (spec / plan / run), [`datasets`],
//! [`degradations`], [`networks`], [`training`], [`metrics`] and [`protocols`], [`reports`].

pub mod backend;
pub mod datasets;
pub mod degradations;
pub mod error;
pub mod image;
pub mod lock;
pub mod metrics;
pub mod networks;
pub mod pipeline;
pub mod protocols;
pub mod reports;
pub mod rng;
pub mod score_cmd;
pub mod task;
pub mod training;
pub mod util;
