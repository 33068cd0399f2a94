// The hot loops of pairwise.h (compiled for AVX2 and the baseline ISA, see common.h), the radix sort and the
// path names.
#include "pairwise.h"

#include <cstdlib>
#include <stdexcept>

#if MIPP_AVX512
#include <immintrin.h>
#endif

namespace mipp {

namespace {

// B-byte vectors of T, the same-width integer lanes a comparison gives, and the bits of |x|. Vec: 32 bytes (one AVX2
// register; two SSE registers in the baseline clone), the clones' width; the AVX-512 versions of the k-NN test and
// the counts over the rows take 64.
template <class T, int B>
struct Wide {
  using E = std::conditional_t<sizeof(T) == 8, int64_t, int32_t>;
  typedef T V __attribute__((vector_size(B)));
  typedef T U __attribute__((vector_size(B), aligned(sizeof(T)), may_alias));  // an unaligned load / store
  typedef E I __attribute__((vector_size(B)));
  static constexpr E kAbs = std::numeric_limits<E>::max();  // every bit but the sign
};
template <class T>
using Vec = Wide<T, 32>;

// Register blocking: 4 query rows x kLane candidates of accumulators (8 AVX2 registers for double) across
// all columns, then one store per pair. fabs is an and-not of the sign bit, max a vmaxpd (`acc < d ? d :
// acc` is exactly its semantics, no NaN reaches here): the values are those of the reference.
template <class T>
MIPP_INLINE void group_rows_impl(const T* packed, int64_t dim, const T* qv, int64_t j0, int64_t j1, T* out,
                                 int64_t ld) {
  using V = typename Vec<T>::V;
  using U = typename Vec<T>::U;
  using I = typename Vec<T>::I;
  constexpr int kWidth = 32 / sizeof(T);
  constexpr int kVecs = kLane / kWidth;
  constexpr int kBlockRows = 4;
  static_assert(kRows % kBlockRows == 0 && kLane % kWidth == 0, "register block shape");
  for (int64_t jb = j0 / kLane; jb < j1 / kLane; ++jb) {
    const T* blk = packed + jb * dim * kLane;
    for (int q0 = 0; q0 < kRows; q0 += kBlockRows) {
      V acc[kBlockRows][kVecs] = {};
      for (int64_t c = 0; c < dim; ++c) {
        const U* x = reinterpret_cast<const U*>(blk + c * kLane);
#pragma GCC unroll 4
        for (int q = 0; q < kBlockRows; ++q) {
          const T xq = qv[c * kRows + q0 + q];
#pragma GCC unroll 2
          for (int v = 0; v < kVecs; ++v) {
            V d = x[v] - xq;
            d = (V)((I)d & Vec<T>::kAbs);
            acc[q][v] = acc[q][v] < d ? d : acc[q][v];
          }
        }
      }
#pragma GCC unroll 4
      for (int q = 0; q < kBlockRows; ++q)
#pragma GCC unroll 2
        for (int v = 0; v < kVecs; ++v)
          *reinterpret_cast<U*>(out + (q0 + q) * ld + jb * kLane - j0 + v * kWidth) = acc[q][v];
    }
  }
}

// The joint distance of candidates [j, j + width) of query row q: the max over the ng groups, as a vector.
template <class T, int B = 32>
MIPP_INLINE typename Wide<T, B>::V joint_vec(const T* const* rows, int64_t ng, int64_t ld, int q, int64_t j) {
  using V = typename Wide<T, B>::V;
  using U = typename Wide<T, B>::U;
  V m = *reinterpret_cast<const U*>(rows[0] + q * ld + j);
  for (int64_t g = 1; g < ng; ++g) {
    const V v = *reinterpret_cast<const U*>(rows[g] + q * ld + j);
    m = m < v ? v : m;
  }
  return m;
}

template <class T>
MIPP_INLINE T joint_at(const T* const* rows, int64_t ng, int64_t ld, int q, int64_t j) {
  T m = rows[0][q * ld + j];
  for (int64_t g = 1; g < ng; ++g) m = m < rows[g][q * ld + j] ? rows[g][q * ld + j] : m;
  return m;
}

template <class T, int B = 32>
MIPP_INLINE void knn_rows_impl(const T* const* rows, int64_t ng, int64_t ld, int qn, int64_t jn, int64_t self0, int k,
                               T* best) {
  using I = typename Wide<T, B>::I;
  constexpr int kWidth = B / sizeof(T);
  constexpr int64_t kScan = 32;  // candidates tested at once (vectorised) before any scalar work
  for (int q = 0; q < qn; ++q) {
    T* bq = best + q * k;
    const int64_t self = self0 + q;
    T worst = bq[k - 1];
    for (int64_t c0 = 0; c0 < jn; c0 += kScan) {
      const int64_t c1 = std::min(jn, c0 + kScan);
      if (c1 - c0 == kScan) {
        I hit = {};
#pragma GCC unroll 8
        for (int64_t j = c0; j < c1; j += kWidth) hit |= (I)(joint_vec<T, B>(rows, ng, ld, q, j) < worst);
        bool any = false;
        for (int l = 0; l < kWidth; ++l) any |= hit[l] != 0;
        if (!any) continue;
      }
      for (int64_t j = c0; j < c1; ++j) {
        const T d = joint_at(rows, ng, ld, q, j);
        if (d < worst && j != self) {
          insert_best(bq, k, d);
          worst = bq[k - 1];
        }
      }
    }
  }
}

template <class T, int B = 32>
MIPP_INLINE void count_rows_impl(const T* const* rows, int64_t ng, int64_t ld, int qn, int64_t jn, int64_t self0,
                                 const T* r, bool strict, int64_t* cnt) {
  using I = typename Wide<T, B>::I;
  constexpr int kWidth = B / sizeof(T);
  for (int q = 0; q < qn; ++q) {
    const T rq = r[q];
    I acc = {};  // minus the count per lane (a true comparison is -1)
    int64_t j = 0;
    if (strict) {
      for (; j + kWidth <= jn; j += kWidth) acc += (I)(joint_vec<T, B>(rows, ng, ld, q, j) < rq);
    } else {
      for (; j + kWidth <= jn; j += kWidth) acc += (I)(joint_vec<T, B>(rows, ng, ld, q, j) <= rq);
    }
    int64_t c = 0;
    for (int l = 0; l < kWidth; ++l) c -= acc[l];
    for (; j < jn; ++j) c += inside(joint_at(rows, ng, ld, q, j), rq, strict);
    const int64_t self = self0 + q;
    if (self >= 0 && self < jn) c -= inside(joint_at(rows, ng, ld, q, self), rq, strict);
    cnt[q] += c;
  }
}

template <class T>
MIPP_INLINE void radius_rows_impl(const T* const* rows, int64_t ng, int64_t ld, int qn, int64_t jn, const T* r, T* m) {
  using V = typename Vec<T>::V;
  using U = typename Vec<T>::U;
  constexpr int kWidth = 32 / sizeof(T);
  for (int q = 0; q < qn; ++q) {
    const T rq = r[q];
    for (int64_t g = 0; g < ng; ++g) {
      const T* t = rows[g] + q * ld;
      V acc = {};  // lane-wise maxima: max is exact, any grouping gives the same value
      int64_t j = 0;
      for (; j + kWidth <= jn; j += kWidth) {
        const V v = *reinterpret_cast<const U*>(t + j);
        const V w = joint_vec(rows, ng, ld, q, j) <= rq ? v : V{};
        acc = acc < w ? w : acc;
      }
      T& out = m[q * ng + g];
      for (int l = 0; l < kWidth; ++l) out = out < acc[l] ? acc[l] : out;
      for (; j < jn; ++j) {
        const T w = joint_at(rows, ng, ld, q, j) <= rq ? t[j] : T(0);
        out = out < w ? w : out;
      }
    }
  }
}

template <class T>
MIPP_INLINE void row_distance_impl(const T* cols, int64_t n, int64_t dim, int64_t p, int64_t j0, int64_t jn, T* dst) {
  for (int64_t j = 0; j < jn; ++j) dst[j] = T(0);
  for (int64_t c = 0; c < dim; ++c) {
    const T* x = cols + c * n + j0;
    const T xq = cols[c * n + p];
    for (int64_t j = 0; j < jn; ++j) {
      const T d = std::fabs(x[j] - xq);
      dst[j] = dst[j] < d ? d : dst[j];
    }
  }
}

// kVisitBlock consecutive candidates from j0 against the sample at p (column-major, column stride ld): their
// max-norm distances in registers (acc), and each lane's position in the block (lane).
template <class T>
struct Block16 {
  using V = typename Vec<T>::V;
  using U = typename Vec<T>::U;
  using I = typename Vec<T>::I;
  using E = typename Vec<T>::E;
  static constexpr int kWidth = 32 / sizeof(T);
  static constexpr int kVecs = kVisitBlock / kWidth;
  V acc[kVecs] = {};
  I lane[kVecs];
  MIPP_INLINE Block16(const T* cols, int64_t ld, int64_t dim, int64_t p, int64_t j0) {
    for (int64_t c = 0; c < dim; ++c) {
      const U* x = reinterpret_cast<const U*>(cols + c * ld + j0);
      const T xq = cols[c * ld + p];
#pragma GCC unroll 4
      for (int v = 0; v < kVecs; ++v) {
        V d = x[v] - xq;
        d = (V)((I)d & Vec<T>::kAbs);
        acc[v] = acc[v] < d ? d : acc[v];
      }
    }
    for (int v = 0; v < kVecs; ++v)
      for (int l = 0; l < kWidth; ++l) lane[v][l] = static_cast<E>(v * kWidth + l);
  }
  // the lanes below len other than `self` (a position in the block), as comparison masks
  MIPP_INLINE I counted(int v, int64_t len, int64_t self) const {
    return (I)(lane[v] < static_cast<E>(len)) & (I)(lane[v] != static_cast<E>(self));
  }
};

template <class T>
MIPP_INLINE bool block_distance_impl(const T* cols, int64_t ld, int64_t dim, int64_t p, int64_t j0, int64_t len, T bound,
                                     T* dst) {
  using B = Block16<T>;
  const B blk(cols, ld, dim, p, j0);
  typename B::I below = {};
#pragma GCC unroll 4
  for (int v = 0; v < B::kVecs; ++v) {
    *reinterpret_cast<typename B::U*>(dst + v * B::kWidth) = blk.acc[v];
    below |= (typename B::I)(blk.acc[v] < bound) & blk.counted(v, len, p - j0);
  }
  bool any = false;
  for (int l = 0; l < B::kWidth; ++l) any |= below[l] != 0;
  return any;
}

template <class T, bool Strict>
MIPP_INLINE int64_t run_count_impl(const T* cols, int64_t ld, int64_t dim, int64_t p, int64_t j0, int64_t len, T r) {
  using B = Block16<T>;
  typename B::I total = {};  // minus the count per lane (a true comparison is -1)
  for (int64_t b = 0; b < len; b += kVisitBlock) {
    const B blk(cols, ld, dim, p, j0 + b);
#pragma GCC unroll 4
    for (int v = 0; v < B::kVecs; ++v) {
      const typename B::I in = Strict ? (typename B::I)(blk.acc[v] < r) : (typename B::I)(blk.acc[v] <= r);
      total += in & blk.counted(v, len - b, p - j0 - b);
    }
  }
  int64_t count = 0;
  for (int l = 0; l < B::kWidth; ++l) count -= total[l];
  return count;
}

// Order-preserving unsigned images of the keys (-0 mapped to +0 first: they compare equal).
MIPP_INLINE uint64_t radix_key(double v) {
  v = v + 0.0;
  uint64_t u;
  std::memcpy(&u, &v, sizeof u);
  return (u >> 63) ? ~u : u | (uint64_t(1) << 63);
}
MIPP_INLINE uint64_t radix_key(float v) {
  v = v + 0.0f;
  uint32_t u;
  std::memcpy(&u, &v, sizeof u);
  return (u >> 31) ? ~u : u | (uint32_t(1) << 31);
}

// Bucket sort, for keys spread smoothly over their range: n equal-width value buckets over [min, max] (the
// bucket of a value a monotone function of it: a rounded subtraction and product, truncated), each bucket's
// (radix key, index) pairs then sorted in place, a few per bucket. One scatter pass where the radix sort makes
// six; at N = 2,000 Gaussian keys 21 against 62 us, at 20,000 0.51 against 0.75 ms. False (order untouched)
// where the buckets are too uneven for that to pay (ties, heavy tails: the sum of squared bucket sizes, the
// within-bucket work, above 8 per key) or the range is not finite.
template <class T>
bool bucket_order(const T* key, int64_t n, std::vector<int64_t>& order) {
  T lo = key[0], hi = key[0];
  for (int64_t i = 1; i < n; ++i) {
    lo = key[i] < lo ? key[i] : lo;
    hi = key[i] > hi ? key[i] : hi;
  }
  const double low = static_cast<double>(lo), scale = static_cast<double>(n) / (static_cast<double>(hi) - low);
  if (!(scale > 0) || !std::isfinite(scale)) return false;
  std::vector<uint32_t> bucket(n);
  std::vector<int64_t> start(n + 2, 0);
  for (int64_t i = 0; i < n; ++i) {
    const double f = (static_cast<double>(key[i]) - low) * scale;  // in [0, n]
    const int64_t b = f < static_cast<double>(n) ? static_cast<int64_t>(f) : n;
    bucket[i] = static_cast<uint32_t>(b);
    ++start[b + 1];
  }
  int64_t squares = 0;
  for (int64_t b = 1; b <= n + 1; ++b) squares += start[b] * start[b];
  if (squares > 8 * n) return false;
  for (int64_t b = 0; b <= n; ++b) start[b + 1] += start[b];
  std::vector<std::pair<uint64_t, int64_t>> items(n);
  std::vector<int64_t> next(start.begin(), start.end() - 1);
  for (int64_t i = 0; i < n; ++i) items[next[bucket[i]]++] = {radix_key(key[i]), i};
  for (int64_t b = 0; b <= n; ++b) {  // insertion sort: the buckets hold ~1 key each
    for (int64_t i = start[b] + 1; i < start[b + 1]; ++i) {
      const std::pair<uint64_t, int64_t> v = items[i];
      int64_t j = i;
      for (; j > start[b] && v < items[j - 1]; --j) items[j] = items[j - 1];
      items[j] = v;
    }
  }
  for (int64_t i = 0; i < n; ++i) order[i] = items[i].second;
  return true;
}

template <class T>
std::vector<int64_t> sorted_order_impl(const T* key, int64_t n) {
  std::vector<int64_t> order(n);
  if (n < 256) {  // small: a comparison sort of (value, index) pairs
    std::vector<std::pair<T, int64_t>> pairs(n);
    for (int64_t i = 0; i < n; ++i) pairs[i] = {key[i] + T(0), i};
    std::sort(pairs.begin(), pairs.end());
    for (int64_t i = 0; i < n; ++i) order[i] = pairs[i].second;
    return order;
  }
  if (bucket_order(key, n, order)) return order;
  constexpr int kBits = 11, kBuckets = 1 << kBits;
  constexpr int kPasses = (8 * sizeof(T) + kBits - 1) / kBits;
  std::vector<uint64_t> keys(n), keys2(n);
  std::vector<int64_t> order2(n);
  std::vector<int64_t> hist(static_cast<size_t>(kPasses) * kBuckets, 0);
  for (int64_t i = 0; i < n; ++i) {
    const uint64_t u = radix_key(key[i]);
    keys[i] = u;
    order[i] = i;
    for (int p = 0; p < kPasses; ++p) ++hist[p * kBuckets + ((u >> (p * kBits)) & (kBuckets - 1))];
  }
  for (int p = 0; p < kPasses; ++p) {
    int64_t* h = hist.data() + p * kBuckets;
    if (h[(keys[0] >> (p * kBits)) & (kBuckets - 1)] == n) continue;  // one digit for all: nothing to do
    int64_t sum = 0;
    for (int d = 0; d < kBuckets; ++d) {
      const int64_t c = h[d];
      h[d] = sum;
      sum += c;
    }
    for (int64_t i = 0; i < n; ++i) {
      const int64_t dst = h[(keys[i] >> (p * kBits)) & (kBuckets - 1)]++;
      keys2[dst] = keys[i];
      order2[dst] = order[i];
    }
    keys.swap(keys2);
    order.swap(order2);
  }
  return order;
}

// window_passes (pairwise.h): the kWindow gaps in 32-byte vectors, each compare's -1 lanes summed.
template <class T>
MIPP_INLINE int64_t window_passes_impl(const T* key, int64_t w, T x, T r, bool strict) {
  using V = typename Vec<T>::V;
  using U = typename Vec<T>::U;
  using I = typename Vec<T>::I;
  constexpr int lanes = static_cast<int>(sizeof(V) / sizeof(T));
  const V xv = V{} + x, rv = V{} + r;
  I acc = I{};
  for (int64_t t = 0; t < kWindow; t += lanes) {
    const V d = (V)((I)(*reinterpret_cast<const U*>(key + w + t) - xv) & Vec<T>::kAbs);
    acc += strict ? (I)(d < rv) : (I)(d <= rv);
  }
  int64_t c = 0;
  for (int l = 0; l < lanes; ++l) c -= acc[l];
  return c;
}

}  // namespace

MIPP_CLONES int64_t window_passes(const double* key, int64_t w, double x, double r, bool strict) {
  return window_passes_impl(key, w, x, r, strict);
}
MIPP_CLONES int64_t window_passes(const float* key, int64_t w, float x, float r, bool strict) {
  return window_passes_impl(key, w, x, r, strict);
}

namespace {

MIPP_CLONES void group_rows_vec(const double* packed, int64_t dim, const double* qv, int64_t j0, int64_t j1,
                                double* out, int64_t ld) {
  group_rows_impl(packed, dim, qv, j0, j1, out, ld);
}
MIPP_CLONES void knn_rows_vec(const double* const* rows, int64_t ng, int64_t ld, int qn, int64_t jn, int64_t self0,
                              int k, double* best) {
  knn_rows_impl(rows, ng, ld, qn, jn, self0, k, best);
}
MIPP_CLONES void count_rows_vec(const double* const* rows, int64_t ng, int64_t ld, int qn, int64_t jn, int64_t self0,
                                const double* r, bool strict, int64_t* cnt) {
  count_rows_impl(rows, ng, ld, qn, jn, self0, r, strict, cnt);
}

#if MIPP_AVX512
// float64 on AVX-512DQ: a block of kLane = 8 candidates is one register, and all kRows = 8 query rows' accumulators
// stay in registers across the columns. Per pair-column a subtraction (the query's value broadcast from memory) and
// one vrangepd with imm 0b1011 (imm[1:0] = 11: the operand of larger magnitude; imm[3:2] = 10: sign bit cleared),
// which is max(acc, |d|) for acc >= 0: the reference's fabs and max in one exact selection. Two instructions where
// the AVX2 loop issues three on half the width: 4.6 -> 8.8 pair-columns a cycle in a harness at 128 columns on an
// AVX-512 Xeon (and-not and max on 512 bits: 6.7).
__attribute__((target("avx512f,avx512dq"))) void group_rows_avx512(const double* packed, int64_t dim, const double* qv,
                                                                   int64_t j0, int64_t j1, double* out, int64_t ld) {
  static_assert(kLane == 8 && kRows == 8, "one 8-double register per block and query row");
  for (int64_t jb = j0 / kLane; jb < j1 / kLane; ++jb) {
    const double* blk = packed + jb * dim * kLane;
    __m512d acc[kRows];
    for (int q = 0; q < kRows; ++q) acc[q] = _mm512_setzero_pd();
    for (int64_t c = 0; c < dim; ++c) {
      const __m512d x = _mm512_loadu_pd(blk + c * kLane);
#pragma GCC unroll 8
      for (int q = 0; q < kRows; ++q)
        acc[q] = _mm512_range_pd(acc[q], _mm512_sub_pd(x, _mm512_set1_pd(qv[c * kRows + q])), 0b1011);
    }
    for (int q = 0; q < kRows; ++q) _mm512_storeu_pd(out + q * ld + jb * kLane - j0, acc[q]);
  }
}

// The brute force's per-pair work after the distances (the joint maximum, the k-NN test, the counts) 8 doubles at a
// time where the AVX2 clones take 4: the same loops, on 64-byte vectors.
__attribute__((target("avx512f,avx512dq"))) void knn_rows_avx512(const double* const* rows, int64_t ng, int64_t ld,
                                                                 int qn, int64_t jn, int64_t self0, int k,
                                                                 double* best) {
  knn_rows_impl<double, 64>(rows, ng, ld, qn, jn, self0, k, best);
}
__attribute__((target("avx512f,avx512dq"))) void count_rows_avx512(const double* const* rows, int64_t ng, int64_t ld,
                                                                   int qn, int64_t jn, int64_t self0, const double* r,
                                                                   bool strict, int64_t* cnt) {
  count_rows_impl<double, 64>(rows, ng, ld, qn, jn, self0, r, strict, cnt);
}

#endif

}  // namespace

#if MIPP_AVX512
// Read once: whether this CPU has AVX-512DQ and MIPP_NO_AVX512 is unset or "0" (tests compare the two loops' bits).
bool avx512_distances() {
  static const bool yes = [] {
    __builtin_cpu_init();
    const char* off = std::getenv("MIPP_NO_AVX512");
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") && !(off && *off && *off != '0');
  }();
  return yes;
}
#else
bool avx512_distances() { return false; }
#endif

void group_rows(const double* packed, int64_t dim, const double* qv, int64_t j0, int64_t j1, double* out, int64_t ld) {
#if MIPP_AVX512
  if (avx512_distances()) return group_rows_avx512(packed, dim, qv, j0, j1, out, ld);
#endif
  group_rows_vec(packed, dim, qv, j0, j1, out, ld);
}
MIPP_CLONES void group_rows(const float* packed, int64_t dim, const float* qv, int64_t j0, int64_t j1, float* out,
                            int64_t ld) {
  group_rows_impl(packed, dim, qv, j0, j1, out, ld);
}

void knn_rows(const double* const* rows, int64_t ng, int64_t ld, int qn, int64_t jn, int64_t self0, int k,
              double* best) {
#if MIPP_AVX512
  if (avx512_distances()) return knn_rows_avx512(rows, ng, ld, qn, jn, self0, k, best);
#endif
  knn_rows_vec(rows, ng, ld, qn, jn, self0, k, best);
}
MIPP_CLONES void knn_rows(const float* const* rows, int64_t ng, int64_t ld, int qn, int64_t jn, int64_t self0, int k,
                          float* best) {
  knn_rows_impl(rows, ng, ld, qn, jn, self0, k, best);
}

void count_rows(const double* const* rows, int64_t ng, int64_t ld, int qn, int64_t jn, int64_t self0, const double* r,
                bool strict, int64_t* cnt) {
#if MIPP_AVX512
  if (avx512_distances()) return count_rows_avx512(rows, ng, ld, qn, jn, self0, r, strict, cnt);
#endif
  count_rows_vec(rows, ng, ld, qn, jn, self0, r, strict, cnt);
}
MIPP_CLONES void count_rows(const float* const* rows, int64_t ng, int64_t ld, int qn, int64_t jn, int64_t self0,
                            const float* r, bool strict, int64_t* cnt) {
  count_rows_impl(rows, ng, ld, qn, jn, self0, r, strict, cnt);
}

MIPP_CLONES void radius_rows(const double* const* rows, int64_t ng, int64_t ld, int qn, int64_t jn, const double* r,
                             double* m) {
  radius_rows_impl(rows, ng, ld, qn, jn, r, m);
}
MIPP_CLONES void radius_rows(const float* const* rows, int64_t ng, int64_t ld, int qn, int64_t jn, const float* r,
                             float* m) {
  radius_rows_impl(rows, ng, ld, qn, jn, r, m);
}

MIPP_CLONES void row_distance(const double* cols, int64_t n, int64_t dim, int64_t p, int64_t j0, int64_t jn,
                              double* dst) {
  row_distance_impl(cols, n, dim, p, j0, jn, dst);
}
MIPP_CLONES void row_distance(const float* cols, int64_t n, int64_t dim, int64_t p, int64_t j0, int64_t jn,
                              float* dst) {
  row_distance_impl(cols, n, dim, p, j0, jn, dst);
}

MIPP_CLONES bool block_distance(const double* cols, int64_t ld, int64_t dim, int64_t p, int64_t j0, int64_t len,
                                double bound, double* dst) {
  return block_distance_impl(cols, ld, dim, p, j0, len, bound, dst);
}
MIPP_CLONES bool block_distance(const float* cols, int64_t ld, int64_t dim, int64_t p, int64_t j0, int64_t len,
                                float bound, float* dst) {
  return block_distance_impl(cols, ld, dim, p, j0, len, bound, dst);
}

MIPP_CLONES int64_t run_count(const double* cols, int64_t ld, int64_t dim, int64_t p, int64_t j0, int64_t len,
                              double r, bool strict) {
  return strict ? run_count_impl<double, true>(cols, ld, dim, p, j0, len, r)
                : run_count_impl<double, false>(cols, ld, dim, p, j0, len, r);
}
MIPP_CLONES int64_t run_count(const float* cols, int64_t ld, int64_t dim, int64_t p, int64_t j0, int64_t len, float r,
                              bool strict) {
  return strict ? run_count_impl<float, true>(cols, ld, dim, p, j0, len, r)
                : run_count_impl<float, false>(cols, ld, dim, p, j0, len, r);
}

std::vector<int64_t> sorted_order(const double* key, int64_t n) { return sorted_order_impl(key, n); }
std::vector<int64_t> sorted_order(const float* key, int64_t n) { return sorted_order_impl(key, n); }

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
