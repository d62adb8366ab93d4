// CUDA path of the compositing kernel. One thread makes 4 neighbouring pixels of a row, all
// channels: neighbouring threads touch neighbouring addresses (coalesced), and the 4 pixels
// leave as 16-byte (float) or 4-byte (uint8) stores where the row width and the pointer
// alignment allow; NHWC RGB packs 4 pixels into 3 such stores. Indices are int32 where the call
// allows (index32.h), else int64. Runs on the caller's stream.
#include "pycgn/composite.h"
#include "index32.h"

#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <stdexcept>
#include <string>

namespace pycgn {
namespace {

constexpr int kPix = 4;  // pixels per thread
constexpr int kThreads = 256;

struct Flags {
  bool vec_out;   // 4 pixels x C values of a thread can go out as aligned vector stores
  bool vec_mask;  // the 4 mask values of a thread are one aligned float4
};

__device__ __forceinline__ std::int64_t offset_at(const Offsets& o, std::int64_t b, int k) {
  const std::int64_t i = b * o.stride[0] + k * o.stride[1];
  if (o.dtype == IndexDtype::kInt32) return __ldg(static_cast<const std::int32_t*>(o.data) + i);
  return static_cast<std::int64_t>(__ldg(reinterpret_cast<const long long*>(o.data) + i));
}

// Column of x + dx in a texture of width w, dx in [0, w): one compare for textures at
// least as wide as the output, a division only for narrower ones.
template <typename I>
__device__ __forceinline__ I column(I x, I dx, I w) {
  I v = x + dx;
  if (v >= w) v -= w;
  if (v >= w) v %= w;
  return v;
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
    I fo[kPix], go[kPix];  // element offsets of the 4 texture columns
#pragma unroll
    for (int i = 0; i < kPix; ++i) {
      const I x = i < np ? x0 + i : x0;
      fo[i] = column(x, fdx, wf) * fs[3];
      go[i] = column(x, bdx, wb) * gs[3];
    }

    T v[(kC > 0 ? kC : 1) * kPix];  // NHWC RGB: the thread's 4 pixels, interleaved
#pragma unroll
    for (I c = 0; c < (kC > 0 ? kC : c_n); ++c) {  // unrolled for RGB: v stays in registers
      const float* m = mrow + c * mc;
      float mv[kPix];
      if (fl.vec_mask && np == kPix) {
        const float4 q = __ldg(reinterpret_cast<const float4*>(m + x0));
        mv[0] = q.x, mv[1] = q.y, mv[2] = q.z, mv[3] = q.w;
      } else {
#pragma unroll
        for (int i = 0; i < kPix; ++i) mv[i] = __ldg(m + (i < np ? x0 + i : x0) * ms[3]);
      }
      T o[kPix];
#pragma unroll
      for (int i = 0; i < kPix; ++i) {
        o[i] = composite_pixel<T>(mv[i], __ldg(frow + (c * fs[1] + fo[i])), __ldg(grow + (c * gs[1] + go[i])),
                                  p.lo, p.hi);
      }
      if (p.layout == Layout::kNCHW) {
        T* dst = out + (((b * c_n + c) * h + y) * w + x0);
        if (fl.vec_out && np == kPix) {
          Vec4<T>::store(dst, o);
        } else {
#pragma unroll
          for (int i = 0; i < kPix; ++i)  // constant bounds keep o in registers
            if (i < np) dst[i] = o[i];
        }
      } else if (kC > 0) {
#pragma unroll
        for (int i = 0; i < kPix; ++i) v[i * (kC > 0 ? kC : 1) + c] = o[i];
      } else {
        T* dst = out + ((r * w + x0) * c_n + c);
#pragma unroll
        for (int i = 0; i < kPix; ++i)
          if (i < np) dst[i * c_n] = o[i];
      }
    }
    if (kC > 0 && p.layout == Layout::kNHWC) {
      T* dst = out + (r * w + x0) * kC;
      if (fl.vec_out && np == kPix) {
#pragma unroll
        for (int k = 0; k < kC; ++k) Vec4<T>::store(dst + 4 * k, v + 4 * k);
      } else {
#pragma unroll
        for (int i = 0; i < kPix * (kC > 0 ? kC : 1); ++i)
          if (i < np * kC) dst[i] = v[i];
      }
    }
  }
}

bool aligned(const void* ptr, std::size_t bytes) { return reinterpret_cast<std::uintptr_t>(ptr) % bytes == 0; }

template <typename T, typename I>
void launch(const CompositeParams& p, const Flags& fl, std::int64_t blocks, cudaStream_t stream) {
  if (p.fg.size[1] == 3) {
    composite_kernel<T, 3, I><<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(p, fl);
  } else {
    composite_kernel<T, 0, I><<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(p, fl);
  }
}

template <typename T>
void launch(const CompositeParams& p, cudaStream_t stream) {
  const std::int64_t n = p.mask.size[0], h = p.mask.size[2], w = p.mask.size[3];
  Flags fl;
  // Every thread's 4 pixels start at a multiple of 4 elements (NCHW) or 4*C elements (NHWC)
  // when w % 4 == 0; 16-byte float4 / 4-byte uint32 stores then need only an aligned base.
  fl.vec_out = w % kPix == 0 && aligned(p.out, kPix * sizeof(T));
  const Image4& m = p.mask;
  fl.vec_mask = w % kPix == 0 && m.stride[3] == 1 && m.stride[0] % kPix == 0 && m.stride[1] % kPix == 0 &&
                m.stride[2] % kPix == 0 && aligned(m.data, 16);
  const std::int64_t total = n * h * ((w + kPix - 1) / kPix);
  const std::int64_t blocks = std::min<std::int64_t>((total + kThreads - 1) / kThreads, 1 << 22);
#ifdef PYCGN_CUDA_WIDE_INDEX  // the int64 kernel for every call: tests and benchmarks of that path
  const bool narrow = false;
#else
  const bool narrow = index_fits_int32(p, total + blocks * kThreads);
#endif
  if (narrow) {
    launch<T, std::int32_t>(p, fl, blocks, stream);
  } else {
    launch<T, std::int64_t>(p, fl, blocks, stream);
  }
  const cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) throw std::runtime_error(std::string("composite_cuda: ") + cudaGetErrorString(err));
}

}  // namespace

void composite_cuda(const CompositeParams& p, cudaStream_t stream) {
  if (const char* err = composite_check(p)) throw std::invalid_argument(err);
  if (p.mask.size[0] * p.fg.size[1] * p.mask.size[2] * p.mask.size[3] == 0) return;
  if (p.out_dtype == OutDtype::kUint8) {
    launch<std::uint8_t>(p, stream);
  } else {
    launch<float>(p, stream);
  }
}

}  // namespace pycgn
