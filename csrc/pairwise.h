// The exact pairwise engine shared by the CPU ops (knn_distance, count_within, marginal_radius, ksg_counts).
//
// Semantics (python/mipp/reference.py is the specification): the distance of samples i, j in a group is
// max_c |x[i,c] - x[j,c]|, the subtraction rounded once in the input dtype, abs and max exact; the joint
// distance of several groups is the max of the group distances. Nothing here reorders or expands that
// arithmetic, so every path (brute force, sorted sweep, strips) produces the reference's values bit for
// bit, and the choice of path only changes the speed.
//
// Layout: a group is (B_g, d, N) contiguous (column-major per problem: one column's N samples are
// contiguous). B_g is 1 (shared by all B problems) or B.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>
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

// Per-query radii (B_r, rows) with B_r in {1, B}.
template <class T>
struct Radius {
  const T* data;
  int64_t batch;
  int64_t rows;  // one radius per query row
  const T* row(int64_t b) const { return data + (batch == 1 ? 0 : b) * rows; }
};

template <class T>
MIPP_INLINE bool inside(T d, T r, bool strict) {
  return strict ? d < r : d <= r;
}

// d into the ascending k best, the largest dropped (d is below it): the k-NN selections of the brute force's rows
// and of the strips.
template <class T>
MIPP_INLINE void insert_best(T* best, int k, T d) {
  int t = k - 1;
  while (t > 0 && best[t - 1] > d) {
    best[t] = best[t - 1];
    --t;
  }
  best[t] = d;
}

// Joint dimensions up to this take the sorted sweep / strips, higher ones the brute force (the old ops;
// ksg_counts chooses by its own cost model, see there).
constexpr int64_t kSweepMaxDim = 8;

// Queries per thread at least on the sorted paths (sweep, strips, their counts). A query there costs 0.3 us
// (1+1) to several us, so 512 of them outweigh the OpenMP region's few us many times; the 4,096 this was
// kept N = 2,000 - 4,000 estimates on one thread (1+1 at N = 2,000: 1.26 ms on one thread, 0.66 ms on two).
constexpr double kSortedGrain = 512;

// Which exact algorithm runs. Auto picks by joint dimension (see choose_path in each op).
enum class Path { Auto, Brute, Sweep, Strips };
Path parse_path(const std::string& name);
const char* path_name(Path p);
// Auto -> Sweep for 1 <= joint_dim <= sweep_max_dim (Strips instead from 2 columns when the op has them:
// has_strips), else Brute. A forced Sweep needs joint_dim >= 1; a forced Strips runs as Sweep where the op has
// no strips or there is a single column.
Path choose_path(Path requested, int64_t joint_dim, int64_t sweep_max_dim, bool has_strips);

// ---------------------------------------------------------------------------------------------------
// Brute force, register-blocked.
//
// Each group of each problem is packed once per call into blocks of kLane samples, [block][column][lane]
// (zero padding to a multiple of kLane), so the candidates stream sequentially whatever d is. A work item
// is kRows query rows (of one problem, or of every problem of the batch when some group is shared); for
// each group it computes the group distance of those rows to the candidates with the columns innermost:
// per block, 4 query rows x 8 candidates of accumulators stay in registers across all d columns (sub,
// and-not, max per pair-column, nothing stored per column), and only the group distance is written: for a
// consumer of one pass into the chunk's rows (kRows x kSpan per group, in L1), else into a row of N per query
// row and group (the one-pass ops at 8+8 ran 1.20-1.26x faster on one thread on chunk rows than on rows of N,
// whose written lines go to L2 and back). A consumer reads the rows in passes over chunks of kSpan candidates
// (small enough for L1, for every problem of the item in turn): the k-NN selection in the first, then, for
// ksg_counts, the KSG-2 radii and the counts under the radius the first pass found. Rows computed once stay
// for the later passes (a problem's own groups when the item has one problem, a group shared by the batch
// always), so each pair-column is computed once per call; in a shared item a problem's own groups are
// computed again in a later pass that needs them (the consumer says which: needs(pass, g)), while the shared
// group's chunk stays in L1 across all the problems.
constexpr int kLane = 8;          // candidates per packed block
constexpr int kRows = 8;          // query rows per work item (two register blocks of 4)
constexpr int64_t kSpan = 128;    // candidates per consumer chunk (a multiple of kLane): 8 KiB per group

