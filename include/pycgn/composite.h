// The CGN compositing kernel, free of torch types: C++ users include this header and link
// pycgn::composite (CMake) or call it through the torch operator pycgn::composite.
//
// Per image b, channel c, pixel (y, x) of the output:
//
//   m   = clamp(mask[b, 0 or c, y, x], lo, hi)       (a NaN mask stays NaN, as in torch.clamp)
//   f   = fg[b, c, (y + fg_offset[b, 0]) mod Hf, (x + fg_offset[b, 1]) mod Wf]
//   g   = bg[b, c, (y + bg_offset[b, 0]) mod Hb, (x + bg_offset[b, 1]) mod Wb]
//   v   = m * f + (1 - m) * g
//   out = v (float32) or round_half_even(clamp((v + 1) * 127.5, 0, 255)) (uint8; NaN -> 0),
//         NCHW or NHWC
//
// Inputs are float32 with arbitrary element strides (the torch layer converts float16 and
// bfloat16 to float32 first). Offsets are int32 or int64 of any value, reduced modulo the
// texture size, so no value reads out of bounds; a null offsets pointer means zero. The
// output is dense in its layout. The arithmetic is written so CPU and CUDA give the same
// bits as the plain-PyTorch reference (no fused multiply-add in the blend).
#pragma once

#include <cstdint>
#include <cstring>

#include "pycgn/export.h"

#if defined(__CUDACC__)
#define PYCGN_HD __host__ __device__ __forceinline__
#else
#define PYCGN_HD inline
#endif

// cudaStream_t without the CUDA headers; the same typedef as driver_types.h, so both may meet.
struct CUstream_st;
typedef struct CUstream_st* cudaStream_t;

namespace pycgn {

enum class OutDtype : std::int32_t { kFloat32 = 0, kUint8 = 1 };
enum class Layout : std::int32_t { kNCHW = 0, kNHWC = 1 };
enum class IndexDtype : std::int32_t { kInt32 = 0, kInt64 = 1 };

// A float32 image batch: data[b*stride[0] + c*stride[1] + y*stride[2] + x*stride[3]].
struct Image4 {
  const float* data = nullptr;
  std::int64_t size[4] = {0, 0, 0, 0};    // N, C, H, W
  std::int64_t stride[4] = {0, 0, 0, 0};  // in elements
};

// Per-image (dy, dx) shifts: data[b*stride[0] + k*stride[1]], k = 0 (y) or 1 (x).
struct Offsets {
  const void* data = nullptr;  // null: all zero
  IndexDtype dtype = IndexDtype::kInt64;
  std::int64_t stride[2] = {2, 1};
};

struct CompositeParams {
  Image4 mask;  // (N, 1 or C, H, W): its H, W are the output's
  Image4 fg;    // (N, C, Hf, Wf)
  Image4 bg;    // (N, C, Hb, Wb)
  Offsets fg_offset;
  Offsets bg_offset;
  void* out = nullptr;  // dense (N, C, H, W) or (N, H, W, C)
  OutDtype out_dtype = OutDtype::kFloat32;
  Layout layout = Layout::kNCHW;
  float lo = 1e-4f;
  float hi = 0.9999f;
  int num_threads = 0;  // CPU: OpenMP threads, 0 = OpenMP's default
};

// Returns null when p is valid, else a message naming the bad argument and its value(s).
// The one check of sizes, channels and clamp: the torch operator relies on it too. The
// message lives in a thread-local buffer until this thread's next call.
PYCGN_API const char* composite_check(const CompositeParams& p);

// Throw std::invalid_argument when composite_check fails. Threads: OpenMP, p.num_threads.
PYCGN_API void composite_cpu(const CompositeParams& p);

// The CPU path split for a caller's own thread pool (the torch operator drives it with
// at::parallel_for, so it shares torch's threads instead of starting OpenMP's beside them):
// rows are (image, y) pairs, composite_cpu_grain(p) rows make a worthwhile task, and
// composite_cpu_rows(p, r0, r1) writes rows [r0, r1) on the calling thread. p must have passed
// composite_check (composite_cpu_rows does not check again and never throws).
PYCGN_API std::int64_t composite_cpu_row_count(const CompositeParams& p);
PYCGN_API std::int64_t composite_cpu_grain(const CompositeParams& p);
PYCGN_API void composite_cpu_rows(const CompositeParams& p, std::int64_t r0, std::int64_t r1) noexcept;
// Launches on `stream` and returns without synchronising; all pointers are device pointers.
// Defined only when the library is built with CUDA (CMake: pycgn_WITH_CUDA).
PYCGN_API void composite_cuda(const CompositeParams& p, cudaStream_t stream);

// ---- the per-pixel arithmetic, shared by the CPU loops and the CUDA kernel ----

// Offset reduced into [0, size): any int64 value, including negative and INT64_MIN.
PYCGN_HD std::int64_t wrap(std::int64_t v, std::int64_t size) {
  if (static_cast<std::uint64_t>(v) < static_cast<std::uint64_t>(size)) return v;  // common case
  std::int64_t r = v % size;
  return r < 0 ? r + size : r;
}

// Multiply and add without contraction into an FMA: the same bits as eager PyTorch.
PYCGN_HD float mul_rn(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fmul_rn(a, b);
#else
  return a * b;
#endif
}
PYCGN_HD float add_rn(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fadd_rn(a, b);
#else
  return a + b;
#endif
}

template <typename T> struct Store;
template <> struct Store<float> {
  PYCGN_HD static float from(float v) { return v; }
};
template <> struct Store<std::uint8_t> {
  // round-half-even(clamp((v + 1) * 127.5, 0, 255)); adding 1.5 * 2^23 rounds to an integer
  // in the default rounding mode, and vectorises where nearbyint does not (SSE2). NaN -> 0.
  PYCGN_HD static std::uint8_t from(float v) {
    float s = mul_rn(add_rn(v, 1.0f), 127.5f);
    s = s > 0.0f ? s : 0.0f;
    s = s < 255.0f ? s : 255.0f;
#if defined(__CUDA_ARCH__)
    return static_cast<std::uint8_t>(__float2uint_rn(s));
#else
    // s + 1.5 * 2^23 holds round(s) in its low mantissa bits: the low byte is the result.
    const float r = add_rn(s, 12582912.0f);
    std::uint32_t bits;
    std::memcpy(&bits, &r, sizeof bits);
    return static_cast<std::uint8_t>(bits);
#endif
  }
};

// One output value from its mask, foreground and background values. The CPU path's AVX-512 uint8
// RGB loop (blend_rgb_u8 in csrc/cpu/composite_cpu.cpp) is this function and Store<uint8_t> in
// vector form: change both together (every path is tested against pycgn.reference bit for bit).
template <typename T>
PYCGN_HD T composite_pixel(float m, float f, float g, float lo, float hi) {
  // torch.clamp's semantics, NaN included (it propagates), so the kernel and
  // pycgn.reference agree on every input. Written as x86's maxps(lo, m) and minps(hi, m),
  // which return m when it is NaN: the loops still vectorise.
  m = lo > m ? lo : m;
  m = hi < m ? hi : m;
  const float v = add_rn(mul_rn(m, f), mul_rn(add_rn(1.0f, -m), g));
  return Store<T>::from(v);
}

}  // namespace pycgn
