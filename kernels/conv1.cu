// SRCNN's first convolution: one input channel -> C_out channels, stride 1, correlation
// (no kernel flip), NCHW. Compiled at run time by tinysr.cuda_kernels (cupy.RawModule/NVRTC):
// plain CUDA C, no #include, no atomics, no warp intrinsics.
//
//   y[n, o, r, s] = b[o] + sum_{i, j} w[o, 0, i, j] * xpad[n, 0, r + i, s + j]
//
// xpad is never materialised. An input index (r + i - top, s + j - left) is
//   mode 0 (valid):     always inside (top = left = 0);
//   mode 1 (zero):      0 outside [0, H) x [0, W);
//   mode 2 (replicate): clamped into [0, H-1] x [0, W-1];
// with top = (kh-1)/2, left = (kw-1)/2 for zero/replicate (tinysr.shapes.pad_amounts).
//
// Entry points (float32 / float64): conv1_forward_f32/_f64, conv1_grad_params_f32/_f64.
// The layer needs no input gradient, so there is no backward-data kernel.

#define CONV1_TILE 16                  // output tile edge; a forward block is 16 x 16 threads
#define CONV1_THREADS (CONV1_TILE * CONV1_TILE)
#define CONV1_OCB 16                   // output channels computed per forward block
#define CONV1_KMAX 11                  // largest kh and kw the static shared buffers hold
#define CONV1_HALO (CONV1_TILE + CONV1_KMAX - 1)
#define CONV1_RED_THREADS 256          // threads per grad-params block (power of two)

#define CONV1_MODE_VALID 0
#define CONV1_MODE_ZERO 1
#define CONV1_MODE_REPLICATE 2

__device__ __forceinline__ int conv1_clamp(int v, int lo, int hi)
{
    return v < lo ? lo : (v > hi ? hi : v);
}

// Input pixel (iy, ix) of image xn (H x W, row-major) under the padding mode.
template <typename T>
__device__ __forceinline__ T conv1_load(const T* __restrict__ xn, int iy, int ix,
                                        int H, int W, int mode)
{
    if (mode == CONV1_MODE_REPLICATE) {
        iy = conv1_clamp(iy, 0, H - 1);
        ix = conv1_clamp(ix, 0, W - 1);
        return xn[(long long)iy * W + ix];
    }
    if (iy < 0 || iy >= H || ix < 0 || ix >= W) {
        return T(0);
    }
    return xn[(long long)iy * W + ix];
}

// ---------------------------------------------------------------------------------------------
// Forward. Thread mapping:
//   block (16, 16, 1): thread (tx, ty) owns output pixel (oy0 + ty, ox0 + tx) of one tile;
//   grid.x, grid.y:    output tiles along Wo and Ho;
//   grid.z:            (image n, group of CONV1_OCB output channels) pairs, walked with a
//                      grid-stride loop so any N fits the 65535 limit on grid.z.
// Per (n, channel group) the block stages the input tile plus its (kh-1) x (kw-1) halo and the
// group's weights in shared memory; each thread then keeps CONV1_OCB accumulators in registers.
// Out-of-range output pixels of edge tiles still help load shared memory but write nothing.
// relu != 0 fuses max(., 0) (NaN passes through, as numpy.maximum does).
template <typename T>
__device__ __forceinline__ void conv1_forward_impl(
    const T* __restrict__ x, const T* __restrict__ w, const T* __restrict__ b, T* __restrict__ y,
    int N, int H, int W, int C_out, int kh, int kw, int Ho, int Wo,
    int top, int left, int mode, int relu)
{
    __shared__ T tile[CONV1_HALO * CONV1_HALO];
    __shared__ T ws[CONV1_OCB * CONV1_KMAX * CONV1_KMAX];

    const int tx = threadIdx.x, ty = threadIdx.y;
    const int tid = ty * CONV1_TILE + tx;
    const int TW = CONV1_TILE + kw - 1;           // staged tile width / height
    const int TH = CONV1_TILE + kh - 1;
    const int KK = kh * kw;
    const int ox0 = blockIdx.x * CONV1_TILE, oy0 = blockIdx.y * CONV1_TILE;
    const int ox = ox0 + tx, oy = oy0 + ty;
    const int groups = (C_out + CONV1_OCB - 1) / CONV1_OCB;
    const long long jobs = (long long)N * groups;

    for (long long z = blockIdx.z; z < jobs; z += gridDim.z) {
        const int n = (int)(z / groups);
        const int o0 = (int)(z % groups) * CONV1_OCB;
        const T* xn = x + (long long)n * H * W;

        __syncthreads();  // the previous job is done reading tile / ws
        for (int q = tid; q < TH * TW; q += CONV1_THREADS) {
            const int r = q / TW, s = q - r * TW;
            tile[q] = conv1_load(xn, oy0 + r - top, ox0 + s - left, H, W, mode);
        }
        for (int q = tid; q < CONV1_OCB * KK; q += CONV1_THREADS) {
            const int o = o0 + q / KK;
            ws[q] = (o < C_out) ? w[(long long)o * KK + (q % KK)] : T(0);
        }
        __syncthreads();

        if (oy < Ho && ox < Wo) {
            T acc[CONV1_OCB];
#pragma unroll
            for (int o = 0; o < CONV1_OCB; ++o) acc[o] = T(0);
            for (int i = 0; i < kh; ++i) {
                for (int j = 0; j < kw; ++j) {
                    const T v = tile[(ty + i) * TW + (tx + j)];
                    const int t = i * kw + j;
#pragma unroll
                    for (int o = 0; o < CONV1_OCB; ++o) acc[o] += ws[o * KK + t] * v;
                }
            }
            const long long plane = (long long)Ho * Wo;
            const long long pix = (long long)oy * Wo + ox;
#pragma unroll
            for (int o = 0; o < CONV1_OCB; ++o) {
                const int oc = o0 + o;
                if (oc < C_out) {
                    T val = acc[o] + b[oc];
                    if (relu && val < T(0)) val = T(0);
                    y[((long long)n * C_out + oc) * plane + pix] = val;
                }
            }
        }
    }
}

