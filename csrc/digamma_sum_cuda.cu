// digamma_sum on CUDA: psi(counts + offset) in float64, summed over the last dimension or not.
//
// Determinism: a fixed launch shape (kThreads per block, one block per row): thread t sums elements
// t, t + kThreads, ... of its row in order, then a fixed tree in shared memory adds the kThreads partial
// sums. The order of every addition is fixed by n alone, so repeated runs give the same bits.
// A pole (count + offset <= 0) cannot raise from the device without synchronising: it gives NaN.
#include <cuda_runtime.h>
#include <math_constants.h>

#include <cstdint>
#include <stdexcept>
#include <string>

#include "psi.h"

namespace mipp {
namespace {

constexpr int kThreads = 256;
constexpr int64_t kMaxBlocks = 65535;

__constant__ double kPsiTableDevice[kPsiTableSize] = {MIPP_PSI_TABLE_VALUES};

__device__ double psi_or_nan(int64_t m) { return m >= 1 ? psi_positive_int(m, kPsiTableDevice) : CUDART_NAN; }

__global__ void digamma_rows_kernel(const int64_t* __restrict__ counts, int64_t rows, int64_t n, int64_t offset,
                                    double* __restrict__ out) {
  __shared__ double part[kThreads];
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const int64_t* c = counts + r * n;
    double s = 0.0;
    for (int64_t i = threadIdx.x; i < n; i += kThreads) s += psi_or_nan(c[i] + offset);
    part[threadIdx.x] = s;
    __syncthreads();
    for (int w = kThreads / 2; w > 0; w >>= 1) {
      if (threadIdx.x < w) part[threadIdx.x] += part[threadIdx.x + w];
      __syncthreads();
    }
    if (threadIdx.x == 0) out[r] = part[0];
    __syncthreads();  // part is reused by the next row
  }
}

__global__ void digamma_elementwise_kernel(const int64_t* __restrict__ counts, int64_t total, int64_t offset,
                                           double* __restrict__ out) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += stride)
    out[i] = psi_or_nan(counts[i] + offset);
}

}  // namespace

void digamma_sum_cuda(const int64_t* counts, int64_t rows, int64_t n, int64_t offset, bool reduce, double* out,
                      int64_t stream) {
  cudaStream_t s = reinterpret_cast<cudaStream_t>(stream);
  if (reduce) {
    if (rows == 0) return;
    const unsigned grid = static_cast<unsigned>(rows < kMaxBlocks ? rows : kMaxBlocks);
    digamma_rows_kernel<<<grid, kThreads, 0, s>>>(counts, rows, n, offset, out);
  } else {
    const int64_t total = rows * n;
    if (total == 0) return;
    const int64_t blocks = (total + kThreads - 1) / kThreads;
    const unsigned grid = static_cast<unsigned>(blocks < kMaxBlocks ? blocks : kMaxBlocks);
    digamma_elementwise_kernel<<<grid, kThreads, 0, s>>>(counts, total, offset, out);
  }
  const cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) throw std::runtime_error(std::string("digamma_sum_cuda: launch failed: ") + cudaGetErrorString(err));
}

}  // namespace mipp
