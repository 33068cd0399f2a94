// Strips: the low-dimensional k-NN structure of knn_distance on the CPU (2 to kSweepMaxDim joint columns).
//
// The samples are cut into strips of S consecutive samples in the order of one key column x (equal-count
// strips), and each strip is ordered by a second key column y. A query scans its own strip outwards in y from
// its own position, then the neighbouring strips (from the position of its y, found by binary search)
// while their x-gap is below its current k-th distance. Exactness, as in the sweep (pairwise.h): every
// distance is the full max-norm over all joint columns, rounded as the reference rounds it; a strip is
// skipped only when fl(x_min - x_q) (or fl(x_q - x_max)) reaches the k-th distance, and a scan in y stops only
// when fl|y_j - y_q| reaches it: rounding is monotone, so every sample beyond is at least as far in that
// column, and a candidate enters the k best only when strictly below the k-th. The visit order only
// changes the speed.
//
// With S ~ sqrt(2 (k + 1) N) a query looks at a few dozen samples whatever N is (the sweep's window in two
// dimensions holds ~sqrt(N)); building costs two sorts of N.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "pairwise.h"

namespace mipp {

template <class T>
struct Strips {
  int64_t n = 0, dim = 0, size = 1;  // samples, joint columns, samples per strip (the last may be shorter)
  std::vector<T> rows;               // n x dim, samples in strip order, y ascending within each strip
  std::vector<T> xs, ys;             // the two key columns in that order
  std::vector<int64_t> index;        // original sample index of each position
  std::vector<T> xmin, xmax;         // key range of each strip
  int64_t strips() const { return static_cast<int64_t>(xmin.size()); }
  int64_t begin(int64_t t) const { return t * size; }
  int64_t end(int64_t t) const { return std::min(n, (t + 1) * size); }
};

// Problem b's strips; needs joint_dim >= 2.
template <class T>
Strips<T> build_strips(const Problems<T>& ps, int64_t b, int64_t k) {
  const int64_t n = ps.n;
  std::vector<const T*> src;
  for (const auto& g : ps.groups)
    for (int64_t c = 0; c < g.dim; ++c) src.push_back(g.problem(b, n) + c * n);
  const std::vector<int64_t> keys = key_columns(src, n, 2);
  const T* kx = src[keys[0]];
  const T* ky = src[keys[1]];
  Strips<T> s;
  s.n = n;
  s.dim = static_cast<int64_t>(src.size());
  s.size = std::max<int64_t>(k + 1, static_cast<int64_t>(std::ceil(std::sqrt(2.0 * (k + 1) * n))));
  const std::vector<int64_t> by_x = sorted_order(kx, n), by_y = sorted_order(ky, n);
  std::vector<int64_t> strip_of(n);
  const int64_t m = n ? (n + s.size - 1) / s.size : 0;
  s.xmin.resize(m);
  s.xmax.resize(m);
  for (int64_t r = 0; r < n; ++r) strip_of[by_x[r]] = r / s.size;
  for (int64_t t = 0; t < m; ++t) {
    s.xmin[t] = kx[by_x[s.begin(t)]];
    s.xmax[t] = kx[by_x[s.end(t) - 1]];
  }
  // Walking the y order once fills every strip in y order.
  std::vector<int64_t> next(m);
  for (int64_t t = 0; t < m; ++t) next[t] = s.begin(t);
  s.index.resize(n);
  for (const int64_t i : by_y) s.index[next[strip_of[i]]++] = i;
  s.rows.resize(static_cast<size_t>(n * s.dim));
  s.xs.resize(n);
  s.ys.resize(n);
  for (int64_t p = 0; p < n; ++p) {
    const int64_t i = s.index[p];
    for (int64_t c = 0; c < s.dim; ++c) s.rows[p * s.dim + c] = src[c][i];
    s.xs[p] = kx[i];
    s.ys[p] = ky[i];
  }
  return s;
}

}  // namespace mipp
