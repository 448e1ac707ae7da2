// Kernels of the GPU executor, compiled at run time with NVRTC (no CUDA headers needed).
//
// Tensors are single images, channel-last (HWC), f32. Elementwise kernels use grid-stride loops,
// so any grid size is correct. Reductions (batch norm's per-channel sums, the data term) have
// every thread write its partial sums in f64 and a second kernel add them up in a fixed order:
// results do not depend on scheduling, and no kernel synchronises its block. Gradient kernels
// either write or add to their destination (`add`), as the CPU engine does for activations that
// feed several nodes.

typedef long long i64;

#define GRID_LOOP(i, n) \
    for (i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x; i < (n); i += (i64)blockDim.x * gridDim.x)

// Number of threads along y in the channel-reduction blocks (32 channels along x).
#define RED_Y 8

// Lanes: a launch with gridDim.z > 1 runs several networks of one layout at once (a batch of
// independent fits), lane z's buffers `ls` bytes after lane 0's in the f32 arena (float and the
// 32-bit tables) and `ls64` bytes in the f64 arena (double). Every kernel moves its pointers to
// its lane first; a null pointer stays null.
template <class T>
__device__ __forceinline__ void lane_of(T*& p, i64 ls, i64 ls64) {
    i64 off = (i64)blockIdx.z * (sizeof(T) == 8 ? ls64 : ls);
    if (p) p = (T*)((unsigned long long)p + (unsigned long long)off);
}
__device__ __forceinline__ void lanes(i64, i64) {}
template <class T, class... R>
__device__ __forceinline__ void lanes(i64 ls, i64 ls64, T*& p, R*&... r) {
    lane_of(p, ls, ls64);
    lanes(ls, ls64, r...);
}

// Source index of padded position `i` (padding `p` each side, axis of length `n`): -1 for a zero.
__device__ __forceinline__ int pad_src(int i, int n, int p, int reflect) {
    int t = i - p;
    if (reflect) {
        if (t < 0) t = -t;
        else if (t >= n) t = 2 * (n - 1) - t;
        return t;
    }
    return (t >= 0 && t < n) ? t : -1;
}

// The padded positions whose source is `y`: at most three (itself and two reflections).
__device__ __forceinline__ int pad_readers(int y, int n, int p, int reflect, int* c) {
    int m = 0;
    c[m++] = y + p;
    if (reflect) {
        if (y >= 1 && y <= p) c[m++] = p - y;
        int t = 2 * (n - 1) - y;
        if (y <= n - 2 && t <= n - 1 + p) c[m++] = t + p;
    }
    return m;
}

__device__ __forceinline__ void store(float* d, i64 i, float v, int add) {
    d[i] = add ? d[i] + v : v;
}

// col[m][(ky*k + kx)*cin + ci] = padded x at (oy*s + ky, ox*s + kx, ci), m = oy*wo + ox.
extern "C" __global__ void im2col(const float* x, float* col, int h, int w, int cin, int ho,
                                  int wo, int k, int s, int p, int reflect, i64 ls, i64 ls64) {
    lanes(ls, ls64, x, col);
    i64 n = (i64)ho * wo * k * k * cin;
    GRID_LOOP(i, n) {
        int ci = (int)(i % cin);
        i64 r = i / cin;
        int kk = (int)(r % (k * k));
        i64 m = r / (k * k);
        int ky = kk / k, kx = kk % k;
        int oy = (int)(m / wo), ox = (int)(m % wo);
        int sy = pad_src(oy * s + ky, h, p, reflect);
        int sx = pad_src(ox * s + kx, w, p, reflect);
        col[i] = (sy < 0 || sx < 0) ? 0.0f : x[((i64)sy * w + sx) * cin + ci];
    }
}

