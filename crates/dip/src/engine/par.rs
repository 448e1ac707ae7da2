//! Threading policy. Small tensors stay on one thread: rayon's hand-off costs more than the work.

use super::Float;

/// Elements below which an elementwise pass runs serially.
pub(crate) const SERIAL_BELOW: usize = 1 << 15;

/// Rows per parallel task for a row-major pass over `rows` rows of `row_len` elements.
pub(crate) fn rows_per_task(rows: usize, row_len: usize) -> usize {
    if rows * row_len < SERIAL_BELOW {
        return rows.max(1);
    }
    let threads = rayon::current_num_threads().max(1);
    // A few tasks per thread balance the load without drowning in hand-offs.
    rows.div_ceil(threads * 4).max(1)
}

/// Runs `body((task, chunk))` over consecutive chunks of `chunk_len` elements: serially when one
/// chunk covers everything (small tensors), else in parallel.
pub(crate) fn for_each_chunk<T, F>(data: &mut [T], chunk_len: usize, body: F)
where
    T: Send,
    F: Fn((usize, &mut [T])) + Sync + Send,
{
    use rayon::prelude::*;
    let chunk_len = chunk_len.max(1);
    if chunk_len >= data.len() {
        data.chunks_mut(chunk_len).enumerate().for_each(body);
    } else {
        data.par_chunks_mut(chunk_len).enumerate().for_each(body);
    }
}

/// Pixels per chunk of a per-channel reduction. Fixed, not derived from the thread count, so the
/// summation order (and hence the result) is the same whatever the number of threads.
pub(crate) const REDUCE_CHUNK: usize = 2048;

/// Per-channel sums over pixels, in a fixed order: `out[c] = Σ_p f(p)[c]`.
///
/// `partial` must hold `chunks(pixels) * c` values; `visit(range, acc)` adds the contribution of
/// the pixels in `range` into `acc` (length `c`, zeroed before each call).
pub(crate) fn channel_reduce<T: Float, F>(
    pixels: usize,
    c: usize,
    partial: &mut [T],
    out: &mut [T],
    visit: F,
) where
    F: Fn(std::ops::Range<usize>, &mut [T]) + Sync,
{
    use rayon::prelude::*;
    let chunks = reduce_chunks(pixels);
    let partial = &mut partial[..chunks * c];
    let work = |(i, acc): (usize, &mut [T])| {
        acc.fill(T::ZERO);
        let lo = i * REDUCE_CHUNK;
        visit(lo..(lo + REDUCE_CHUNK).min(pixels), acc);
    };
    if pixels * c < SERIAL_BELOW {
        partial.chunks_mut(c).enumerate().for_each(work);
    } else {
        partial.par_chunks_mut(c).enumerate().for_each(work);
    }
    out[..c].fill(T::ZERO);
    for acc in partial.chunks(c) {
        for (o, &a) in out.iter_mut().zip(acc) {
            *o += a;
        }
    }
}

/// Number of reduction chunks for `pixels` pixels.
pub(crate) fn reduce_chunks(pixels: usize) -> usize {
    pixels.div_ceil(REDUCE_CHUNK).max(1)
}
