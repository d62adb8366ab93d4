// The CUDA compositing kernel (device code) and the host rules of its fast paths. Included by
// composite_cuda.cu, which launches it, and by the CPU test program composite_cuda_emulated_test,
// which runs this same code on the host (its CUDA names shimmed) over every thread of a grid, so the
// kernel's indexing, loads and stores are tested on machines without a GPU.
//
// One thread makes 4 neighbouring pixels of a row, all channels: neighbouring threads touch
// neighbouring addresses (coalesced), and the 4 pixels leave as 16-byte (float) or 4-byte (uint8)
// stores where the row width and the pointer alignment allow; NHWC RGB packs 4 pixels into 3 such
// stores. The 4 values of a mask or texture row come as one 16-byte load where alignment and the
// thread's shift allow (vec4.h). For RGB a thread issues every load of its 3 channels before it
// computes or stores anything: the GPU does not move a load above a branch or a store, so loads per
// channel would wait for memory three times in a row. Indices are int32 where the call allows
// (index32.h), else int64.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>

#include "index32.h"
#include "pycgn/composite.h"
#include "vec4.h"

namespace pycgn {
namespace kernel {

constexpr int kPix = 4;  // pixels per thread
constexpr int kThreads = 256;

struct Flags {
  bool vec_out;   // 4 pixels x C values of a thread can go out as aligned vector stores
  bool vec_mask;  // the 4 mask values of a thread are one aligned float4
  bool vec_fg;    // texture_vec4(fg): 4 columns are one float4 when the thread's shift allows
  bool vec_bg;    // texture_vec4(bg)
};

__device__ __forceinline__ std::int64_t offset_at(const Offsets& o, std::int64_t b, int k) {
  const std::int64_t i = b * o.stride[0] + k * o.stride[1];
  if (o.dtype == IndexDtype::kInt32) return __ldg(static_cast<const std::int32_t*>(o.data) + i);
  return static_cast<std::int64_t>(__ldg(reinterpret_cast<const long long*>(o.data) + i));
}

// The 4 values at row[at[0..3]]; `vec`: they are row[at[0] .. at[0] + 3], 16-byte aligned.
template <typename I>
__device__ __forceinline__ void load4(const float* row, const I at[kPix], bool vec, float v[kPix]) {
  if (vec) {
    const float4 q = __ldg(reinterpret_cast<const float4*>(row + at[0]));
    v[0] = q.x, v[1] = q.y, v[2] = q.z, v[3] = q.w;
  } else {
#pragma unroll
    for (int i = 0; i < kPix; ++i) v[i] = __ldg(row + at[i]);
  }
}

template <typename T> struct Vec4;
template <> struct Vec4<float> {
  __device__ __forceinline__ static void store(float* o, const float v[4]) {
    *reinterpret_cast<float4*>(o) = make_float4(v[0], v[1], v[2], v[3]);
  }
};
template <> struct Vec4<std::uint8_t> {
  __device__ __forceinline__ static void store(std::uint8_t* o, const std::uint8_t v[4]) {
    *reinterpret_cast<std::uint32_t*>(o) = static_cast<std::uint32_t>(v[0]) | (static_cast<std::uint32_t>(v[1]) << 8) |
                                          (static_cast<std::uint32_t>(v[2]) << 16) |
                                          (static_cast<std::uint32_t>(v[3]) << 24);
  }
};

// The first `np` of a thread's 4 values of one output row (NCHW), or of its 4 * C values (NHWC).
template <typename T, int kN>
__device__ __forceinline__ void store_run(T* dst, const T v[kN], bool vec, int n) {
  if (vec) {
#pragma unroll
    for (int k = 0; k < kN / 4; ++k) Vec4<T>::store(dst + 4 * k, v + 4 * k);
  } else {
#pragma unroll
    for (int i = 0; i < kN; ++i)  // constant bounds keep v in registers
      if (i < n) dst[i] = v[i];
  }
}

// kC: the channel count when known at compile time (3), else 0 and read from p.
// I: the index type, int32 when every index of the call fits (index32.h).
template <typename T, int kC, typename I>
__global__ void __launch_bounds__(kThreads) composite_kernel(const CompositeParams p, const Flags fl) {
  const I c_n = kC > 0 ? kC : static_cast<I>(p.fg.size[1]);
  const I h = static_cast<I>(p.mask.size[2]), w = static_cast<I>(p.mask.size[3]);
  const I hf = static_cast<I>(p.fg.size[2]), wf = static_cast<I>(p.fg.size[3]);
  const I hb = static_cast<I>(p.bg.size[2]), wb = static_cast<I>(p.bg.size[3]);
  const I groups_per_row = (w + kPix - 1) / kPix;
  const I total = static_cast<I>(p.mask.size[0]) * h * groups_per_row;
  const I mc = p.mask.size[1] == 1 ? 0 : static_cast<I>(p.mask.stride[1]);
  const I ms[4] = {static_cast<I>(p.mask.stride[0]), 0 /* channels: mc */, static_cast<I>(p.mask.stride[2]),
                   static_cast<I>(p.mask.stride[3])};
  const I fs[4] = {static_cast<I>(p.fg.stride[0]), static_cast<I>(p.fg.stride[1]), static_cast<I>(p.fg.stride[2]),
                   static_cast<I>(p.fg.stride[3])};
  const I gs[4] = {static_cast<I>(p.bg.stride[0]), static_cast<I>(p.bg.stride[1]), static_cast<I>(p.bg.stride[2]),
                   static_cast<I>(p.bg.stride[3])};
  T* const out = static_cast<T*>(p.out);

  const I step = static_cast<I>(gridDim.x) * static_cast<I>(blockDim.x);
  for (I t = static_cast<I>(blockIdx.x) * static_cast<I>(blockDim.x) + static_cast<I>(threadIdx.x); t < total;
       t += step) {
    const I r = t / groups_per_row;  // row: b * h + y
    const I x0 = (t - r * groups_per_row) * kPix;
    const I b = r / h, y = r - b * h;
    const int np = static_cast<int>(w - x0 < kPix ? w - x0 : kPix);
    const bool whole = np == kPix;

    I fdy = 0, fdx = 0, bdy = 0, bdx = 0;  // offsets reduced in int64, so any value is safe
    if (p.fg_offset.data) {
      fdy = static_cast<I>(wrap(offset_at(p.fg_offset, b, 0), p.fg.size[2]));
      fdx = static_cast<I>(wrap(offset_at(p.fg_offset, b, 1), p.fg.size[3]));
    }
    if (p.bg_offset.data) {
      bdy = static_cast<I>(wrap(offset_at(p.bg_offset, b, 0), p.bg.size[2]));
      bdx = static_cast<I>(wrap(offset_at(p.bg_offset, b, 1), p.bg.size[3]));
    }
    const float* mrow = p.mask.data + (b * ms[0] + y * ms[2]);
    const float* frow = p.fg.data + (b * fs[0] + column(y, fdy, hf) * fs[2]);
    const float* grow = p.bg.data + (b * gs[0] + column(y, bdy, hb) * gs[2]);
    I mo[kPix], fo[kPix], go[kPix];  // element offsets of the 4 columns in a row
#pragma unroll
    for (int i = 0; i < kPix; ++i) {
      const I x = i < np ? x0 + i : x0;
      mo[i] = x * ms[3];
      fo[i] = column(x, fdx, wf) * fs[3];
      go[i] = column(x, bdx, wb) * gs[3];
    }
    const bool vm = fl.vec_mask && whole, vf = fl.vec_fg && whole && fdx % kPix == 0,
               vg = fl.vec_bg && whole && bdx % kPix == 0;
    const bool vo = fl.vec_out && whole;

    if constexpr (kC > 0) {
      // Every load first (see the top of the file), then the arithmetic, then the stores.
      float mv[kC][kPix], fv[kC][kPix], gv[kC][kPix];
#pragma unroll
      for (int c = 0; c < kC; ++c) {
        if (c == 0 || mc != 0) load4(mrow + c * mc, mo, vm, mv[c]);
        load4(frow + c * fs[1], fo, vf, fv[c]);
        load4(grow + c * gs[1], go, vg, gv[c]);
      }
      T o[kC][kPix];
#pragma unroll
      for (int c = 0; c < kC; ++c)
#pragma unroll
        for (int i = 0; i < kPix; ++i)
          o[c][i] = composite_pixel<T>(mc != 0 ? mv[c][i] : mv[0][i], fv[c][i], gv[c][i], p.lo, p.hi);
      if (p.layout == Layout::kNCHW) {
#pragma unroll
        for (int c = 0; c < kC; ++c) store_run<T, kPix>(out + (((b * kC + c) * h + y) * w + x0), o[c], vo, np);
      } else {
        T v[kC * kPix];  // the thread's 4 pixels, interleaved
#pragma unroll
        for (int i = 0; i < kPix; ++i)
#pragma unroll
          for (int c = 0; c < kC; ++c) v[i * kC + c] = o[c][i];
        store_run<T, kC * kPix>(out + (r * w + x0) * kC, v, vo, np * kC);
      }
    } else {
      for (I c = 0; c < c_n; ++c) {  // any channel count: one channel at a time
        float mv[kPix], fv[kPix], gv[kPix];
        load4(mrow + c * mc, mo, vm, mv);
        load4(frow + c * fs[1], fo, vf, fv);
        load4(grow + c * gs[1], go, vg, gv);
        T o[kPix];
#pragma unroll
        for (int i = 0; i < kPix; ++i) o[i] = composite_pixel<T>(mv[i], fv[i], gv[i], p.lo, p.hi);
        if (p.layout == Layout::kNCHW) {
          store_run<T, kPix>(out + (((b * c_n + c) * h + y) * w + x0), o, vo, np);
        } else {
          T* dst = out + ((r * w + x0) * c_n + c);
#pragma unroll
          for (int i = 0; i < kPix; ++i)
            if (i < np) dst[i * c_n] = o[i];
        }
      }
    }
  }
}

inline bool aligned(const void* ptr, std::size_t bytes) {
  return reinterpret_cast<std::uintptr_t>(ptr) % bytes == 0;
}

// The fast paths a call allows (host code).
template <typename T>
Flags flags(const CompositeParams& p) {
  const std::int64_t w = p.mask.size[3];
  Flags fl;
  // Every thread's 4 pixels start at a multiple of 4 elements (NCHW) or 4*C elements (NHWC)
  // when w % 4 == 0; 16-byte float4 / 4-byte uint32 stores then need only an aligned base.
  fl.vec_out = w % kPix == 0 && aligned(p.out, kPix * sizeof(T));
  const Image4& m = p.mask;
  fl.vec_mask = w % kPix == 0 && m.stride[3] == 1 && m.stride[0] % kPix == 0 && m.stride[1] % kPix == 0 &&
                m.stride[2] % kPix == 0 && aligned(m.data, 16);
#ifdef PYCGN_CUDA_SCALAR_TEXTURE  // 4-byte texture loads for every call: the benchmark's comparison
  fl.vec_fg = fl.vec_bg = false;
#else
  fl.vec_fg = texture_vec4(p.fg);
  fl.vec_bg = texture_vec4(p.bg);
#endif
  return fl;
}

// How composite_cuda launches a call (host code): the fast paths, the grid and the index type.
struct Launch {
  Flags flags;
  std::int64_t blocks;
  bool narrow;  // int32 indices
};

template <typename T>
Launch plan(const CompositeParams& p) {
  Launch l;
  l.flags = flags<T>(p);
  const std::int64_t total = p.mask.size[0] * p.mask.size[2] * ((p.mask.size[3] + kPix - 1) / kPix);
  l.blocks = std::min<std::int64_t>((total + kThreads - 1) / kThreads, 1 << 22);
#ifdef PYCGN_CUDA_WIDE_INDEX  // the int64 kernel for every call: tests and benchmarks of that path
  l.narrow = false;
#else
  l.narrow = index_fits_int32(p, total + l.blocks * kThreads);
#endif
  return l;
}

}  // namespace kernel
}  // namespace pycgn
