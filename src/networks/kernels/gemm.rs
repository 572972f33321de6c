//! The matrix product our convolutions run on (the `gemm` crate over strided operands), the
//! per-thread scratch buffers they reuse, and the output pointer parallel bands share.

/// `dst (m×n, row-major) = [dst +] a · b` with `a` (m×k) and `b` (k×n) given by their row and
/// column strides (a transposed operand is just swapped strides).
#[allow(clippy::too_many_arguments)]
pub(super) fn gemm(
    m: usize,
    n: usize,
    k: usize,
    dst: &mut [f32],
    accumulate: bool,
    a: &[f32],
    a_strides: (usize, usize),
    b: &[f32],
    b_strides: (usize, usize),
    parallel: bool,
) {
    assert!(dst.len() >= m * n);
    // SAFETY: `dst` holds the m × n values at row stride n.
    unsafe { gemm_raw(m, n, k, dst.as_mut_ptr(), n, accumulate, a, a_strides, b, b_strides, parallel) }
}

/// [`gemm`] into `dst` at row stride `dst_rs` (a column band of a wider matrix).
///
/// # Safety
/// `dst` must be valid for writes at `i·dst_rs + j` for every `i < m`, `j < n`, and no other
/// thread may access those values meanwhile.
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn gemm_raw(
    m: usize,
    n: usize,
    k: usize,
    dst: *mut f32,
    dst_rs: usize,
    accumulate: bool,
    a: &[f32],
    (a_rs, a_cs): (usize, usize),
    b: &[f32],
    (b_rs, b_cs): (usize, usize),
    parallel: bool,
) {
    assert!(m == 0 || k == 0 || a.len() > (m - 1) * a_rs + (k - 1) * a_cs);
    assert!(n == 0 || k == 0 || b.len() > (k - 1) * b_rs + (n - 1) * b_cs);
    let parallelism = if parallel { gemm::Parallelism::Rayon(0) } else { gemm::Parallelism::None };
    // SAFETY: the asserts above keep every index the strides reach inside the slices; the
    // caller vouches for `dst`.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst,
            1,
            dst_rs as isize,
            accumulate,
            a.as_ptr(),
            a_cs as isize,
            a_rs as isize,
            b.as_ptr(),
            b_cs as isize,
            b_rs as isize,
            1.0f32,
            1.0f32,
            false,
            false,
            false,
            parallelism,
        );
    }
}

thread_local! {
    /// Reused im2col / Winograd buffers (taken out while in use, so a nested call on the same
    /// thread — rayon steals work while a parallel gemm waits — simply allocates its own).
    static SCRATCH: std::cell::RefCell<Vec<Vec<f32>>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// A buffer of at least `n` values (contents unspecified: callers overwrite what they use).
/// Never shrunk, so a thread's buffer stops growing (and being zeroed) after the largest layer.
pub(super) fn scratch(n: usize) -> Vec<f32> {
    let mut v = SCRATCH.with(|s| s.borrow_mut().pop()).unwrap_or_default();
    if v.len() < n {
        v.resize(n, 0.0);
    }
    v
}

pub(super) fn release(v: Vec<f32>) {
    SCRATCH.with(|s| {
        let mut pool = s.borrow_mut();
        if pool.len() < 2 {
            pool.push(v);
        }
    });
}

/// An output buffer shared by the bands of one image, each writing its own columns.
#[derive(Clone, Copy)]
pub(super) struct SharedOut(pub(super) *mut f32);
// SAFETY: only used for disjoint column bands (see `conv_forward`).
unsafe impl Send for SharedOut {}
unsafe impl Sync for SharedOut {}

impl SharedOut {
    /// The pointer (through a method, so closures capture the whole `Sync` wrapper).
    pub(super) fn ptr(self) -> *mut f32 {
        self.0
    }
}
