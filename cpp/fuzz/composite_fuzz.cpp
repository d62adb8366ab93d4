// Fuzz target: the torch-free compositing core (include/pycgn/composite.h,
// csrc/cpu/composite_cpu.cpp) and the CUDA kernel's code run on the host (csrc/tests/cuda_on_host.h)
// on random shapes, strides (permuted, padded, broadcast), offsets (any int32/int64 value, any
// layout, or none), clamps, output types and layouts.
//
// Every buffer is allocated to exactly the extent its sizes and strides reach, so ASan reports
// any read or write outside. When composite_check accepts the parameters, composite_cpu and the
// CUDA kernel must produce the same bits as the scalar reference below (written from the header's
// contract), the kernel without a vector access the GPU would refuse; when it refuses them,
// composite_cpu must throw std::invalid_argument. Sizes are mostly consistent and sometimes
// arbitrary, to reach the refusals too.
#include "../../csrc/tests/cuda_on_host.h"  // first: the CUDA names the kernel uses

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <initializer_list>
#include <limits>
#include <stdexcept>
#include <vector>

#include "fuzz_input.h"
#include "pycgn/composite.h"

namespace {

using pycgn_fuzz::Input;

[[noreturn]] void bug(const char* what, std::int64_t b, std::int64_t c, std::int64_t y, std::int64_t x) {
  std::fprintf(stderr, "composite_fuzz: %s at b=%lld c=%lld y=%lld x=%lld\n", what, static_cast<long long>(b),
               static_cast<long long>(c), static_cast<long long>(y), static_cast<long long>(x));
  std::abort();
}

struct Batch {
  std::vector<float> data;
  pycgn::Image4 img;
};

// Pixel values from a generator seeded by the input: inputs stay short, images do not (and
// all-zero images would hide indexing bugs).
struct Values {
  std::uint64_t state;
  std::uint64_t next() {  // SplitMix64
    std::uint64_t z = (state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  float value(bool raw) {
    const auto b = static_cast<std::uint32_t>(next());
    if (!raw || (b >> 28) != 0) return static_cast<float>(static_cast<std::int32_t>(b % 601) - 300) / 128.0f;
    float f;  // one value in 16 of a raw batch: any bits (NaN, infinities, denormals, huge)
    const std::uint32_t bits = static_cast<std::uint32_t>(next());
    std::memcpy(&f, &bits, sizeof f);
    return f;
  }
};

// A float32 batch of these sizes in a random memory layout: contiguous NCHW, channels last,
// or any order of the dimensions, with padding between rows/planes and broadcast dimensions.
Batch make_batch(Input& in, Values& values, const std::int64_t (&size)[4]) {
  Batch t;
  int order[4] = {0, 1, 2, 3};  // outermost to innermost
  switch (in.range(0, 3)) {
    case 0: case 1: break;
    case 2: order[1] = 2; order[2] = 3; order[3] = 1; break;  // NHWC memory
    default: for (int i = 3; i > 0; --i) std::swap(order[i], order[in.range(0, i)]);
  }
  std::int64_t step = 1;
  for (int k = 3; k >= 0; --k) {
    const int d = order[k];
    t.img.size[d] = size[d];
    if (in.range(0, 15) == 0) {
      t.img.stride[d] = 0;  // broadcast (an expanded tensor)
    } else {
      t.img.stride[d] = step;
      step *= std::max<std::int64_t>(size[d], 1) + in.range(0, 2);  // padded rows/planes
    }
  }
  std::int64_t extent = 1;
  for (int d = 0; d < 4; ++d) {
    if (size[d] == 0) extent = 0;
  }
  if (extent) {
    for (int d = 0; d < 4; ++d) extent += (size[d] - 1) * t.img.stride[d];
  }
  t.data.resize(static_cast<std::size_t>(extent));
  const bool raw = in.range(0, 3) == 0;
  for (auto& v : t.data) v = values.value(raw);
  t.img.data = t.data.empty() ? nullptr : t.data.data();
  return t;
}

struct Shifts {
  std::vector<std::int64_t> i64;
  std::vector<std::int32_t> i32;
  pycgn::Offsets off;
};

std::int64_t offset_value(Input& in) {
  switch (in.range(0, 5)) {
    case 0: return std::numeric_limits<std::int64_t>::min();
    case 1: return std::numeric_limits<std::int64_t>::max();
    case 2: return in.raw_int64();
    default: return in.range(-70, 70);
  }
}

Shifts make_shifts(Input& in, std::int64_t n) {
  Shifts s;
  if (in.range(0, 4) == 0) return s;  // null: no shift
  s.off.dtype = in.flag() ? pycgn::IndexDtype::kInt32 : pycgn::IndexDtype::kInt64;
  switch (in.range(0, 3)) {
    case 0: s.off.stride[0] = 2; s.off.stride[1] = 1; break;                           // (N, 2)
    case 1: s.off.stride[0] = 1; s.off.stride[1] = std::max<std::int64_t>(n, 1); break;  // transposed
    case 2: s.off.stride[0] = 0; s.off.stride[1] = 1; break;                           // one for all
    default: s.off.stride[0] = 3; s.off.stride[1] = 1; break;                          // padded
  }
  const std::int64_t count = n == 0 ? 0 : (n - 1) * s.off.stride[0] + s.off.stride[1] + 1;
  for (std::int64_t i = 0; i < count; ++i) {
    const std::int64_t v = offset_value(in);
    if (s.off.dtype == pycgn::IndexDtype::kInt32) s.i32.push_back(static_cast<std::int32_t>(v));
    else s.i64.push_back(v);
  }
  const void* data = s.off.dtype == pycgn::IndexDtype::kInt32 ? static_cast<const void*>(s.i32.data())
                                                             : static_cast<const void*>(s.i64.data());
  // An empty batch has no offsets to read; a null pointer would mean "no shift", also fine.
  s.off.data = count ? data : nullptr;
  return s;
}

std::int64_t shift_of(const pycgn::Offsets& o, std::int64_t b, int k, std::int64_t size) {
  if (!o.data) return 0;
  const std::int64_t i = b * o.stride[0] + k * o.stride[1];
  const std::int64_t v = o.dtype == pycgn::IndexDtype::kInt32 ? static_cast<const std::int32_t*>(o.data)[i]
                                                            : static_cast<const std::int64_t*>(o.data)[i];
  const std::int64_t r = v % size;
  return r < 0 ? r + size : r;
}

float at(const pycgn::Image4& t, std::int64_t b, std::int64_t c, std::int64_t y, std::int64_t x) {
  return t.data[b * t.stride[0] + c * t.stride[1] + y * t.stride[2] + x * t.stride[3]];
}

bool same(float a, float b) {
  std::uint32_t x, y;
  std::memcpy(&x, &a, 4);
  std::memcpy(&y, &b, 4);
  return x == y || (std::isnan(a) && std::isnan(b));
}
bool same(std::uint8_t a, std::uint8_t b) { return a == b; }

template <typename T>
void check(const pycgn::CompositeParams& p, const std::vector<T>& out, const char* differs) {
  const std::int64_t n = p.mask.size[0], c_n = p.fg.size[1], h = p.mask.size[2], w = p.mask.size[3];
  const std::int64_t hf = p.fg.size[2], wf = p.fg.size[3], hb = p.bg.size[2], wb = p.bg.size[3];
  for (std::int64_t b = 0; b < n; ++b) {
    const std::int64_t fdy = shift_of(p.fg_offset, b, 0, hf), fdx = shift_of(p.fg_offset, b, 1, wf);
    const std::int64_t bdy = shift_of(p.bg_offset, b, 0, hb), bdx = shift_of(p.bg_offset, b, 1, wb);
    for (std::int64_t c = 0; c < c_n; ++c) {
      for (std::int64_t y = 0; y < h; ++y) {
        for (std::int64_t x = 0; x < w; ++x) {
          const float m = at(p.mask, b, p.mask.size[1] == 1 ? 0 : c, y, x);
          const float f = at(p.fg, b, c, (y + fdy) % hf, (x + fdx) % wf);
          const float g = at(p.bg, b, c, (y + bdy) % hb, (x + bdx) % wb);
          const T want = pycgn::composite_pixel<T>(m, f, g, p.lo, p.hi);
          const std::int64_t i = p.layout == pycgn::Layout::kNCHW ? ((b * c_n + c) * h + y) * w + x
                                                                  : ((b * h + y) * w + x) * c_n + c;
          if (!same(out[static_cast<std::size_t>(i)], want)) bug(differs, b, c, y, x);
        }
      }
    }
  }
}

template <typename T>
void run(pycgn::CompositeParams p) {
  const std::int64_t count = p.mask.size[0] * p.fg.size[1] * p.mask.size[2] * p.mask.size[3];
  std::vector<T> out(static_cast<std::size_t>(count));
  p.out = out.empty() ? nullptr : out.data();
  const char* refused = pycgn::composite_check(p);
  try {
    pycgn::composite_cpu(p);
  } catch (const std::invalid_argument&) {
    if (!refused) bug("composite_cpu threw on parameters composite_check accepts", -1, -1, -1, -1);
    return;
  }
  if (refused) bug("composite_cpu ran on parameters composite_check refuses", -1, -1, -1, -1);
  check<T>(p, out, "composite_cpu's output differs from the reference");
  std::vector<T> gpu(out.size());
  p.out = gpu.empty() ? nullptr : gpu.data();
  const long long misaligned = pycgn_test::misaligned_vector_accesses();
  pycgn_test::composite_cuda_on_host<T>(p);
  if (pycgn_test::misaligned_vector_accesses() != misaligned)
    bug("the CUDA kernel made a vector access the GPU would refuse", -1, -1, -1, -1);
  check<T>(p, gpu, "the CUDA kernel's output differs from the reference");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  Input in(data, size);
  // Mostly within the contract; one input in eight has sizes drawn independently (refusals).
  const bool wild = in.range(0, 7) == 0;
  const std::int64_t n = in.range(0, 3), c = in.range(1, 5);
  const std::int64_t h = in.range(0, 12), w = in.range(0, in.flag() ? 300 : 20);  // > 256: several row chunks
  std::int64_t mask_size[4] = {n, in.flag() ? 1 : c, h, w};
  std::int64_t fg_size[4] = {n, c, in.range(1, 14), in.range(1, 40)};
  std::int64_t bg_size[4] = {n, c, in.range(1, 14), in.range(1, 40)};
  if (wild) {
    for (auto* s : {mask_size, fg_size, bg_size}) {
      for (int d = 0; d < 4; ++d) s[d] = in.range(-1, 5);
    }
  }
  // Keep any negative size away from the allocation: the check must refuse it first.
  bool negative = false;
  for (auto* s : {mask_size, fg_size, bg_size}) {
    for (int d = 0; d < 4; ++d) negative |= s[d] < 0;
  }
  pycgn::CompositeParams p;
  if (negative) {
    for (int d = 0; d < 4; ++d) {
      p.mask.size[d] = mask_size[d];
      p.fg.size[d] = fg_size[d];
      p.bg.size[d] = bg_size[d];
    }
    if (!pycgn::composite_check(p)) bug("composite_check accepts a negative size", -1, -1, -1, -1);
    return 0;
  }
  Values values{in.bits(8)};
  const Batch mask = make_batch(in, values, mask_size), fg = make_batch(in, values, fg_size),
              bg = make_batch(in, values, bg_size);
  const Shifts fo = make_shifts(in, mask_size[0]), bo = make_shifts(in, mask_size[0]);  // read for each mask image
  p.mask = mask.img;
  p.fg = fg.img;
  p.bg = bg.img;
  p.fg_offset = fo.off;
  p.bg_offset = bo.off;
  p.layout = in.flag() ? pycgn::Layout::kNHWC : pycgn::Layout::kNCHW;
  if (in.range(0, 3) == 0) {
    p.lo = in.raw_float();  // any clamp, NaN and lo > hi included
    p.hi = in.raw_float();
  } else if (in.flag()) {
    p.lo = static_cast<float>(in.range(0, 100)) / 100.0f;
    p.hi = p.lo + static_cast<float>(in.range(0, 100)) / 100.0f;
  }
  p.num_threads = static_cast<int>(in.range(0, 3));
  if (in.flag()) {
    p.out_dtype = pycgn::OutDtype::kUint8;
    run<std::uint8_t>(p);
  } else {
    p.out_dtype = pycgn::OutDtype::kFloat32;
    run<float>(p);
  }
  return 0;
}
