// ross_counts on the CPU for one continuous column: the neighbour counts of Ross's estimator (continuous x,
// discrete y), exactly as python/mipp/reference.py composes them from knn_distance and count_within over
// x and label groups:
//
//   eps_i    = the distance from i to its k_i-th nearest neighbour of the same class (i excluded by index);
//   tied_i   = #{j != i of i's class : |x_j - x_i| <= eps_i};
//   lt_i, le_i = #{j != i of i's stratum : |x_j - x_i| < eps_i}, and <= eps_i.
//
// In one column the neighbours of a sample are its neighbours in sorted order: each problem sorts its
// column once (radix, sorted_order), splits the order into the classes' and the strata's sorted runs (a
// walk, which keeps each run sorted), takes the k_i nearest of a sample by merging outwards from its
// position in its class run (O(k)), extends that merge over the ties at eps_i (tied_i), and finds its
// stratum's window under eps_i by galloping from its position (key_window). The generic composition ran a
// two-column k-NN (x and the label group) and up to three counts over the same data. Distances are the
// rounded |x_j - x_i| of the reference and monotone along a sorted run (rounding is monotone), so every
// count and distance is the reference's, bit for bit.
#include "kernels.h"
#include "pairwise.h"

namespace mipp {
namespace {

// Runs of codes: runs[start[c] .. start[c + 1]) will hold code c's samples in sorted order.
std::vector<int64_t> run_starts(const int64_t* codes, int64_t n) {
  int64_t m = 0;
  for (int64_t i = 0; i < n; ++i) m = std::max(m, codes[i] + 1);
  std::vector<int64_t> start(m + 1, 0);
  for (int64_t i = 0; i < n; ++i) ++start[codes[i] + 1];
  for (int64_t c = 0; c < m; ++c) start[c + 1] += start[c];
  return start;
}

// Splits the sorted order into the runs of each code: the value and the sample of every position.
template <class T>
void split_runs(const T* x, const std::vector<int64_t>& order, const int64_t* codes, const std::vector<int64_t>& start,
                std::vector<T>& values, std::vector<int64_t>& index) {
  std::vector<int64_t> next(start.begin(), start.end() - 1);
  for (const int64_t i : order) {
    const int64_t p = next[codes[i]]++;
    values[p] = x[i];
    index[p] = i;
  }
}

constexpr int64_t kBlock = 2048;  // positions per parallel block when one problem has the threads

template <class T>
void run(const T* x, int64_t batch, int64_t n, const int64_t* classes, const int64_t* strata, const int64_t* k_each,
         T* eps, int64_t* tied, int64_t* lt, int64_t* le, int threads) {
  const std::vector<int64_t> cls = run_starts(classes, n), str = run_starts(strata, n);
  threads = threads_for(threads, static_cast<double>(batch) * n, 4096);
  const bool over_problems = batch >= threads;  // else the positions of each problem are split
  const int64_t blocks = (n + kBlock - 1) / kBlock;
  parallel_for(batch, over_problems ? threads : 1, [&](int64_t b) {
    const int inner = over_problems ? 1 : threads;
    const T* xb = x + b * n;
    const std::vector<int64_t> order = sorted_order(xb, n);
    std::vector<T> cv(n), sv(n);
    std::vector<int64_t> ci(n), si(n);
    split_runs(xb, order, classes, cls, cv, ci);
    split_runs(xb, order, strata, str, sv, si);
    T* eps_b = eps + b * n;
    int64_t *tied_b = tied + b * n, *lt_b = lt + b * n, *le_b = le + b * n;
    parallel_for(blocks, inner, [&](int64_t blk) {
      for (int64_t r = blk * kBlock; r < std::min(n, (blk + 1) * kBlock); ++r) {
        const int64_t i = ci[r], a = cls[classes[i]], e = cls[classes[i] + 1];  // i's class run
        const T xi = cv[r];
        const auto gap = [&](int64_t j) { return std::fabs(cv[j] - xi); };
        // the k_i nearest by merging the runs below and above r (k_i < the class size: both cannot run out)
        int64_t lo = r - 1, hi = r + 1;
        T d = 0;
        for (int64_t t = 0; t < k_each[i]; ++t) {
          const bool down = hi >= e || (lo >= a && gap(lo) <= gap(hi));
          d = down ? gap(lo--) : gap(hi++);
        }
        while (lo >= a && gap(lo) <= d) --lo;  // the ties at eps_i beyond the k_i-th
        while (hi < e && gap(hi) <= d) ++hi;
        eps_b[i] = d;
        tied_b[i] = hi - lo - 2;
      }
    });
    parallel_for(blocks, inner, [&](int64_t blk) {  // after every eps: a count reads its own sample's only
      for (int64_t q = blk * kBlock; q < std::min(n, (blk + 1) * kBlock); ++q) {
        const int64_t i = si[q], a = str[strata[i]], len = str[strata[i] + 1] - a, p = q - a;  // i's stratum run
        const T* v = sv.data() + a;
        const T d = eps_b[i];
        int64_t lo, hi;
        key_window(v, len, p, [d](T g) { return g < d; }, lo, hi);
        lt_b[i] = hi - lo - 1;
        // [lo, hi) holds p; widened over the ties at eps_i it is the <= window
        while (lo > 0 && std::fabs(v[lo - 1] - v[p]) <= d) --lo;
        while (hi < len && std::fabs(v[hi] - v[p]) <= d) ++hi;
        le_b[i] = hi - lo - 1;
      }
    });
  });
}

}  // namespace

void ross_counts_cpu(int64_t x, int64_t batch, int64_t n, bool f64, int64_t classes, int64_t strata, int64_t k_each,
                     int64_t eps, int64_t tied, int64_t lt, int64_t le, int threads) {
  threads = resolve_threads(threads);
  const auto* c = reinterpret_cast<const int64_t*>(classes);
  const auto* s = reinterpret_cast<const int64_t*>(strata);
  const auto* k = reinterpret_cast<const int64_t*>(k_each);
  auto* t = reinterpret_cast<int64_t*>(tied);
  auto* l = reinterpret_cast<int64_t*>(lt);
  auto* e = reinterpret_cast<int64_t*>(le);
  if (f64) {
    run(reinterpret_cast<const double*>(x), batch, n, c, s, k, reinterpret_cast<double*>(eps), t, l, e, threads);
  } else {
    run(reinterpret_cast<const float*>(x), batch, n, c, s, k, reinterpret_cast<float*>(eps), t, l, e, threads);
  }
}

}  // namespace mipp
