// SRCNN inference for networks whose middle layer is 1x1 (9-1-5), fused, with the authors'
// replicate padding at every layer. Compiled at run time by tinysr.ops.cuda_kernels
// (cupy.RawModule/NVRTC): plain CUDA C, no #include, no atomics, no warp intrinsics.
//
// Network, on one (H, W) Y image y, every layer padded by replicating its input's edge:
//   h1 = relu(b1 + W1 * y)        W1 (n1, 1, f1, f1), f1 <= FUSED_KMAX
//   h2 = relu(b2 + W2 h1)         W2 (n2, n1, 1, 1),  n2 <= FUSED_N2MAX
//   out = b3 + W3 * h2            W3 (1, n2, f3, f3), f3 * f3 <= FUSED_ZMAX
//
// Two launches:
//   fused_z:    one thread per pixel computes h1 (in groups of FUSED_OCB channels, registers
//               only), h2 (registers) and z[k] = sum_c W3[0, c, a, b] h2[c] for every tap
//               k = a*f3 + b of layer 3 ("output side"), written as planes z (f3*f3, H, W).
//               Neither h1 nor h2 ever reaches global memory. Layer 1's replicate padding is
//               clamped indexing of y while staging the input tile.
//   tap_sum:   out[r, s] = sum_{a, b} z[a*f3 + b, clamp(r + a - p), clamp(s + b - p)] + b3,
//               p = (f3 - 1) / 2, taps a-major: replicate-padding h2 equals replicate-padding
//               z (z is a per-pixel linear map of h2), so the clamp is layer 3's padding. The
//               same kernel serves tinysr.nn.layers.Conv2d's output-side inference on the GPU.
// Entry points: fused_z_f32/_f64, tap_sum_f32/_f64. 32-bit indices: the host checks that
// z (f3*f3*H*W elements here) fits an int.

#define FUSED_TILE 16                  // output tile edge; a fused_z block is 16 x 16 threads
#define FUSED_THREADS (FUSED_TILE * FUSED_TILE)
#define FUSED_OCB 16                   // layer-1 channels per group (registers per thread)
#define FUSED_KMAX 11                  // largest f1
#define FUSED_N2MAX 32                 // largest n2 (layer-2 accumulators per thread)
#define FUSED_ZMAX 25                  // largest f3 * f3 (layer-3 taps per thread)
// Input tile row pitch: a warp reads two tile rows of 16; a pitch of 16 mod 32 words puts them on
// disjoint banks (no 2-way conflict), and 48 >= FUSED_TILE + FUSED_KMAX - 1.
#define FUSED_PITCH 48
#define FUSED_TILE_ROWS (FUSED_TILE + FUSED_KMAX - 1)

__device__ __forceinline__ int fused_clamp(int v, int hi)
{
    return v < 0 ? 0 : (v > hi ? hi : v);
}

// dst[0..3] = src[0..3] with one 16-byte shared-memory load (two for double); src 16-byte aligned.
__device__ __forceinline__ void fused_ld4(const float* src, float* dst)
{
    const float4 v = *reinterpret_cast<const float4*>(src);
    dst[0] = v.x; dst[1] = v.y; dst[2] = v.z; dst[3] = v.w;
}

__device__ __forceinline__ void fused_ld4(const double* src, double* dst)
{
    const double2 a = *reinterpret_cast<const double2*>(src);
    const double2 b = *reinterpret_cast<const double2*>(src + 2);
    dst[0] = a.x; dst[1] = a.y; dst[2] = b.x; dst[3] = b.y;
}

