// knn_distance on the CPU: the k-th smallest joint distance from each sample to the others (itself
// excluded by index; duplicates count with multiplicity), exactly as python/mipp/reference.py.
//
// Paths: a sorted sweep for one joint column (the scan stops once the key gap reaches the current k-th
// distance), strips (strips.h) for 2 to kSweepMaxDim joint columns, the register-blocked brute force above.
// All keep the k smallest distances of a query in a small ascending array; a candidate enters only when
// strictly below the current k-th, so ties never change the k-th value and the result is the k-th element of
// the multiset, as torch.kthvalue gives.
#include <limits>

#include "kernels.h"
#include "pairwise.h"
#include "strips.h"

namespace mipp {
namespace {

template <class T>
struct KnnConsumer {
  int k;
  T* out;
  int64_t row0, rows;
  int64_t ng;
  std::vector<T> best;  // slots x kRows x k
  void reserve(int64_t slots) { best.assign(static_cast<size_t>(slots * kRows * k), std::numeric_limits<T>::infinity()); }
  int passes() const { return 1; }
  bool needs(int, int64_t) const { return true; }
  void chunk(int, int64_t s, int64_t, int64_t i0, int qn, int64_t j0, int64_t jn, const T* const* r, int64_t ld) {
    knn_rows(r, ng, ld, qn, jn, i0 - j0, k, best.data() + s * kRows * k);
  }
  void end(int, int64_t s, int64_t b, int64_t i0, int qn) {
    for (int q = 0; q < qn; ++q) out[b * rows + i0 - row0 + q] = best[(s * kRows + q) * k + k - 1];
  }
};

template <class T>
void knn_sweep(const Problems<T>& ps, int k, T* out, int threads) {
  // Candidates are taken kStep at a time on each side: the distances of a step vectorise, and the
  // scan has no data-dependent branch per candidate. A side closes once its next key gap reaches the
  // current k-th distance; gaps grow outwards and the k-th distance only shrinks, so it stays closed.
  constexpr int64_t kStep = 16;
  const T inf = std::numeric_limits<T>::infinity();
  sweep(ps, threads, [&](int64_t b, const Sorted<T>& s, int64_t p0, int64_t p1) {
    std::vector<T> best(k);
    T dist[kStep];
    const T* row = dist;
    const int64_t n = s.n;
    for (int64_t p = p0; p < p1; ++p) {
      if (!ps.is_query(s.index[p])) continue;
      std::fill(best.begin(), best.end(), inf);
      const T x = s.key[p];
      int64_t left = p, right = p + 1;  // unvisited: [0, left) and [right, n)
      bool left_open = left > 0, right_open = right < n;
      while (left_open || right_open) {
        if (right_open) {
          const int64_t len = std::min(kStep, n - right);
          row_distance(s.cols.data(), n, s.dim, p, right, len, dist);
          knn_rows(&row, 1, 0, 1, len, p - right, k, best.data());
          right += len;
        }
        if (left_open) {
          const int64_t len = std::min(kStep, left);
          left -= len;
          row_distance(s.cols.data(), n, s.dim, p, left, len, dist);
          knn_rows(&row, 1, 0, 1, len, p - left, k, best.data());
        }
        const T worst = best[k - 1];
        right_open = right < n && std::fabs(s.key[right] - x) < worst;
        left_open = left > 0 && std::fabs(s.key[left - 1] - x) < worst;
      }
      out[b * ps.rows() + s.index[p] - ps.row0] = best[k - 1];
    }
  });
}

template <class T>
void knn_strips(const Problems<T>& ps, int k, T* out, int threads) {
  constexpr int64_t kBlock = 256;
  threads = threads_for(threads, static_cast<double>(ps.batch) * ps.rows(), kSortedGrain);
  const bool over_problems = ps.batch >= threads;
  const T inf = std::numeric_limits<T>::infinity();
  parallel_for(ps.batch, over_problems ? threads : 1, [&](int64_t b) {
    std::vector<const T*> src;
    for (const auto& g : ps.groups)
      for (int64_t c = 0; c < g.dim; ++c) src.push_back(g.problem(b, ps.n) + c * ps.n);
    const std::vector<int64_t> keys = key_columns(src, ps.n, 2);
    const Strips<T> s = build_strips(src, ps.n, k, keys[0], keys[1], sorted_order(src[keys[0]], ps.n),
                                     sorted_order(src[keys[1]], ps.n));
    parallel_for((s.n + kBlock - 1) / kBlock, over_problems ? 1 : threads, [&](int64_t blk) {
      std::vector<T> best(k);
      for (int64_t p = blk * kBlock; p < std::min(s.n, (blk + 1) * kBlock); ++p) {
        const int64_t i = s.index[p];
        if (!ps.is_query(i)) continue;
        std::fill(best.begin(), best.end(), inf);
        strips_knn(s, p, k, best.data());
        out[b * ps.rows() + i - ps.row0] = best[k - 1];
      }
    });
  });
}

template <class T>
Path run(const std::vector<GroupArg>& args, int64_t batch, int64_t n, int64_t k, int64_t out_ptr, Path path,
         int threads, int64_t row0, int64_t row1) {
  const Problems<T> ps = make_problems<T>(args, batch, n, row0, row1);
  T* out = reinterpret_cast<T*>(out_ptr);
  path = choose_path(path, ps.joint_dim(), kSweepMaxDim, true);
  if (path == Path::Sweep) {
    knn_sweep(ps, static_cast<int>(k), out, threads);
  } else if (path == Path::Strips) {
    knn_strips(ps, static_cast<int>(k), out, threads);
  } else {
    KnnConsumer<T> c{static_cast<int>(k), out, row0, row1 - row0, static_cast<int64_t>(ps.groups.size()), {}};
    brute_force(ps, threads, c);
  }
  return path;
}

}  // namespace

std::string knn_distance_cpu(const std::vector<GroupArg>& groups, int64_t batch, int64_t n, bool f64, int64_t k,
                             int64_t out, const std::string& path, int threads, int64_t row0, int64_t row1) {
  const Path p = parse_path(path);
  threads = resolve_threads(threads);
  return path_name(f64 ? run<double>(groups, batch, n, k, out, p, threads, row0, row1)
                       : run<float>(groups, batch, n, k, out, p, threads, row0, row1));
}

}  // namespace mipp
