// psi(m) for integer m >= 1 in float64, shared by the CPU and the CUDA digamma kernels.
//
// Accuracy (~1 ulp, checked against mpmath in tests/test_digamma_sum.py):
//   m < kPsiTableSize: psi(m) = H_{m-1} - gamma, stored as decimal literals with 21 significant digits
//     (H_{m-1} exactly as a fraction, minus gamma to 50 digits), which the compiler rounds correctly:
//     error <= 0.5 ulp.
//   m >= kPsiTableSize: the asymptotic series
//     psi(m) = log(m) - 1/(2m) - sum_{j>=1} B_{2j} / (2j m^{2j}),
//     truncated after m^-12; the first omitted term is < 1.2e-18 * psi(m) at m = 16, far below an ulp.
//     The small correction is summed first and subtracted once, so the error is that of log() (glibc:
//     < 1 ulp) plus one rounding.
#pragma once

#include <cmath>
#include <cstdint>

#if defined(__CUDACC__)
#define MIPP_HD __host__ __device__
#else
#define MIPP_HD
#endif

namespace mipp {

constexpr int kPsiTableSize = 16;

// psi(1) ... psi(15); index 0 is unused (psi has a pole at 0).
#define MIPP_PSI_TABLE_VALUES                                                                      \
  0.0, -5.772156649015328606065e-1, 4.227843350984671393935e-1, 9.227843350984671393935e-1,         \
      1.256117668431800472727e+0, 1.506117668431800472727e+0, 1.706117668431800472727e+0,          \
      1.872784335098467139393e+0, 2.015641477955609996536e+0, 2.140641477955609996536e+0,          \
      2.251752589066721107647e+0, 2.351752589066721107647e+0, 2.442661679975812016738e+0,          \
      2.525995013309145350072e+0, 2.602918090232222273149e+0, 2.674346661660793701720e+0

// psi(m) for m >= 1; `table` holds MIPP_PSI_TABLE_VALUES (host or device copy).
MIPP_HD inline double psi_positive_int(int64_t m, const double* table) {
  if (m < kPsiTableSize) return table[m];
  const double x = static_cast<double>(m);
  const double inv2 = 1.0 / (x * x);
  // Bernoulli terms B_2/2 = 1/12, B_4/4 = -1/120, B_6/6 = 1/252, B_8/8 = -1/240, B_10/10 = 1/132,
  // B_12/12 = -691/32760, in Horner form.
  const double series =
      inv2 * (1.0 / 12 - inv2 * (1.0 / 120 - inv2 * (1.0 / 252 - inv2 * (1.0 / 240 - inv2 * (1.0 / 132 - inv2 * (691.0 / 32760))))));
  return log(x) - (0.5 / x + series);
}

}  // namespace mipp
