// The direct convolution (SRCNN's first layer): one input channel -> C_out channels, stride 1, correlation
// (no kernel flip), NCHW. Compiled at run time by tinysr.ops.cuda_kernels (cupy.RawModule/NVRTC):
// plain CUDA C, no #include, no atomics, no warp intrinsics; float4/double2 shared-memory loads.
//
//   y[n, o, r, s] = b[o] + sum_{i, j} w[o, 0, i, j] * xpad[n, 0, r + i, s + j]
//
// xpad is never materialised. An input index (r + i - top, s + j - left) is
//   mode 0 (valid):     always inside (top = left = 0);
//   mode 1 (zero):      0 outside [0, H) x [0, W);
//   mode 2 (replicate): clamped into [0, H-1] x [0, W-1];
// with top = (kh-1)/2, left = (kw-1)/2 for zero/replicate (tinysr.ops.shapes.pad_amounts).
//
// Entry points (float32 / float64): direct_forward_f32/_f64, direct_grad_partial_f32/_f64 and
// direct_grad_reduce_f32/_f64 (the two passes of the parameter gradients).
// The layer needs no input gradient, so there is no backward-data kernel.

#define DIRECT_TILE_W 32                // forward output tile: 32 columns (one warp per row) ...
#define DIRECT_TILE_H 16                // ... by 16 rows
#define DIRECT_RPT 4                    // output rows per forward thread (block 32 x 4)
#define DIRECT_THREADS (DIRECT_TILE_W * DIRECT_TILE_H / DIRECT_RPT)
#define DIRECT_OCB 16                   // output channels per forward block and per gradient block
#define DIRECT_KMAX 11                  // largest kh and kw the static shared buffers hold
#define DIRECT_HALO_H (DIRECT_TILE_H + DIRECT_KMAX - 1)
#define DIRECT_PITCH (DIRECT_TILE_W + DIRECT_KMAX - 1)  // staged tile row pitch
#define DIRECT_GRAD_PIX 128             // output pixels per grad tile (TR * TC), and the largest TC
#define DIRECT_GRAD_THREADS 128         // most threads per grad block: one per tap and one for the bias
// x tile of the grad pass: (TR + kh - 1) rows of TC + kw - 1 <= (TR + 10) * (TC + 10) <= 1518
// words (TR * TC <= 128), padded to a pitch < TC + kw - 1 + 32 where that fits (always at TR = 1).
#define DIRECT_GRAD_XS (DIRECT_KMAX * (DIRECT_GRAD_PIX + DIRECT_KMAX - 1 + 31))

#define DIRECT_MODE_VALID 0
#define DIRECT_MODE_ZERO 1
#define DIRECT_MODE_REPLICATE 2

__device__ __forceinline__ int direct_clamp(int v, int lo, int hi)
{
    return v < lo ? lo : (v > hi ? hi : v);
}

// Input pixel (iy, ix) of image xn (H x W, row-major) under the padding mode.
template <typename T>
__device__ __forceinline__ T direct_load(const T* __restrict__ xn, int iy, int ix,
                                        int H, int W, int mode)
{
    if (mode == DIRECT_MODE_REPLICATE) {
        iy = direct_clamp(iy, 0, H - 1);
        ix = direct_clamp(ix, 0, W - 1);
        return xn[(long long)iy * W + ix];
    }
    if (iy < 0 || iy >= H || ix < 0 || ix >= W) {
        return T(0);
    }
    return xn[(long long)iy * W + ix];
}

// dst[0..3] = src[0..3] with one 16-byte shared-memory load (two for double); src 16-byte aligned.
__device__ __forceinline__ void direct_ld4(const float* src, float* dst)
{
    const float4 v = *reinterpret_cast<const float4*>(src);
    dst[0] = v.x; dst[1] = v.y; dst[2] = v.z; dst[3] = v.w;
}

__device__ __forceinline__ void direct_ld4(const double* src, double* dst)
{
    const double2 a = *reinterpret_cast<const double2*>(src);
    const double2 b = *reinterpret_cast<const double2*>(src + 2);
    dst[0] = a.x; dst[1] = a.y; dst[2] = b.x; dst[3] = b.y;
}

