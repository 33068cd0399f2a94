// The exact pairwise engine shared by knn_distance, count_within and marginal_radius on the CPU.
//
// Semantics (python/mipp/reference.py is the specification): the distance of samples i, j in a group is
// max_c |x[i,c] - x[j,c]|, the subtraction rounded once in the input dtype, abs and max exact; the joint
// distance of several groups is the max of the group distances. Nothing here reorders or expands that
// arithmetic, so every path (brute force tiles, sorted sweep) produces the reference's values bit for
// bit, and the choice of path only changes the speed.
//
// Layout: a group is (B_g, d, N) contiguous (column-major per problem: one column's N samples are
// contiguous, so the brute-force inner loops run over candidates j with unit stride and vectorise).
// B_g is 1 (shared by all B problems) or B.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include "common.h"

namespace mipp {

struct GroupArg {
  int64_t ptr;    // address of the (B_g, d, N) contiguous data
  int64_t batch;  // B_g: 1 or B
  int64_t dim;    // d
};

template <class T>
struct Group {
  const T* data;
  int64_t batch;
  int64_t dim;
  const T* problem(int64_t b, int64_t n) const { return data + (batch == 1 ? 0 : b) * dim * n; }
};

// One call's problems: B problems of N samples over the column groups; the query rows [row0, row1) are
// the samples whose values are computed (against all N candidates); outputs hold one row per query.
template <class T>
struct Problems {
  std::vector<Group<T>> groups;
  int64_t batch;
  int64_t n;
  int64_t row0 = 0, row1 = 0;
  int64_t rows() const { return row1 - row0; }
  bool is_query(int64_t i) const { return i >= row0 && i < row1; }
  int64_t joint_dim() const {
    int64_t d = 0;
    for (const auto& g : groups) d += g.dim;
    return d;
  }
  bool any_shared() const {
    for (const auto& g : groups)
      if (g.batch == 1) return true;
    return false;
  }
};

template <class T>
Problems<T> make_problems(const std::vector<GroupArg>& args, int64_t batch, int64_t n, int64_t row0,
                          int64_t row1) {
  Problems<T> p{{}, batch, n, row0, row1};
  for (const auto& a : args) p.groups.push_back({reinterpret_cast<const T*>(a.ptr), a.batch, a.dim});
  return p;
}

// Per-query radii (B_r, N) with B_r in {1, B}.
template <class T>
struct Radius {
  const T* data;
  int64_t batch;
  int64_t rows;   // one radius per query row
  const T* row(int64_t b) const { return data + (batch == 1 ? 0 : b) * rows; }
};

// Joint dimensions up to this take the sorted sweep, higher ones the brute force. Measured (one thread,
// k = 3, knn_distance / count_within, seconds, brute vs sweep): N = 10000, D = 2: 0.100 / 0.010 and
// 0.076 / 0.004; D = 8 independent columns: 0.18 / 0.15 and 0.16 / 0.07; D = 8 as (x, x + noise):
// 0.36 / 0.11 and 0.09 / 0.04; D = 16 independent: 0.40 / 0.88 and 0.56 / 0.44. N = 2000 alike.
constexpr int64_t kSweepMaxDim = 8;

// Which exact algorithm runs. Auto picks by joint dimension (see choose_path in each op).
enum class Path { Auto, Brute, Sweep, Strips };
Path parse_path(const std::string& name);
const char* path_name(Path p);
// Auto -> Sweep for 1 <= joint_dim <= sweep_max_dim (Strips instead from 2 columns when the op has them:
// has_strips), else Brute. A forced Sweep needs joint_dim >= 1; a forced Strips runs as Sweep where the op has
// no strips or there is a single column.
Path choose_path(Path requested, int64_t joint_dim, int64_t sweep_max_dim, bool has_strips);

// ---------------------------------------------------------------------------------------------------
// Brute force: tiles of kQB query rows x kJB candidates.
//
// A tile is small enough for L1 (8 x 256 doubles = 16 KiB), and one column of candidates is reused
// by the kQB query rows. Work items are query blocks; when some group is shared by a batch (B_g = 1 <
// B), one item runs the whole batch for its rows, so the shared group's tile is computed once and each
// problem only adds its own groups to it (the "shared marginal" case: one 64-column y, 256 1-D x).
constexpr int kQB = 8;
constexpr int64_t kJB = 256;

// dst[q][j] = max(src[q][j] (0 without src), max_c |g[c][j0 + j] - g[c][i0 + q]|), q < qn, j < jn;
// rows of stride kJB. src may equal dst.
void tile_max(const double* g, int64_t n, int64_t dim, int64_t i0, int qn, int64_t j0, int64_t jn,
              const double* src, double* dst);
void tile_max(const float* g, int64_t n, int64_t dim, int64_t i0, int qn, int64_t j0, int64_t jn,
              const float* src, float* dst);

// Runs the tiles of every problem through a consumer:
//   consumer.tile(slot, b, i0, qn, j0, jn, tiles)   rows i0..i0+qn against candidates j0..j0+jn; tiles[0]
//                                                   is the joint tile (per_group: tiles[g] is group g's)
//   consumer.end(slot, b, i0, qn)                   after the last tile of those rows
// slot numbers the problems of one work item (0..batch-1 in a shared item, 0 otherwise). Each work item
// gets a fresh copy of `proto`, whose reserve(slots) sizes its per-query state.
template <class T, class Consumer>
void brute_force(const Problems<T>& ps, bool per_group, int threads, const Consumer& proto) {
  const int64_t n = ps.n, row_blocks = (ps.rows() + kQB - 1) / kQB;
  const int64_t ng = static_cast<int64_t>(ps.groups.size());
  // A shared item runs all B problems for one row block; otherwise an item is one (problem, row block).
  const bool shared = ps.batch > 1 && ps.any_shared();
  const int64_t items = shared ? row_blocks : ps.batch * row_blocks;
  const int64_t slots = shared ? ps.batch : 1;
  // about a millisecond of distance work per thread at least (pair-columns, ~3e9 per second)
  const double work = static_cast<double>(ps.batch) * ps.rows() * n * (ps.joint_dim() + 1);
  threads = threads_for(threads, work, 4e6);
  parallel_for(items, threads, [&](int64_t item) {
    const int64_t i0 = ps.row0 + (item % row_blocks) * kQB;
    const int qn = static_cast<int>(std::min<int64_t>(kQB, ps.row1 - i0));
    const int64_t b_first = shared ? 0 : item / row_blocks;
    Consumer c = proto;
    c.reserve(slots);
    // Tile storage: one per group (per_group) or joint + the shared part (joint).
    const int64_t n_tiles = per_group ? ng : 2;
    std::vector<T> store(static_cast<size_t>(n_tiles * kQB * kJB));
    std::vector<const T*> tiles(static_cast<size_t>(per_group ? ng : 1));
    auto tile_at = [&](int64_t t) { return store.data() + t * kQB * kJB; };
    for (int64_t j0 = 0; j0 < n; j0 += kJB) {
      const int64_t jn = std::min(kJB, n - j0);
      // Groups shared by the whole item: once per tile, for every problem of the item.
      T* pre = tile_at(per_group ? 0 : 1);
      bool have_pre = false;
      if (shared) {
        for (int64_t g = 0; g < ng; ++g) {
          const auto& grp = ps.groups[g];
          if (grp.batch != 1) continue;
          if (per_group) {
            tile_max(grp.data, n, grp.dim, i0, qn, j0, jn, nullptr, tile_at(g));
          } else {
            tile_max(grp.data, n, grp.dim, i0, qn, j0, jn, have_pre ? pre : nullptr, pre);
            have_pre = true;
          }
        }
      }
      for (int64_t s = 0; s < slots; ++s) {
        const int64_t b = b_first + s;
        if (per_group) {
          for (int64_t g = 0; g < ng; ++g) {
            const auto& grp = ps.groups[g];
            if (!(shared && grp.batch == 1))
              tile_max(grp.problem(b, n), n, grp.dim, i0, qn, j0, jn, nullptr, tile_at(g));
            tiles[g] = tile_at(g);
          }
        } else {
          T* joint = tile_at(0);
          const T* src = have_pre ? pre : nullptr;
          bool any = false;
          for (const auto& grp : ps.groups) {
            if (shared && grp.batch == 1) continue;
            tile_max(grp.problem(b, n), n, grp.dim, i0, qn, j0, jn, any ? joint : src, joint);
            any = true;
          }
          tiles[0] = any ? joint : pre;
        }
        c.tile(s, b, i0, qn, j0, jn, tiles.data());
      }
    }
    for (int64_t s = 0; s < slots; ++s) c.end(s, b_first + s, i0, qn);
  });
}

// ---------------------------------------------------------------------------------------------------
// Sorted sweep: one problem's joint columns, samples reordered by one column (the "key").
//
// Max-norm distances are >= the gap in any single column, so scanning outwards from a query in key
// order can stop exactly once the key gap reaches the current k-th distance (knn), and the samples
// within a radius lie in the window of positions whose key gap passes the same test (counts). The key
// gap is the same rounded |x_j - x_i| the full distance uses, and it is monotone in x_j along the
// sorted order (rounding is monotone), so the window is found by binary search on the exact predicate
// and never by comparing x_j with x_i +- r, which rounds differently.
//
// The sorted copy is column-major like a group, so distances to a run of candidates are computed by
// tile_max (one query row) and consumed by the same tile functions as the brute force.
template <class T>
struct Sorted {
  int64_t n = 0, dim = 0;
  std::vector<T> cols;             // dim x n, samples in key order
  const T* key = nullptr;          // the key column inside cols, ascending
  std::vector<int64_t> index;      // original sample index of each position
  std::vector<int64_t> group_end;  // columns of group g: [group_end[g-1], group_end[g])
};

// The `count` best key columns of src (N samples each), best first: by interquartile range times the
// fraction of distinct values (the widest spread gives the narrowest windows; the IQR ignores outliers that
// a range or std would follow; a column of few repeated values, such as a class-label group, has a wide
// spread but puts a whole class in every window: with 10 labels at N = 5,000 the window was a tenth of the
// samples). Both are estimated on at most kKeySample evenly spaced samples, so choosing costs no sort of N.
// Any key gives the same values; only the speed depends on it.
constexpr int64_t kKeySample = 1024;

template <class T>
std::vector<int64_t> key_columns(const std::vector<const T*>& src, int64_t n, int64_t count) {
  std::vector<int64_t> cols(src.size());
  for (size_t c = 0; c < src.size(); ++c) cols[c] = static_cast<int64_t>(c);
  if (src.size() > 1 && n > 3) {
    const int64_t m = std::min(n, kKeySample);
    std::vector<T> score(src.size()), tmp(m);
    for (size_t c = 0; c < src.size(); ++c) {
      for (int64_t i = 0; i < m; ++i) tmp[i] = src[c][i * n / m];
      std::sort(tmp.begin(), tmp.end());
      const T iqr = tmp[(3 * m) / 4] - tmp[m / 4];
      const T distinct = static_cast<T>(std::unique(tmp.begin(), tmp.end()) - tmp.begin()) / static_cast<T>(m);
      score[c] = iqr * distinct;
    }
    std::stable_sort(cols.begin(), cols.end(), [&](int64_t a, int64_t b) { return score[a] > score[b]; });
  }
  cols.resize(std::min<size_t>(cols.size(), static_cast<size_t>(count)));
  return cols;
}

// The sample indices in ascending order of key (ties by index). Sorting (value, index) pairs compares
// contiguous values, about twice as fast as sorting indices through the key.
template <class T>
std::vector<int64_t> sorted_order(const T* key, int64_t n) {
  std::vector<std::pair<T, int64_t>> pairs(n);
  for (int64_t i = 0; i < n; ++i) pairs[i] = {key[i], i};
  std::sort(pairs.begin(), pairs.end());
  std::vector<int64_t> order(n);
  for (int64_t i = 0; i < n; ++i) order[i] = pairs[i].second;
  return order;
}

// Builds problem b's sorted copy, keyed by the best key column (key_columns).
template <class T>
Sorted<T> sort_problem(const Problems<T>& ps, int64_t b) {
  Sorted<T> s;
  const int64_t n = ps.n;
  s.n = n;
  s.dim = ps.joint_dim();
  std::vector<const T*> src;
  for (const auto& g : ps.groups) {
    for (int64_t c = 0; c < g.dim; ++c) src.push_back(g.problem(b, n) + c * n);
    s.group_end.push_back(static_cast<int64_t>(src.size()));
  }
  const int64_t key_col = key_columns(src, n, 1)[0];
  s.index = sorted_order(src[key_col], n);
  s.cols.resize(n * s.dim);
  for (int64_t c = 0; c < s.dim; ++c)
    for (int64_t p = 0; p < n; ++p) s.cols[c * n + p] = src[c][s.index[p]];
  s.key = s.cols.data() + key_col * n;
  return s;
}

// The number of positions in [0, len) from `from` outwards in direction dir (+1 or -1) whose key gap
// passes inside(|key[j] - x|), the gaps growing outwards: galloping (1, 2, 4, ... positions) brackets the
// first failing one near `from` (windows are small against N, and their memory is local), then a binary
// search without data-dependent branches finds it.
template <class T, class Inside>
MIPP_INLINE int64_t gallop(const T* key, T x, int64_t from, int64_t len, int dir, Inside inside) {
  auto pass = [&](int64_t i) { return inside(std::fabs(key[from + dir * i] - x)); };
  int64_t lo = 0, step = 1;  // every i < lo passes
  while (lo + step <= len && pass(lo + step - 1)) lo += step, step *= 2;
  int64_t count = std::min(step, len - lo);  // the first failing i lies in [lo, lo + count]
  while (count > 0) {
    const int64_t half = count / 2;
    const bool t = pass(lo + half);
    lo = t ? lo + half + 1 : lo;
    count = t ? count - half - 1 : half;
  }
  return lo;
}

// The window [lo, hi) around p: p itself and the positions on either side whose key gap satisfies
// inside(|key[j] - key[p]|), found on the exact (monotone) gap predicate.
template <class T, class Inside>
void key_window(const Sorted<T>& s, int64_t p, Inside inside, int64_t& lo, int64_t& hi) {
  const T x = s.key[p];
  hi = p + 1 + gallop(s.key, x, p + 1, s.n - p - 1, 1, inside);
  lo = p - gallop(s.key, x, p - 1, p, -1, inside);
}

// Runs the caller's per-query loop over the sorted positions of every problem, `rows_fn(b, sorted, p0, p1)`,
// threads split over problems when there are enough of them, else over blocks of query positions within a
// problem. The loops skip positions whose sample is not a query
// row (ps.is_query).
template <class T, class RowsFn>
void sweep(const Problems<T>& ps, int threads, RowsFn&& rows_fn) {
  constexpr int64_t kRows = 256;
  threads = threads_for(threads, static_cast<double>(ps.batch) * ps.rows(), 4096);  // queries per thread
  const bool over_problems = ps.batch >= threads;
  // Groups all shared by the batch (count_within([y], radii of B problems): the y of a permutation test or of
  // mi_per_feature) are the same data for every problem: sorted once, not once per problem.
  bool all_shared = true;
  for (const auto& g : ps.groups) all_shared = all_shared && g.batch == 1;
  const Sorted<T> common = all_shared ? sort_problem(ps, 0) : Sorted<T>();
  parallel_for(ps.batch, over_problems ? threads : 1, [&](int64_t b) {
    const Sorted<T> own = all_shared ? Sorted<T>() : sort_problem(ps, b);
    const Sorted<T>& s = all_shared ? common : own;
    parallel_for((ps.n + kRows - 1) / kRows, over_problems ? 1 : threads, [&](int64_t blk) {
      rows_fn(b, s, blk * kRows, std::min(ps.n, (blk + 1) * kRows));
    });
  });
}

}  // namespace mipp
