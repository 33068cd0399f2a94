// Strips: the low-dimensional neighbour structure on the CPU (2 to kSweepMaxDim joint columns): knn_distance's
// and ksg_counts' k-NN, ksg_counts' KSG-2 neighbourhoods, and (strips of their own) the counts of its marginals
// of several columns.
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
// dimensions holds ~sqrt(N)); building costs the two sorts of the key columns.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "pairwise.h"

namespace mipp {

template <class T>
struct Strips {
  int64_t n = 0, dim = 0, size = 1;  // samples, joint columns, samples per strip (the last may be shorter)
  int64_t ld = 0;                    // the rows' column stride: n and kVisitBlock of padding
  std::vector<T> rows;               // samples in strip order, y ascending within each strip: dim x ld, one
                                     // column after another
  std::vector<T> xs, ys;             // the two key columns in that order
  std::vector<int64_t> index;        // original sample index of each position
  std::vector<T> xmin, xmax;         // key range of each strip
  int64_t strips() const { return static_cast<int64_t>(xmin.size()); }
  int64_t begin(int64_t t) const { return t * size; }
  int64_t end(int64_t t) const { return std::min(n, (t + 1) * size); }
};

// Strips over the joint columns src (N samples each, at least 2) keyed by columns kx and ky, whose sorted
// orders (sorted_order) are by_x and by_y; the rows column-major, so that a run of consecutive candidates is
// compared with a query vectorised (block_distance: the k-NN's blocks of visits; run_count: the counts' runs).
template <class T>
Strips<T> build_strips(const std::vector<const T*>& src, int64_t n, int64_t k, int64_t kx_col, int64_t ky_col,
                       const std::vector<int64_t>& by_x, const std::vector<int64_t>& by_y) {
  const T* kx = src[kx_col];
  const T* ky = src[ky_col];
  Strips<T> s;
  s.n = n;
  s.dim = static_cast<int64_t>(src.size());
  s.size = std::max<int64_t>(k + 1, static_cast<int64_t>(std::ceil(std::sqrt(2.0 * (k + 1) * n))));
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
  s.ld = n + kVisitBlock;
  s.rows.assign(static_cast<size_t>(s.ld * s.dim), T(0));
  s.xs.resize(n);
  s.ys.resize(n);
  for (int64_t p = 0; p < n; ++p) {
    const int64_t i = s.index[p];
    for (int64_t c = 0; c < s.dim; ++c) s.rows[c * s.ld + p] = src[c][i];
    s.xs[p] = kx[i];
    s.ys[p] = ky[i];
  }
  return s;
}

// The first position in [a, e) of an ascending run v whose value is not below x: a binary search whose steps are
// conditional moves (the strips' y lookups, ~7 steps each, mispredicted half the time as branches).
template <class T>
MIPP_INLINE int64_t lower_position(const T* v, int64_t a, int64_t e, T x) {
  const T* base = v + a;
  int64_t len = e - a;
  while (len > 1) {
    const int64_t half = len / 2;
    base = base[half - 1] < x ? base + half : base;
    len -= half;
  }
  return (base - v) + (len == 1 && *base < x);
}

// Calls strip(t, from) for every strip t of s that may hold a sample within the bound of the query at position
// p: its own strip (from = p), then the neighbouring strips nearest first on either side while their x-gap passes
// open(gap) (from = the first position of the strip whose y is not below the query's). A strip whose x-gap fails
// holds no sample within the bound, nor does any beyond it: rounding is monotone. strip() may tighten the bound
// (open reads it).
template <class T, class Open, class Strip>
MIPP_INLINE void strips_walk(const Strips<T>& s, int64_t p, Open open, Strip strip) {
  const T xq = s.xs[p], yq = s.ys[p];
  const int64_t own = p / s.size;
  strip(own, p);
  bool right = true, left = true;
  for (int64_t step = 1; right || left; ++step) {
    const int64_t r = own + step, l = own - step;
    right = right && r < s.strips() && open(s.xmin[r] - xq);
    left = left && l >= 0 && open(xq - s.xmax[l]);
    for (const int64_t t : {right ? r : int64_t(-1), left ? l : int64_t(-1)}) {  // one call site: one copy of strip
      if (t >= 0) strip(t, lower_position(s.ys.data(), s.begin(t), s.end(t), yq));
    }
  }
}

// Visits the positions j of strips s that may lie within the current bound of the query at position p: in each
// strip strips_walk reaches, from the query's y outwards while open(dy), dy = fl|y_j - y_q| (visit(j, dy) may
// tighten the bound: open reads it). Every position whose joint distance passes the bound is visited.
template <class T, class Open, class Visit>
MIPP_INLINE void strips_scan(const Strips<T>& s, int64_t p, Open open, Visit visit) {
  const T yq = s.ys[p];
  const T* ys = s.ys.data();
  strips_walk(s, p, open, [&](int64_t t, int64_t from) MIPP_INLINE_LAMBDA {
    for (int64_t j = from; j < s.end(t); ++j) {
      const T dy = std::fabs(ys[j] - yq);
      if (!open(dy)) break;
      visit(j, dy);
    }
    for (int64_t j = from - 1; j >= s.begin(t); --j) {
      const T dy = std::fabs(ys[j] - yq);
      if (!open(dy)) break;
      visit(j, dy);
    }
  });
}

// The max-norm distance over the columns [c0, c1) between the samples at positions p and j.
template <class T>
MIPP_INLINE T strips_distance(const Strips<T>& s, int64_t p, int64_t j, int64_t c0, int64_t c1) {
  T d = 0;
  for (int64_t c = c0; c < c1; ++c) {
    const T dc = std::fabs(s.rows[c * s.ld + j] - s.rows[c * s.ld + p]);
    d = d < dc ? dc : d;
  }
  return d;
}

// With two joint columns and k up to this, the strips insert every visited distance into the k best without a
// branch (k minima and maxima, a no-op for a distance not below the k-th): whether a candidate enters is then a
// coin toss the branch predictor loses (1+1 at N = 2,000: 7 of a query's 14 visits enter), and a miss costs
// more than the k steps. With more columns a query visits many more samples than enter (N = 5,000: 3 columns
// 81 visits for 12 entries, 8 columns 1,054 for 20), the branch is predicted, and the visits run in blocks
// (strips_blocks); beyond this k the insertion is the branchy shift, shorter than k.
constexpr int kBranchlessK = 8;

// Visits the positions of strips s that may lie within the bound of the query at position p, a block at a time:
// in each strip strips_walk reaches, from the query's y outwards, blocks of up to kVisitBlock consecutive
// positions, each up to the first whose y-gap fails open() when the block starts; their joint distances are
// computed in registers over the column-major rows (block_distance), and hit(j0, len, dist) sees a block only
// when one of them, p excluded, is below below(). Used with more than two columns, where a query visits many
// more samples than pass (8 columns at N = 5,000: 1,054 visits for a k-NN's 20 entries). Visiting a sample a
// tightened bound would have skipped changes nothing: the k best are the k smallest of what was visited, in any
// order, as long as every sample below the final bound is among them.
template <class T, class Open, class Below, class Hit>
MIPP_INLINE void strips_blocks(const Strips<T>& s, int64_t p, Open open, Below below, Hit hit) {
  const T* ys = s.ys.data();
  const T yq = ys[p];
  T dist[kVisitBlock];
  // the positions from `from` in direction dir (+1 up, -1 down) within [lo, hi), a block at a time
  const auto run = [&](int64_t from, int dir, int64_t lo, int64_t hi) MIPP_INLINE_LAMBDA {
    for (int64_t at = from;;) {
      const int64_t cap = std::min(kVisitBlock, dir > 0 ? hi - at : at - lo);
      int64_t len = 0;
      while (len < cap && open(std::fabs(ys[at + dir * len - (dir < 0)] - yq))) ++len;
      if (!len) return;
      const int64_t j0 = dir > 0 ? at : at - len;
      if (block_distance(s.rows.data(), s.ld, s.dim, p, j0, len, below(), dist)) hit(j0, len, dist);
      if (len < cap) return;
      at += dir * len;
    }
  };
  strips_walk(s, p, open, [&](int64_t t, int64_t from) MIPP_INLINE_LAMBDA {
    run(from, 1, s.begin(t), s.end(t));
    run(from, -1, s.begin(t), s.end(t));
  });
}

// The k smallest joint distances (ascending in best[0..k), which the caller fills with +inf) from the sample
// at position p to the others. With two joint columns (the key columns) the distance is max(fl|x_j - x_q|, dy):
// the scan's own dy is reused and the rows are not read.
template <class T>
MIPP_INLINE void strips_knn(const Strips<T>& s, int64_t p, int k, T* best) {
  const T xq = s.xs[p];
  const bool branchless = k <= kBranchlessK;
  const T inf = std::numeric_limits<T>::infinity();
  const auto open = [&](T gap) { return gap < best[k - 1]; };
  if (s.dim == 2) {
    strips_scan(s, p, open, [&](int64_t j, T dy) {
      const T dx = std::fabs(s.xs[j] - xq);
      T d = dx < dy ? dy : dx;
      if (branchless) {  // best[t] = min(best[t], max(best[t - 1], d)): the sorted k best with d inserted
        d = j == p ? inf : d;
        for (int t = k - 1; t > 0; --t) {
          const T m = best[t - 1] < d ? d : best[t - 1];
          best[t] = m < best[t] ? m : best[t];
        }
        best[0] = d < best[0] ? d : best[0];
      } else if (d < best[k - 1] && j != p) {
        insert_best(best, k, d);
      }
    });
    return;
  }
  strips_blocks(
      s, p, open, [&] { return best[k - 1]; },
      [&](int64_t j0, int64_t len, const T* dist) {
        for (int64_t j = 0; j < len; ++j)
          if (dist[j] < best[k - 1] && j0 + j != p) insert_best(best, k, dist[j]);
      });
}

}  // namespace mipp
