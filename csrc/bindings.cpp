// mipp._C: plain functions over pointers, sizes and streams, and build_info(). Python registers the ops.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <tuple>

#include "kernels.h"
#include "pairwise.h"

namespace py = pybind11;

#ifndef MIPP_CUDA_OFF_REASON
#define MIPP_CUDA_OFF_REASON "not recorded by the build"
#endif

namespace {

using GroupTuple = std::tuple<int64_t, int64_t, int64_t>;

std::vector<mipp::GroupArg> to_groups(const std::vector<GroupTuple>& groups) {
  std::vector<mipp::GroupArg> out;
  for (const auto& g : groups) out.push_back({std::get<0>(g), std::get<1>(g), std::get<2>(g)});
  return out;
}

std::string compiler() {
#if defined(__clang__)
  return std::string("clang ") + __clang_version__;
#elif defined(__GNUC__)
  return std::string("gcc ") + __VERSION__;
#else
  return "unknown";
#endif
}

}  // namespace

PYBIND11_MODULE(_C, m) {
  m.doc() = "mipp's compiled kernels: exact digamma sums and exact pairwise max-norm kernels on the CPU";
  const auto release = py::call_guard<py::gil_scoped_release>();

  m.def(
      "digamma_sum_cpu",
      [](int64_t counts, int64_t rows, int64_t n, int64_t offset, bool reduce, int64_t out, int threads) {
        mipp::digamma_sum_cpu(reinterpret_cast<const int64_t*>(counts), rows, n, offset, reduce,
                              reinterpret_cast<double*>(out), threads);
      },
      py::arg("counts"), py::arg("rows"), py::arg("n"), py::arg("offset"), py::arg("reduce"), py::arg("out"),
      py::arg("threads") = 0, release,
      "psi(counts + offset) (int64 -> float64) per element or summed per row; ValueError on a pole");
#ifdef MIPP_WITH_CUDA
  m.def(
      "digamma_sum_cuda",
      [](int64_t counts, int64_t rows, int64_t n, int64_t offset, bool reduce, int64_t out, int64_t stream) {
        mipp::digamma_sum_cuda(reinterpret_cast<const int64_t*>(counts), rows, n, offset, reduce,
                               reinterpret_cast<double*>(out), stream);
      },
      py::arg("counts"), py::arg("rows"), py::arg("n"), py::arg("offset"), py::arg("reduce"), py::arg("out"),
      py::arg("stream"), release, "digamma_sum_cpu on device pointers, enqueued on a CUDA stream (poles give NaN)");
#endif
  m.def(
      "knn_distance_cpu",
      [](const std::vector<GroupTuple>& groups, int64_t batch, int64_t n, bool f64, int64_t k, int64_t out,
         const std::string& path, int threads, int64_t row0, int64_t row1) {
        return mipp::knn_distance_cpu(to_groups(groups), batch, n, f64, k, out, path, threads, row0, row1);
      },
      py::arg("groups"), py::arg("batch"), py::arg("n"), py::arg("f64"), py::arg("k"), py::arg("out"),
      py::arg("path"), py::arg("threads"), py::arg("row0"), py::arg("row1"), release,
      "k-th neighbour max-norm distance; groups are (ptr, B_g, d) of (B_g, d, N) data; returns the path used");
  m.def(
      "count_within_cpu",
      [](const std::vector<GroupTuple>& groups, int64_t batch, int64_t n, bool f64, int64_t radius,
         int64_t radius_batch, bool strict, int64_t out, const std::string& path, int threads, int64_t row0,
         int64_t row1) {
        return mipp::count_within_cpu(to_groups(groups), batch, n, f64, radius, radius_batch, strict, out, path,
                                      threads, row0, row1);
      },
      py::arg("groups"), py::arg("batch"), py::arg("n"), py::arg("f64"), py::arg("radius"),
      py::arg("radius_batch"), py::arg("strict"), py::arg("out"), py::arg("path"),
      py::arg("threads"), py::arg("row0"), py::arg("row1"), release, "counts within a radius (int64 out); returns the path used");
  m.def(
      "marginal_radius_cpu",
      [](const std::vector<GroupTuple>& groups, int64_t batch, int64_t n, bool f64, int64_t radius,
         int64_t radius_batch, int64_t out, const std::string& path, int threads, int64_t row0, int64_t row1) {
        return mipp::marginal_radius_cpu(to_groups(groups), batch, n, f64, radius, radius_batch, out, path,
                                         threads, row0, row1);
      },
      py::arg("groups"), py::arg("batch"), py::arg("n"), py::arg("f64"), py::arg("radius"),
      py::arg("radius_batch"), py::arg("out"), py::arg("path"), py::arg("threads"),
      py::arg("row0"), py::arg("row1"), release,
      "per-group largest distance within the joint radius; returns the path used");
  m.def(
      "ksg_counts_cpu",
      [](const std::vector<GroupTuple>& groups, int64_t batch, int64_t n, bool f64, int64_t k,
         const std::vector<int64_t>& marginals, int64_t algorithm, int64_t eps, int64_t counts, const std::string& path,
         int threads, int64_t row0, int64_t row1) {
        return mipp::ksg_counts_cpu(to_groups(groups), batch, n, f64, k, marginals, algorithm, eps, counts, path,
                                    threads, row0, row1);
      },
      py::arg("groups"), py::arg("batch"), py::arg("n"), py::arg("f64"), py::arg("k"), py::arg("marginals"),
      py::arg("algorithm"), py::arg("eps"), py::arg("counts"), py::arg("path"), py::arg("threads"), py::arg("row0"),
      py::arg("row1"), release, "k-th joint distances and marginal counts of a KSG estimate; returns the path used");

  m.def("ross_counts_cpu", &mipp::ross_counts_cpu, py::arg("x"), py::arg("batch"), py::arg("n"), py::arg("f64"),
        py::arg("classes"), py::arg("strata"), py::arg("k_each"), py::arg("eps"), py::arg("tied"), py::arg("lt"),
        py::arg("le"), py::arg("threads"), release,
        "the counts of Ross's estimator for one continuous column: eps, tied, lt, le");

  m.def(
      "column_stats_cpu",
      [](int64_t data, int64_t columns, int64_t n, bool f64, bool ties, int threads) {
        const mipp::ColumnStats s = mipp::column_stats_cpu(data, columns, n, f64, ties, threads);
        return std::make_tuple(s.nonfinite, s.overflow, s.repeated);
      },
      py::arg("data"), py::arg("columns"), py::arg("n"), py::arg("f64"), py::arg("ties"), py::arg("threads"), release,
      "(any NaN / inf, any column span overflowing, most repeated samples of a column) of contiguous columns");
  m.def("build_info", [] {
    py::dict d;
#ifdef MIPP_WITH_CUDA
    d["cuda"] = true;
    d["cuda_off_reason"] = py::none();
#else
    d["cuda"] = false;
    d["cuda_off_reason"] = MIPP_CUDA_OFF_REASON;
#endif
    d["compiler"] = compiler();
    d["threads"] = mipp::resolve_threads(0);
    d["parallelism"] = MIPP_PARALLELISM;
    d["isa"] = MIPP_CLONES_ISA;
    d["avx512_distances"] = mipp::avx512_distances();
    d["cpu_kernels"] = py::make_tuple("digamma_sum", "knn_distance", "count_within", "marginal_radius", "ksg_counts",
                                       "ross_counts");
    d["cpu_paths"] = py::make_tuple("brute", "sweep", "strips");
    return d;
  });
}
