// knn_distance on the CPU: the k-th smallest joint distance from each sample to the others (itself
// excluded by index; duplicates count with multiplicity), exactly as python/mipp/reference.py.
//
// Paths: a sorted sweep for one joint column (the scan stops once the key gap reaches the current k-th
// distance), strips (strips.h) for 2 to kSweepMaxDim joint columns, brute-force tiles above. Both keep the k smallest distances of a query in a small
// ascending array; a candidate enters only when strictly below the current k-th, so ties never change
// the k-th value and the result is the k-th element of the multiset, as torch.kthvalue gives.
#include <limits>

#include "kernels.h"
#include "pairwise.h"
#include "strips.h"

namespace mipp {
namespace {

// Inserts d (< best[k-1]) into the ascending array best[0..k).
template <class T>
MIPP_INLINE void insert_sorted(T* best, int k, T d) {
  int p = k - 1;
  while (p > 0 && best[p - 1] > d) {
    best[p] = best[p - 1];
    --p;
  }
  best[p] = d;
}

// Feeds one tile into the k-best arrays of its qn queries (best: qn x k). Most candidates are rejected
// by a vectorised test over chunks of kScan before any scalar work; self0 + q is query q's own column.
template <class T>
MIPP_INLINE void knn_tile_impl(const T* tile, int qn, int64_t jn, int64_t self0, int k, T* best) {
  constexpr int64_t kScan = 32;
  for (int q = 0; q < qn; ++q) {
    const T* row = tile + q * kJB;
    T* bq = best + q * k;
    const int64_t self = self0 + q;
    T worst = bq[k - 1];
    for (int64_t c0 = 0; c0 < jn; c0 += kScan) {
      const int64_t c1 = std::min(jn, c0 + kScan);
      int hit = 0;
      for (int64_t j = c0; j < c1; ++j) hit |= row[j] < worst;
      if (!hit) continue;
      for (int64_t j = c0; j < c1; ++j) {
        if (row[j] < worst && j != self) {
          insert_sorted(bq, k, row[j]);
          worst = bq[k - 1];
        }
      }
    }
  }
}

MIPP_CLONES void knn_tile(const double* tile, int qn, int64_t jn, int64_t self0, int k, double* best) {
  knn_tile_impl(tile, qn, jn, self0, k, best);
}
MIPP_CLONES void knn_tile(const float* tile, int qn, int64_t jn, int64_t self0, int k, float* best) {
  knn_tile_impl(tile, qn, jn, self0, k, best);
}

template <class T>
struct KnnConsumer {
  int k;
  int64_t n;
  T* out;
  std::vector<T> best;  // slots x kQB x k
  void reserve(int64_t slots) { best.assign(static_cast<size_t>(slots * kQB * k), std::numeric_limits<T>::infinity()); }
  void tile(int64_t s, int64_t, int64_t i0, int qn, int64_t j0, int64_t jn, const T* const* tiles) {
    knn_tile(tiles[0], qn, jn, i0 - j0, k, best.data() + s * kQB * k);
  }
  int64_t row0, rows;
  void end(int64_t s, int64_t b, int64_t i0, int qn) {
    for (int q = 0; q < qn; ++q) out[b * rows + i0 - row0 + q] = best[(s * kQB + q) * k + k - 1];
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
          tile_max(s.cols.data(), n, s.dim, p, 1, right, len, nullptr, dist);
          knn_tile(dist, 1, len, p - right, k, best.data());
          right += len;
        }
        if (left_open) {
          const int64_t len = std::min(kStep, left);
          left -= len;
          tile_max(s.cols.data(), n, s.dim, p, 1, left, len, nullptr, dist);
          knn_tile(dist, 1, len, p - left, k, best.data());
        }
        const T worst = best[k - 1];
        right_open = right < n && std::fabs(s.key[right] - x) < worst;
        left_open = left > 0 && std::fabs(s.key[left - 1] - x) < worst;
      }
      out[b * ps.rows() + s.index[p] - ps.row0] = best[k - 1];
    }
  });
}

// Scans positions [a, b) of strips s from `from` outwards (up to b, down to a) for the query at position p
// (key y value yq, row q), while fl|y_j - yq| is below the current k-th distance.
template <class T>
MIPP_INLINE void scan_strip(const Strips<T>& s, int64_t a, int64_t b, int64_t from, int64_t p, T yq, int k, T* best) {
  const T* q = s.rows.data() + p * s.dim;
  auto visit = [&](int64_t j) {
    const T* r = s.rows.data() + j * s.dim;
    T d = 0;
    for (int64_t c = 0; c < s.dim; ++c) {
      const T dc = std::fabs(r[c] - q[c]);
      d = d < dc ? dc : d;
    }
    if (d < best[k - 1] && j != p) insert_sorted(best, k, d);
  };
  for (int64_t j = from; j < b && std::fabs(s.ys[j] - yq) < best[k - 1]; ++j) visit(j);
  for (int64_t j = from - 1; j >= a && std::fabs(s.ys[j] - yq) < best[k - 1]; --j) visit(j);
}

template <class T>
void knn_strips(const Problems<T>& ps, int k, T* out, int threads) {
  constexpr int64_t kRows = 256;
  threads = threads_for(threads, static_cast<double>(ps.batch) * ps.rows(), 4096);
  const bool over_problems = ps.batch >= threads;
  const T inf = std::numeric_limits<T>::infinity();
  parallel_for(ps.batch, over_problems ? threads : 1, [&](int64_t b) {
    const Strips<T> s = build_strips(ps, b, k);
    parallel_for((s.n + kRows - 1) / kRows, over_problems ? 1 : threads, [&](int64_t blk) {
      std::vector<T> best(k);
      for (int64_t p = blk * kRows; p < std::min(s.n, (blk + 1) * kRows); ++p) {
        const int64_t i = s.index[p];
        if (!ps.is_query(i)) continue;
        std::fill(best.begin(), best.end(), inf);
        const T xq = s.xs[p], yq = s.ys[p];
        const int64_t own = p / s.size;
        scan_strip(s, s.begin(own), s.end(own), p, p, yq, k, best.data());
        // Neighbouring strips, nearest first on either side, while their x-gap is below the k-th distance.
        bool right = true, left = true;
        for (int64_t step = 1; right || left; ++step) {
          const int64_t r = own + step, l = own - step;
          right = right && r < s.strips() && s.xmin[r] - xq < best[k - 1];
          left = left && l >= 0 && xq - s.xmax[l] < best[k - 1];
          for (const int64_t t : {right ? r : int64_t(-1), left ? l : int64_t(-1)}) {
            if (t < 0) continue;
            const int64_t a = s.begin(t), e = s.end(t);
            const int64_t from = std::lower_bound(s.ys.begin() + a, s.ys.begin() + e, yq) - s.ys.begin();
            scan_strip(s, a, e, from, p, yq, k, best.data());
          }
        }
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
    brute_force(ps, false, threads, KnnConsumer<T>{static_cast<int>(k), n, out, {}, row0, row1 - row0});
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
