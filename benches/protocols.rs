//! Throughput of `protocols::score` per protocol, single-threaded per image (as the pipeline
//! calls it), on a SIDD block (256×256) and a RealBlur frame (680×770), plus the batch rate
//! when the caller spreads images over rayon's pool.
//!
//!   cargo bench --bench protocols               # ~1 s per measurement
//!   cargo bench --bench protocols -- 0.3        # seconds per measurement
//!
//! Compare with `python3 tests/reference/bench_skimage.py` (same sizes, scikit-image / scipy).
//! Prints numbers; asserts nothing.

use rayon::prelude::*;
use run_pipeline::image::Image;
use run_pipeline::protocols::{ProtocolKind, score};
use std::hint::black_box;
use std::time::{Duration, Instant};

/// A photo-like test pair: smooth gradients plus texture as ground truth, and a "restoration"
/// with residual noise that sometimes leaves [0, 1] (so the clamping paths run).
fn pair(w: usize, h: usize, seed: u64) -> (Image, Image) {
    let mut s = seed;
    let mut rand = move || {
        s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (s >> 40) as f32 / (1u64 << 24) as f32
    };
    let mut gt = Image::new(w, h);
    let mut restored = Image::new(w, h);
    for y in 0..h {
        for x in 0..w {
            for c in 0..3 {
                let (fx, fy) = (x as f32 / w as f32, y as f32 / h as f32);
                let v = 0.5 + 0.3 * ((fx * 9.0 + c as f32).sin() * (fy * 7.0).cos()) + 0.1 * (rand() - 0.5);
                gt.set(x, y, c, v.clamp(0.0, 1.0));
                restored.set(x, y, c, v + 0.12 * (rand() - 0.5));
            }
        }
    }
    (restored, gt)
}

/// Mean seconds per call of `f`, over at least `budget` (and at least 3 calls) after a warm-up.
fn time(budget: Duration, mut f: impl FnMut()) -> f64 {
    f();
    let (start, mut n) = (Instant::now(), 0u32);
    while n < 3 || start.elapsed() < budget {
        f();
        n += 1;
    }
    start.elapsed().as_secs_f64() / n as f64
}

fn main() {
    let secs: f64 = std::env::args().skip(1).find_map(|a| a.parse().ok()).unwrap_or(1.0);
    let budget = Duration::from_secs_f64(secs);
    let threads = rayon::current_num_threads();
    println!("protocols::score, megapixels/s (single thread per image; batch = {threads} rayon threads over images)");
    for (w, h, label) in [(256, 256, "SIDD block"), (680, 770, "RealBlur frame")] {
        let (restored, gt) = pair(w, h, 7);
        let mp = (w * h) as f64 / 1e6;
        let batch: Vec<(Image, Image)> = (0..2 * threads as u64).map(|i| pair(w, h, 100 + i)).collect();
        println!("{w}x{h} ({label}):");
        for kind in ProtocolKind::ALL {
            let one = time(budget, || {
                black_box(score(kind, black_box(&restored), black_box(&gt)).unwrap());
            });
            let many = time(budget, || {
                black_box(batch.par_iter().map(|(r, g)| score(kind, r, g).unwrap().ssim).sum::<f64>());
            });
            println!(
                "  {:17} {:8.2} MP/s  ({:7.2} ms/image)   batch {:8.2} MP/s",
                kind.name(),
                mp / one,
                one * 1e3,
                mp * batch.len() as f64 / many
            );
        }
    }
}