// The adjoint of im2col, as a gather (no atomics): every input element sums the column entries
// that read it, through the padding.
extern "C" __global__ void col2im(const float* col, float* dx, int h, int w, int cin, int ho,
                                  int wo, int k, int s, int p, int reflect, int add, i64 ls,
                                  i64 ls64) {
    lanes(ls, ls64, col, dx);
    i64 n = (i64)h * w * cin;
    i64 kcin = (i64)k * k * cin;
    GRID_LOOP(i, n) {
        int ci = (int)(i % cin);
        i64 r = i / cin;
        int x0 = (int)(r % w), y0 = (int)(r / w);
        int cy[3], cx[3];
        int ny = pad_readers(y0, h, p, reflect, cy);
        int nx = pad_readers(x0, w, p, reflect, cx);
        float acc = 0.0f;
        for (int a = 0; a < ny; a++) {
            for (int ky = 0; ky < k; ky++) {
                int ty = cy[a] - ky;
                if (ty < 0 || ty % s != 0 || ty / s >= ho) continue;
                int oy = ty / s;
                for (int b = 0; b < nx; b++) {
                    for (int kx = 0; kx < k; kx++) {
                        int tx = cx[b] - kx;
                        if (tx < 0 || tx % s != 0 || tx / s >= wo) continue;
                        int ox = tx / s;
                        acc += col[((i64)oy * wo + ox) * kcin + (ky * k + kx) * cin + ci];
                    }
                }
            }
        }
        store(dx, i, acc, add);
    }
}

extern "C" __global__ void add_bias(float* y, const float* b, i64 n, int c, i64 ls, i64 ls64) {
    lanes(ls, ls64, y, b);
    GRID_LOOP(i, n) { y[i] += b[i % c]; }
}

extern "C" __global__ void fill(float* y, i64 n, float v, i64 ls, i64 ls64) {
    lanes(ls, ls64, y);
    GRID_LOOP(i, n) { y[i] = v; }
}

extern "C" __global__ void copy(const float* x, float* y, i64 n, int add, i64 ls, i64 ls64) {
    lanes(ls, ls64, x, y);
    GRID_LOOP(i, n) { store(y, i, x[i], add); }
}

// Per-channel partial sums over a block of rows, one pair per thread row `ty`:
// part[2q][ch] = Σ x, part[2q+1][ch] = Σ x², q = blockIdx.y·RED_Y + ty.
// Grid (ceil(c/32), parts), block (32, RED_Y).
extern "C" __global__ void bn_partial(const float* x, double* part, int rows, int c, int per,
                                      i64 ls, i64 ls64) {
    lanes(ls, ls64, x, part);
    int ch = blockIdx.x * 32 + threadIdx.x;
    if (ch >= c) return;
    int r0 = blockIdx.y * per;
    int r1 = min(rows, r0 + per);
    double s = 0.0, q = 0.0;
    for (int r = r0 + threadIdx.y; r < r1; r += RED_Y) {
        double v = x[(i64)r * c + ch];
        s += v;
        q += v * v;
    }
    i64 k = (i64)blockIdx.y * RED_Y + threadIdx.y;
    part[(2 * k) * c + ch] = s;
    part[(2 * k + 1) * c + ch] = q;
}

// stats: [mean c][rstd c][k1 c][k2 c][k3 c]. y = act(x*k1 + k2), k1 = rstd*gamma.
extern "C" __global__ void bn_finalize(const double* part, int parts, int rows, int c,
                                       const float* gamma, const float* beta, float* stats,
                                       double eps, i64 ls, i64 ls64) {
    lanes(ls, ls64, part, gamma, beta, stats);
    int ch = blockIdx.x * blockDim.x + threadIdx.x;
    if (ch >= c) return;
    double s = 0.0, q = 0.0;
    for (int b = 0; b < parts; b++) {
        s += part[(i64)(2 * b) * c + ch];
        q += part[(i64)(2 * b + 1) * c + ch];
    }
    double mean = s / rows;
    double var = q / rows - mean * mean;
    if (var < 0.0) var = 0.0;
    float rstd = (float)(1.0 / sqrt(var + eps));
    float k1 = rstd * gamma[ch];
    stats[ch] = (float)mean;
    stats[c + ch] = rstd;
    stats[2 * c + ch] = k1;
    stats[3 * c + ch] = beta[ch] - (float)mean * k1;
}

extern "C" __global__ void bn_apply(const float* x, float* y, const float* stats, i64 n, int c,
                                    float neg_slope, i64 ls, i64 ls64) {
    lanes(ls, ls64, x, y, stats);
    GRID_LOOP(i, n) {
        int ch = (int)(i % c);
        float v = x[i] * stats[2 * c + ch] + stats[3 * c + ch];
        y[i] = v < 0.0f ? v * neg_slope : v;
    }
}

