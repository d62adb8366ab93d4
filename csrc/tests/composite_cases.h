// Random test cases for the compositing core and the plain scalar loop they are checked
// against: shared by the CPU test and the CUDA test.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "pycgn/composite.h"

namespace pycgn_test {

using pycgn::CompositeParams;

// A strided float32 buffer: a 4-d view into storage with gaps and a permuted memory order.
struct Strided {
  std::vector<float> storage;
  std::int64_t size[4];
  std::int64_t stride[4];
  std::int64_t base = 0;  // element offset of [0,0,0,0] into storage
  float at(std::int64_t b, std::int64_t c, std::int64_t y, std::int64_t x) const {
    return storage[base + b * stride[0] + c * stride[1] + y * stride[2] + x * stride[3]];
  }
};

inline Strided make_strided(std::mt19937_64& rng, std::int64_t n, std::int64_t c, std::int64_t h, std::int64_t w,
                            float lo, float hi, bool dense) {
  Strided t;
  const std::int64_t sz[4] = {n, c, h, w};
  int order[4] = {0, 1, 2, 3};  // outermost to innermost in memory
  std::int64_t step[4] = {1, 1, 1, 1};
  if (!dense) {
    std::shuffle(order, order + 4, rng);
    for (auto& s : step) s = 1 + static_cast<std::int64_t>(rng() % 2);
  }
  std::int64_t span = 1 + static_cast<std::int64_t>(dense ? 0 : rng() % 3);  // leading gap
  t.base = span - 1;
  std::int64_t stride = 1;
  for (int k = 3; k >= 0; --k) {
    const int d = order[k];
    t.size[d] = sz[d];
    t.stride[d] = stride * step[d];
    stride = t.stride[d] * std::max<std::int64_t>(sz[d], 1);
  }
  t.storage.resize(static_cast<std::size_t>(t.base + stride + 1));
  std::uniform_real_distribution<float> u(lo, hi);
  for (auto& v : t.storage) v = u(rng);
  return t;
}

struct Case {
  std::string name;
  Strided mask, fg, bg;
  std::vector<std::int64_t> off64[2];
  std::vector<std::int32_t> off32[2];
  pycgn::IndexDtype off_dtype[2];
  bool has_off[2];
  pycgn::OutDtype out_dtype;
  pycgn::Layout layout;
  float lo = 1e-4f, hi = 0.9999f;

  std::int64_t n() const { return mask.size[0]; }
  std::int64_t c() const { return fg.size[1]; }
  std::int64_t out_elems() const { return n() * c() * mask.size[2] * mask.size[3]; }
  std::int64_t out_bytes() const { return out_elems() * (out_dtype == pycgn::OutDtype::kUint8 ? 1 : 4); }

