// ksg_counts on the CPU: one KSG estimate's k-th distances and marginal neighbour counts in one call, exactly
// as python/mipp/reference.py (ksg_counts there composes knn_distance, marginal_radius and count_within).
//
//   eps_i = the k-th smallest joint distance from i to the others (i excluded by index);
//   for each marginal m (a set of the groups; its distance is the max over them):
//     algorithm 1: n_m(i) = #{j != i : d_m(i, j) < eps_i}
//     algorithm 2: r_m(i) = max{d_m(i, j) : j != i, d(i, j) <= eps_i}, n_m(i) = #{j != i : d_m(i, j) <= r_m(i)}
//
// Paths:
//   brute   the register-blocked brute force (pairwise.h): each query row's group distances to all N
//           candidates are computed once, the k-NN selected from them chunk by chunk, and the radii and the
//           counts read from the same rows: every pair-column is computed once (the separate ops computed
//           the joint space for the k-NN and each marginal again for its count).
//   strips  low dimensions: the joint k-NN on strips (strips.h), the counts of a one-column marginal by its
//           window in that column's sorted order (the window is the count), of a wider marginal on strips of
//           its own, a run of each strip's y order at a time. The sorts are shared: a column is sorted once
//           per problem whether it keys the strips, a marginal or both, and a column of a group shared by
//           the batch once per call.
// Auto picks the cheaper by a cost model measured on this engine (choose below).
#include <limits>
#include <memory>

#include "kernels.h"
#include "pairwise.h"
#include "strips.h"