// Backward partial sums: Σ dz and Σ dz·(x − mean), dz = dy through the activation (sign of y),
// laid out as bn_partial's.
extern "C" __global__ void bn_bwd_partial(const float* x, const float* y, const float* dy,
                                          const float* stats, double* part, int rows, int c,
                                          int per, float neg_slope, i64 ls, i64 ls64) {
    lanes(ls, ls64, x, y, dy, stats, part);
    int ch = blockIdx.x * 32 + threadIdx.x;
    if (ch >= c) return;
    int r0 = blockIdx.y * per;
    int r1 = min(rows, r0 + per);
    double s = 0.0, q = 0.0;
    float mean = stats[ch];
    for (int r = r0 + threadIdx.y; r < r1; r += RED_Y) {
        i64 i = (i64)r * c + ch;
        float g = dy[i];
        float dz = y[i] > 0.0f ? g : g * neg_slope;
        s += dz;
        q += (double)dz * (double)(x[i] - mean);
    }
    i64 k = (i64)blockIdx.y * RED_Y + threadIdx.y;
    part[(2 * k) * c + ch] = s;
    part[(2 * k + 1) * c + ch] = q;
}

// dbeta = Σ dz, dgamma = rstd·Σ dz·(x − mean); dx = k1·dz + k2·(x − mean) + k3.
extern "C" __global__ void bn_bwd_finalize(const double* part, int parts, int rows, int c,
                                           const float* gamma, float* stats, float* dgamma,
                                           float* dbeta, i64 ls, i64 ls64) {
    lanes(ls, ls64, part, gamma, stats, dgamma, dbeta);
    int ch = blockIdx.x * blockDim.x + threadIdx.x;
    if (ch >= c) return;
    double s = 0.0, q = 0.0;
    for (int b = 0; b < parts; b++) {
        s += part[(i64)(2 * b) * c + ch];
        q += part[(i64)(2 * b + 1) * c + ch];
    }
    float rstd = stats[c + ch];
    float dg = (float)q * rstd;
    dbeta[ch] = (float)s;
    dgamma[ch] = dg;
    float a = gamma[ch] * rstd;
    float inv_n = 1.0f / (float)rows;
    stats[2 * c + ch] = a;
    stats[3 * c + ch] = -a * rstd * dg * inv_n;
    stats[4 * c + ch] = -a * (float)s * inv_n;
}

extern "C" __global__ void bn_bwd_apply(const float* x, const float* y, const float* dy,
                                        const float* stats, float* dx, i64 n, int c,
                                        float neg_slope, int add, i64 ls, i64 ls64) {
    lanes(ls, ls64, x, y, dy, stats, dx);
    GRID_LOOP(i, n) {
        int ch = (int)(i % c);
        float g = dy[i];
        float dz = y[i] > 0.0f ? g : g * neg_slope;
        float v = stats[2 * c + ch] * dz + stats[3 * c + ch] * (x[i] - stats[ch]) + stats[4 * c + ch];
        store(dx, i, v, add);
    }
}

// Upsampling taps along one axis (PyTorch's conventions): output index `o` reads `i0` with
// weight `w0` and `i1` with weight `w1`. mode 0 nearest, 1 bilinear (align_corners=false),
// 2 zero insertion.
__device__ __forceinline__ void taps(int mode, int o, int f, int n, int* i0, int* i1, float* w0,
                                     float* w1) {
    if (mode == 1) {
        float src = ((float)o + 0.5f) / (float)f - 0.5f;
        if (src < 0.0f) src = 0.0f;
        int a = (int)floorf(src);
        *i0 = a;
        *i1 = a + 1 < n ? a + 1 : a;
        *w1 = src - (float)a;
        *w0 = 1.0f - *w1;
    } else {
        *i0 = o / f;
        *i1 = o / f;
        *w0 = (mode == 2 && o % f != 0) ? 0.0f : 1.0f;
        *w1 = 0.0f;
    }
}

// Weight with which output index `o` reads source index `s`.
__device__ __forceinline__ float tap_weight(int mode, int o, int f, int n, int s) {
    int i0, i1;
    float w0, w1;
    taps(mode, o, f, n, &i0, &i1, &w0, &w1);
    return (i0 == s ? w0 : 0.0f) + (i1 == s ? w1 : 0.0f);
}

