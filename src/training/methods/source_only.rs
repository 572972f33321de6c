//! Source-only ("vanilla"): G learns the Charbonnier loss on synthetic pairs alone — the
//! baseline every adaptation is measured against.

use super::*;
use crate::training::losses::charbonnier;

pub(crate) struct SourceOnly;

impl TrainingMethod for SourceOnly {
    type Model = Restorer;
    type Step = ();

    fn reads_target(&self, _spec: &TrainSpec) -> bool {
        false
    }

    fn build(&self, g: Restorer, _inp: &TrainInputs, _device: &Device) -> Restorer {
        g
    }

    fn restorer(model: &Restorer) -> &Restorer {
        model
    }

    fn prepare(&self, _ctx: &StepCtx, _pairs: usize) {}

    fn step(&self, shards: &[Shard<Restorer>], ctx: &StepCtx, _: &()) -> (CurvePoint, Vec<GradientsParams>) {
        let ([charb], grads) = independent_shards(shards, |sh| {
            let (x, y) =
                (ctx.input(&sh.batch.source_degraded, sh.device), ctx.input(&sh.batch.source_clean, sh.device));
            let loss = charbonnier(ctx.lowered(sh.model).restore(x), y, ctx.spec.charbonnier_eps);
            let loss = crate::networks::like(loss, DType::F32);
            ([scalar(loss.clone())], ctx.backward(loss, sh.model))
        });
        (CurvePoint { charbonnier: charb, loss: charb, ..CurvePoint::at(0) }, grads)
    }

    fn finish(model: Restorer) -> Finished {
        Finished::restorer(model)
    }
}