inline int64_t round_up(int64_t n, int64_t m) { return (n + m - 1) / m * m; }

// out[q * ld + j - j0] = max_c |x[j, c] - qv[c * kRows + q]| for q < kRows, j in [j0, j1) (multiples of kLane);
// packed: one problem's group in blocks (see above), qv: the query rows' values, column by column.
void group_rows(const double* packed, int64_t dim, const double* qv, int64_t j0, int64_t j1, double* out, int64_t ld);
// Whether the float64 group_rows, knn_rows and count_rows run their AVX-512 versions: built for x86-64 with GCC, the
// CPU has AVX-512F and DQ, and the environment variable MIPP_NO_AVX512 is unset or "0" (read once).
bool avx512_distances();
void group_rows(const float* packed, int64_t dim, const float* qv, int64_t j0, int64_t j1, float* out, int64_t ld);

// One problem's group (dim x n, column-major) in blocks of kLane samples, [block][column][lane].
template <class T>
std::vector<T> pack(const T* src, int64_t n, int64_t dim) {
  const int64_t n8 = round_up(n, kLane);
  std::vector<T> out(static_cast<size_t>(n8 * dim), T(0));
  for (int64_t c = 0; c < dim; ++c)
    for (int64_t i = 0; i < n; ++i) out[((i / kLane) * dim + c) * kLane + i % kLane] = src[c * n + i];
  return out;
}

