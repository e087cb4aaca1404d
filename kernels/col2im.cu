// im2col (gather) and col2im (gather, no atomics) for stride-1 correlation, NCHW.
// Compiled at run time by tinysr.ops.cuda_kernels (cupy.RawModule/NVRTC): plain CUDA C, no #include.
//
// xpad  (N, C, Hp, Wp), row-major; Ho = Hp-kh+1, Wo = Wp-kw+1, P = Ho*Wo, K = kh*kw;
// cols  row c*K + i*kw + j, column y*Wo + x of image n holds xpad[n, c, y + i, x + j], in one of
// two layouts (kn):
//   kn = 0: (N, C*K, P)   tinysr/im2col.py's layout (one GEMM per image);
//   kn = 1: (C*K, N, P)   rows outermost, so (C*K, N*P) is a 2-D view: one GEMM for the batch.
//
// Entry points: im2col_f32/_f64, col2im_f32/_f64 with 32-bit indices (the host checks that
// both arrays have fewer than 2^31 elements), and im2col_i64_f32/_f64, col2im_i64_f32/_f64 with
// 64-bit ones for larger arrays. Both use a grid-stride loop over the flat index of the array
// they WRITE, so every output element has exactly one writer.

// ---------------------------------------------------------------------------------------------
// im2col: one thread per element of cols, p = y*Wo + x fastest, so consecutive threads write
// consecutive columns (coalesced) and read consecutive x.
template <typename T, typename I>
__device__ __forceinline__ void im2col_impl(const T* __restrict__ xpad, T* __restrict__ cols,
                                            int N, int C, int Hp, int Wp, int kh, int kw, int Ho, int Wo,
                                            int kn, I total)
{
    const I P = (I)Ho * Wo;
    const int K = kh * kw;
    const I rows = (I)C * K;
    const I stride = (I)gridDim.x * blockDim.x;
    for (I idx = (I)blockIdx.x * blockDim.x + threadIdx.x; idx < total; idx += stride) {
        const I q = idx / P;                   // n * rows + row (kn = 0) or row * N + n (kn = 1)
        const int pix = (int)(idx - q * P);
        I n, row;
        if (kn) {
            row = q / N;
            n = q - row * N;
        } else {
            n = q / rows;
            row = q - n * rows;
        }
        const int c = (int)row / K;
        const int t = (int)row - c * K;
        const int i = t / kw, j = t - i * kw;
        const int y = pix / Wo, x = pix - y * Wo;
        cols[idx] = xpad[((n * C + c) * Hp + (y + i)) * Wp + (x + j)];
    }
}

// ---------------------------------------------------------------------------------------------
// col2im (the adjoint): one thread per element of xpad; idx -> (n*C + c, yy, xx). The thread
// GATHERS every tap that reads its pixel, cols[n, c*K + i*kw + j, (yy-i)*Wo + (xx-j)] for the
// (i, j) with 0 <= yy-i < Ho and 0 <= xx-j < Wo, adding them to 0 in the order i then j
// ascending: the same order as tinysr.im2col.col2im's slice loop, so the sums match it bit for
// bit and repeated runs are identical. total = N*C*Hp*Wp.
template <typename T, typename I>
__device__ __forceinline__ void col2im_impl(const T* __restrict__ cols, T* __restrict__ xpad,
                                            int N, int C, int Hp, int Wp, int kh, int kw, int Ho, int Wo,
                                            int kn, I total)
{
    const I P = (I)Ho * Wo;
    const int K = kh * kw;
    const I plane = (I)Hp * Wp;
    const I rstride = kn ? (I)N * P : P;       // between consecutive rows of one image
    const I stride = (I)gridDim.x * blockDim.x;
    for (I idx = (I)blockIdx.x * blockDim.x + threadIdx.x; idx < total; idx += stride) {
        const I nc = idx / plane;              // n*C + c
        const int rem = (int)(idx - nc * plane);
        const int yy = rem / Wp, xx = rem - yy * Wp;
        const I n = nc / C;
        const I c = nc - n * C;
        // row c*K of image n
        const T* base = cols + (kn ? (c * K * N + n) * P : nc * K * P);
        T acc = T(0);
        for (int i = 0; i < kh; ++i) {
            const int y = yy - i;
            if (y < 0 || y >= Ho) continue;
            for (int j = 0; j < kw; ++j) {
                const int x = xx - j;
                if (x < 0 || x >= Wo) continue;
                acc += base[(I)(i * kw + j) * rstride + (y * Wo + x)];
            }
        }
        xpad[idx] = acc;
    }
}

extern "C" __global__ void im2col_f32(const float* __restrict__ xpad, float* __restrict__ cols,
    int N, int C, int Hp, int Wp, int kh, int kw, int Ho, int Wo, int kn, int total)
{
    im2col_impl<float, int>(xpad, cols, N, C, Hp, Wp, kh, kw, Ho, Wo, kn, total);
}

extern "C" __global__ void im2col_f64(const double* __restrict__ xpad, double* __restrict__ cols,
    int N, int C, int Hp, int Wp, int kh, int kw, int Ho, int Wo, int kn, int total)
{
    im2col_impl<double, int>(xpad, cols, N, C, Hp, Wp, kh, kw, Ho, Wo, kn, total);
}

extern "C" __global__ void im2col_i64_f32(const float* __restrict__ xpad, float* __restrict__ cols,
    int N, int C, int Hp, int Wp, int kh, int kw, int Ho, int Wo, int kn, long long total)
{
    im2col_impl<float, long long>(xpad, cols, N, C, Hp, Wp, kh, kw, Ho, Wo, kn, total);
}

extern "C" __global__ void im2col_i64_f64(const double* __restrict__ xpad, double* __restrict__ cols,
    int N, int C, int Hp, int Wp, int kh, int kw, int Ho, int Wo, int kn, long long total)
{
    im2col_impl<double, long long>(xpad, cols, N, C, Hp, Wp, kh, kw, Ho, Wo, kn, total);
}

extern "C" __global__ void col2im_f32(const float* __restrict__ cols, float* __restrict__ xpad,
    int N, int C, int Hp, int Wp, int kh, int kw, int Ho, int Wo, int kn, int total)
{
    col2im_impl<float, int>(cols, xpad, N, C, Hp, Wp, kh, kw, Ho, Wo, kn, total);
}

extern "C" __global__ void col2im_f64(const double* __restrict__ cols, double* __restrict__ xpad,
    int N, int C, int Hp, int Wp, int kh, int kw, int Ho, int Wo, int kn, int total)
{
    col2im_impl<double, int>(cols, xpad, N, C, Hp, Wp, kh, kw, Ho, Wo, kn, total);
}

extern "C" __global__ void col2im_i64_f32(const float* __restrict__ cols, float* __restrict__ xpad,
    int N, int C, int Hp, int Wp, int kh, int kw, int Ho, int Wo, int kn, long long total)
{
    col2im_impl<float, long long>(cols, xpad, N, C, Hp, Wp, kh, kw, Ho, Wo, kn, total);
}

extern "C" __global__ void col2im_i64_f64(const double* __restrict__ cols, double* __restrict__ xpad,
    int N, int C, int Hp, int Wp, int kh, int kw, int Ho, int Wo, int kn, long long total)
{
    col2im_impl<double, long long>(cols, xpad, N, C, Hp, Wp, kh, kw, Ho, Wo, kn, total);
}