extern "C" __global__ void upsample_fwd(const float* x, float* y, int h, int w, int c, int f,
                                        int mode, i64 ls, i64 ls64) {
    lanes(ls, ls64, x, y);
    int ho = h * f, wo = w * f;
    i64 n = (i64)ho * wo * c;
    GRID_LOOP(i, n) {
        int ch = (int)(i % c);
        i64 r = i / c;
        int ox = (int)(r % wo), oy = (int)(r / wo);
        int y0, y1, x0, x1;
        float a0, a1, b0, b1;
        taps(mode, oy, f, h, &y0, &y1, &a0, &a1);
        taps(mode, ox, f, w, &x0, &x1, &b0, &b1);
        float v = a0 * (b0 * x[((i64)y0 * w + x0) * c + ch] + b1 * x[((i64)y0 * w + x1) * c + ch]);
        if (a1 != 0.0f)
            v += a1 * (b0 * x[((i64)y1 * w + x0) * c + ch] + b1 * x[((i64)y1 * w + x1) * c + ch]);
        y[i] = v;
    }
}

// Gather: source pixel (sy, sx) sums the outputs that read it. Outputs reading source index s lie
// within [(s − 1)·f, (s + 2)·f) for every mode.
extern "C" __global__ void upsample_bwd(const float* dy, float* dx, int h, int w, int c, int f,
                                        int mode, int add, i64 ls, i64 ls64) {
    lanes(ls, ls64, dy, dx);
    int ho = h * f, wo = w * f;
    i64 n = (i64)h * w * c;
    GRID_LOOP(i, n) {
        int ch = (int)(i % c);
        i64 r = i / c;
        int sx = (int)(r % w), sy = (int)(r / w);
        int oy0 = max(0, (sy - 1) * f), oy1 = min(ho, (sy + 2) * f);
        int ox0 = max(0, (sx - 1) * f), ox1 = min(wo, (sx + 2) * f);
        float acc = 0.0f;
        for (int oy = oy0; oy < oy1; oy++) {
            float wy = tap_weight(mode, oy, f, h, sy);
            if (wy == 0.0f) continue;
            float row = 0.0f;
            for (int ox = ox0; ox < ox1; ox++) {
                float wx = tap_weight(mode, ox, f, w, sx);
                if (wx != 0.0f) row += wx * dy[((i64)oy * wo + ox) * c + ch];
            }
            acc += wy * row;
        }
        store(dx, i, acc, add);
    }
}

// Channels [off, off + ci) of the `ctot`-channel y are the `ci`-channel x.
extern "C" __global__ void concat_fwd(const float* x, float* y, i64 pixels, int ci, int ctot,
                                      int off, i64 ls, i64 ls64) {
    lanes(ls, ls64, x, y);
    i64 n = pixels * ci;
    GRID_LOOP(i, n) {
        i64 p = i / ci;
        y[p * ctot + off + (int)(i % ci)] = x[i];
    }
}

extern "C" __global__ void concat_bwd(const float* dy, float* dx, i64 pixels, int ci, int ctot,
                                      int off, int add, i64 ls, i64 ls64) {
    lanes(ls, ls64, dy, dx);
    i64 n = pixels * ci;
    GRID_LOOP(i, n) {
        i64 p = i / ci;
        store(dx, i, dy[p * ctot + off + (int)(i % ci)], add);
    }
}

extern "C" __global__ void sigmoid_fwd(const float* x, float* y, i64 n, i64 ls, i64 ls64) {
    lanes(ls, ls64, x, y);
    GRID_LOOP(i, n) { y[i] = 1.0f / (1.0f + expf(-x[i])); }
}

extern "C" __global__ void sigmoid_bwd(const float* y, const float* dy, float* dx, i64 n, int add,
                                       i64 ls, i64 ls64) {
    lanes(ls, ls64, y, dy, dx);
    GRID_LOOP(i, n) { store(dx, i, dy[i] * y[i] * (1.0f - y[i]), add); }
}

extern "C" __global__ void lrelu_fwd(const float* x, float* y, i64 n, float slope, i64 ls,
                                     i64 ls64) {
    lanes(ls, ls64, x, y);
    GRID_LOOP(i, n) {
        float v = x[i];
        y[i] = v > 0.0f ? v : slope * v;
    }
}

