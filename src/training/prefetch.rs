//! Batches read ahead of the training step on worker threads, through a bounded queue.
//!
//! Each batch is a pure function of its step (see [`super::batch::sample_batch`]), so workers
//! may finish in any order: the consumer takes step s's batch when it is ready, whatever the
//! number of workers or the depth. At most `depth` batches are made ahead of the step being
//! trained, so memory is `depth × batch`, never the dataset.

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::{Condvar, Mutex, MutexGuard};

/// A poisoned lock only means a worker panicked while holding it; the state stays consistent
/// (every update is a single insert or counter step).
fn lock<S>(m: &Mutex<S>) -> MutexGuard<'_, S> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

struct State<T> {
    /// Next step a worker will claim.
    claim: u64,
    /// Next step the consumer takes.
    take: u64,
    ready: BTreeMap<u64, T>,
    /// The consumer is gone: workers stop.
    done: bool,
}

/// Run `body` with a function that returns the items of `steps` in order (`None` after the
/// last), made by `make` on `workers` threads at most `depth` steps ahead. `workers == 0`
/// makes each item when it is asked for. A panic in `make` reaches the consumer as `Err`.
pub(crate) fn with_prefetch<T: Send, R>(
    steps: Range<u64>,
    workers: usize,
    depth: usize,
    make: impl Fn(u64) -> Result<T, String> + Sync,
    body: impl FnOnce(&mut dyn FnMut() -> Option<Result<T, String>>) -> R,
) -> R {
    let guarded = |step: u64| -> Result<T, String> {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| make(step)))
            .unwrap_or_else(|_| Err(format!("the data loader failed on step {step}")))
    };
    if workers == 0 || steps.is_empty() {
        let mut next = steps.start;
        return body(&mut || {
            (next < steps.end).then(|| {
                next += 1;
                guarded(next - 1)
            })
        });
    }
    let depth = depth.max(1) as u64;
    let shared = (
        Mutex::new(State { claim: steps.start, take: steps.start, ready: BTreeMap::new(), done: false }),
        Condvar::new(),
    );
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| {
                loop {
                    let step = {
                        let mut st = lock(&shared.0);
                        loop {
                            if st.done || st.claim >= steps.end {
                                return;
                            }
                            if st.claim < st.take + depth {
                                break;
                            }
                            st = shared.1.wait(st).unwrap_or_else(|p| p.into_inner());
                        }
                        st.claim += 1;
                        st.claim - 1
                    };
                    let item = guarded(step);
                    lock(&shared.0).ready.insert(step, item);
                    shared.1.notify_all();
                }
            });
        }
        let mut next = || -> Option<Result<T, String>> {
            let mut st = lock(&shared.0);
            if st.take >= steps.end {
                return None;
            }
            loop {
                let want = st.take;
                if let Some(item) = st.ready.remove(&want) {
                    st.take += 1;
                    shared.1.notify_all();
                    return Some(item);
                }
                st = shared.1.wait(st).unwrap_or_else(|p| p.into_inner());
            }
        };
        let out = body(&mut next);
        lock(&shared.0).done = true;
        shared.1.notify_all();
        out
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    /// In order, whatever the workers and depth; never more than `depth` ahead; stops early.
    #[test]
    fn items_come_in_order_and_at_most_depth_ahead() {
        for (workers, depth) in [(0, 1), (1, 1), (2, 3), (4, 2)] {
            let taken = AtomicU64::new(0);
            let max_ahead = AtomicU64::new(0);
            let got = with_prefetch(
                5..40,
                workers,
                depth,
                |s| {
                    // Uneven work so workers finish out of order.
                    std::thread::sleep(std::time::Duration::from_micros((s * 37 % 7) * 200));
                    let t = taken.load(Ordering::SeqCst);
                    max_ahead.fetch_max(s - (5 + t).min(s), Ordering::SeqCst);
                    Ok(s * s)
                },
                |next| {
                    let mut v = vec![];
                    while let Some(x) = next() {
                        v.push(x.unwrap());
                        taken.fetch_add(1, Ordering::SeqCst);
                    }
                    v
                },
            );
            assert_eq!(got, (5..40u64).map(|s| s * s).collect::<Vec<_>>(), "workers {workers}, depth {depth}");
            assert!(max_ahead.load(Ordering::SeqCst) <= depth.max(1) as u64, "workers {workers}");
        }
        // The consumer may stop early; the workers then stop too.
        let first = with_prefetch(0..1_000_000, 2, 4, |s| Ok(s), |next| next().unwrap().unwrap());
        assert_eq!(first, 0);
        // A failing or panicking step reaches the consumer as an error, in its place.
        let r: Vec<Result<u64, String>> = with_prefetch(
            0..4,
            2,
            2,
            |s| match s {
                1 => Err("bad file".into()),
                2 => panic!("boom"),
                _ => Ok(s),
            },
            |next| std::iter::from_fn(next).collect(),
        );
        assert_eq!(r[0], Ok(0));
        assert_eq!(r[1], Err("bad file".into()));
        assert!(r[2].as_ref().unwrap_err().contains("step 2"));
        assert_eq!(r[3], Ok(3));
    }
}
