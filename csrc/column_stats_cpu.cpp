// column_stats on the CPU: the estimators' input checks in one pass per column (python/mipp/ops.py's
// column_stats is the specification, and the path off the CPU): whether any value is NaN or +-inf, whether
// some column's span (max - min, in its dtype) overflows, and, on request, the largest number of samples of one
// column that repeat another sample's value (-0 equals +0).
//
// Why in C++: at N = 2,000 the torch reductions and the numpy sort of each column took ~140 us per argument,
// more than a tenth of a whole 1+1 estimate; one scan and a hash count take a few us.
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <limits>
#include <type_traits>
#include <vector>

#include "kernels.h"

namespace mipp {
namespace {

// The samples of v (n finite values) equal to another sample's value: a count per distinct value in an
// open-addressing table keyed by the value's bits (v + 0 turns -0 into +0, so the bits are equal exactly when
// the values are), then the counts of the values seen more than once. O(n) with the table in L1 / L2 at the
// N of a KSG estimate; the radix sort of the column this replaced cost ~40 ns a sample.
template <class T>
int64_t repeated_samples(const T* v, int64_t n) {
  using Bits = std::conditional_t<sizeof(T) == 8, uint64_t, uint32_t>;
  int shift = 60;  // size = 2^(64 - shift) >= 2n
  int64_t size = 16;
  while (size < 2 * n) size *= 2, --shift;
  const uint64_t mask = static_cast<uint64_t>(size) - 1;
  struct Slot {
    Bits key;
    uint32_t count;  // 0: empty
  };
  // key and count in one line: one cache miss per sample at large N; the table is kept per thread, as a fresh
  // one of several MiB faulted its pages in on every call (N = 100,000: half the time)
  thread_local std::vector<Slot> table;
  table.assign(size, Slot{0, 0});
  for (int64_t i = 0; i < n; ++i) {
    const T x = v[i] + T(0);
    Bits b;
    std::memcpy(&b, &x, sizeof b);
    // Fibonacci hashing: the product's top bits depend on every bit of the key (integer-valued data have
    // their low mantissa bits all 0, so the low bits of a product would put them all in one slot)
    uint64_t h = (static_cast<uint64_t>(b) * 0x9E3779B97F4A7C15ull) >> shift;
    while (table[h].count && table[h].key != b) h = (h + 1) & mask;
    table[h].key = b;
    ++table[h].count;
  }
  int64_t out = 0;
  for (const Slot& s : table) out += s.count > 1 ? s.count : 0;
  return out;
}

template <class T>
ColumnStats stats(const T* data, int64_t columns, int64_t n, bool ties, int threads) {
  std::atomic<bool> nonfinite{false}, overflow{false};
  std::atomic<int64_t> repeated{0};
  threads = threads_for(threads, static_cast<double>(columns) * n, 1 << 14);
  parallel_for(columns, threads, [&](int64_t c) {
    const T* v = data + c * n;
    if (n == 0) return;
    T low = v[0], high = v[0];
    bool finite = true;
    for (int64_t i = 0; i < n; ++i) {
      finite = finite && std::isfinite(v[i]);
      low = v[i] < low ? v[i] : low;
      high = v[i] > high ? v[i] : high;
    }
    if (!finite) {
      nonfinite = true;
      return;
    }
    if (!std::isfinite(high - low)) overflow = true;
    if (!ties || n < 2) return;
    const int64_t count = repeated_samples(v, n);
    int64_t cur = repeated.load();
    while (count > cur && !repeated.compare_exchange_weak(cur, count)) {
    }
  });
  if (nonfinite) return {true, false, 0};  // the rest is moot: the caller refuses the data
  return {false, overflow.load(), repeated.load()};
}

}  // namespace

ColumnStats column_stats_cpu(int64_t data, int64_t columns, int64_t n, bool f64, bool ties, int threads) {
  threads = resolve_threads(threads);
  return f64 ? stats(reinterpret_cast<const double*>(data), columns, n, ties, threads)
             : stats(reinterpret_cast<const float*>(data), columns, n, ties, threads);
}

}  // namespace mipp