extern "C" __global__ void lrelu_bwd(const float* x, const float* dy, float* dx, i64 n,
                                     float slope, int add, i64 ls, i64 ls64) {
    lanes(ls, ls64, x, dy, dx);
    GRID_LOOP(i, n) { store(dx, i, x[i] > 0.0f ? dy[i] : slope * dy[i], add); }
}

// The data term of a diagonal forward operator `a` (all ones when denoising, the mask when
// inpainting, zero on padding): d = a·out − target, and the gradient with respect to out,
// scale·w·a·d (l1 = 0) or scale·w·a·sign(d) (l1 = 1; 0 at d = 0, as PyTorch), with per-sample
// weights `w` (a batch of pixels; null: all 1). Each thread t of the grid writes its sums
// [Σ d², Σ |d|, Σ w·d², Σ w·|d|] to part[4t..4t + 4]; loss_finalize adds them.
extern "C" __global__ void data_loss(const float* out, const float* target, const float* a,
                                     const float* w, float* dout, double* part, i64 n,
                                     float scale, int l1, i64 ls, i64 ls64) {
    lanes(ls, ls64, out, target, a, w, dout, part);
    i64 t = (i64)blockIdx.x * blockDim.x + threadIdx.x;
    double s = 0.0, u = 0.0, ws = 0.0, wu = 0.0;
    GRID_LOOP(i, n) {
        float ai = a[i];
        float d = ai * out[i] - target[i];
        double d2 = (double)d * (double)d, ad = (double)fabsf(d);
        s += d2;
        u += ad;
        float wi = w ? w[i] : 1.0f;
        ws += (double)wi * d2;
        wu += (double)wi * ad;
        float g = l1 ? (d > 0.0f ? 1.0f : (d < 0.0f ? -1.0f : 0.0f)) : d;
        dout[i] = scale * wi * ai * g;
    }
    part[4 * t] = s;
    part[4 * t + 1] = u;
    part[4 * t + 2] = ws;
    part[4 * t + 3] = wu;
}

// loss = data_loss's four sums from its `threads` partials, added in order. One thread.
extern "C" __global__ void loss_finalize(const double* part, int threads, double* loss, i64 ls,
                                         i64 ls64) {
    lanes(ls, ls64, part, loss);
    if (threadIdx.x != 0 || blockIdx.x != 0) return;
    double acc[4] = {0.0, 0.0, 0.0, 0.0};
    for (int t = 0; t < threads; t++)
        for (int j = 0; j < 4; j++) acc[j] += part[4 * t + j];
    for (int j = 0; j < 4; j++) loss[j] = acc[j];
}

// y = A x for a sparse A stored by rows (CSR, 32-bit indices); each row summed in its order.
extern "C" __global__ void spmv(const unsigned* start, const unsigned* idx, const float* w,
                                const float* x, float* y, i64 rows, i64 ls, i64 ls64) {
    lanes(ls, ls64, start, idx, w, x, y);
    GRID_LOOP(r, rows) {
        float s = 0.0f;
        for (unsigned k = start[r]; k < start[r + 1]; k++) s += w[k] * x[idx[k]];
        y[r] = s;
    }
}

// A fixed depthwise filter as a gather over pixels: dst[p][ch] (+)= Σ w[k]·src[idx[k]][ch] over
// the taps k of row p (CSR, 32-bit), each row in its order.
extern "C" __global__ void pix_gather(const unsigned* start, const unsigned* idx, const float* w,
                                      const float* src, float* dst, i64 pixels, int c, int add,
                                      i64 ls, i64 ls64) {
    lanes(ls, ls64, start, idx, w, src, dst);
    GRID_LOOP(i, pixels * c) {
        i64 p = i / c;
        int ch = (int)(i % c);
        float s = 0.0f;
        for (unsigned k = start[p]; k < start[p + 1]; k++) s += w[k] * src[(i64)idx[k] * c + ch];
        store(dst, i, s, add);
    }
}

// A counter-based Gaussian: the splitmix64 finaliser of (key, index) gives two 24-bit uniforms
// and Box–Muller one standard normal. The numbers depend on (key, i) only, not on the launch.
__device__ __forceinline__ unsigned long long mix64(unsigned long long x) {
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ULL;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebULL;
    x ^= x >> 31;
    return x;
}