extern "C" __global__ void __launch_bounds__(CONV1_THREADS) conv1_forward_f32(
    const float* __restrict__ x, const float* __restrict__ w, const float* __restrict__ b,
    float* __restrict__ y, int N, int H, int W, int C_out, int kh, int kw, int Ho, int Wo,
    int top, int left, int mode, int relu)
{
    conv1_forward_impl<float>(x, w, b, y, N, H, W, C_out, kh, kw, Ho, Wo, top, left, mode, relu);
}

extern "C" __global__ void __launch_bounds__(CONV1_THREADS) conv1_forward_f64(
    const double* __restrict__ x, const double* __restrict__ w, const double* __restrict__ b,
    double* __restrict__ y, int N, int H, int W, int C_out, int kh, int kw, int Ho, int Wo,
    int top, int left, int mode, int relu)
{
    conv1_forward_impl<double>(x, w, b, y, N, H, W, C_out, kh, kw, Ho, Wo, top, left, mode, relu);
}

// ---------------------------------------------------------------------------------------------
// Parameter gradients, deterministic (no atomics). Thread mapping:
//   grid (C_out, kh*kw + 1): block (o, t) computes ONE number,
//       t <  kh*kw: dW[o, 0, i, j] = sum_n sum_{r,s} dy[n, o, r, s] * xpad[n, 0, r + i, s + j]
//                   with (i, j) = (t / kw, t % kw);
//       t == kh*kw: db[o] = sum_n sum_{r,s} dy[n, o, r, s];
//   block (CONV1_RED_THREADS): thread k adds pixels p = k, k + 256, ... of every image n in
//   order, then a fixed shared-memory tree reduction combines the 256 partial sums.
// The summation order depends only on the shapes, so repeated runs are bit-identical.
template <typename T>
__device__ __forceinline__ void conv1_grad_params_impl(
    const T* __restrict__ x, const T* __restrict__ dy, T* __restrict__ dw, T* __restrict__ db,
    int N, int H, int W, int C_out, int kh, int kw, int Ho, int Wo,
    int top, int left, int mode)
{
    __shared__ T red[CONV1_RED_THREADS];

    const int o = blockIdx.x;
    const int t = blockIdx.y;
    const int KK = kh * kw;
    const bool is_bias = (t == KK);
    const int i = is_bias ? 0 : t / kw;
    const int j = is_bias ? 0 : t - i * kw;
    const int P = Ho * Wo;
    const int tid = threadIdx.x;

    T acc = T(0);
    for (int n = 0; n < N; ++n) {
        const T* dyn = dy + ((long long)n * C_out + o) * P;
        const T* xn = x + (long long)n * H * W;
        for (int p = tid; p < P; p += CONV1_RED_THREADS) {
            const T g = dyn[p];
            if (is_bias) {
                acc += g;
            } else {
                const int r = p / Wo, s = p - r * Wo;
                acc += g * conv1_load(xn, r + i - top, s + j - left, H, W, mode);
            }
        }
    }

    red[tid] = acc;
    __syncthreads();
    for (int half = CONV1_RED_THREADS / 2; half > 0; half >>= 1) {
        if (tid < half) red[tid] += red[tid + half];
        __syncthreads();
    }
    if (tid == 0) {
        if (is_bias) {
            db[o] = red[0];
        } else {
            dw[(long long)o * KK + t] = red[0];
        }
    }
}

extern "C" __global__ void __launch_bounds__(CONV1_RED_THREADS) conv1_grad_params_f32(
    const float* __restrict__ x, const float* __restrict__ dy, float* __restrict__ dw,
    float* __restrict__ db, int N, int H, int W, int C_out, int kh, int kw, int Ho, int Wo,
    int top, int left, int mode)
{
    conv1_grad_params_impl<float>(x, dy, dw, db, N, H, W, C_out, kh, kw, Ho, Wo, top, left, mode);
}

extern "C" __global__ void __launch_bounds__(CONV1_RED_THREADS) conv1_grad_params_f64(
    const double* __restrict__ x, const double* __restrict__ dy, double* __restrict__ dw,
    double* __restrict__ db, int N, int H, int W, int C_out, int kh, int kw, int Ho, int Wo,
    int top, int left, int mode)
{
    conv1_grad_params_impl<double>(x, dy, dw, db, N, H, W, C_out, kh, kw, Ho, Wo, top, left, mode);
}