namespace mipp {
namespace {

// The marginals as lists of group indices.
std::vector<std::vector<int64_t>> marginal_groups(const std::vector<int64_t>& masks, int64_t ng) {
  std::vector<std::vector<int64_t>> out;
  for (const int64_t mask : masks) {
    std::vector<int64_t> m;
    for (int64_t g = 0; g < ng; ++g)
      if (mask >> g & 1) m.push_back(g);
    out.push_back(m);
  }
  return out;
}

template <class T>
struct Outputs {
  T* eps;          // (B, M)
  int64_t* count;  // (B, C, M)
  int64_t rows, marginals;
  int64_t* at(int64_t b, int64_t m, int64_t row) const { return count + (b * marginals + m) * rows + row; }
};

// ---------------------------------------------------------------------------------------------------
// Counting in sorted orders

// A marginal's counting structure, in the marginal's own order: one column's values in sorted order (line), or
// for several columns strips over its two best key columns (strips.h, its columns column-major in the strips'
// order); index()[p] is the sample at position p.
template <class T>
struct Counter {
  bool line = false;
  std::vector<T> v;
  KeyIndex<T> at;  // a line's bucket index
  std::vector<int64_t> order;
  Strips<T> st;
  const std::vector<int64_t>& index() const { return line ? order : st.index; }
};

// The strips of a wide marginal's counts are cut as for a k-NN with this k (strips.h: S ~ sqrt(2 (k + 1) N), here
// 16 sqrt(N)): a count's radius is fixed, so wider strips than the k-NN's pay fewer per-strip searches for runs a
// little longer. Against the sweep's 1-D window (ksg_counts alone, two threads, both builds alternating in one
// process): sqrt(8 N) 0.84-1.30x, 16 sqrt(N) 0.97x (CMI 1+1+1 at N = 2,000) to 1.54x (the same at 20,000), 4+4
// 1.08x, 2+2 1.15x, 1+3 1.19x, CMI 2+2+2 1.17x at N = 5,000; 32 sqrt(N) 0.92-1.35x.
constexpr int64_t kCountStripsK = 127;

// The columns of one problem and their sorted orders, made on first use; a column of a group shared by
// the batch takes its order from `shared` (made once per call, before any problem asks).
template <class T>
struct Columns {
  const Problems<T>* ps;
  std::vector<const T*> src;            // every joint column of the problem
  std::vector<int64_t> group_of;        // column -> group
  std::vector<std::vector<int64_t>> order;
  const std::vector<std::vector<int64_t>>* shared = nullptr;
  Columns(const Problems<T>& p, int64_t b, const std::vector<std::vector<int64_t>>* sh) : ps(&p), shared(sh) {
    for (int64_t g = 0; g < static_cast<int64_t>(p.groups.size()); ++g)
      for (int64_t c = 0; c < p.groups[g].dim; ++c) {
        src.push_back(p.groups[g].problem(b, p.n) + c * p.n);
        group_of.push_back(g);
      }
    order.resize(src.size());
  }
  bool is_shared(int64_t c) const { return ps->batch > 1 && ps->groups[group_of[c]].batch == 1; }
  bool has_order(int64_t c) const { return (shared && is_shared(c)) || !order[c].empty() || !ps->n; }
  const std::vector<int64_t>& sorted(int64_t c) {
    if (shared && is_shared(c)) return (*shared)[c];
    if (order[c].empty() && ps->n) order[c] = sorted_order(src[c], ps->n);
    return order[c];
  }
  std::vector<int64_t> columns_of(const std::vector<int64_t>& groups) const {
    std::vector<int64_t> out;
    for (int64_t c = 0; c < static_cast<int64_t>(src.size()); ++c)
      if (std::find(groups.begin(), groups.end(), group_of[c]) != groups.end()) out.push_back(c);
    return out;
  }
};

// The columns of the marginal made of `groups`, their data, and which of them key its counting structure
// (key_columns' best one for a line, two for strips; indices into columns).
template <class T>
struct MarginalColumns {
  std::vector<int64_t> columns;
  std::vector<const T*> src;
  std::vector<int64_t> keys;
};

template <class T>
MarginalColumns<T> marginal_columns(const Columns<T>& cols, const std::vector<int64_t>& groups) {
  MarginalColumns<T> m;
  m.columns = cols.columns_of(groups);
  for (const int64_t col : m.columns) m.src.push_back(cols.src[col]);
  m.keys = key_columns(m.src, cols.ps->n, m.columns.size() == 1 ? 1 : 2);
  return m;
}

template <class T>
Counter<T> make_counter(Columns<T>& cols, const MarginalColumns<T>& m) {
  const int64_t n = cols.ps->n;
  Counter<T> c;
  const std::vector<const T*>& src = m.src;
  if (m.columns.size() == 1) {
    c.line = true;
    c.order = cols.sorted(m.columns[0]);
    c.v.resize(n);
    for (int64_t p = 0; p < n; ++p) c.v[p] = src[0][c.order[p]];
    c.at = KeyIndex<T>(c.v.data(), n);
    return c;
  }
  const int64_t kx = m.keys[0], ky = m.keys[1];
  c.st = build_strips(src, n, kCountStripsK, kx, ky, cols.sorted(m.columns[kx]), cols.sorted(m.columns[ky]));
  return c;
}

// The structures of the groups shared by the batch, made once per call: the sorted orders of their columns
// (those in `columns`) and the counters of the marginals in `which` made of shared groups only.
template <class T>
struct SharedSorts {
  std::vector<std::vector<int64_t>> orders;
  std::vector<std::unique_ptr<Counter<T>>> counters;
};

template <class T>
SharedSorts<T> shared_sorts(const Problems<T>& ps, const std::vector<std::vector<int64_t>>& marg,
                            const std::vector<int64_t>& which, bool all_columns, int threads) {
  SharedSorts<T> out;
  out.orders.resize(ps.joint_dim());
  out.counters.resize(marg.size());
  if (ps.batch == 1) return out;
  Columns<T> cols(ps, 0, nullptr);
  std::vector<int64_t> needed;
  for (int64_t c = 0; c < ps.joint_dim(); ++c) {
    bool want = all_columns;
    for (const int64_t m : which) want = want || std::find(marg[m].begin(), marg[m].end(), cols.group_of[c]) != marg[m].end();
    if (want && cols.is_shared(c)) needed.push_back(c);
  }
  parallel_for(static_cast<int64_t>(needed.size()), threads,
               [&](int64_t t) { out.orders[needed[t]] = sorted_order(cols.src[needed[t]], ps.n); });
  cols.shared = &out.orders;
  for (const int64_t m : which) {
    bool all_shared = true;
    for (const int64_t g : marg[m]) all_shared = all_shared && ps.groups[g].batch == 1;
    if (all_shared)
      out.counters[m] = std::make_unique<Counter<T>>(make_counter(cols, marginal_columns(cols, marg[m])));
  }
  return out;
}

// #{j != i : d_m(i, j) < r} (strict) or <= r, for the sample at position p of the counter's order. Several
// columns: in each strip within reach in x (strips_walk), the samples whose y-gap passes are one run of the
// strip's y order, found by galloping from the query's y on the exact gap predicate, and their distances are
// computed and counted vectorised, a run at a time (a 1-D window of the sweep held ~40% of the samples for a
// 4-column marginal at N = 5,000; the runs of the two key columns hold about its square).
template <class T>
MIPP_INLINE int64_t count_at(const Counter<T>& c, int64_t p, T r, bool strict) {
  const auto in = [r, strict](T d) { return inside(d, r, strict); };
  int64_t lo, hi;
  if (c.line) {
    const int64_t len = static_cast<int64_t>(c.v.size());
    if (strict) {
      key_window<true>(c.v.data(), len, c.at, p, r, lo, hi);
    } else {
      key_window<false>(c.v.data(), len, c.at, p, r, lo, hi);
    }
    return hi - lo - 1;
  }
  const Strips<T>& st = c.st;
  const T* ys = st.ys.data();
  const T yq = st.ys[p];
  int64_t cnt = 0;
  strips_walk(st, p, in, [&](int64_t t, int64_t from) MIPP_INLINE_LAMBDA {
    hi = from + gallop(ys, yq, from, st.end(t) - from, 1, in);
    lo = from - gallop(ys, yq, from - 1, from - st.begin(t), -1, in);
    cnt += run_count(st.rows.data(), st.ld, st.dim, p, lo, hi - lo, r, strict);
  });
  return cnt;
}

constexpr int64_t kBlock = 256;  // query positions per parallel block

// Problem b's counts of the marginals in `which`, each walked in its own sorted order: the radii (eps, or
// KSG-2's marginal radii) are gathered into that order first and the counts scattered back after, so the
// counting reads its structure sequentially; the random accesses are the gathers and scatters, whose loads
// are independent (reading sample-indexed arrays inside the query loop missed the cache on every query: at
// N = 100,000 the counts took 4x longer).
template <class T>
void count_sorted(const Problems<T>& ps, int64_t b, Columns<T>& cols, const std::vector<std::vector<int64_t>>& marg,
                  const std::vector<int64_t>& which, int algorithm, const T* radii, const SharedSorts<T>& shared,
                  const Outputs<T>& out, int threads) {
  const int64_t n = ps.n, ng = static_cast<int64_t>(ps.groups.size());
  const T* eps = out.eps + b * out.rows;
  // The marginals split evenly over the threads (MI's two on two): each one's gather and scatter, serial
  // within a marginal, then run side by side instead of idling the other threads (N = 20,000 1+1: 11% of the
  // time was spent waiting in OpenMP). Otherwise each marginal's queries are split across the threads.
  const int64_t nm = static_cast<int64_t>(which.size());
  const bool over_marginals = threads > 1 && nm % threads == 0;
  std::vector<MarginalColumns<T>> columns(nm);  // of the marginals not shared by the batch
  std::vector<int64_t> keys;  // the sorts first, each once, side by side: no two threads make one sort
  for (int64_t w = 0; w < nm; ++w) {
    if (shared.counters[which[w]]) continue;
    columns[w] = marginal_columns(cols, marg[which[w]]);
    // a column the strips have sorted already needs no region: a region with nothing to do still costs a wake-up
    // and a join (with a sleeping team, OMP_WAIT_POLICY=PASSIVE, mipp's default, an N = 2,000 1+1 estimate's
    // 3-4 regions cost 0.2-0.4 ms more than with a spinning one)
    for (const int64_t k : columns[w].keys) {
      const int64_t key = columns[w].columns[k];
      if (!cols.has_order(key) && std::find(keys.begin(), keys.end(), key) == keys.end()) keys.push_back(key);
    }
  }
  parallel_for(static_cast<int64_t>(keys.size()), threads, [&](int64_t t) { cols.sorted(keys[t]); });
  parallel_for(nm, over_marginals ? threads : 1, [&](int64_t w) {
    const int64_t m = which[w];
    const int inner = over_marginals ? 1 : threads;
    const Counter<T> own = shared.counters[m] ? Counter<T>() : make_counter(cols, columns[w]);
    const Counter<T>& c = shared.counters[m] ? *shared.counters[m] : own;
    const std::vector<int64_t>& index = c.index();
    std::vector<T> radius(n);
    std::vector<int64_t> count(n);
    for (int64_t p = 0; p < n; ++p) {
      const int64_t i = index[p];
      if (!ps.is_query(i)) continue;
      T r = eps[i - ps.row0];
      if (algorithm == 2) {
        r = 0;
        for (const int64_t g : marg[m]) r = r < radii[(i - ps.row0) * ng + g] ? radii[(i - ps.row0) * ng + g] : r;
      }
      radius[p] = r;
    }
    parallel_for((n + kBlock - 1) / kBlock, inner, [&](int64_t blk) {
      for (int64_t p = blk * kBlock; p < std::min(n, (blk + 1) * kBlock); ++p)
        if (ps.is_query(index[p])) count[p] = count_at(c, p, radius[p], algorithm == 1);
    });
    for (int64_t p = 0; p < n; ++p)
      if (ps.is_query(index[p])) *out.at(b, m, index[p] - ps.row0) = count[p];
  });
}

// ---------------------------------------------------------------------------------------------------
// brute: eps (and KSG-2's radii) and the counts of the wider marginals from the rows; the one-column
// marginals afterwards by count_sorted (a galloping search per query instead of a scan of N).

// Passes: the k-NN, then (KSG-2) the groups' radii within eps, then the wider marginals' counts.
template <class T>
struct KsgConsumer {
  int k, algorithm;
  int64_t ng, row0;
  const std::vector<std::vector<int64_t>>* marg;
  const std::vector<int64_t>* wide;  // the marginals counted from the rows
  Outputs<T> out;
  T* radii;  // (B, rows, ng), KSG-2
  std::vector<T> best, eps, rad;  // per slot and query row: k best, eps, the groups' radii (KSG-2)
  std::vector<T> r;               // per slot, wide marginal and query row: the counting radius
  std::vector<int64_t> cnt;       // likewise: the count
  int pass_radii() const { return algorithm == 2 ? 1 : -1; }
  int pass_counts() const { return wide->empty() ? -1 : 1 + (algorithm == 2); }
  int passes() const { return 1 + (algorithm == 2) + !wide->empty(); }
  bool needs(int pass, int64_t g) const {
    if (pass != pass_counts()) return true;
    for (const int64_t m : *wide)
      if (std::find((*marg)[m].begin(), (*marg)[m].end(), g) != (*marg)[m].end()) return true;
    return false;
  }
  void reserve(int64_t slots) {
    const size_t nw = wide->size();
    best.assign(static_cast<size_t>(slots * kRows * k), std::numeric_limits<T>::infinity());
    eps.assign(static_cast<size_t>(slots * kRows), T(0));
    rad.assign(static_cast<size_t>(slots * kRows * ng), T(0));
    r.assign(slots * nw * kRows, T(0));
    cnt.assign(slots * nw * kRows, 0);
  }
  void chunk(int pass, int64_t s, int64_t, int64_t i0, int qn, int64_t j0, int64_t jn, const T* const* rows,
             int64_t ld) {
    if (pass == 0) {
      knn_rows(rows, ng, ld, qn, jn, i0 - j0, k, best.data() + s * kRows * k);
    } else if (pass == pass_radii()) {
      radius_rows(rows, ng, ld, qn, jn, eps.data() + s * kRows, rad.data() + s * kRows * ng);
    } else {
      const T* sub[kMaxGroups];
      for (size_t w = 0; w < wide->size(); ++w) {
        const auto& groups = (*marg)[(*wide)[w]];
        for (size_t t = 0; t < groups.size(); ++t) sub[t] = rows[groups[t]];
        const size_t at = (s * wide->size() + w) * kRows;
        count_rows(sub, static_cast<int64_t>(groups.size()), ld, qn, jn, i0 - j0, r.data() + at, algorithm == 1,
                   cnt.data() + at);
      }
    }
  }
  void end(int pass, int64_t s, int64_t b, int64_t i0, int qn) {
    if (pass == 0) {
      for (int q = 0; q < qn; ++q) {
        eps[s * kRows + q] = best[(s * kRows + q) * k + k - 1];
        out.eps[b * out.rows + i0 - row0 + q] = eps[s * kRows + q];
      }
    } else if (pass == pass_radii()) {
      std::copy(&rad[s * kRows * ng], &rad[(s * kRows + qn) * ng], radii + (b * out.rows + i0 - row0) * ng);
    } else {
      for (size_t w = 0; w < wide->size(); ++w)
        for (int q = 0; q < qn; ++q) *out.at(b, (*wide)[w], i0 - row0 + q) = cnt[(s * wide->size() + w) * kRows + q];
    }
    if (pass + 1 != pass_counts()) return;
    for (size_t w = 0; w < wide->size(); ++w)  // the counting radii of the next pass
      for (int q = 0; q < qn; ++q) {
        T v = eps[s * kRows + q];
        if (algorithm == 2) {
          v = 0;
          for (const int64_t g : (*marg)[(*wide)[w]]) v = v < rad[(s * kRows + q) * ng + g] ? rad[(s * kRows + q) * ng + g] : v;
        }
        r[(s * wide->size() + w) * kRows + q] = v;
      }
  }
};

template <class T>
void ksg_brute(const Problems<T>& ps, int k, const std::vector<std::vector<int64_t>>& marg,
               const std::vector<int64_t>& marginal_dims, int algorithm, const Outputs<T>& out, int threads) {
  const int64_t ng = static_cast<int64_t>(ps.groups.size());
  std::vector<int64_t> lines, wide;
  for (int64_t m = 0; m < static_cast<int64_t>(marg.size()); ++m) (marginal_dims[m] == 1 ? lines : wide).push_back(m);
  std::vector<T> radii(algorithm == 2 ? ps.batch * out.rows * ng : 0);
  brute_force(ps, threads, KsgConsumer<T>{k, algorithm, ng, ps.row0, &marg, &wide, out, radii.data(), {}, {}, {}, {}, {}});
  if (lines.empty()) return;
  const SharedSorts<T> shared = shared_sorts(ps, marg, lines, false, threads);
  const int t = threads_for(threads, static_cast<double>(ps.batch) * ps.rows(), kSortedGrain);
  const bool over_problems = ps.batch >= t;
  parallel_for(ps.batch, over_problems ? t : 1, [&](int64_t b) {
    Columns<T> cols(ps, b, &shared.orders);
    count_sorted(ps, b, cols, marg, lines, algorithm, radii.data() + b * out.rows * ng, shared, out,
                 over_problems ? 1 : t);
  });
}

// ---------------------------------------------------------------------------------------------------
// strips: the k-NN (and KSG-2's radii) in strips order, then every marginal by count_sorted; a problem's
// columns are sorted once for both (Columns).

template <class T>
void ksg_strips(const Problems<T>& ps, int k, const std::vector<std::vector<int64_t>>& marg, int algorithm,
                const Outputs<T>& out, int threads) {
  const int64_t n = ps.n, ng = static_cast<int64_t>(ps.groups.size());
  std::vector<int64_t> all(marg.size());
  for (size_t m = 0; m < marg.size(); ++m) all[m] = static_cast<int64_t>(m);
  threads = threads_for(threads, static_cast<double>(ps.batch) * ps.rows(), kSortedGrain);
  const bool over_problems = ps.batch >= threads;
  const T inf = std::numeric_limits<T>::infinity();
  const SharedSorts<T> shared = shared_sorts(ps, marg, all, true, threads);
  std::vector<int64_t> group_end;  // the groups' columns within a strips row
  for (int64_t g = 0, e = 0; g < ng; ++g) group_end.push_back(e += ps.groups[g].dim);
  const int64_t blocks = (n + kBlock - 1) / kBlock;
  parallel_for(ps.batch, over_problems ? threads : 1, [&](int64_t b) {
    const int inner = over_problems ? 1 : threads;
    Columns<T> cols(ps, b, &shared.orders);
    const std::vector<int64_t> keys = key_columns(cols.src, n, 2);
    parallel_for(2, inner, [&](int64_t t) { cols.sorted(keys[t]); });  // two columns: their sorts side by side
    const Strips<T> s = build_strips(cols.src, n, k, keys[0], keys[1], cols.sorted(keys[0]), cols.sorted(keys[1]));
    std::vector<T> eps(n), radii(algorithm == 2 ? n * ng : 0);  // in strips order
    parallel_for(blocks, inner, [&](int64_t blk) {
      std::vector<T> best(k);
      for (int64_t p = blk * kBlock; p < std::min(n, (blk + 1) * kBlock); ++p) {
        if (!ps.is_query(s.index[p])) continue;
        std::fill(best.begin(), best.end(), inf);
        strips_knn(s, p, k, best.data());
        const T e = eps[p] = best[k - 1];
        if (algorithm != 2) continue;
        T* rad = radii.data() + p * ng;  // the largest group distances within the joint eps (every tie included)
        std::fill(rad, rad + ng, T(0));
        const auto within = [&](int64_t j) {  // the group distances of a neighbour within eps into the radii
          for (int64_t g = 0; g < ng; ++g) {
            const T dg = strips_distance(s, p, j, g ? group_end[g - 1] : 0, group_end[g]);
            rad[g] = rad[g] < dg ? dg : rad[g];
          }
        };
        const auto open = [e](T gap) { return gap <= e; };
        if (s.dim == 2) {
          strips_scan(s, p, open, [&](int64_t j, T) {
            if (strips_distance(s, p, j, 0, s.dim) <= e && j != p) within(j);
          });
        } else {  // d <= e is d < the next double up
          const T above = std::nextafter(e, std::numeric_limits<T>::infinity());
          strips_blocks(
              s, p, open, [above] { return above; },
              [&](int64_t j0, int64_t len, const T* dist) {
                for (int64_t j = 0; j < len; ++j)
                  if (dist[j] <= e && j0 + j != p) within(j0 + j);
              });
        }
      }
    });
    std::vector<T> radii_by_sample(algorithm == 2 ? ps.rows() * ng : 0);
    for (int64_t p = 0; p < n; ++p) {
      const int64_t i = s.index[p];
      if (!ps.is_query(i)) continue;
      out.eps[b * out.rows + i - ps.row0] = eps[p];
      if (algorithm == 2) std::copy(&radii[p * ng], &radii[p * ng] + ng, &radii_by_sample[(i - ps.row0) * ng]);
    }
    count_sorted(ps, b, cols, marg, all, algorithm, radii_by_sample.data(), shared, out, inner);
  });
}

// The cheaper path by a cost model in ns per query, fitted by least squares on this engine (one thread, k = 3,
// float64, dependent Gaussian data; MI 1+1 .. 6+6, CMI 1+1+1 and 2+2+2, N = 300 - 10,000: benchmarks/
// bench_ksg_paths.py --fit, whose CSV records each path's time and the pick's regret). Refitted after the brute
// force's AVX-512 distance loop and the strips' blocked k-NN visits and run counts (an AVX-512 Xeon): on the
// fitting run the previous constants lost up to 1.32x, these up to 1.15x (geometric mean regret 1.022 -> 1.011);
// on a second run (times moved by up to 1.5x between the two on this noisy machine) both up to 1.66x (2+2 at
// N = 300: 0.46 ms strips, 0.27 ms brute, 0.40 ms in the first run), mean 1.031 -> 1.022. With D joint columns,
// G groups, W marginals of several columns (S columns in all) and L of one:
//   brute   n (0.202 D + 0.368 + 0.368 W + 1.767 (G - 2)) + 789 + 551 L: linear, the pair-columns, the k-NN
//           selection and the wide counts per pair, and per query the item's set-up and the one-column counts;
//   strips  exp(6.843 - 0.1955 D - 0.0626 ln n + 0.0398 D ln n + 0.0487 S + 0.0166 S ln n): log-linear, the
//           neighbourhood a query visits grows with n the faster the more columns it has.
Path choose(int64_t n, int64_t joint_dim, int64_t groups, const std::vector<int64_t>& marginal_dims) {
  if (joint_dim > kSweepMaxDim) return Path::Brute;
  const double nn = static_cast<double>(n), d = static_cast<double>(joint_dim), ln = std::log(nn + 1);
  double wide = 0, lines = 0, wide_columns = 0;
  for (const int64_t m : marginal_dims) {
    wide += m > 1;
    lines += m == 1;
    wide_columns += m > 1 ? static_cast<double>(m) : 0.0;
  }
  const double brute =
      nn * (0.202 * d + 0.368 + 0.368 * wide + 1.767 * static_cast<double>(groups - 2)) + 789 + 551 * lines;
  const double strips = std::exp(6.843 - 0.1955 * d - 0.0626 * ln + 0.0398 * d * ln + 0.0487 * wide_columns +
                                 0.0166 * wide_columns * ln);
  return strips < brute ? Path::Strips : Path::Brute;
}

template <class T>
Path run(const std::vector<GroupArg>& args, int64_t batch, int64_t n, int64_t k,
         const std::vector<int64_t>& masks, int algorithm, int64_t eps_ptr, int64_t counts_ptr, Path path,
         int threads, int64_t row0, int64_t row1) {
  const Problems<T> ps = make_problems<T>(args, batch, n, row0, row1);
  const int64_t ng = static_cast<int64_t>(ps.groups.size());
  const auto marg = marginal_groups(masks, ng);
  const Outputs<T> out{reinterpret_cast<T*>(eps_ptr), reinterpret_cast<int64_t*>(counts_ptr), row1 - row0,
                       static_cast<int64_t>(marg.size())};
  std::vector<int64_t> dims;  // columns per marginal
  for (const auto& m : marg) {
    int64_t d = 0;
    for (const int64_t g : m) d += ps.groups[g].dim;
    dims.push_back(d);
  }
  if (path == Path::Auto) {
    path = choose(n, ps.joint_dim(), ng, dims);
  } else if (path != Path::Brute) {
    path = Path::Strips;  // the sorted path of this op ("sweep" and "strips" alike)
  }
  if (path == Path::Strips && ps.joint_dim() < 2) path = Path::Brute;  // strips need two key columns
  if (path == Path::Strips) {
    ksg_strips(ps, static_cast<int>(k), marg, algorithm, out, threads);
  } else {
    ksg_brute(ps, static_cast<int>(k), marg, dims, algorithm, out, threads);
  }
  return path;
}

}  // namespace

std::string ksg_counts_cpu(const std::vector<GroupArg>& groups, int64_t batch, int64_t n, bool f64, int64_t k,
                           const std::vector<int64_t>& marginals, int64_t algorithm, int64_t eps, int64_t counts,
                           const std::string& path, int threads, int64_t row0, int64_t row1) {
  const Path p = parse_path(path);
  threads = resolve_threads(threads);
  const int alg = static_cast<int>(algorithm);
  return path_name(f64 ? run<double>(groups, batch, n, k, marginals, alg, eps, counts, p, threads, row0, row1)
                       : run<float>(groups, batch, n, k, marginals, alg, eps, counts, p, threads, row0, row1));
}

}  // namespace mipp