// Runs the brute force through a consumer with passes() passes over the candidates:
//   consumer.chunk(pass, slot, b, i0, qn, j0, jn, rows, ld)  rows i0..i0+qn against candidates j0..j0+jn:
//                                                           rows[g] + q * ld + j is group g's distance of query q
//                                                           to candidate j0 + j (valid where needs(pass, g))
//   consumer.end(pass, slot, b, i0, qn)                     after the pass's last chunk, per problem
// slot numbers the problems of one work item (0..batch-1 in a shared item, 0 otherwise). Each work item
// gets a fresh copy of `proto`, whose reserve(slots) sizes its per-query state.
template <class T, class Consumer>
void brute_force(const Problems<T>& ps, int threads, const Consumer& proto) {
  const int64_t n = ps.n, n8 = round_up(n, kLane), row_blocks = (ps.rows() + kRows - 1) / kRows;
  const int64_t ng = static_cast<int64_t>(ps.groups.size());
  // A shared item runs all B problems for one row block; otherwise an item is one (problem, row block).
  const bool shared = ps.batch > 1 && ps.any_shared();
  const int64_t items = shared ? row_blocks : ps.batch * row_blocks;
  const int64_t slots = shared ? ps.batch : 1;
  // about a millisecond of work per thread at least (pair-columns plus the per-pair consumer work)
  const double work = static_cast<double>(ps.batch) * ps.rows() * n * (ps.joint_dim() + 4);
  threads = threads_for(threads, work, 4e6);
  // packed[g][b_g]: every group of every problem, packed once
  std::vector<std::vector<std::vector<T>>> packed(ng);
  std::vector<std::pair<int64_t, int64_t>> jobs;
  for (int64_t g = 0; g < ng; ++g) {
    packed[g].resize(ps.groups[g].batch);
    for (int64_t b = 0; b < ps.groups[g].batch; ++b) jobs.emplace_back(g, b);
  }
  const double pack_work = static_cast<double>(n) * ps.joint_dim() * ps.batch;
  parallel_for(static_cast<int64_t>(jobs.size()), threads_for(threads, pack_work, 1 << 18), [&](int64_t t) {
    const auto [g, b] = jobs[t];
    packed[g][b] = pack(ps.groups[g].problem(b, n), n, ps.groups[g].dim);
  });
  // one pass: a chunk's rows (L1); several: rows of all n8 candidates, kept for the later passes
  const bool one_pass = proto.passes() == 1;
  const int64_t ld = one_pass ? kSpan : n8;
  parallel_for(items, threads, [&](int64_t item) {
    const int64_t i0 = ps.row0 + (item % row_blocks) * kRows;
    const int qn = static_cast<int>(std::min<int64_t>(kRows, ps.row1 - i0));
    const int64_t b_first = shared ? 0 : item / row_blocks;
    Consumer c = proto;
    c.reserve(slots);
    // uninitialised: every row is written before it is read (glibc serves the repeated size from its heap
    // after the first free, so items do not fault fresh pages in)
    const std::unique_ptr<T[]> buf(new T[static_cast<size_t>(ng * kRows * ld)]);
    std::vector<T> qv;  // the query rows' values of every (slot, group): slots x ng x (dim x kRows)
    std::vector<int64_t> qv_at(slots * ng);
    for (int64_t s = 0; s < slots; ++s)
      for (int64_t g = 0; g < ng; ++g) {
        const auto& grp = ps.groups[g];
        qv_at[s * ng + g] = static_cast<int64_t>(qv.size());
        if (s > 0 && grp.batch == 1) continue;  // the same for every slot: slot 0's
        const T* src = grp.problem(b_first + s, n);
        for (int64_t col = 0; col < grp.dim; ++col)
          for (int q = 0; q < kRows; ++q) qv.push_back(src[col * n + i0 + (q < qn ? q : 0)]);
      }
    std::vector<const T*> chunk(ng);
    for (int pass = 0; pass < c.passes(); ++pass) {
      for (int64_t j0 = 0; j0 < n8; j0 += kSpan) {
        const int64_t j1 = std::min(n8, j0 + kSpan);
        for (int64_t s = 0; s < slots; ++s) {
          const int64_t b = b_first + s;
          for (int64_t g = 0; g < ng; ++g) {
            const auto& grp = ps.groups[g];
            T* out = buf.get() + g * kRows * ld + (one_pass ? 0 : j0);
            chunk[g] = out;
            // computed in pass 0 and kept, except a problem's own groups in a shared item (one chunk at a time)
            const bool kept = grp.batch == 1 || slots == 1;
            const bool compute = kept ? pass == 0 && (s == 0 || grp.batch != 1) : c.needs(pass, g);
            if (!compute) continue;
            const int64_t b_g = grp.batch == 1 ? 0 : b;
            const int64_t at = qv_at[(grp.batch == 1 ? 0 : s) * ng + g];
            group_rows(packed[g][b_g].data(), grp.dim, qv.data() + at, j0, j1, out, ld);
          }
          c.chunk(pass, s, b, i0, qn, j0, std::min(n, j1) - j0, chunk.data(), ld);
        }
      }
      for (int64_t s = 0; s < slots; ++s) c.end(pass, s, b_first + s, i0, qn);
    }
  });
}

// The consumers' loops over rows of group distances, `rows[g] + q * ld + j` for query q < qn and candidate
// j < jn; the joint distance is the max over the ng groups. self0 + q is query q's own candidate (excluded
// by index where it lies in [0, jn)).
//
// knn_rows: feeds each query's joint distances into its ascending k best (best + q * k). A candidate enters
// only when strictly below the current k-th, so ties never change the k-th value: it is the k-th element of
// the multiset, as torch.kthvalue gives. Most candidates are rejected by a vectorised test over chunks of 32
// before any scalar work.
void knn_rows(const double* const* rows, int64_t ng, int64_t ld, int qn, int64_t jn, int64_t self0, int k,
              double* best);
void knn_rows(const float* const* rows, int64_t ng, int64_t ld, int qn, int64_t jn, int64_t self0, int k,
              float* best);
