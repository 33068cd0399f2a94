// parallel_run (common.h) on OpenMP.
//
// Why OpenMP and not std::thread: torch's CPU ops run on libgomp, whose worker threads keep spinning for
// a while after each op. Threads of our own would compete with them for the cores, and on a 2-core
// machine a kernel that follows any torch op ran 2x slower with two threads than with one. Linked with
// -fopenmp, the extension resolves libgomp.so.1 to the copy torch has already loaded (same soname), so
// the kernels run on torch's own team: the same threads, warm, no oversubscription.
// Without OpenMP (a compiler lacking it) the kernels run on the caller's thread; build_info() says so.
//
// Items are claimed from an atomic counter (dynamic scheduling by hand: it needs only GOMP_parallel from
// the runtime, which every libgomp has), and each writes its own outputs, so the result does not depend
// on the thread count or the schedule.
#include <atomic>
#include <exception>
#include <mutex>

#include "common.h"

namespace mipp {

void parallel_run(int64_t n, int threads, void (*fn)(void*, int64_t), void* ctx) {
  std::atomic<int64_t> next{0};
  std::exception_ptr error;
  std::mutex error_mutex;
  auto work = [&] {
    try {
      for (int64_t i; (i = next.fetch_add(1)) < n;) fn(ctx, i);
    } catch (...) {  // an exception must not leave an OpenMP region: keep the first, stop the others
      std::lock_guard<std::mutex> lock(error_mutex);
      if (!error) error = std::current_exception();
      next = n;
    }
  };
#ifdef _OPENMP
#pragma omp parallel num_threads(threads)
  work();
#else
  (void)threads;
  work();
#endif
  if (error) std::rethrow_exception(error);
}

}  // namespace mipp
