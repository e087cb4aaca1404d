// im2col (gather) and col2im (gather, no atomics) for stride-1 correlation, NCHW.
// Compiled at run time by tinysr.cuda_kernels (cupy.RawModule/NVRTC): plain CUDA C, no #include.
//
// Layout, exactly tinysr/im2col.py's:
//   xpad  (N, C, Hp, Wp)            padded input, row-major
//   cols  (N, C*kh*kw, Ho*Wo)       row c*kh*kw + i*kw + j, column y*Wo + x holds
//                                   xpad[n, c, y + i, x + j];   Ho = Hp-kh+1, Wo = Wp-kw+1
//
// Entry points: im2col_f32/_f64, col2im_f32/_f64. Both use a grid-stride loop over a flat
// 64-bit index of the array they WRITE, so every output element has exactly one writer.
// Requires C*kh*kw, Hp*Wp and Ho*Wo below 2^31 (the Python wrapper checks).

// ---------------------------------------------------------------------------------------------
// im2col: one thread per element of cols. idx -> (n, row, p) with p = y*Wo + x fastest, so
// consecutive threads write consecutive columns (coalesced) and read consecutive x.
template <typename T>
__device__ __forceinline__ void im2col_impl(const T* __restrict__ xpad, T* __restrict__ cols,
                                            int C, int Hp, int Wp, int kh, int kw, int Ho, int Wo,
                                            long long total)
{
    const long long P = (long long)Ho * Wo;
    const int K = kh * kw;
    const long long rows = (long long)C * K;
    const long long stride = (long long)gridDim.x * blockDim.x;
    for (long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x; idx < total; idx += stride) {
        const long long p = idx % P;
        const long long nr = idx / P;          // n * rows + row
        const long long n = nr / rows;
        const int row = (int)(nr - n * rows);  // c*K + i*kw + j
        const int c = row / K;
        const int t = row - c * K;
        const int i = t / kw, j = t - i * kw;
        const int y = (int)(p / Wo), x = (int)(p - (long long)y * Wo);
        cols[idx] = xpad[((n * C + c) * Hp + (y + i)) * (long long)Wp + (x + j)];
    }
}

extern "C" __global__ void im2col_f32(const float* __restrict__ xpad, float* __restrict__ cols,
                                      int C, int Hp, int Wp, int kh, int kw, int Ho, int Wo,
                                      long long total)
{
    im2col_impl<float>(xpad, cols, C, Hp, Wp, kh, kw, Ho, Wo, total);
}

extern "C" __global__ void im2col_f64(const double* __restrict__ xpad, double* __restrict__ cols,
                                      int C, int Hp, int Wp, int kh, int kw, int Ho, int Wo,
                                      long long total)
{
    im2col_impl<double>(xpad, cols, C, Hp, Wp, kh, kw, Ho, Wo, total);
}

// ---------------------------------------------------------------------------------------------
// col2im (the adjoint): one thread per element of xpad; idx -> (n*C + c, yy, xx). The thread
// GATHERS every tap that reads its pixel, cols[n, c*K + i*kw + j, (yy-i)*Wo + (xx-j)] for the
// (i, j) with 0 <= yy-i < Ho and 0 <= xx-j < Wo, adding them to 0 in the order i then j
// ascending: the same order as tinysr.im2col.col2im's slice loop, so the sums match it bit for
// bit and repeated runs are identical. total = N*C*Hp*Wp.
template <typename T>
__device__ __forceinline__ void col2im_impl(const T* __restrict__ cols, T* __restrict__ xpad,
                                            int C, int Hp, int Wp, int kh, int kw, int Ho, int Wo,
                                            long long total)
{
    const long long P = (long long)Ho * Wo;
    const long long K = (long long)kh * kw;
    const long long plane = (long long)Hp * Wp;
    const long long stride = (long long)gridDim.x * blockDim.x;
    for (long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x; idx < total; idx += stride) {
        const long long nc = idx / plane;      // n*C + c
        const int rem = (int)(idx - nc * plane);
        const int yy = rem / Wp, xx = rem - yy * Wp;
        const T* base = cols + nc * K * P;     // row c*K of image n: (n*C*K + c*K) * P
        T acc = T(0);
        for (int i = 0; i < kh; ++i) {
            const int y = yy - i;
            if (y < 0 || y >= Ho) continue;
            for (int j = 0; j < kw; ++j) {
                const int x = xx - j;
                if (x < 0 || x >= Wo) continue;
                acc += base[(long long)(i * kw + j) * P + (long long)y * Wo + x];
            }
        }
        xpad[idx] = acc;
    }
}

extern "C" __global__ void col2im_f32(const float* __restrict__ cols, float* __restrict__ xpad,
                                      int C, int Hp, int Wp, int kh, int kw, int Ho, int Wo,
                                      long long total)
{
    col2im_impl<float>(cols, xpad, C, Hp, Wp, kh, kw, Ho, Wo, total);
}

extern "C" __global__ void col2im_f64(const double* __restrict__ cols, double* __restrict__ xpad,
                                      int C, int Hp, int Wp, int kh, int kw, int Ho, int Wo,
                                      long long total)
{
    col2im_impl<double>(cols, xpad, C, Hp, Wp, kh, kw, Ho, Wo, total);
}
