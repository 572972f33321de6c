//! The upper bound, not a method: G trained like source-only (Charbonnier) on the target's
//! own training pairs — ground truth the adaptation never sees — to show the headroom. The
//! caller passes those pairs as the source set; the step is source-only's.

use super::source_only::SourceOnly;
use super::*;

pub(crate) struct TargetSupervised;

impl TrainingMethod for TargetSupervised {
    type Model = Restorer;
    type Step = ();

    fn reads_target(&self, _spec: &TrainSpec) -> bool {
        false
    }

    fn build(&self, g: Restorer, inp: &TrainInputs, device: &Device) -> Restorer {
        SourceOnly.build(g, inp, device)
    }

    fn restorer(model: &Restorer) -> &Restorer {
        model
    }

    fn prepare(&self, _ctx: &StepCtx, _pairs: usize) {}

    fn step(&self, shards: &[Shard<Restorer>], ctx: &StepCtx, _: &()) -> (CurvePoint, Vec<GradientsParams>) {
        SourceOnly.step(shards, ctx, &())
    }

    fn finish(model: Restorer) -> Finished {
        Finished::restorer(model)
    }
}