// ---------------------------------------------------------------------------------------------
// Forward. Thread mapping:
//   block (32, 4): thread (tx, ty) owns the DIRECT_RPT output pixels (oy0 + ty + 4 q, ox0 + tx),
//                  q = 0..3, of a 32 x 16 output tile;
//   grid.x, grid.y: output tiles along Wo and Ho;
//   grid.z:         (image n, group of DIRECT_OCB output channels) pairs, walked with a
//                   grid-stride loop so any N fits the 65535 limit on grid.z.
// Per (n, channel group) the block stages the input tile plus its (kh-1) x (kw-1) halo and the
// group's weights in shared memory, the weights as [tap][channel] (16-byte aligned), so one
// float4 (two double2) load gives 4 channels' weights for a tap. Per tap a thread loads the
// group's 16 weights once (4 vector loads, the same address across the warp: a broadcast) and
// its 4 pixels' inputs, for 64 FMAs. A warp is one tile row of 32 consecutive pixels, so its
// input loads hit 32 consecutive words: no bank conflict for any row pitch.
// Out-of-range output pixels of edge tiles still help load shared memory but write nothing.
// relu != 0 fuses max(., 0) (NaN passes through, as numpy.maximum does).
template <typename T>
__device__ __forceinline__ void direct_forward_impl(
    const T* __restrict__ x, const T* __restrict__ w, const T* __restrict__ b, T* __restrict__ y,
    int N, int H, int W, int C_out, int kh, int kw, int Ho, int Wo,
    int top, int left, int mode, int relu)
{
    __shared__ T tile[DIRECT_HALO_H * DIRECT_PITCH];
    __shared__ __align__(16) T ws[DIRECT_KMAX * DIRECT_KMAX * DIRECT_OCB];

    const int tx = threadIdx.x, ty = threadIdx.y;
    const int tid = ty * DIRECT_TILE_W + tx;
    const int TW = DIRECT_TILE_W + kw - 1;         // staged tile width / height
    const int TH = DIRECT_TILE_H + kh - 1;
    const int KK = kh * kw;
    const int ox0 = blockIdx.x * DIRECT_TILE_W, oy0 = blockIdx.y * DIRECT_TILE_H;
    const int ox = ox0 + tx;
    const int groups = (C_out + DIRECT_OCB - 1) / DIRECT_OCB;
    const int jobs = N * groups;                  // the host checks it fits an int
    const int plane = Ho * Wo;                    // likewise

    for (int z = blockIdx.z; z < jobs; z += gridDim.z) {
        const int n = z / groups;
        const int o0 = (z - n * groups) * DIRECT_OCB;
        const T* xn = x + (long long)n * H * W;

        __syncthreads();  // the previous job is done reading tile / ws
        for (int q = tid; q < TH * TW; q += DIRECT_THREADS) {
            const int r = q / TW, s = q - r * TW;
            tile[r * DIRECT_PITCH + s] = direct_load(xn, oy0 + r - top, ox0 + s - left, H, W, mode);
        }
        for (int q = tid; q < KK * DIRECT_OCB; q += DIRECT_THREADS) {
            const int t = q / DIRECT_OCB, o = q - t * DIRECT_OCB;
            ws[q] = (o0 + o < C_out) ? w[(o0 + o) * KK + t] : T(0);
        }
        __syncthreads();

        T acc[DIRECT_RPT][DIRECT_OCB];
#pragma unroll
        for (int r = 0; r < DIRECT_RPT; ++r) {
#pragma unroll
            for (int o = 0; o < DIRECT_OCB; ++o) acc[r][o] = T(0);
        }
        for (int i = 0; i < kh; ++i) {
            const T* trow = tile + (ty + i) * DIRECT_PITCH + tx;
            for (int j = 0; j < kw; ++j) {
                T wv[DIRECT_OCB];
#pragma unroll
                for (int o = 0; o < DIRECT_OCB; o += 4) direct_ld4(ws + (i * kw + j) * DIRECT_OCB + o, wv + o);
#pragma unroll
                for (int r = 0; r < DIRECT_RPT; ++r) {
                    const T v = trow[r * (DIRECT_TILE_H / DIRECT_RPT) * DIRECT_PITCH + j];
#pragma unroll
                    for (int o = 0; o < DIRECT_OCB; ++o) acc[r][o] += wv[o] * v;
                }
            }
        }
        if (ox < Wo) {
#pragma unroll
            for (int r = 0; r < DIRECT_RPT; ++r) {
                const int oy = oy0 + ty + r * (DIRECT_TILE_H / DIRECT_RPT);
                if (oy >= Ho) break;
                T* yp = y + ((long long)n * C_out + o0) * plane + oy * Wo + ox;
#pragma unroll
                for (int o = 0; o < DIRECT_OCB; ++o) {
                    if (o0 + o < C_out) {
                        T val = acc[r][o] + b[o0 + o];
                        if (relu && val < T(0)) val = T(0);
                        yp[(long long)o * plane] = val;
                    }
                }
            }
        }
    }
}

