// marginal_radius on the CPU: for each group g, the largest g-distance from sample i to the samples
// j != i whose joint distance is <= radius[b, i] (0 when there are none), exactly as
// python/mipp/reference.py. The sample itself needs no special case here: its group distances are 0,
// and a maximum that starts at 0 does not change by including it.
//
// Paths: a sorted sweep for low joint dimension (the window of the key column holds every candidate),
// the register-blocked brute force otherwise.
#include "kernels.h"
#include "pairwise.h"

namespace mipp {
namespace {

template <class T>
struct RadiusConsumer {
  Radius<T> radius;
  int64_t ng;
  T* out;
  int64_t row0;
  std::vector<T> m;  // slots x kRows x ng
  void reserve(int64_t slots) { m.assign(static_cast<size_t>(slots * kRows * ng), T(0)); }
  int passes() const { return 1; }
  bool needs(int, int64_t) const { return true; }
  void chunk(int, int64_t s, int64_t b, int64_t i0, int qn, int64_t, int64_t jn, const T* const* r, int64_t ld) {
    radius_rows(r, ng, ld, qn, jn, radius.row(b) + i0 - row0, m.data() + s * kRows * ng);
  }
  void end(int, int64_t s, int64_t b, int64_t i0, int qn) {
    std::copy(m.begin() + s * kRows * ng, m.begin() + (s * kRows + qn) * ng,
              out + (b * radius.rows + i0 - row0) * ng);
  }
};

template <class T>
void radius_sweep(const Problems<T>& ps, Radius<T> radius, T* out, int threads) {
  const int64_t ng = static_cast<int64_t>(ps.groups.size());
  sweep(ps, threads, [&](int64_t b, const Sorted<T>& s, int64_t p0, int64_t p1) {
    const int64_t n = s.n;
    const T* r_b = radius.row(b);
    std::vector<T> dist(ng * kSpan);
    std::vector<const T*> rows(ng);
    for (int64_t g = 0; g < ng; ++g) rows[g] = dist.data() + g * kSpan;
    for (int64_t p = p0; p < p1; ++p) {
      const int64_t i = s.index[p];
      if (!ps.is_query(i)) continue;
      const T r = r_b[i - ps.row0];
      T* m = out + (b * ps.rows() + i - ps.row0) * ng;
      std::fill(m, m + ng, T(0));
      int64_t lo, hi;
      key_window(s.key, n, p, [r](T d) { return d <= r; }, lo, hi);
      for (int64_t j0 = lo; j0 < hi; j0 += kSpan) {
        const int64_t len = std::min(kSpan, hi - j0);
        for (int64_t g = 0, c0 = 0; g < ng; c0 = s.group_end[g++])
          row_distance(s.cols.data() + c0 * n, n, s.group_end[g] - c0, p, j0, len, dist.data() + g * kSpan);
        radius_rows(rows.data(), ng, 0, 1, len, &r, m);
      }
    }
  });
}

template <class T>
Path run(const std::vector<GroupArg>& args, int64_t batch, int64_t n, int64_t radius_ptr, int64_t radius_batch,
         int64_t out_ptr, Path path, int threads, int64_t row0, int64_t row1) {
  const Problems<T> ps = make_problems<T>(args, batch, n, row0, row1);
  const Radius<T> radius{reinterpret_cast<const T*>(radius_ptr), radius_batch, row1 - row0};
  T* out = reinterpret_cast<T*>(out_ptr);
  path = choose_path(path, ps.joint_dim(), kSweepMaxDim, false);
  if (path == Path::Sweep) {
    radius_sweep(ps, radius, out, threads);
  } else {
    brute_force(ps, threads, RadiusConsumer<T>{radius, static_cast<int64_t>(ps.groups.size()), out, row0, {}});
  }
  return path;
}

}  // namespace

std::string marginal_radius_cpu(const std::vector<GroupArg>& groups, int64_t batch, int64_t n, bool f64,
                                int64_t radius, int64_t radius_batch, int64_t out, const std::string& path,
                                int threads, int64_t row0, int64_t row1) {
  const Path p = parse_path(path);
  threads = resolve_threads(threads);
  return path_name(f64 ? run<double>(groups, batch, n, radius, radius_batch, out, p, threads, row0, row1)
                       : run<float>(groups, batch, n, radius, radius_batch, out, p, threads, row0, row1));
}

}  // namespace mipp
