// Entry points of the extension's kernels (bound in bindings.cpp). Pointers travel as integers:
// Python owns the tensors, their validation and the op registration (python/mipp/_ext.py, ops.py); the
// kernels trust their arguments (mipp.ops checks the contract once, at the op boundary).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "pairwise.h"

namespace mipp {

// psi(counts + offset) of `rows` rows of n int64 counts into float64 `out`: one sum per row (reduce) or
// rows * n values. Throws std::domain_error when some count + offset <= 0 (a pole of psi).
void digamma_sum_cpu(const int64_t* counts, int64_t rows, int64_t n, int64_t offset, bool reduce, double* out,
                     int threads);

// The pairwise ops: groups of (B_g, d, N) contiguous float32 (f64 = false) or float64 data; the query
// rows [row0, row1) are computed against all N candidates; radius (B_r, row1 - row0) and out (B,
// row1 - row0[, G]) in the same dtype (count_within: int64 out). path is "auto", "brute" or "sweep";
// threads <= 0 means all hardware threads. They return the path that ran.
std::string knn_distance_cpu(const std::vector<GroupArg>& groups, int64_t batch, int64_t n, bool f64, int64_t k,
                             int64_t out, const std::string& path, int threads, int64_t row0, int64_t row1);
std::string count_within_cpu(const std::vector<GroupArg>& groups, int64_t batch, int64_t n, bool f64,
                             int64_t radius, int64_t radius_batch, bool strict, int64_t out, const std::string& path,
                             int threads, int64_t row0, int64_t row1);
// The fused KSG op: eps (B, row1 - row0) in the groups' dtype and int64 counts (B, C, row1 - row0), one per
// marginal, a bitmask over the groups (at most kMaxGroups groups); algorithm 1 (strict counts under eps) or 2
// (<= counts under the marginal radii). path: "auto", "brute", or "sweep" / "strips" (the sorted path).
constexpr int64_t kMaxGroups = 62;
std::string ksg_counts_cpu(const std::vector<GroupArg>& groups, int64_t batch, int64_t n, bool f64, int64_t k,
                           const std::vector<int64_t>& marginals, int64_t algorithm, int64_t eps, int64_t counts,
                           const std::string& path, int threads, int64_t row0, int64_t row1);
std::string marginal_radius_cpu(const std::vector<GroupArg>& groups, int64_t batch, int64_t n, bool f64,
                                int64_t radius, int64_t radius_batch, int64_t out, const std::string& path,
                                int threads, int64_t row0, int64_t row1);

// Ross's estimator's counts for one continuous column x (B, N) contiguous, float32 or float64, and int64 codes
// (N,) shared by the batch: classes (those of y, or of (y, z)), strata (those of z; all 0 without one) and
// k_each (k_i, below its class size). Writes eps (B, N) in x's dtype and int64 tied, lt, le (B, N); see
// ross_counts_cpu.cpp and python/mipp/reference.py.
void ross_counts_cpu(int64_t x, int64_t batch, int64_t n, bool f64, int64_t classes, int64_t strata, int64_t k_each,
                     int64_t eps, int64_t tied, int64_t lt, int64_t le, int threads);

// The estimators' input checks of `columns` contiguous columns of n float32 / float64 samples: any NaN or inf,
// any column whose span (max - min) overflows, and (ties) the most samples of one column repeating another's
// value (0 when not asked, or when a value is not finite).
struct ColumnStats {
  bool nonfinite;
  bool overflow;
  int64_t repeated;
};
ColumnStats column_stats_cpu(int64_t data, int64_t columns, int64_t n, bool f64, bool ties, int threads);

#ifdef MIPP_WITH_CUDA
// The same as digamma_sum_cpu on device pointers, enqueued on `stream` (a cudaStream_t as an integer).
// A pole (count + offset <= 0) cannot raise from the device without a synchronisation: it gives NaN.
void digamma_sum_cuda(const int64_t* counts, int64_t rows, int64_t n, int64_t offset, bool reduce, double* out,
                      int64_t stream);
#endif

}  // namespace mipp
