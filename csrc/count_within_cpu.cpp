// count_within on the CPU: #{j != i : d(i, j) < radius[b, i]} (strict) or <= (not strict), exactly as
// python/mipp/reference.py, including its treatment of the sample itself: the reference sets d(i, i) to
// +inf and compares it like any other, so the count includes i only when inf passes (radius = +inf, not
// strict). Both paths count the j != i and then add that term.
//
// Paths: a sorted sweep for low joint dimension (galloping searches find the window of the key column; in
// one dimension its size is the count), the register-blocked brute force otherwise.
#include <limits>

#include "kernels.h"
#include "pairwise.h"

namespace mipp {
namespace {

template <class T>
struct CountConsumer {
  Radius<T> radius;
  bool strict;
  int64_t* out;
  int64_t row0, ng;
  std::vector<int64_t> cnt;  // slots x kRows
  void reserve(int64_t slots) { cnt.assign(static_cast<size_t>(slots * kRows), 0); }
  int passes() const { return 1; }
  bool needs(int, int64_t) const { return true; }
  void chunk(int, int64_t s, int64_t b, int64_t i0, int qn, int64_t j0, int64_t jn, const T* const* r, int64_t ld) {
    count_rows(r, ng, ld, qn, jn, i0 - j0, radius.row(b) + i0 - row0, strict, cnt.data() + s * kRows);
  }
  void end(int, int64_t s, int64_t b, int64_t i0, int qn) {
    const T* r = radius.row(b) + i0 - row0;
    for (int q = 0; q < qn; ++q)
      out[b * radius.rows + i0 - row0 + q] =
          cnt[s * kRows + q] + inside(std::numeric_limits<T>::infinity(), r[q], strict);
  }
};

template <class T>
void count_sweep(const Problems<T>& ps, Radius<T> radius, bool strict, int64_t* out, int threads) {
  sweep(ps, threads, [&](int64_t b, const Sorted<T>& s, int64_t p0, int64_t p1) {
    const int64_t n = s.n;
    const T* r_b = radius.row(b);
    std::vector<T> dist(kSpan);
    const T* row = dist.data();
    for (int64_t p = p0; p < p1; ++p) {
      const int64_t i = s.index[p];
      if (!ps.is_query(i)) continue;
      const T r = r_b[i - ps.row0];
      int64_t lo, hi;
      key_window(s.key, n, p, [r, strict](T d) { return inside(d, r, strict); }, lo, hi);
      int64_t c = 0;
      if (s.dim == 1) {  // the key is the only column: the window is exactly the set
        c = hi - lo - 1;
      } else {  // the window holds every candidate; check the other columns
        for (int64_t j0 = lo; j0 < hi; j0 += kSpan) {
          const int64_t len = std::min(kSpan, hi - j0);
          row_distance(s.cols.data(), n, s.dim, p, j0, len, dist.data());
          count_rows(&row, 1, 0, 1, len, p - j0, &r, strict, &c);
        }
      }
      out[b * ps.rows() + i - ps.row0] = c + inside(std::numeric_limits<T>::infinity(), r, strict);
    }
  });
}

template <class T>
Path run(const std::vector<GroupArg>& args, int64_t batch, int64_t n, int64_t radius_ptr, int64_t radius_batch,
         bool strict, int64_t out_ptr, Path path, int threads, int64_t row0, int64_t row1) {
  const Problems<T> ps = make_problems<T>(args, batch, n, row0, row1);
  const Radius<T> radius{reinterpret_cast<const T*>(radius_ptr), radius_batch, row1 - row0};
  int64_t* out = reinterpret_cast<int64_t*>(out_ptr);
  path = choose_path(path, ps.joint_dim(), kSweepMaxDim, false);
  if (path == Path::Sweep) {
    count_sweep(ps, radius, strict, out, threads);
  } else {
    brute_force(ps, threads, CountConsumer<T>{radius, strict, out, row0, static_cast<int64_t>(ps.groups.size()), {}});
  }
  return path;
}

}  // namespace

std::string count_within_cpu(const std::vector<GroupArg>& groups, int64_t batch, int64_t n, bool f64,
                             int64_t radius, int64_t radius_batch, bool strict, int64_t out, const std::string& path,
                             int threads, int64_t row0, int64_t row1) {
  const Path p = parse_path(path);
  threads = resolve_threads(threads);
  return path_name(f64 ? run<double>(groups, batch, n, radius, radius_batch, strict, out, p, threads, row0, row1)
                       : run<float>(groups, batch, n, radius, radius_batch, strict, out, p, threads, row0, row1));
}

}  // namespace mipp