extern "C" __global__ void __launch_bounds__(DIRECT_THREADS) direct_forward_f32(
    const float* __restrict__ x, const float* __restrict__ w, const float* __restrict__ b,
    float* __restrict__ y, int N, int H, int W, int C_out, int kh, int kw, int Ho, int Wo,
    int top, int left, int mode, int relu)
{
    direct_forward_impl<float>(x, w, b, y, N, H, W, C_out, kh, kw, Ho, Wo, top, left, mode, relu);
}

extern "C" __global__ void __launch_bounds__(DIRECT_THREADS) direct_forward_f64(
    const double* __restrict__ x, const double* __restrict__ w, const double* __restrict__ b,
    double* __restrict__ y, int N, int H, int W, int C_out, int kh, int kw, int Ho, int Wo,
    int top, int left, int mode, int relu)
{
    direct_forward_impl<double>(x, w, b, y, N, H, W, C_out, kh, kw, Ho, Wo, top, left, mode, relu);
}

// ---------------------------------------------------------------------------------------------
// Parameter gradients, deterministic (no atomics), in two passes.
//
// Pass 1, direct_grad_partial: the output pixels are cut into tiles of TR x TC pixels of one image
// (TR * TC <= DIRECT_GRAD_PIX, TC <= DIRECT_GRAD_PIX; the host picks them), numbered
// z = (n * tiles_r + tile_row) * tiles_c + tile_col. grid (slots, channel groups of DIRECT_OCB):
// block (s, g) walks the tiles z = s, s + slots, ... in order; for each it stages the x tile with
// its (kh-1) x (kw-1) halo (row pitch = kw mod 32: a warp's taps read 32 different banks) and
// the group's dy tile ([pixel][channel], 16-byte aligned; every thread reads the same pixel: a
// broadcast) in shared memory, once. Thread t <= kh*kw owns tap t (t == kh*kw is the bias: x taken as 1) and keeps
// DIRECT_OCB accumulators, one per channel of the group, adding the tile's pixels in row order;
// a vector load gives it 4 channels' dy at once. It writes
//     partials[(s * C_out + o) * (kh*kw + 1) + t]
// so x and dy are read once per channel group, not once per (channel, tap).
// Pass 2, direct_grad_reduce: one thread per (o, t) adds the `slots` partials in slot order and
// writes dw[o, 0, i, j] (t = i*kw + j) or db[o] (t = kh*kw).
// Every order depends only on the shapes, so repeated runs are bit-identical.