__device__ __forceinline__ float gauss(unsigned long long key, i64 i) {
    unsigned long long r = mix64(key + (unsigned long long)(i + 1) * 0x9e3779b97f4a7c15ULL);
    float u1 = (float)((r >> 40) + 1) * (1.0f / 16777216.0f);
    float u2 = (float)((r >> 16) & 0xffffffULL) * (1.0f / 16777216.0f);
    return sqrtf(-2.0f * logf(u1)) * cosf(6.28318530717958647692f * u2);
}

// A fit's device state: [step, lr, seed key (high 32 bits), seed key (low 32 bits), active].
// `active` is 0 for a lane whose fit skips the rest of this step (a rollback in a batch of
// fits): its moving average, Adam and SGLD noise leave it alone.
__device__ __forceinline__ bool skipped(const double* fit) { return fit && fit[4] == 0.0; }

// x = base + sd·N(0, 1) (x may be base). Without `fit` the normals are drawn from `key`; with
// it (a fit's device state) they are those of (the fit's seed key, step, stream), as the host's
// `noise_key` makes them, and sd is multiplied by lr if `by_lr`. Then the seed, the step and
// the step size are read on the device, so a captured step replays, for every lane.
extern "C" __global__ void add_gauss(const float* base, float* x, i64 n, i64 key, i64 stream,
                                     const double* fit, double sd, int by_lr, i64 ls,
                                     i64 ls64) {
    lanes(ls, ls64, base, x, fit);
    if (skipped(fit)) return;
    unsigned long long k = (unsigned long long)key;
    float s = (float)sd;
    if (fit) {
        k = ((unsigned long long)fit[2] << 32) | (unsigned long long)fit[3];
        k = mix64(mix64(k ^ (unsigned long long)fit[0]) ^
                  ((unsigned long long)stream + 0x3c6ef372ULL));
        if (by_lr) s = (float)(sd * fit[1]);
    }
    GRID_LOOP(i, n) { x[i] = base[i] + s * gauss(k, i); }
}

// A fit's step counter.
extern "C" __global__ void fit_tick(double* fit, i64 ls, i64 ls64) {
    lanes(ls, ls64, fit);
    if (threadIdx.x == 0 && blockIdx.x == 0) fit[0] += 1.0;
}

// Adam's step counter and bias corrections live on the device, so that a captured step replays
// correctly: state = [t, β1^t, β2^t].
extern "C" __global__ void adam_tick(double* state, double b1, double b2, const double* fit,
                                     i64 ls, i64 ls64) {
    lanes(ls, ls64, state, fit);
    if (skipped(fit)) return;
    if (threadIdx.x == 0 && blockIdx.x == 0) {
        state[0] += 1.0;
        state[1] *= b1;
        state[2] *= b2;
    }
}

// As the CPU: p −= lr/(1−β1^t) · m / (sqrt(v)/sqrt(1−β2^t) + eps), m as torch's lerp.
// The step size is `lr`, or a fit's device-side one (fit[1]) when `fit` is given.
extern "C" __global__ void adam(float* p, const float* g, float* m, float* v, i64 n,
                                const double* state, double lr, const double* fit, float b1,
                                float b2, float eps, float wd, float w1, float w2, i64 ls,
                                i64 ls64) {
    lanes(ls, ls64, p, g, m, v, state, fit);
    if (skipped(fit)) return;
    if (fit) lr = fit[1];
    float step_size = (float)(lr / (1.0 - state[1]));
    float bc2_sqrt = (float)sqrt(1.0 - state[2]);
    GRID_LOOP(i, n) {
        float gi = wd != 0.0f ? g[i] + wd * p[i] : g[i];
        float mi = m[i] + w1 * (gi - m[i]);
        float vi = v[i] * b2 + w2 * gi * gi;
        m[i] = mi;
        v[i] = vi;
        p[i] -= step_size * (mi / (sqrtf(vi) / bc2_sqrt + eps));
    }
}

