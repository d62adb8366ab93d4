// When the CUDA kernel may read a texture's 4 neighbouring columns as one 16-byte load.
// Torch-free and host-callable, so the CPU test program checks the rule on machines without
// a GPU (composite_cpu_test: every row, shift and column group of random views).
#pragma once

#include <cstdint>

#include "pycgn/composite.h"

namespace pycgn {

// Column of x + dx in a texture of width w, dx in [0, w): one compare for textures at
// least as wide as the output, a division only for narrower ones.
template <typename I>
PYCGN_HD I column(I x, I dx, I w) {
  I v = x + dx;
  if (v >= w) v -= w;
  if (v >= w) v %= w;
  return v;
}

// True when, for every image, channel and row of `t`, the columns column(x0 + i, dx, width),
// i = 0..3, of a group starting at a multiple of 4 (x0) are 4 consecutive floats at a 16-byte
// aligned address whenever dx is a multiple of 4 too. Then (x0 + dx) mod width is a multiple
// of 4 and so is the width, so the wrap cannot fall inside the group; the base is 16-byte
// aligned and every stride that moves the pointer (of a dimension longer than 1) is a multiple
// of 4 floats.
inline bool texture_vec4(const Image4& t) {
  if (t.size[3] <= 0 || t.size[3] % 4 != 0 || t.stride[3] != 1) return false;
  for (int d = 0; d < 3; ++d)
    if (t.size[d] > 1 && t.stride[d] % 4 != 0) return false;
  return reinterpret_cast<std::uintptr_t>(t.data) % 16 == 0;
}

}  // namespace pycgn