// count_rows: cnt[q] += #{j != self : inside(joint, r[q], strict)}.
void count_rows(const double* const* rows, int64_t ng, int64_t ld, int qn, int64_t jn, int64_t self0,
                const double* r, bool strict, int64_t* cnt);
void count_rows(const float* const* rows, int64_t ng, int64_t ld, int qn, int64_t jn, int64_t self0,
                const float* r, bool strict, int64_t* cnt);
// radius_rows: m[q * ng + g] = max(m[q * ng + g], max over the j with joint <= r[q] of group g's distance). The
// sample itself needs no exclusion: its group distances are 0, and the maxima start at 0.
void radius_rows(const double* const* rows, int64_t ng, int64_t ld, int qn, int64_t jn, const double* r, double* m);
void radius_rows(const float* const* rows, int64_t ng, int64_t ld, int qn, int64_t jn, const float* r, float* m);

// dst[j] = max_c |cols[c * n + j0 + j] - cols[c * n + p]| for j < jn: one query against a run of candidates
// of a column-major sorted copy (the sweeps).
void row_distance(const double* cols, int64_t n, int64_t dim, int64_t p, int64_t j0, int64_t jn, double* dst);
void row_distance(const float* cols, int64_t n, int64_t dim, int64_t p, int64_t j0, int64_t jn, float* dst);

// A block of kVisitBlock consecutive candidates at once (the strips' k-NN visits): dst[j] = max_c |cols[c * ld + j0 +
// j] - cols[c * ld + p]| for all j < kVisitBlock, in registers across the columns (the caller pads each column by
// kVisitBlock, so the block may run past the last sample); returns whether any j < len other than p - j0 has
// dst[j] < bound.
constexpr int64_t kVisitBlock = 16;
bool block_distance(const double* cols, int64_t ld, int64_t dim, int64_t p, int64_t j0, int64_t len, double bound,
                    double* dst);
bool block_distance(const float* cols, int64_t ld, int64_t dim, int64_t p, int64_t j0, int64_t len, float bound,
                    float* dst);
// #{j in [j0, j0 + len), j != p : inside(max_c |cols[c * ld + j] - cols[c * ld + p]|, r, strict)}: a run of
// consecutive candidates counted kVisitBlock at a time in registers (the columns padded as for block_distance).
int64_t run_count(const double* cols, int64_t ld, int64_t dim, int64_t p, int64_t j0, int64_t len, double r,
                  bool strict);
int64_t run_count(const float* cols, int64_t ld, int64_t dim, int64_t p, int64_t j0, int64_t len, float r, bool strict);

// ---------------------------------------------------------------------------------------------------
// Sorted sweep: one problem's joint columns, samples reordered by one column (the "key").
//
// Max-norm distances are >= the gap in any single column, so scanning outwards from a query in key
// order can stop exactly once the key gap reaches the current k-th distance (knn), and the samples
// within a radius lie in the window of positions whose key gap passes the same test (counts). The key
// gap is the same rounded |x_j - x_i| the full distance uses, and it is monotone in x_j along the
// sorted order (rounding is monotone), so the window is found by binary search on the exact predicate
// and never by comparing x_j with x_i +- r, which rounds differently.
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
// samples). Both are estimated on at most kKeySample evenly spaced samples, so choosing costs no sort of N
// (1,024 took 7% of a 1+1 estimate at N = 2,000; 256 tell a label group from a continuous column as well).
// Any key gives the same values; only the speed depends on it.
constexpr int64_t kKeySample = 256;

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

// The sample indices in ascending order of key, ties (-0 and +0 included) in index order. From 256 samples a
// bucket sort by value where the keys spread evenly over their range (one scatter pass), else an LSD radix sort
// on the keys' bits (11 bits a pass, passes where every key has the same digit skipped): at N = 20,000 the radix
// sort is about 5x faster than std::sort of (value, index) pairs and the bucket sort 1.5x faster again.
std::vector<int64_t> sorted_order(const double* key, int64_t n);
std::vector<int64_t> sorted_order(const float* key, int64_t n);

