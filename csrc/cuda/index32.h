// Whether the CUDA kernel may index a call in int32, as PyTorch's own kernels do when they can.
// Host-only and torch-free, so the CPU test program checks it on machines without a GPU.
#pragma once

#include <cstdint>

#include "pycgn/composite.h"

namespace pycgn {

// True when every element index of every view and of the output, and `counter_max` (the
// largest value the kernel's grid-stride counter takes), stay below 2^31, with sizes below
// 2^30 so that a row or column plus an offset (each smaller than its size) cannot overflow.
// int64 indices take two registers each and int64 division is a long subroutine: with them
// the RGB kernels need 100-102 registers per thread on sm_90 (ptxas), which leaves an SM two
// blocks of 256 threads, a quarter of the warps it can hold; with int32, 64.
inline bool index_fits_int32(const CompositeParams& p, std::int64_t counter_max) {
  constexpr std::int64_t kMax = INT32_MAX, kMaxSize = std::int64_t{1} << 30;
  for (const Image4* v : {&p.mask, &p.fg, &p.bg}) {
    std::int64_t reach = 0;  // the largest |element index| in the view
    for (int d = 0; d < 4; ++d) {
      const std::int64_t s = v->stride[d];
      if (v->size[d] < 0 || v->size[d] > kMaxSize) return false;
      if (v->size[d] <= 1) continue;  // its index is 0 whatever the stride
      if (s > kMax || s < -kMax) return false;
      reach += (v->size[d] - 1) * (s < 0 ? -s : s);  // < 2^61 a term: no overflow
    }
    if (reach > kMax) return false;
  }
  // sizes <= 2^30 each, so the product of two fits before the bound is checked
  const std::int64_t out = p.mask.size[0] * p.fg.size[1];
  if (out > kMax || out * p.mask.size[2] > kMax || out * p.mask.size[2] * p.mask.size[3] > kMax) return false;
  return counter_max >= 0 && counter_max <= kMax;
}

}  // namespace pycgn