template <typename T>
__device__ __forceinline__ void direct_grad_partial_impl(
    const T* __restrict__ x, const T* __restrict__ dy, T* __restrict__ partials,
    int H, int W, int C_out, int kh, int kw, int Ho, int Wo, int top, int left, int mode,
    int TR, int TC, int tiles_r, int tiles_c, int tiles, int slots)
{
    __shared__ __align__(16) T xs[DIRECT_GRAD_XS];
    __shared__ __align__(16) T dys[DIRECT_GRAD_PIX * DIRECT_OCB];

    const int tid = threadIdx.x;
    const int nthreads = blockDim.x;
    const int KK = kh * kw;
    const int t = tid;                              // tap (t == KK: bias)
    const bool active = t <= KK;
    const int i = (t < KK) ? t / kw : 0;
    const int j = (t < KK) ? t - i * kw : 0;
    const int o0 = blockIdx.y * DIRECT_OCB;
    const int per_image = tiles_r * tiles_c;

    T acc[DIRECT_OCB];
#pragma unroll
    for (int o = 0; o < DIRECT_OCB; ++o) acc[o] = T(0);

    for (int z = blockIdx.x; z < tiles; z += slots) {
        const int n = z / per_image;
        const int rem = z - n * per_image;
        const int tr = rem / tiles_c;
        const int r0 = tr * TR, c0 = (rem - tr * tiles_c) * TC;
        const int rows = (Ho - r0 < TR) ? Ho - r0 : TR, cols = (Wo - c0 < TC) ? Wo - c0 : TC;
        const int XW = cols + kw - 1;
        // Row pitch XP = kw (mod 32): tap t = i*kw + j reads word (pr + i)*XP + pc + j, which is
        // t + constant (mod 32) across a warp, so its 32 taps hit 32 different banks. Narrow tall
        // tiles whose padded rows would not fit xs keep XW (unpadded, always fits).
        const int XPAD = XW + ((kw - XW) % 32 + 32) % 32;
        const int XP = ((rows + kh - 1) * XPAD <= DIRECT_GRAD_XS) ? XPAD : XW;
        const int npix = rows * cols;
        const T* xn = x + (long long)n * H * W;
        const T* dyn = dy + ((long long)n * C_out + o0) * Ho * Wo;

        __syncthreads();  // the previous tile is done reading xs / dys
        for (int q = tid; q < (rows + kh - 1) * XW; q += nthreads) {
            const int r = q / XW, s = q - r * XW;
            xs[r * XP + s] = direct_load(xn, r0 + r - top, c0 + s - left, H, W, mode);
        }
        for (int q = tid; q < DIRECT_OCB * npix; q += nthreads) {
            const int o = q / npix, p = q - o * npix;   // pixels fastest: coalesced dy reads
            const int pr = p / cols, pc = p - pr * cols;
            dys[p * DIRECT_OCB + o] = (o0 + o < C_out)
                ? dyn[(long long)o * Ho * Wo + (r0 + pr) * Wo + (c0 + pc)] : T(0);
        }
        __syncthreads();

        if (active) {
            for (int pr = 0; pr < rows; ++pr) {
                const T* xrow = xs + (pr + i) * XP + j;
                const T* drow = dys + pr * cols * DIRECT_OCB;
                for (int pc = 0; pc < cols; ++pc) {
                    const T v = (t < KK) ? xrow[pc] : T(1);
                    T d[DIRECT_OCB];
#pragma unroll
                    for (int o = 0; o < DIRECT_OCB; o += 4) direct_ld4(drow + pc * DIRECT_OCB + o, d + o);
#pragma unroll
                    for (int o = 0; o < DIRECT_OCB; ++o) acc[o] += d[o] * v;
                }
            }
        }
    }
    if (active) {
#pragma unroll
        for (int o = 0; o < DIRECT_OCB; ++o) {
            if (o0 + o < C_out) partials[((long long)blockIdx.x * C_out + o0 + o) * (KK + 1) + t] = acc[o];
        }
    }
}

template <typename T>
__device__ __forceinline__ void direct_grad_reduce_impl(
    const T* __restrict__ partials, T* __restrict__ dw, T* __restrict__ db, int C_out, int KK, int slots)
{
    const int per_slot = C_out * (KK + 1);
    for (int q = blockIdx.x * blockDim.x + threadIdx.x; q < per_slot; q += gridDim.x * blockDim.x) {
        T acc = T(0);
        for (int s = 0; s < slots; ++s) acc += partials[(long long)s * per_slot + q];
        const int o = q / (KK + 1), t = q - o * (KK + 1);
        if (t < KK) {
            dw[o * KK + t] = acc;
        } else {
            db[o] = acc;
        }
    }
}

extern "C" __global__ void __launch_bounds__(DIRECT_GRAD_THREADS) direct_grad_partial_f32(
    const float* __restrict__ x, const float* __restrict__ dy, float* __restrict__ partials,
    int H, int W, int C_out, int kh, int kw, int Ho, int Wo, int top, int left, int mode,
    int TR, int TC, int tiles_r, int tiles_c, int tiles, int slots)
{
    direct_grad_partial_impl<float>(x, dy, partials, H, W, C_out, kh, kw, Ho, Wo, top, left, mode,
                                   TR, TC, tiles_r, tiles_c, tiles, slots);
}

extern "C" __global__ void __launch_bounds__(DIRECT_GRAD_THREADS) direct_grad_partial_f64(
    const double* __restrict__ x, const double* __restrict__ dy, double* __restrict__ partials,
    int H, int W, int C_out, int kh, int kw, int Ho, int Wo, int top, int left, int mode,
    int TR, int TC, int tiles_r, int tiles_c, int tiles, int slots)
{
    direct_grad_partial_impl<double>(x, dy, partials, H, W, C_out, kh, kw, Ho, Wo, top, left, mode,
                                    TR, TC, tiles_r, tiles_c, tiles, slots);
}

extern "C" __global__ void direct_grad_reduce_f32(const float* __restrict__ partials, float* __restrict__ dw,
                                                 float* __restrict__ db, int C_out, int KK, int slots)
{
    direct_grad_reduce_impl<float>(partials, dw, db, C_out, KK, slots);
}

extern "C" __global__ void direct_grad_reduce_f64(const double* __restrict__ partials, double* __restrict__ dw,
                                                 double* __restrict__ db, int C_out, int KK, int slots)
{
    direct_grad_reduce_impl<double>(partials, dw, db, C_out, KK, slots);
}