// Builds problem b's sorted copy of the groups `which` (all when empty), keyed by their best key column
// (key_columns); `order`, when given, is the sorted order of that key column (a sort already made).
template <class T>
Sorted<T> sort_problem(const Problems<T>& ps, int64_t b, const std::vector<int64_t>& which = {}) {
  Sorted<T> s;
  const int64_t n = ps.n;
  s.n = n;
  std::vector<const T*> src;
  for (int64_t g = 0; g < static_cast<int64_t>(ps.groups.size()); ++g) {
    if (!which.empty() && std::find(which.begin(), which.end(), g) == which.end()) continue;
    const auto& grp = ps.groups[g];
    for (int64_t c = 0; c < grp.dim; ++c) src.push_back(grp.problem(b, n) + c * n);
    s.group_end.push_back(static_cast<int64_t>(src.size()));
  }
  s.dim = static_cast<int64_t>(src.size());
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

// The window [lo, hi) around position p of an ascending key: p itself and the positions on either side
// whose key gap satisfies inside(|key[j] - key[p]|), found on the exact (monotone) gap predicate.
template <class T, class Inside>
MIPP_INLINE void key_window(const T* key, int64_t n, int64_t p, Inside inside, int64_t& lo, int64_t& hi) {
  const T x = key[p];
  hi = p + 1 + gallop(key, x, p + 1, n - p - 1, 1, inside);
  lo = p - gallop(key, x, p - 1, p, -1, inside);
}

// An ascending key's bucket index: where each of m equal-width value buckets over [key[0], key[n-1]] starts,
// so that a window edge near x +- r is looked up at its place and then found by galloping a few positions on
// the exact predicate, instead of galloped to from the query (a KSG count at N = 100,000 is ~600 positions
// wide: ~19 dependent probes a side). The bucket of a value is a monotone function of it (a rounded
// subtraction and product, truncated, clamped), so the guess is at or near the edge; the edge itself is
// always decided by the gap predicate, so any guess gives the same window and only the speed depends on it.
template <class T>
struct KeyIndex {
  double low = 0, scale = 0;
  std::vector<int64_t> start;  // start[b] = the first position whose bucket is >= b, b in [0, m]; start[m + 1] = n
  KeyIndex() = default;
  KeyIndex(const T* key, int64_t n) {
    if (n < 2 || !(key[n - 1] > key[0])) return;  // one value (or too few to gain): plain galloping
    const int64_t m = n / 2;
    low = static_cast<double>(key[0]);
    scale = static_cast<double>(m) / (static_cast<double>(key[n - 1]) - low);
    if (!std::isfinite(scale)) return;
    start.assign(static_cast<size_t>(m + 2), n);
    for (int64_t p = n - 1; p >= 0; --p) start[bucket(key[p])] = p;
    for (int64_t b = m; b >= 0; --b) start[b] = std::min(start[b], start[b + 1]);
  }
  bool empty() const { return start.empty(); }
  int64_t bucket(double v) const {
    const double f = (v - low) * scale;
    const int64_t m = static_cast<int64_t>(start.size()) - 2;
    return f > 0 ? (f < static_cast<double>(m) ? static_cast<int64_t>(f) : m) : 0;  // NaN -> 0
  }
};

// How many of the kWindow positions from w have a gap fl|key[w + t] - x| below r (strict) or at most r: vector
// compares, no branch (pairwise.cpp). Along one side of a query the passing positions are contiguous, so where the
// window holds the edge between them and the failing ones, the count places the edge: one predictable branch
// where galloping to it took several unpredictable ones (half of a 1+1 count's time at N = 2,000).
constexpr int64_t kWindow = 16;
int64_t window_passes(const double* key, int64_t w, double x, double r, bool strict);
int64_t window_passes(const float* key, int64_t w, float x, float r, bool strict);

// The same for a window of len positions, len <= kWindow (shorter where the key ends first).
template <bool Strict, class T>
MIPP_INLINE int64_t window_passes(const T* key, int64_t w, int64_t len, T x, T r) {
  if (len == kWindow) return window_passes(key, w, x, r, Strict);
  int64_t c = 0;
  for (int64_t t = 0; t < len; ++t) c += inside(std::fabs(key[w + t] - x), r, Strict);
  return c;
}

// key_window (the window [lo, hi) around p, the gaps below r (Strict) or at most r) with a bucket index: each
// edge looked for in the kWindow positions around the index's guess for x +- r, else galloped from the guess in
// whichever direction the predicate says; the same window.
template <bool Strict, class T>
MIPP_INLINE void key_window(const T* key, int64_t n, const KeyIndex<T>& index, int64_t p, T r, int64_t& lo,
                            int64_t& hi) {
  const auto in = [r](T d) { return inside(d, r, Strict); };
  if (index.empty()) return key_window(key, n, p, in, lo, hi);
  const T x = key[p];
  const auto out = [r](T d) { return !inside(d, r, Strict); };
  const auto pass = [&](int64_t j) { return in(std::fabs(key[j] - x)); };
  // right: the passing positions are [p + 1, hi)
  int64_t g = std::clamp<int64_t>(index.start[index.bucket(static_cast<double>(x) + r)], p + 1, n);
  int64_t w = std::max(p + 1, g - kWindow / 2), len = std::min(kWindow, n - w);
  int64_t c = window_passes<Strict>(key, w, len, x, r);
  if ((c < len || w + len == n) && (c > 0 || w == p + 1)) {  // the edge is in the window (or at its ends)
    hi = w + c;
  } else if (g < n && pass(g)) {
    hi = g + gallop(key, x, g, n - g, 1, in);
  } else {
    hi = g - gallop(key, x, g - 1, g - 1 - p, -1, out);
  }
  // left: the passing positions are [lo, p), lo near the start of the bucket of x - r
  if (p == 0) {
    lo = 0;
    return;
  }
  g = std::clamp<int64_t>(index.start[index.bucket(static_cast<double>(x) - r)], 0, p - 1);
  w = std::max<int64_t>(0, g - kWindow / 2);
  len = std::min(kWindow, p - w);
  c = window_passes<Strict>(key, w, len, x, r);
  if ((c < len || w == 0) && (c > 0 || w + len == p)) {
    lo = w + len - c;
  } else if (pass(g)) {
    lo = g - gallop(key, x, g - 1, g, -1, in);
  } else {
    lo = g + 1 + gallop(key, x, g + 1, p - 1 - g, 1, out);
  }
}

// Runs the caller's per-query loop over the sorted positions of every problem, `rows_fn(b, sorted, p0, p1)`,
// threads split over problems when there are enough of them, else over blocks of query positions within a
// problem. The loops skip positions whose sample is not a query row (ps.is_query).
template <class T, class RowsFn>
void sweep(const Problems<T>& ps, int threads, RowsFn&& rows_fn) {
  constexpr int64_t kBlock = 256;
  threads = threads_for(threads, static_cast<double>(ps.batch) * ps.rows(), kSortedGrain);
  const bool over_problems = ps.batch >= threads;
  // Groups all shared by the batch (count_within([y], radii of B problems): the y of a permutation test or of
  // mi_per_feature) are the same data for every problem: sorted once, not once per problem.
  bool all_shared = true;
  for (const auto& g : ps.groups) all_shared = all_shared && g.batch == 1;
  const Sorted<T> common = all_shared ? sort_problem(ps, 0) : Sorted<T>();
  parallel_for(ps.batch, over_problems ? threads : 1, [&](int64_t b) {
    const Sorted<T> own = all_shared ? Sorted<T>() : sort_problem(ps, b);
    const Sorted<T>& s = all_shared ? common : own;
    parallel_for((ps.n + kBlock - 1) / kBlock, over_problems ? 1 : threads, [&](int64_t blk) {
      rows_fn(b, s, blk * kBlock, std::min(ps.n, (blk + 1) * kBlock));
    });
  });
}

}  // namespace mipp
