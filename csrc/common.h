// Shared helpers of the CPU kernels: threads and runtime ISA dispatch.
#pragma once

#include <cstdint>
#include <thread>
#include <type_traits>

// The hot loops are compiled twice, for AVX2 and for the baseline ISA, and the loader picks one at
// run time (GCC function multiversioning through an ifunc). This is safe where -march=native is not:
// the .so runs on any x86-64, and every clone computes the same values, because the loops only use
// subtraction, fabs, max and comparisons, which are exactly rounded at every vector width (no FMA
// contraction applies: there is no multiply).
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
#define MIPP_CLONES __attribute__((target_clones("avx2", "default")))
#define MIPP_CLONES_ISA "avx2,default (ifunc)"
// The brute force's float64 loops (the distances, the k-NN test, the counts) have AVX-512 versions beside the
// clones (pairwise.cpp), picked at run time where the CPU has it.
#define MIPP_AVX512 1
#else
#define MIPP_AVX512 0
#define MIPP_CLONES
#define MIPP_CLONES_ISA "baseline"
#endif
#define MIPP_INLINE inline __attribute__((always_inline))
// The same for a lambda (after its parameter list): a lambda called from two places of an inlined walk (strips.h)
// was otherwise left out of line, with the function around it, and the 1+1 k-NN ran ~5% slower.
#define MIPP_INLINE_LAMBDA __attribute__((always_inline))

namespace mipp {

// Runs fn(ctx, i) for i in [0, n) on up to `threads` threads (threads.cpp: OpenMP, torch's own team).
// The first exception of any item is rethrown in the caller.
void parallel_run(int64_t n, int threads, void (*fn)(void*, int64_t), void* ctx);

template <class F>
void parallel_for(int64_t n, int threads, F&& fn) {
  if (threads <= 1 || n <= 1) {
    for (int64_t i = 0; i < n; ++i) fn(i);
    return;
  }
  parallel_run(n, threads, [](void* f, int64_t i) { (*static_cast<std::remove_reference_t<F>*>(f))(i); },
               const_cast<void*>(static_cast<const void*>(&fn)));
}

// The threads to use when the caller passes 0: all hardware threads.
inline int resolve_threads(int threads) {
  if (threads > 0) return threads;
  const unsigned hw = std::thread::hardware_concurrency();
  return hw ? static_cast<int>(hw) : 1;
}

// Caps the threads for `work` units so that each thread gets at least `grain` of them: a parallel region
// costs a wake-up and a join, which small calls (N in the hundreds) do not pay back, and on a busy machine
// the join can wait a whole scheduler slice for a descheduled thread.
inline int threads_for(int threads, double work, double grain) {
  const double most = work / grain;
  return most < threads ? (most < 1 ? 1 : static_cast<int>(most)) : threads;
}

#ifdef _OPENMP
#define MIPP_PARALLELISM "OpenMP (shares torch's libgomp team)"
#else
#define MIPP_PARALLELISM "none: compiled without OpenMP, kernels run on the calling thread"
#endif

}  // namespace mipp