// Exponential moving average: avg = β·avg + (1 − β)·x. With a fit's state, at its first step
// the average is a copy of x (it may not hold numbers yet).
extern "C" __global__ void ema(float* avg, const float* x, i64 n, float beta, const double* fit,
                               i64 ls, i64 ls64) {
    lanes(ls, ls64, avg, x, fit);
    if (skipped(fit)) return;
    if (fit && fit[0] == 1.0) {
        GRID_LOOP(i, n) { avg[i] = x[i]; }
        return;
    }
    GRID_LOOP(i, n) { avg[i] = beta * avg[i] + (1.0f - beta) * x[i]; }
}

// Lipschitz control (Shi et al.): σ_max of every weight matrix by a power iteration on WᵀW run to
// convergence, warm-started from the last call's vector, as the CPU engine's `spectral_norm`, in
// the same f64 operations in the same order (no contraction into FMAs), so σ is the CPU's. One
// thread per matrix m of `table` ([offset, rows, cols, v, u, w], the last three into `vecs`);
// factor[m] = λ/σ where σ > λ, else 1. With a fit's state, nothing for a lane that skips.
extern "C" __global__ void lipschitz_norm(const float* p, const unsigned* table, double* vecs,
                                          float* factor, int n, double lambda, const double* fit,
                                          i64 ls, i64 ls64) {
    lanes(ls, ls64, p, table, vecs, factor, fit);
    if (skipped(fit)) return;
    GRID_LOOP(m, n) {
        const unsigned* t = table + 6 * m;
        const float* a = p + t[0];
        int rows = (int)t[1], cols = (int)t[2];
        double* v = vecs + t[3];
        double* u = vecs + t[4];
        double* w = vecs + t[5];
        double sigma = 0.0;
        if (rows > 0 && cols > 0) {
            bool reset = true;
            for (int c = 0; c < cols; c++) {
                if (v[c] != 0.0) reset = false;
            }
            for (int c = 0; c < cols; c++) {
                if (!isfinite(v[c])) reset = true;
            }
            if (reset) {
                for (int c = 0; c < cols; c++)
                    v[c] = __dadd_rn(1.0, __dmul_rn(0.01, (double)((c * 7919) % 97)));
            }
            for (int it = 0; it < 1000; it++) {
                double nv = 0.0;
                for (int c = 0; c < cols; c++) nv = __dadd_rn(nv, __dmul_rn(v[c], v[c]));
                nv = sqrt(nv);
                if (nv == 0.0) {
                    sigma = 0.0;
                    break;
                }
                for (int c = 0; c < cols; c++) v[c] = v[c] / nv;
                double s = 0.0;
                for (int r = 0; r < rows; r++) {
                    double acc = 0.0;
                    for (int c = 0; c < cols; c++)
                        acc = __dadd_rn(acc, __dmul_rn((double)a[(i64)r * cols + c], v[c]));
                    u[r] = acc;
                    s = __dadd_rn(s, __dmul_rn(acc, acc));
                }
                s = sqrt(s);
                for (int c = 0; c < cols; c++) w[c] = 0.0;
                for (int r = 0; r < rows; r++) {
                    for (int c = 0; c < cols; c++)
                        w[c] = __dadd_rn(w[c], __dmul_rn((double)a[(i64)r * cols + c], u[r]));
                }
                double s2 = __dmul_rn(s, s);
                double res = 0.0;
                for (int c = 0; c < cols; c++) {
                    double d = __dsub_rn(w[c], __dmul_rn(s2, v[c]));
                    res = __dadd_rn(res, __dmul_rn(d, d));
                }
                res = sqrt(res);
                sigma = s;
                for (int c = 0; c < cols; c++) v[c] = w[c];
                if (res <= __dmul_rn(1e-8, s2) || s2 == 0.0) break;
            }
        }
        factor[m] = sigma > lambda ? (float)(lambda / sigma) : 1.0f;
    }
}

// Scales matrix blockIdx.y of `table` by its factor (as lipschitz_norm, not a skipping lane).
extern "C" __global__ void lipschitz_scale(float* p, const unsigned* table, const float* factor,
                                           const double* fit, i64 ls, i64 ls64) {
    lanes(ls, ls64, p, table, factor, fit);
    if (skipped(fit)) return;
    const unsigned* t = table + 6 * blockIdx.y;
    float f = factor[blockIdx.y];
    float* a = p + t[0];
    i64 n = (i64)t[1] * t[2];
    GRID_LOOP(i, n) { a[i] *= f; }
}
