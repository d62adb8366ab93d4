// The CUDA compositing kernel (csrc/cuda/composite_kernel.cuh) run on the host: the CUDA names it
// uses, shimmed, and composite_cuda's launch decisions (kernel::plan) carried out thread by thread
// over the grid. For the CPU test program composite_cuda_emulated_test and the fuzz target
// composite_fuzz, so the kernel's indexing, fast-path rules and tails are tested without a GPU.
// A vector load or store at an address the GPU would refuse (not a multiple of its size) is
// counted in misaligned_vector_accesses(); under the sanitizers UBSan also reports a misaligned
// 4-byte store. Include this before anything else that could see the names it defines.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>

#define __global__
#define __device__
#define __forceinline__ inline
#define __launch_bounds__(n)

namespace pycgn_test {
inline long long& misaligned_vector_accesses() {
  static long long count = 0;
  return count;
}
}  // namespace pycgn_test

struct alignas(16) float4 {
  float x, y, z, w;
  float4() = default;
  float4(const float4&) = default;
  float4& operator=(const float4& v) {  // the kernel's 16-byte stores land here
    if (reinterpret_cast<std::uintptr_t>(this) % 16) ++pycgn_test::misaligned_vector_accesses();
    std::memcpy(static_cast<void*>(this), &v, sizeof v);
    return *this;
  }
};

inline float4 make_float4(float x, float y, float z, float w) {
  float4 v;
  v.x = x, v.y = y, v.z = z, v.w = w;
  return v;
}

template <typename T>
T __ldg(const T* p) {
  if (reinterpret_cast<std::uintptr_t>(p) % alignof(T)) ++pycgn_test::misaligned_vector_accesses();
  T v;
  std::memcpy(static_cast<void*>(&v), p, sizeof v);
  return v;
}

struct Dim3 {
  unsigned x = 1;
};
inline Dim3 blockIdx, threadIdx, blockDim, gridDim;

#include "../cuda/composite_kernel.cuh"

namespace pycgn_test {

// What the GPU would compute for composite_cuda(p): the same flags, index type and grid, though of
// at most `max_blocks` blocks (the grid-stride loop then turns); `fast` false takes no fast path,
// `wide` true indexes in int64. p must pass composite_check.
template <typename T>
void composite_cuda_on_host(const pycgn::CompositeParams& p, unsigned max_blocks = 3, bool fast = true,
                            bool wide = false) {
  namespace k = pycgn::kernel;
  if (p.mask.size[0] * p.fg.size[1] * p.mask.size[2] * p.mask.size[3] == 0) return;
  k::Launch l = k::plan<T>(p);
  if (!fast) l.flags = k::Flags{false, false, false, false};
  const bool rgb = p.fg.size[1] == 3, narrow = l.narrow && !wide;  // the instantiation composite_cuda launches
  void (*const kernel)(pycgn::CompositeParams, k::Flags) =
      narrow ? (rgb ? k::composite_kernel<T, 3, std::int32_t> : k::composite_kernel<T, 0, std::int32_t>)
             : (rgb ? k::composite_kernel<T, 3, std::int64_t> : k::composite_kernel<T, 0, std::int64_t>);
  gridDim.x = static_cast<unsigned>(std::min<std::int64_t>(l.blocks, max_blocks));
  blockDim.x = k::kThreads;
  for (blockIdx.x = 0; blockIdx.x < gridDim.x; ++blockIdx.x)
    for (threadIdx.x = 0; threadIdx.x < blockDim.x; ++threadIdx.x) kernel(p, l.flags);
}

}  // namespace pycgn_test