// Thread mapping: block (16, 16), thread (tx, ty) owns pixel (oy0 + ty, ox0 + tx); grid.x, grid.y
// tile the image. Shared memory, all [tap or input channel][output channel] so that one vector
// load gives 4 output channels: w1s [f1*f1][FUSED_OCB] (the current group), w2s [FUSED_OCB][N2MAX]
// (the group's columns of W2), w3s [f3*f3][N2MAX]; channels past n1 / n2 hold zero weights and
// biases, so they add nothing. Each sum runs in a fixed order (taps i-major, channels ascending).
template <typename T>
__device__ __forceinline__ void fused_z_impl(
    const T* __restrict__ y, const T* __restrict__ w1, const T* __restrict__ b1,
    const T* __restrict__ w2, const T* __restrict__ b2, const T* __restrict__ w3,
    T* __restrict__ z, int H, int W, int n1, int n2, int f1, int f3)
{
    __shared__ T tile[FUSED_TILE_ROWS * FUSED_PITCH];
    __shared__ __align__(16) T w1s[FUSED_KMAX * FUSED_KMAX * FUSED_OCB];
    __shared__ __align__(16) T w2s[FUSED_OCB * FUSED_N2MAX];
    __shared__ __align__(16) T w3s[FUSED_ZMAX * FUSED_N2MAX];
    __shared__ T b1s[FUSED_OCB];

    const int tx = threadIdx.x, ty = threadIdx.y;
    const int tid = ty * FUSED_TILE + tx;
    const int K1 = f1 * f1, K3 = f3 * f3;
    const int p1 = (f1 - 1) / 2;
    const int TW = FUSED_TILE + f1 - 1;
    const int ox0 = blockIdx.x * FUSED_TILE, oy0 = blockIdx.y * FUSED_TILE;
    const int ox = ox0 + tx, oy = oy0 + ty;

    for (int q = tid; q < TW * TW; q += FUSED_THREADS) {
        const int r = q / TW, s = q - r * TW;
        tile[r * FUSED_PITCH + s] = y[fused_clamp(oy0 + r - p1, H - 1) * W + fused_clamp(ox0 + s - p1, W - 1)];
    }
    for (int q = tid; q < FUSED_ZMAX * FUSED_N2MAX; q += FUSED_THREADS) {
        const int k = q / FUSED_N2MAX, c = q - k * FUSED_N2MAX;
        w3s[q] = (k < K3 && c < n2) ? w3[c * K3 + k] : T(0);
    }

    T h2[FUSED_N2MAX];
#pragma unroll
    for (int c = 0; c < FUSED_N2MAX; ++c) h2[c] = T(0);

    for (int g0 = 0; g0 < n1; g0 += FUSED_OCB) {
        __syncthreads();  // the previous group is done reading w1s / w2s / b1s
        for (int q = tid; q < K1 * FUSED_OCB; q += FUSED_THREADS) {
            const int t = q / FUSED_OCB, o = q - t * FUSED_OCB;
            w1s[q] = (g0 + o < n1) ? w1[(g0 + o) * K1 + t] : T(0);
        }
        for (int q = tid; q < FUSED_OCB * FUSED_N2MAX; q += FUSED_THREADS) {
            const int o = q / FUSED_N2MAX, c = q - o * FUSED_N2MAX;
            w2s[q] = (g0 + o < n1 && c < n2) ? w2[c * n1 + g0 + o] : T(0);
        }
        if (tid < FUSED_OCB) b1s[tid] = (g0 + tid < n1) ? b1[g0 + tid] : T(0);
        __syncthreads();

        T h1[FUSED_OCB];
#pragma unroll
        for (int o = 0; o < FUSED_OCB; ++o) h1[o] = T(0);
        for (int i = 0; i < f1; ++i) {
            for (int j = 0; j < f1; ++j) {
                const T v = tile[(ty + i) * FUSED_PITCH + tx + j];
                const T* wt = w1s + (i * f1 + j) * FUSED_OCB;
#pragma unroll
                for (int o = 0; o < FUSED_OCB; o += 4) {
                    T w[4];
                    fused_ld4(wt + o, w);
                    h1[o] += w[0] * v; h1[o + 1] += w[1] * v; h1[o + 2] += w[2] * v; h1[o + 3] += w[3] * v;
                }
            }
        }
#pragma unroll
        for (int o = 0; o < FUSED_OCB; ++o) {
            T v = h1[o] + b1s[o];
            v = (v < T(0)) ? T(0) : v;
            const T* wc = w2s + o * FUSED_N2MAX;
#pragma unroll
            for (int c = 0; c < FUSED_N2MAX; c += 4) {
                T w[4];
                fused_ld4(wc + c, w);
                h2[c] += w[0] * v; h2[c + 1] += w[1] * v; h2[c + 2] += w[2] * v; h2[c + 3] += w[3] * v;
            }
        }
    }

    if (oy < H && ox < W) {
#pragma unroll
        for (int c = 0; c < FUSED_N2MAX; ++c) {
            const T v = h2[c] + ((c < n2) ? b2[c] : T(0));
            h2[c] = (v < T(0)) ? T(0) : v;
        }
        const int plane = H * W;
        const int pix = oy * W + ox;
        for (int k = 0; k < K3; ++k) {
            const T* wk = w3s + k * FUSED_N2MAX;
            T acc = T(0);
#pragma unroll
            for (int c = 0; c < FUSED_N2MAX; c += 4) {
                T w[4];
                fused_ld4(wk + c, w);
                acc += w[0] * h2[c]; acc += w[1] * h2[c + 1]; acc += w[2] * h2[c + 2]; acc += w[3] * h2[c + 3];
            }
            z[k * plane + pix] = acc;
        }
    }
}

