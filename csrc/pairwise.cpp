// The brute-force tile of pairwise.h and the path names.
#include "pairwise.h"

#include <stdexcept>

namespace mipp {

namespace {

// Column by column, query row by query row, so that the innermost loop runs over kJB contiguous
// candidates of one column: it vectorises (sub, and-not for fabs, max) and the tile stays in L1.
template <class T>
MIPP_INLINE void tile_max_impl(const T* g, int64_t n, int64_t dim, int64_t i0, int qn, int64_t j0, int64_t jn,
                               const T* src, T* dst) {
  if (dim == 0) {  // no columns: distance 0, so the tile is src (or 0)
    for (int q = 0; q < qn; ++q)
      for (int64_t j = 0; j < jn; ++j) dst[q * kJB + j] = src ? src[q * kJB + j] : T(0);
    return;
  }
  for (int64_t c = 0; c < dim; ++c) {
    const T* col = g + c * n;
    const T* x = col + j0;
    for (int q = 0; q < qn; ++q) {
      const T xq = col[i0 + q];
      T* o = dst + q * kJB;
      const T* in = c > 0 ? o : (src ? src + q * kJB : nullptr);
      if (in) {
        for (int64_t j = 0; j < jn; ++j) {
          const T d = std::fabs(x[j] - xq);
          o[j] = in[j] < d ? d : in[j];
        }
      } else {
        for (int64_t j = 0; j < jn; ++j) o[j] = std::fabs(x[j] - xq);
      }
    }
  }
}

}  // namespace

MIPP_CLONES void tile_max(const double* g, int64_t n, int64_t dim, int64_t i0, int qn, int64_t j0, int64_t jn,
                          const double* src, double* dst) {
  tile_max_impl(g, n, dim, i0, qn, j0, jn, src, dst);
}

MIPP_CLONES void tile_max(const float* g, int64_t n, int64_t dim, int64_t i0, int qn, int64_t j0, int64_t jn,
                          const float* src, float* dst) {
  tile_max_impl(g, n, dim, i0, qn, j0, jn, src, dst);
}

Path parse_path(const std::string& name) {
  if (name == "auto") return Path::Auto;
  if (name == "brute") return Path::Brute;
  if (name == "sweep") return Path::Sweep;
  if (name == "strips") return Path::Strips;
  throw std::invalid_argument("path must be 'auto', 'brute', 'sweep' or 'strips', got '" + name + "'");
}

Path choose_path(Path requested, int64_t joint_dim, int64_t sweep_max_dim, bool has_strips) {
  if (requested != Path::Brute && requested != Path::Auto && joint_dim < 1)
    throw std::invalid_argument("the sweep and the strips need at least one column");
  const Path strips = has_strips && joint_dim >= 2 ? Path::Strips : Path::Sweep;
  if (requested == Path::Strips) return strips;
  if (requested != Path::Auto) return requested;
  return joint_dim >= 1 && joint_dim <= sweep_max_dim ? strips : Path::Brute;
}

const char* path_name(Path p) {
  switch (p) {
    case Path::Brute: return "brute";
    case Path::Sweep: return "sweep";
    case Path::Strips: return "strips";
    default: return "auto";
  }
}

}  // namespace mipp
