// Elementwise and reduction kernels of an SRCNN training step. Compiled at run time by
// tinysr.ops.cuda_kernels (cupy.RawModule/NVRTC): plain CUDA C, no #include, no atomics.
//
// Entry points, each as _f32 and _f64:
//   bias_relu        y[n, c, p] = max(y[n, c, p] + b[c], 0), in place on an (N, C, P) buffer
//                    (also bias_relu_i64_f32/_f64 with 64-bit indices for buffers past 2^31)
//   relu_backward    dx = dy where y > 0, else 0 (y is the ReLU output: y > 0 iff its input > 0)
//   mse_partial      grad = (pred - target) / N; per-block partial sums of (pred - target)^2
//   mse_finalize     loss[0] = (sum of the partials, fixed order) / (2 N)
//
// Elementwise kernels use a grid-stride loop over a flat 64-bit index: thread k of the launch
// handles elements k, k + stride, ... where stride = gridDim.x * blockDim.x.

#define EW_RED_THREADS 256  // threads per block of the two MSE kernels (power of two)

// ---------------------------------------------------------------------------------------------
// Fused bias + ReLU, in place. Element idx of the (N, C, P) buffer has channel (idx / P) % C.
// NaN passes through (as numpy.maximum); no mask is written, backward reads y itself.
// I is the index type: int for bias_relu_f32/_f64 (the host checks that total plus the grid's
// thread count fits, so the division is 32-bit), long long for bias_relu_i64_f32/_f64.
template <typename T, typename I>
__device__ __forceinline__ void bias_relu_impl(T* __restrict__ y, const T* __restrict__ b,
                                               I total, int C, I P)
{
    const I stride = (I)gridDim.x * blockDim.x;
    for (I idx = (I)blockIdx.x * blockDim.x + threadIdx.x; idx < total; idx += stride) {
        const int c = (int)((idx / P) % C);
        const T v = y[idx] + b[c];
        y[idx] = (v < T(0)) ? T(0) : v;
    }
}

extern "C" __global__ void bias_relu_f32(float* __restrict__ y, const float* __restrict__ b,
                                         int total, int C, int P)
{
    bias_relu_impl<float, int>(y, b, total, C, P);
}

extern "C" __global__ void bias_relu_f64(double* __restrict__ y, const double* __restrict__ b,
                                         int total, int C, int P)
{
    bias_relu_impl<double, int>(y, b, total, C, P);
}

extern "C" __global__ void bias_relu_i64_f32(float* __restrict__ y, const float* __restrict__ b,
                                             long long total, int C, long long P)
{
    bias_relu_impl<float, long long>(y, b, total, C, P);
}

extern "C" __global__ void bias_relu_i64_f64(double* __restrict__ y, const double* __restrict__ b,
                                             long long total, int C, long long P)
{
    bias_relu_impl<double, long long>(y, b, total, C, P);
}

// ---------------------------------------------------------------------------------------------
// ReLU backward from the ReLU output: dx[idx] = y[idx] > 0 ? dy[idx] : 0.
template <typename T>
__device__ __forceinline__ void relu_backward_impl(const T* __restrict__ dy, const T* __restrict__ y,
                                                   T* __restrict__ dx, long long total)
{
    const long long stride = (long long)gridDim.x * blockDim.x;
    for (long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x; idx < total; idx += stride) {
        dx[idx] = (y[idx] > T(0)) ? dy[idx] : T(0);
    }
}

extern "C" __global__ void relu_backward_f32(const float* __restrict__ dy, const float* __restrict__ y,
                                             float* __restrict__ dx, long long total)
{
    relu_backward_impl<float>(dy, y, dx, total);
}

extern "C" __global__ void relu_backward_f64(const double* __restrict__ dy, const double* __restrict__ y,
                                             double* __restrict__ dx, long long total)
{
    relu_backward_impl<double>(dy, y, dx, total);
}

// ---------------------------------------------------------------------------------------------
// MSE (Caffe Euclidean) loss, pass 1. Launch with EW_RED_THREADS threads per block and a grid
// size that depends only on `total` (the Python wrapper does), so the result is deterministic:
// each thread sums its grid-stride elements in order, then a fixed shared-memory tree reduction
// writes partials[blockIdx.x]. grad = (pred - target) / n, with n the batch size.
template <typename T>
__device__ __forceinline__ void mse_partial_impl(const T* __restrict__ pred, const T* __restrict__ target,
                                                 T* __restrict__ grad, T* __restrict__ partials,
                                                 long long total, T n)
{
    __shared__ T red[EW_RED_THREADS];
    const int tid = threadIdx.x;
    const long long stride = (long long)gridDim.x * EW_RED_THREADS;
    T acc = T(0);
    for (long long idx = (long long)blockIdx.x * EW_RED_THREADS + tid; idx < total; idx += stride) {
        const T d = pred[idx] - target[idx];
        grad[idx] = d / n;
        acc += d * d;
    }
    red[tid] = acc;
    __syncthreads();
    for (int half = EW_RED_THREADS / 2; half > 0; half >>= 1) {
        if (tid < half) red[tid] += red[tid + half];
        __syncthreads();
    }
    if (tid == 0) partials[blockIdx.x] = red[0];
}

extern "C" __global__ void __launch_bounds__(EW_RED_THREADS) mse_partial_f32(
    const float* __restrict__ pred, const float* __restrict__ target, float* __restrict__ grad,
    float* __restrict__ partials, long long total, float n)
{
    mse_partial_impl<float>(pred, target, grad, partials, total, n);
}

extern "C" __global__ void __launch_bounds__(EW_RED_THREADS) mse_partial_f64(
    const double* __restrict__ pred, const double* __restrict__ target, double* __restrict__ grad,
    double* __restrict__ partials, long long total, double n)
{
    mse_partial_impl<double>(pred, target, grad, partials, total, n);
}

// MSE pass 2: ONE block of EW_RED_THREADS threads. Thread k sums partials k, k + 256, ... in
// order, a fixed tree reduction combines them, thread 0 writes loss[0] = sum / two_n.
template <typename T>
__device__ __forceinline__ void mse_finalize_impl(const T* __restrict__ partials, int num_partials,
                                                  T* __restrict__ loss, T two_n)
{
    __shared__ T red[EW_RED_THREADS];
    const int tid = threadIdx.x;
    T acc = T(0);
    for (int k = tid; k < num_partials; k += EW_RED_THREADS) acc += partials[k];
    red[tid] = acc;
    __syncthreads();
    for (int half = EW_RED_THREADS / 2; half > 0; half >>= 1) {
        if (tid < half) red[tid] += red[tid + half];
        __syncthreads();
    }
    if (tid == 0) loss[0] = red[0] / two_n;
}

extern "C" __global__ void __launch_bounds__(EW_RED_THREADS) mse_finalize_f32(
    const float* __restrict__ partials, int num_partials, float* __restrict__ loss, float two_n)
{
    mse_finalize_impl<float>(partials, num_partials, loss, two_n);
}

extern "C" __global__ void __launch_bounds__(EW_RED_THREADS) mse_finalize_f64(
    const double* __restrict__ partials, int num_partials, double* __restrict__ loss, double two_n)
{
    mse_finalize_impl<double>(partials, num_partials, loss, two_n);
}