extern "C" __global__ void __launch_bounds__(FUSED_THREADS) fused_z_f32(
    const float* __restrict__ y, const float* __restrict__ w1, const float* __restrict__ b1,
    const float* __restrict__ w2, const float* __restrict__ b2, const float* __restrict__ w3,
    float* __restrict__ z, int H, int W, int n1, int n2, int f1, int f3)
{
    fused_z_impl<float>(y, w1, b1, w2, b2, w3, z, H, W, n1, n2, f1, f3);
}

extern "C" __global__ void __launch_bounds__(FUSED_THREADS) fused_z_f64(
    const double* __restrict__ y, const double* __restrict__ w1, const double* __restrict__ b1,
    const double* __restrict__ w2, const double* __restrict__ b2, const double* __restrict__ w3,
    double* __restrict__ z, int H, int W, int n1, int n2, int f1, int f3)
{
    fused_z_impl<double>(y, w1, b1, w2, b2, w3, z, H, W, n1, n2, f1, f3);
}

// Output-side tap sum of a stride-1 correlation (layer 3 of the fused path, and the GPU layers'
// output-side inference): z (N, O, kh*kw, H, W) holds each input pixel's products with every tap,
// z[n, o, i*kw + j] = sum_c W[o, c, i, j] x[n, c] on the UNPADDED input, and
//   y[n, o, r, s] = act(sum_{i, j} zpad[n, o, i*kw + j, r + i, s + j] + b[o])
// with taps i-major and zpad z padded by (top, left) under the mode (as direct.cu):
// valid (no padding), zero (out-of-range taps add nothing) or replicate (clamped indexing:
// padding x by its edge pads z by its edge, z being a per-pixel linear map of x).
// Grid-stride over the N*O*Ho*Wo outputs, 32-bit (the host checks that z and y fit).
#define TAPS_MODE_VALID 0
#define TAPS_MODE_ZERO 1
#define TAPS_MODE_REPLICATE 2

template <typename T>
__device__ __forceinline__ void tap_sum_impl(const T* __restrict__ z, const T* __restrict__ b,
                                              T* __restrict__ y, int N, int O, int H, int W, int kh, int kw,
                                              int Ho, int Wo, int top, int left, int mode, int relu)
{
    const int out_plane = Ho * Wo;
    const int plane = H * W;
    const int total = N * O * out_plane;
    const int stride = gridDim.x * blockDim.x;
    for (int idx = blockIdx.x * blockDim.x + threadIdx.x; idx < total; idx += stride) {
        const int nc = idx / out_plane;                 // n * O + o
        const int rem = idx - nc * out_plane;
        const int r = rem / Wo, s = rem - r * Wo;
        const T* zb = z + nc * kh * kw * plane;
        T acc = T(0);
        for (int i = 0; i < kh; ++i) {
            int row = r + i - top;
            if (mode == TAPS_MODE_REPLICATE) {
                row = fused_clamp(row, H - 1);
            } else if (row < 0 || row >= H) {
                continue;
            }
            for (int j = 0; j < kw; ++j) {
                int col = s + j - left;
                if (mode == TAPS_MODE_REPLICATE) {
                    col = fused_clamp(col, W - 1);
                } else if (col < 0 || col >= W) {
                    continue;
                }
                acc += zb[(i * kw + j) * plane + row * W + col];
            }
        }
        T v = acc + b[nc % O];
        if (relu && v < T(0)) v = T(0);
        y[idx] = v;
    }
}

extern "C" __global__ void tap_sum_f32(const float* __restrict__ z, const float* __restrict__ b,
                                        float* __restrict__ y, int N, int O, int H, int W, int kh, int kw,
                                        int Ho, int Wo, int top, int left, int mode, int relu)
{
    tap_sum_impl<float>(z, b, y, N, O, H, W, kh, kw, Ho, Wo, top, left, mode, relu);
}

extern "C" __global__ void tap_sum_f64(const double* __restrict__ z, const double* __restrict__ b,
                                        double* __restrict__ y, int N, int O, int H, int W, int kh, int kw,
                                        int Ho, int Wo, int top, int left, int mode, int relu)
{
    tap_sum_impl<double>(z, b, y, N, O, H, W, kh, kw, Ho, Wo, top, left, mode, relu);
}