  // Params with the given base pointers (host or device copies of the storages).
  CompositeParams params(const float* m, const float* f, const float* g, const void* o0, const void* o1,
                         void* out) const {
    CompositeParams p;
    const Strided* src[3] = {&mask, &fg, &bg};
    const float* ptr[3] = {m, f, g};
    pycgn::Image4* dst[3] = {&p.mask, &p.fg, &p.bg};
    for (int i = 0; i < 3; ++i) {
      dst[i]->data = ptr[i] + src[i]->base;
      for (int d = 0; d < 4; ++d) {
        dst[i]->size[d] = src[i]->size[d];
        dst[i]->stride[d] = src[i]->stride[d];
      }
    }
    const void* op[2] = {o0, o1};
    pycgn::Offsets* od[2] = {&p.fg_offset, &p.bg_offset};
    for (int k = 0; k < 2; ++k) {
      od[k]->data = has_off[k] ? op[k] : nullptr;
      od[k]->dtype = off_dtype[k];
    }
    p.out = out;
    p.out_dtype = out_dtype;
    p.layout = layout;
    p.lo = lo;
    p.hi = hi;
    return p;
  }
  const void* host_offsets(int k) const {
    return off_dtype[k] == pycgn::IndexDtype::kInt32 ? static_cast<const void*>(off32[k].data())
                                                     : static_cast<const void*>(off64[k].data());
  }
  std::size_t offset_bytes(int k) const {
    return off_dtype[k] == pycgn::IndexDtype::kInt32 ? off32[k].size() * 4 : off64[k].size() * 8;
  }
};

inline std::int64_t mod(std::int64_t v, std::int64_t m) {
  std::int64_t r = v % m;
  return r < 0 ? r + m : r;
}

// The scalar loop: written from the formula, independent of the core's code.
inline std::vector<std::uint8_t> expected(const Case& k) {
  const std::int64_t n = k.n(), c = k.c(), h = k.mask.size[2], w = k.mask.size[3];
  std::vector<std::uint8_t> out(static_cast<std::size_t>(k.out_bytes()));
  for (std::int64_t b = 0; b < n; ++b) {
    std::int64_t off[2][2] = {{0, 0}, {0, 0}};
    for (int t = 0; t < 2; ++t)
      for (int a = 0; a < 2; ++a)
        if (k.has_off[t])
          off[t][a] = k.off_dtype[t] == pycgn::IndexDtype::kInt32 ? k.off32[t][b * 2 + a] : k.off64[t][b * 2 + a];
    for (std::int64_t ch = 0; ch < c; ++ch)
      for (std::int64_t y = 0; y < h; ++y)
        for (std::int64_t x = 0; x < w; ++x) {
          float m = k.mask.at(b, k.mask.size[1] == 1 ? 0 : ch, y, x);
          m = std::min(std::max(m, k.lo), k.hi);
          const float f = k.fg.at(b, ch, (mod(off[0][0], k.fg.size[2]) + y) % k.fg.size[2],
                                  (mod(off[0][1], k.fg.size[3]) + x) % k.fg.size[3]);
          const float g = k.bg.at(b, ch, (mod(off[1][0], k.bg.size[2]) + y) % k.bg.size[2],
                                  (mod(off[1][1], k.bg.size[3]) + x) % k.bg.size[3]);
          const float mf = m * f;
          const float one_m = 1.0f - m;
          const float mg = one_m * g;
          const float v = mf + mg;
          const std::int64_t i = k.layout == pycgn::Layout::kNCHW ? ((b * c + ch) * h + y) * w + x
                                                                  : ((b * h + y) * w + x) * c + ch;
          if (k.out_dtype == pycgn::OutDtype::kFloat32) {
            std::memcpy(out.data() + i * 4, &v, 4);
          } else {  // NaN -> 0 (the documented conversion; a plain cast of NaN is undefined)
            const float s = (v + 1.0f) * 127.5f;
            out[i] = std::isnan(s) ? 0 : static_cast<std::uint8_t>(std::nearbyint(std::min(std::max(s, 0.0f), 255.0f)));
          }
        }
  }
  return out;
}

// Many shapes: 1x1, odd sizes, 32x32, 256x256, batch 0, textures of other sizes than the
// mask, 1- and C-channel masks, strided views, int32/int64 offsets with extreme values.
inline std::vector<Case> make_cases(std::uint64_t seed, int random_cases) {
  std::mt19937_64 rng(seed);
  struct Shape { std::int64_t n, mc, c, h, w, hf, wf, hb, wb; };
  std::vector<Shape> shapes = {
      {1, 1, 3, 1, 1, 1, 1, 1, 1},     {2, 1, 3, 7, 5, 7, 5, 7, 5},       {3, 3, 3, 13, 17, 5, 23, 40, 3},
      {2, 1, 1, 9, 11, 4, 3, 9, 11},   {2, 4, 4, 6, 33, 7, 34, 1, 1},     {5, 1, 3, 32, 32, 32, 32, 32, 32},
      {0, 1, 3, 32, 32, 32, 32, 32, 32}, {1, 1, 3, 256, 256, 256, 256, 256, 256}, {64, 1, 3, 32, 32, 32, 32, 32, 32},
      {2, 1, 3, 8, 100, 8, 3, 5, 101},
      // widths in multiples of 4 (the CUDA kernel's float4 texture loads), textures narrower and wider
      {3, 1, 3, 12, 32, 9, 8, 12, 40},  {2, 3, 3, 5, 16, 5, 16, 7, 20},
  };
  for (int i = 0; i < random_cases; ++i) {
    auto r = [&](std::int64_t lo, std::int64_t hi) { return lo + static_cast<std::int64_t>(rng() % (hi - lo + 1)); };
    const std::int64_t c = r(1, 4);
    shapes.push_back({r(0, 4), r(0, 1) ? c : 1, c, r(1, 19), r(1, 70), r(1, 24), r(1, 80), r(1, 24), r(1, 80)});
  }
  std::vector<Case> cases;
  int idx = 0;
  for (const Shape& s : shapes) {
    for (int variant = 0; variant < 4; ++variant, ++idx) {
      Case k;
      const bool dense = variant < 2;
      k.mask = make_strided(rng, s.n, s.mc, s.h, s.w, -0.1f, 1.1f, dense);
      k.fg = make_strided(rng, s.n, s.c, s.hf, s.wf, -1.1f, 1.1f, dense);
      k.bg = make_strided(rng, s.n, s.c, s.hb, s.wb, -1.1f, 1.1f, dense);
      k.out_dtype = variant % 2 ? pycgn::OutDtype::kUint8 : pycgn::OutDtype::kFloat32;
      k.layout = (variant / 2 + idx) % 2 ? pycgn::Layout::kNHWC : pycgn::Layout::kNCHW;
      if (idx % 5 == 0) k.lo = 0.25f, k.hi = 0.75f;
      if (idx % 7 == 3) {  // non-finite values: a NaN mask propagates (torch.clamp), inf saturates uint8
        const float special[4] = {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity(),
                                  -std::numeric_limits<float>::infinity(), 3e38f};
        Strided* ts[3] = {&k.mask, &k.fg, &k.bg};
        for (int j = 0; j < 6; ++j) {
          Strided* t = ts[j % 3];
          t->storage[rng() % t->storage.size()] = special[j % 4];
        }
      }
      for (int t = 0; t < 2; ++t) {
        k.has_off[t] = (idx + t) % 4 != 0;
        k.off_dtype[t] = (idx + t) % 3 == 0 ? pycgn::IndexDtype::kInt32 : pycgn::IndexDtype::kInt64;
        for (std::int64_t j = 0; j < 2 * s.n; ++j) {
          std::int64_t v;
          switch (rng() % 4) {
            case 0: v = static_cast<std::int64_t>(rng() % 300) - 150; break;
            case 1: v = std::numeric_limits<std::int64_t>::min() + static_cast<std::int64_t>(rng() % 5); break;
            case 2: v = std::numeric_limits<std::int64_t>::max() - static_cast<std::int64_t>(rng() % 5); break;
            default: v = static_cast<std::int64_t>(rng()); break;
          }
          std::int32_t v32 = static_cast<std::int32_t>(v);
          if (s.wf == s.w && s.wb == s.w && variant % 2 == 0 && j % 2 == 1) {
            // a sideways shift of whole widths: the CPU core joins such an image's rows into one run
            v -= v % s.w;
            v32 -= static_cast<std::int32_t>(v32 % s.w);
          } else if (j % 4 == 1) {
            // every other image's sideways shift a multiple of 4: the CUDA kernel reads such a
            // texture's columns 4 at a time (vec4.h), the others' one at a time, in one call
            v -= v % 4;
            v32 -= v32 % 4;
          }
          k.off64[t].push_back(v);
          k.off32[t].push_back(v32);
        }
      }
      char name[200];
      std::snprintf(name, sizeof name, "n%lld mc%lld c%lld %lldx%lld fg%lldx%lld bg%lldx%lld %s %s %s",
                    (long long)s.n, (long long)s.mc, (long long)s.c, (long long)s.h, (long long)s.w,
                    (long long)s.hf, (long long)s.wf, (long long)s.hb, (long long)s.wb, dense ? "dense" : "strided",
                    k.out_dtype == pycgn::OutDtype::kUint8 ? "uint8" : "float32",
                    k.layout == pycgn::Layout::kNHWC ? "NHWC" : "NCHW");
      k.name = name;
      cases.push_back(std::move(k));
    }
  }
  return cases;
}

// Number of differing bytes-per-element units; prints the first few.
inline int compare(const Case& k, const std::vector<std::uint8_t>& got, const std::vector<std::uint8_t>& exp) {
  const std::size_t es = k.out_dtype == pycgn::OutDtype::kUint8 ? 1 : 4;
  int bad = 0;
  for (std::size_t i = 0; i < exp.size(); i += es) {
    if (es == 4) {  // NaN matches NaN whatever its payload (CUDA returns the canonical one)
      float a, b;
      std::memcpy(&a, got.data() + i, 4);
      std::memcpy(&b, exp.data() + i, 4);
      if (std::isnan(a) && std::isnan(b)) continue;
    }
    if (std::memcmp(got.data() + i, exp.data() + i, es) != 0) {
      if (bad++ < 3) std::fprintf(stderr, "  %s: element %zu differs\n", k.name.c_str(), i / es);
    }
  }
  return bad;
}

}  // namespace pycgn_test
