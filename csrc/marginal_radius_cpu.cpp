// marginal_radius on the CPU: for each group g, the largest g-distance from sample i to the samples
// j != i whose joint distance is <= radius[b, i] (0 when there are none), exactly as
// python/mipp/reference.py. The sample itself needs no special case here: its group distances are 0,
// and a maximum that starts at 0 does not change by including it.
//
// Paths: a sorted sweep for low joint dimension (the window of the key column holds every candidate),
// brute-force tiles (one per group) otherwise.
#include "kernels.h"
#include "pairwise.h"

namespace mipp {
namespace {

constexpr int kLanes = 8;  // independent maxima, so that the reduction vectorises without reassociation

// m[q][g] = max(m[q][g], max_j (joint(q, j) <= r[q] ? tiles[g][q][j] : 0)), joint = max over groups.
template <class T>
MIPP_INLINE void radius_tile_impl(const T* const* tiles, int64_t ng, int qn, int64_t jn, const T* r, T* m) {
  T joint[kJB];
  for (int q = 0; q < qn; ++q) {
    for (int64_t j = 0; j < jn; ++j) joint[j] = tiles[0][q * kJB + j];
    for (int64_t g = 1; g < ng; ++g) {
      const T* t = tiles[g] + q * kJB;
      for (int64_t j = 0; j < jn; ++j) joint[j] = joint[j] < t[j] ? t[j] : joint[j];
    }
    const T rq = r[q];
    for (int64_t g = 0; g < ng; ++g) {
      const T* t = tiles[g] + q * kJB;
      T acc[kLanes] = {};
      int64_t j = 0;
      for (; j + kLanes <= jn; j += kLanes) {
        for (int l = 0; l < kLanes; ++l) {
          const T v = joint[j + l] <= rq ? t[j + l] : T(0);
          acc[l] = acc[l] < v ? v : acc[l];
        }
      }
      for (; j < jn; ++j) {
        const T v = joint[j] <= rq ? t[j] : T(0);
        acc[0] = acc[0] < v ? v : acc[0];
      }
      T& out = m[q * ng + g];
      for (int l = 0; l < kLanes; ++l) out = out < acc[l] ? acc[l] : out;
    }
  }
}

MIPP_CLONES void radius_tile(const double* const* tiles, int64_t ng, int qn, int64_t jn, const double* r, double* m) {
  radius_tile_impl(tiles, ng, qn, jn, r, m);
}
MIPP_CLONES void radius_tile(const float* const* tiles, int64_t ng, int qn, int64_t jn, const float* r, float* m) {
  radius_tile_impl(tiles, ng, qn, jn, r, m);
}

template <class T>
struct RadiusConsumer {
  Radius<T> radius;
  int64_t ng;
  int64_t n;
  T* out;
  std::vector<T> m;  // slots x kQB x ng
  void reserve(int64_t slots) { m.assign(static_cast<size_t>(slots * kQB * ng), T(0)); }
  int64_t row0;
  void tile(int64_t s, int64_t b, int64_t i0, int qn, int64_t, int64_t jn, const T* const* tiles) {
    radius_tile(tiles, ng, qn, jn, radius.row(b) + i0 - row0, m.data() + s * kQB * ng);
  }
  void end(int64_t s, int64_t b, int64_t i0, int qn) {
    std::copy(m.begin() + s * kQB * ng, m.begin() + (s * kQB + qn) * ng, out + (b * radius.rows + i0 - row0) * ng);
  }
};

template <class T>
void radius_sweep(const Problems<T>& ps, Radius<T> radius, T* out, int threads) {
  const int64_t ng = static_cast<int64_t>(ps.groups.size());
  sweep(ps, threads, [&](int64_t b, const Sorted<T>& s, int64_t p0, int64_t p1) {
    const int64_t n = s.n;
    const T* r_b = radius.row(b);
    std::vector<T> dist(ng * kJB);
    std::vector<const T*> tiles(ng);
    for (int64_t g = 0; g < ng; ++g) tiles[g] = dist.data() + g * kJB;
    for (int64_t p = p0; p < p1; ++p) {
      const int64_t i = s.index[p];
      if (!ps.is_query(i)) continue;
      const T r = r_b[i - ps.row0];
      T* m = out + (b * ps.rows() + i - ps.row0) * ng;
      std::fill(m, m + ng, T(0));
      int64_t lo, hi;
      key_window(s, p, [r](T d) { return d <= r; }, lo, hi);
      for (int64_t j0 = lo; j0 < hi; j0 += kJB) {
        const int64_t len = std::min(kJB, hi - j0);
        for (int64_t g = 0, c0 = 0; g < ng; c0 = s.group_end[g++])
          tile_max(s.cols.data() + c0 * n, n, s.group_end[g] - c0, p, 1, j0, len, nullptr, dist.data() + g * kJB);
        radius_tile(tiles.data(), ng, 1, len, &r, m);
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
    const int64_t ng = static_cast<int64_t>(ps.groups.size());
    brute_force(ps, true, threads, RadiusConsumer<T>{radius, ng, n, out, {}, row0});
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
