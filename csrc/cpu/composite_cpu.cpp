// CPU path of the compositing kernel: OpenMP over rows (image, y), and along each row
// contiguous runs whose texture columns do not wrap, so the inner loop over x is a plain
// unit-stride loop the compiler vectorises. The row loop is compiled for SSE2, AVX2 and
// AVX-512 and picked at run time, so one binary is fast on every x86-64; on Intel CPUs it
// also prefetches the next row's inputs (on AMD EPYC the hints made it slower: below). uint8
// RGB output on AVX-512 takes one pass in intrinsics instead (blend_rgb_u8).
#include "pycgn/composite.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <string>
#include <type_traits>

#ifdef _OPENMP
#include <omp.h>
#endif

#if (defined(__GNUC__) || defined(__clang__)) && defined(__x86_64__)
#include <immintrin.h>
#endif

#if (defined(__GNUC__) || defined(__clang__)) && (defined(__x86_64__) || defined(__i386__))
#define PYCGN_X86_DISPATCH 1
#define PYCGN_ALWAYS_INLINE inline __attribute__((always_inline))
#else
#define PYCGN_ALWAYS_INLINE inline
#endif

namespace pycgn {

namespace {

// A message in this thread's buffer: composite_check's result stays valid until its next call.
const char* message(const std::string& s) {
  thread_local std::string buf;
  buf = s;
  return buf.c_str();
}

std::string shape(const Image4& t) {
  std::string s = "(";
  for (int d = 0; d < 4; ++d) s += std::to_string(t.size[d]) + (d < 3 ? ", " : ")");
  return s;
}

}  // namespace

const char* composite_check(const CompositeParams& p) {
  using std::to_string;
  const Image4* images[3] = {&p.mask, &p.fg, &p.bg};
  const char* names[3] = {"mask", "fg", "bg"};
  for (int i = 0; i < 3; ++i) {
    for (int d = 0; d < 4; ++d) {
      if (images[i]->size[d] < 0) return message(std::string(names[i]) + " sizes must be >= 0, got " + shape(*images[i]));
    }
  }
  const std::int64_t n = p.mask.size[0], c = p.fg.size[1];
  if (p.fg.size[0] != n) return message("fg has batch " + to_string(p.fg.size[0]) + " but mask has " + to_string(n));
  if (p.bg.size[0] != n) return message("bg has batch " + to_string(p.bg.size[0]) + " but mask has " + to_string(n));
  if (p.bg.size[1] != c)
    return message("bg has " + to_string(p.bg.size[1]) + " channels but fg has " + to_string(c));
  if (p.mask.size[1] != 1 && p.mask.size[1] != c)
    return message("mask must have 1 or " + to_string(c) + " (fg's) channels, got " + to_string(p.mask.size[1]));
  for (int i = 1; i < 3; ++i) {
    if (images[i]->size[2] < 1 || images[i]->size[3] < 1)
      return message(std::string(names[i]) + " must have height and width >= 1, got " + shape(*images[i]));
  }
  if (!(p.lo <= p.hi)) return message("clamp must have lo <= hi, got (" + to_string(p.lo) + ", " + to_string(p.hi) + ")");
  // Element counts without signed overflow (undefined behaviour): broadcast (stride-0) views can
  // have huge sizes over little memory.
  auto elements = [](const std::int64_t* size, std::int64_t* total) {
    *total = 1;
    for (int d = 0; d < 4; ++d)
      if (__builtin_mul_overflow(*total, size[d], total)) return false;
    return true;
  };
  std::int64_t total = 0;
  for (int i = 0; i < 3; ++i)
    if (!elements(images[i]->size, &total))
      return message(std::string(names[i]) + " has more elements than int64 can count: " + shape(*images[i]));
  const std::int64_t out_size[4] = {n, c, p.mask.size[2], p.mask.size[3]};
  if (!elements(out_size, &total)) return "the output would have more elements than int64 can count";
  const bool empty = total == 0;
  if (!empty && !p.out) return "out must not be null";
  if (!empty && (!p.mask.data || !p.fg.data || !p.bg.data)) return "mask, fg and bg must not be null";
  return nullptr;
}

namespace {

template <typename T>
PYCGN_ALWAYS_INLINE T offset_at(const Offsets& o, std::int64_t b, int k) {
  const std::int64_t i = b * o.stride[0] + k * o.stride[1];
  if (o.dtype == IndexDtype::kInt32) return static_cast<const std::int32_t*>(o.data)[i];
  return static_cast<const std::int64_t*>(o.data)[i];
}

PYCGN_ALWAYS_INLINE void shift(const Offsets& o, std::int64_t b, std::int64_t h, std::int64_t w,
                               std::int64_t* dy, std::int64_t* dx) {
  if (!o.data) {
    *dy = *dx = 0;
    return;
  }
  *dy = wrap(offset_at<std::int64_t>(o, b, 0), h);
  *dx = wrap(offset_at<std::int64_t>(o, b, 1), w);
}

constexpr std::int64_t kBlock = 256;  // pixels staged per chunk of a row
constexpr std::int64_t kMaxStaged = 4;  // channels staged; more go through the plain path

// A unit-stride run of `len` pixels of one channel, as float: vectorised.
PYCGN_ALWAYS_INLINE void blend_run(const float* __restrict m, const float* __restrict f,
                                   const float* __restrict g, float* __restrict o, std::int64_t len,
                                   float lo, float hi) {
  for (std::int64_t i = 0; i < len; ++i) o[i] = composite_pixel<float>(m[i], f[i], g[i], lo, hi);
}

// Staged float values buf[c][0, k) of one row chunk to the output: converted to T and, for
// NHWC, interleaved. One long loop per chunk, whatever the texture wrap points were.
template <typename T, int kC>
PYCGN_ALWAYS_INLINE void store_nhwc(const float (*buf)[kBlock], std::int64_t c_n, std::int64_t k,
                                    T* __restrict o) {
  if (kC > 0) {
    for (std::int64_t i = 0; i < k; ++i)
      for (int c = 0; c < kC; ++c) o[i * kC + c] = Store<T>::from(buf[c][i]);
  } else {
    for (std::int64_t i = 0; i < k; ++i)
      for (std::int64_t c = 0; c < c_n; ++c) o[i * c_n + c] = Store<T>::from(buf[c][i]);
  }
}

#if defined(PYCGN_X86_DISPATCH) && defined(__x86_64__)
#define PYCGN_RGB_AVX512 1
// uint8 NHWC with 3 channels on AVX-512, in one pass: 16 pixels of the three channels blended
// in registers (the mask read once when it is broadcast), converted and interleaved to RGB with
// byte shuffles, no staging buffer. composite_pixel and Store<uint8_t>::from in vector form: the
// same operations in the same order (maxps/minps with the operands of the scalar ternaries, so
// NaN behaves alike; no FMA), so the bytes equal the scalar path's. The compiler's own
// interleave of the staged scalar loop cost ~1.5 ms of 5 on the 64x3x256x256 case (AMD EPYC).
// Not inlined: rows_body is also compiled for the base target; one call per unit-stride run.
// Channel c of each input starts at its pointer plus c times its channel stride (mc = 0: a
// broadcast mask).
__attribute__((target("avx512f,avx512bw,avx512vl,avx2"))) void blend_rgb_u8(
    const float* m, std::int64_t mc, const float* f, std::int64_t fc, const float* g, std::int64_t gc,
    std::int64_t len, float lo, float hi, std::uint8_t* __restrict o) {
  // shuffle[c][j][t]: output byte 16 j + t is channel (16 j + t) % 3 of pixel (16 j + t) / 3, so
  // channel c's part-j shuffle takes that pixel's byte there and zeroes (0x80) the other bytes
  struct Table {
    alignas(16) std::uint8_t b[3][3][16];
  };
  static constexpr Table shuffle = [] {
    Table t{};
    for (int c = 0; c < 3; ++c)
      for (int j = 0; j < 3; ++j)
        for (int k = 0; k < 16; ++k) t.b[c][j][k] = (16 * j + k) % 3 == c ? (16 * j + k) / 3 : 0x80;
    return t;
  }();
  const __m512 vlo = _mm512_set1_ps(lo), vhi = _mm512_set1_ps(hi), one = _mm512_set1_ps(1.0f),
               scale = _mm512_set1_ps(127.5f), zero = _mm512_setzero_ps(), top = _mm512_set1_ps(255.0f),
               magic = _mm512_set1_ps(12582912.0f);
  for (std::int64_t i = 0; i < len; i += 16) {
    const std::int64_t rest = std::min<std::int64_t>(16, len - i);
    const __mmask16 lanes = static_cast<__mmask16>((1u << rest) - 1);  // loads past the run: masked
    __m128i v[3];
    __m512 mv = zero;
    for (int c = 0; c < 3; ++c) {
      if (c == 0 || mc != 0) {
        mv = _mm512_maskz_loadu_ps(lanes, m + c * mc + i);
        // composite_pixel's clamp: m = lo > m ? lo : m; m = hi < m ? hi : m (NaN stays NaN).
        // The masked forms with all lanes: the plain ones trip GCC 12's -Wmaybe-uninitialized.
        mv = _mm512_mask_min_ps(zero, 0xFFFF, vhi, _mm512_mask_max_ps(zero, 0xFFFF, vlo, mv));
      }
      const __m512 fv = _mm512_maskz_loadu_ps(lanes, f + c * fc + i),
                   gv = _mm512_maskz_loadu_ps(lanes, g + c * gc + i);
      const __m512 x = _mm512_add_ps(_mm512_mul_ps(mv, fv), _mm512_mul_ps(_mm512_sub_ps(one, mv), gv));
      // Store<uint8_t>::from: s = (x + 1) * 127.5; s = s > 0 ? s : 0; s = s < 255 ? s : 255
      __m512 s = _mm512_mul_ps(_mm512_add_ps(x, one), scale);
      s = _mm512_mask_min_ps(zero, 0xFFFF, _mm512_mask_max_ps(zero, 0xFFFF, s, zero), top);
      v[c] = _mm512_mask_cvtepi32_epi8(_mm_setzero_si128(), 0xFFFF, _mm512_castps_si512(_mm512_add_ps(s, magic)));
    }
    const std::int64_t bytes = 3 * rest;
    for (int j = 0; j < 3 && 16 * j < bytes; ++j) {
      __m128i part = _mm_shuffle_epi8(v[0], _mm_load_si128(reinterpret_cast<const __m128i*>(shuffle.b[0][j])));
      part = _mm_or_si128(part, _mm_shuffle_epi8(v[1], _mm_load_si128(reinterpret_cast<const __m128i*>(shuffle.b[1][j]))));
      part = _mm_or_si128(part, _mm_shuffle_epi8(v[2], _mm_load_si128(reinterpret_cast<const __m128i*>(shuffle.b[2][j]))));
      auto* dst = reinterpret_cast<__m128i*>(o + 3 * i + 16 * j);
      const std::int64_t n = std::min<std::int64_t>(16, bytes - 16 * j);
      if (n == 16) {
        _mm_storeu_si128(dst, part);
      } else {
        _mm_mask_storeu_epi8(dst, static_cast<__mmask16>((1u << n) - 1), part);
      }
    }
  }
}
#endif

template <typename T>
PYCGN_ALWAYS_INLINE void store_planar(const float* __restrict buf, std::int64_t k, T* __restrict o) {
  for (std::int64_t i = 0; i < k; ++i) o[i] = Store<T>::from(buf[i]);
}

enum class Isa { kBase, kAvx2, kAvx512 };

// Rows r0 <= r < r1 (r = b * H + y) of the output. kPrefetch: software prefetch of the next
// row's inputs (see pick()).
template <typename T, Isa kIsa, bool kPrefetch>
PYCGN_ALWAYS_INLINE void rows_body(const CompositeParams& p, std::int64_t r0, std::int64_t r1) {
  const Image4 &mk = p.mask, &fg = p.fg, &bg = p.bg;
  const std::int64_t c_n = fg.size[1], h = mk.size[2], w = mk.size[3];
  const std::int64_t hf = fg.size[2], wf = fg.size[3], hb = bg.size[2], wb = bg.size[3];
  const std::int64_t mc = mk.size[1] == 1 ? 0 : mk.stride[1];  // broadcast a 1-channel mask
  const bool staged = mk.stride[3] == 1 && fg.stride[3] == 1 && bg.stride[3] == 1 && c_n <= kMaxStaged;
  const bool nhwc = p.layout == Layout::kNHWC;
  // float NCHW needs no staging: the blend writes the output rows directly.
  const bool direct = !nhwc && std::is_same<T, float>::value;
  bool rgb_u8 = false;  // the one-pass uint8 RGB path (blend_rgb_u8)
#ifdef PYCGN_RGB_AVX512
  if constexpr (kIsa == Isa::kAvx512 && std::is_same<T, std::uint8_t>::value) rgb_u8 = nhwc && c_n == 3;
#endif
  // Rows that continue each other in every tensor (rows stored back to back, textures as wide as
  // the output and not shifted sideways) are blended as one run, for the paths without a staging
  // buffer. On AMD EPYC (`benchmarks/composite.py --cpu-variants`, both variants in one run) the
  // joined variant took 0.41-0.85x the per-row one's time, 0.41-0.45x on 1024x3x32x32 float32 NCHW,
  // where per-row work outweighed the blend. Not on Intel (kPrefetch): its per-row path prefetches
  // each next row, and was measured so; a joined run without the hints is untried there.
  const bool joinable = !kPrefetch && staged && (direct || rgb_u8) && wf == w && wb == w &&
                        mk.stride[2] == w && fg.stride[2] == w && bg.stride[2] == w;
  T* const out = static_cast<T*>(p.out);
  alignas(64) float buf[kMaxStaged][kBlock];
  std::int64_t b_prev = -1, fdy = 0, fdx = 0, bdy = 0, bdx = 0;
  for (std::int64_t r = r0, rows = 1; r < r1; r += rows) {
    const std::int64_t b = r / h, y = r - b * h;
    if (b != b_prev) {
      shift(p.fg_offset, b, hf, wf, &fdy, &fdx);
      shift(p.bg_offset, b, hb, wb, &bdy, &bdx);
      b_prev = b;
    }
    const std::int64_t fy = wrap(y + fdy, hf), gy = wrap(y + bdy, hb);
    const float* mrow = mk.data + b * mk.stride[0] + y * mk.stride[2];
    const float* frow = fg.data + b * fg.stride[0] + fy * fg.stride[2];
    const float* grow = bg.data + b * bg.stride[0] + gy * bg.stride[2];
    rows = 1;
    if (joinable && fdx == 0 && bdx == 0) {
      // up to the image's last row, the range's end and either texture's wrap to its top row
      rows = std::min(std::min(r1 - r, h - y), std::min(hf - fy, hb - gy));
      const std::int64_t len = rows * w;
      if (rgb_u8) {
#ifdef PYCGN_RGB_AVX512
        blend_rgb_u8(mrow, mc, frow, fg.stride[1], grow, bg.stride[1], len, p.lo, p.hi,
                     reinterpret_cast<std::uint8_t*>(out) + r * w * 3);
#endif
      } else {
        for (std::int64_t c = 0; c < c_n; ++c)
          blend_run(mrow + c * mc, frow + c * fg.stride[1], grow + c * bg.stride[1],
                    reinterpret_cast<float*>(out) + ((b * c_n + c) * h + y) * w, len, p.lo, p.hi);
      }
      continue;
    }
    if (!staged) {  // any strides, any channel count: one value at a time
      for (std::int64_t c = 0; c < c_n; ++c) {
        const float* m = mrow + c * mc;
        const float* f = frow + c * fg.stride[1];
        const float* g = grow + c * bg.stride[1];
        T* o = nhwc ? out + r * w * c_n + c : out + ((b * c_n + c) * h + y) * w;
        const std::int64_t os = nhwc ? c_n : 1;
        std::int64_t fx = fdx, gx = bdx;
        for (std::int64_t x = 0; x < w; ++x) {
          o[x * os] = composite_pixel<T>(m[x * mk.stride[3]], f[fx * fg.stride[3]], g[gx * bg.stride[3]], p.lo, p.hi);
          if (++fx == wf) fx = 0;
          if (++gx == wb) gx = 0;
        }
      }
      continue;
    }
#if defined(__GNUC__)
    if (kPrefetch && r + 1 < r1 && (y + 1 < h)) {  // the next row's inputs, whose texture runs start mid-row
      const std::int64_t bytes = w * static_cast<std::int64_t>(sizeof(float));
      for (std::int64_t c = 0; c < c_n; ++c) {
        const char* rows[3] = {reinterpret_cast<const char*>(mrow + mk.stride[2] + c * mc),
                               reinterpret_cast<const char*>(fg.data + b * fg.stride[0] + wrap(y + 1 + fdy, hf) * fg.stride[2] + c * fg.stride[1]),
                               reinterpret_cast<const char*>(bg.data + b * bg.stride[0] + wrap(y + 1 + bdy, hb) * bg.stride[2] + c * bg.stride[1])};
        for (const char* q : rows)
          for (std::int64_t i = 0; i < std::min(bytes, std::int64_t(4096)); i += 64) __builtin_prefetch(q + i);
      }
    }
#endif
#ifdef PYCGN_RGB_AVX512
    if constexpr (kIsa == Isa::kAvx512 && std::is_same<T, std::uint8_t>::value) {
      if (rgb_u8) {  // one pass, no staging
        std::int64_t x = 0, fx = wrap(fdx, wf), gx = wrap(bdx, wb);
        while (x < w) {
          const std::int64_t len = std::min(w - x, std::min(wf - fx, wb - gx));
          blend_rgb_u8(mrow + x, mc, frow + fx, fg.stride[1], grow + gx, bg.stride[1], len, p.lo, p.hi,
                       reinterpret_cast<std::uint8_t*>(out) + (r * w + x) * 3);
          x += len;
          fx += len;
          gx += len;
          if (fx == wf) fx = 0;
          if (gx == wb) gx = 0;
        }
        continue;
      }
    }
#endif
    for (std::int64_t xs = 0; xs < w; xs += kBlock) {
      const std::int64_t k = std::min(kBlock, w - xs);
      // Blend the chunk in unit-stride runs split where either texture's column wraps around.
      std::int64_t x = xs, fx = wrap(xs + fdx, wf), gx = wrap(xs + bdx, wb);
      while (x < xs + k) {
        const std::int64_t len = std::min(xs + k - x, std::min(wf - fx, wb - gx));
        for (std::int64_t c = 0; c < c_n; ++c) {
          float* dst = direct ? reinterpret_cast<float*>(out) + ((b * c_n + c) * h + y) * w + x : buf[c] + (x - xs);
          blend_run(mrow + c * mc + x, frow + c * fg.stride[1] + fx, grow + c * bg.stride[1] + gx, dst, len,
                    p.lo, p.hi);
        }
        x += len;
        fx += len;
        gx += len;
        if (fx == wf) fx = 0;
        if (gx == wb) gx = 0;
      }
      if (direct) continue;
      if (nhwc) {
        T* o = out + (r * w + xs) * c_n;
        if (c_n == 3) {
          store_nhwc<T, 3>(buf, c_n, k, o);
        } else {
          store_nhwc<T, 0>(buf, c_n, k, o);
        }
      } else {
        for (std::int64_t c = 0; c < c_n; ++c) store_planar<T>(buf[c], k, out + ((b * c_n + c) * h + y) * w + xs);
      }
    }
  }
}

using RowsFn = void (*)(const CompositeParams&, std::int64_t, std::int64_t);

template <typename T, bool kPrefetch>
void rows_default(const CompositeParams& p, std::int64_t r0, std::int64_t r1) {
  rows_body<T, Isa::kBase, kPrefetch>(p, r0, r1);
}

#ifdef PYCGN_X86_DISPATCH
// No "fma" here on purpose: the blend must not be contracted (bits equal eager PyTorch).
template <typename T, bool kPrefetch>
__attribute__((target("avx2"))) void rows_avx2(const CompositeParams& p, std::int64_t r0,
                                                std::int64_t r1) {
  rows_body<T, Isa::kAvx2, kPrefetch>(p, r0, r1);
}
template <typename T, bool kPrefetch>
__attribute__((target("avx512f,avx512bw,avx512vl,avx2"))) void rows_avx512(
    const CompositeParams& p, std::int64_t r0, std::int64_t r1) {
  rows_body<T, Isa::kAvx512, kPrefetch>(p, r0, r1);
}
#endif

// The prefetch of the next row's inputs stays where it was measured (Intel Xeon, Sapphire Rapids:
// the plain blend at 101 % of a same-bytes copy, benchmarks/results/composite.md). On a 2-core AMD
// EPYC (Zen 4) the hints, 3 rows per channel on top of the hardware prefetcher, made the kernel
// 1.3-1.4x slower in both the plain blend and the shuffle (benchmarks/results/composite-amd.md).
template <typename T, bool kPrefetch>
RowsFn pick_isa() {
#ifdef PYCGN_X86_DISPATCH
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512vl"))
    return rows_avx512<T, kPrefetch>;
  if (__builtin_cpu_supports("avx2")) return rows_avx2<T, kPrefetch>;
#endif
  return rows_default<T, kPrefetch>;
}

// PYCGN_CPU_PREFETCH=1 or 0 takes the Intel or the other variant on any CPU: for tests, which
// check both on whatever machine runs them, and for side-by-side measurements.
template <typename T>
RowsFn pick() {
  const char* force = std::getenv("PYCGN_CPU_PREFETCH");
  if (force && std::strcmp(force, "1") == 0) return pick_isa<T, true>();
  if (force && std::strcmp(force, "0") == 0) return pick_isa<T, false>();
#ifdef PYCGN_X86_DISPATCH
  __builtin_cpu_init();
  if (!__builtin_cpu_is("intel")) return pick_isa<T, false>();
#endif
  return pick_isa<T, true>();
}

}  // namespace

std::int64_t composite_cpu_row_count(const CompositeParams& p) {
  if (p.mask.size[3] == 0 || p.fg.size[1] == 0) return 0;
  return p.mask.size[0] * p.mask.size[2];
}

std::int64_t composite_cpu_grain(const CompositeParams& p) {
  // About 64 KiB of output per task: small batches stay on the calling thread.
  const std::int64_t row_bytes = p.mask.size[3] * p.fg.size[1] * 16;
  return std::max<std::int64_t>(1, (64 << 10) / std::max<std::int64_t>(row_bytes, 1));
}

namespace {
RowsFn rows_fn(const CompositeParams& p) {
  static const RowsFn fns[2] = {pick<float>(), pick<std::uint8_t>()};
  return fns[p.out_dtype == OutDtype::kUint8 ? 1 : 0];
}
}  // namespace

void composite_cpu_rows(const CompositeParams& p, std::int64_t r0, std::int64_t r1) noexcept {
  if (r0 < r1) rows_fn(p)(p, r0, r1);
}

void composite_cpu(const CompositeParams& p) {
  if (const char* err = composite_check(p)) throw std::invalid_argument(err);
  const std::int64_t rows = composite_cpu_row_count(p);
  if (rows == 0) return;
  const RowsFn fn = rows_fn(p);
  const std::int64_t grain = composite_cpu_grain(p);
#ifdef _OPENMP
  int threads = p.num_threads > 0 ? p.num_threads : omp_get_max_threads();
  threads = static_cast<int>(std::min<std::int64_t>(threads, (rows + grain - 1) / grain));
  if (threads > 1) {
#pragma omp parallel num_threads(threads)
    {
      const std::int64_t t = omp_get_thread_num(), nt = omp_get_num_threads();
      const std::int64_t r0 = rows * t / nt, r1 = rows * (t + 1) / nt;
      fn(p, r0, r1);
    }
    return;
  }
#endif
  fn(p, 0, rows);
}

}  // namespace pycgn
