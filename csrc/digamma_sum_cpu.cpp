// digamma_sum on the CPU: psi(counts + offset) in float64, summed over the last dimension or not.
//
// Determinism: a row is cut into fixed chunks of kChunk elements; each chunk is summed left to right
// and the chunk sums of a row are then added in chunk order. The chunking depends only on n, never on
// the thread count, so every thread count gives the same bits.
#include <algorithm>
#include <atomic>
#include <cinttypes>
#include <cstdio>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

#include "common.h"
#include "kernels.h"
#include "psi.h"

namespace mipp {
namespace {

constexpr double kPsiTable[kPsiTableSize] = {MIPP_PSI_TABLE_VALUES};
constexpr int64_t kChunk = 4096;

// psi(m) for m < kMemo, each entry computed once by psi_positive_int itself (so a lookup returns the same
// bits): KSG's counts are mostly small and repeat, and a lookup (~1 ns, 32 KB in cache) replaces a log and
// a series (~15 ns). Built on first use; a function-local static is initialised once, thread-safely.
constexpr int64_t kMemo = 4096;

const double* psi_memo() {
  static const std::vector<double> memo = [] {
    std::vector<double> v(kMemo, 0.0);  // index 0 is unused (a pole)
    for (int64_t m = 1; m < kMemo; ++m) v[static_cast<size_t>(m)] = psi_positive_int(m, kPsiTable);
    return v;
  }();
  return memo.data();
}

inline double psi_of(int64_t m, const double* memo) {
  return m < kMemo ? memo[m] : psi_positive_int(m, kPsiTable);
}

// Records the smallest flat index whose count + offset is a pole of psi (<= 0).
struct PoleTracker {
  std::atomic<int64_t> first{std::numeric_limits<int64_t>::max()};
  void record(int64_t index) {
    int64_t cur = first.load();
    while (index < cur && !first.compare_exchange_weak(cur, index)) {
    }
  }
};

// psi(counts[i] + offset) summed over [begin, end), or 0 and a recorded pole.
double chunk_sum(const int64_t* counts, int64_t begin, int64_t end, int64_t offset, const double* memo,
                 PoleTracker& poles) {
  double s = 0.0;
  for (int64_t i = begin; i < end; ++i) {
    const int64_t m = counts[i] + offset;
    if (m <= 0) {
      poles.record(i);
      return 0.0;
    }
    s += psi_of(m, memo);
  }
  return s;
}

}  // namespace

void digamma_sum_cpu(const int64_t* counts, int64_t rows, int64_t n, int64_t offset, bool reduce, double* out,
                     int threads) {
  // a psi looked up costs ~1 ns, one computed ~15 ns: 16,384 values are worth a second thread (an MI at
  // N = 2,000 has 4,000, whose two-thread region cost more than the lookups)
  threads = threads_for(resolve_threads(threads), static_cast<double>(rows) * n, 1 << 14);
  const double* memo = psi_memo();
  PoleTracker poles;
  if (reduce) {
    const int64_t per_row = (n + kChunk - 1) / kChunk;
    std::vector<double> partial(static_cast<size_t>(rows * per_row));
    parallel_for(rows * per_row, threads, [&](int64_t c) {
      const int64_t row = c / per_row, begin = row * n + (c % per_row) * kChunk;
      partial[c] = chunk_sum(counts, begin, std::min(begin + kChunk, (row + 1) * n), offset, memo, poles);
    });
    for (int64_t r = 0; r < rows; ++r) {
      double s = 0.0;  // n == 0: the empty sum
      for (int64_t c = 0; c < per_row; ++c) s += partial[r * per_row + c];
      out[r] = s;
    }
  } else {
    const int64_t total = rows * n;
    parallel_for((total + kChunk - 1) / kChunk, threads, [&](int64_t c) {
      const int64_t end = std::min(total, (c + 1) * kChunk);
      for (int64_t i = c * kChunk; i < end; ++i) {
        const int64_t m = counts[i] + offset;
        if (m <= 0) {
          poles.record(i);
          out[i] = std::numeric_limits<double>::quiet_NaN();
        } else {
          out[i] = psi_of(m, memo);
        }
      }
    });
  }
  const int64_t bad = poles.first.load();
  if (bad != std::numeric_limits<int64_t>::max()) {
    char msg[256];
    std::snprintf(msg, sizeof msg,
                  "digamma_sum: counts + offset must be >= 1 (psi has poles at 0, -1, -2, ...), but the count "
                  "at flat index %" PRId64 " is %" PRId64 " with offset %" PRId64,
                  bad, counts[bad], offset);
    throw std::domain_error(msg);  // pybind11 raises it as ValueError
  }
}

}  // namespace mipp
