// ctest: pycgn::composite_cpu against the plain scalar loop, bit for bit, on random inputs.
#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <random>
#include <stdexcept>

#include "../cuda/index32.h"  // host-only: the CUDA kernel's choice of index type
#include "../cuda/vec4.h"     // host-only: when the CUDA kernel reads 4 texture columns at once
#include "composite_cases.h"

int main() {
  int failed = 0, total = 0;
  for (const auto& k : pycgn_test::make_cases(20261128, 60)) {
    ++total;
    const auto exp = pycgn_test::expected(k);
    // poisoned output, with a guard region after it that must stay untouched
    std::vector<std::uint8_t> out(exp.size() + 64, 0xA5);
    for (int threads : {1, 2}) {
      std::fill(out.begin(), out.end(), 0xA5);
      auto p = k.params(k.mask.storage.data(), k.fg.storage.data(), k.bg.storage.data(), k.host_offsets(0),
                        k.host_offsets(1), out.data());
      p.num_threads = threads;
      pycgn::composite_cpu(p);
      std::vector<std::uint8_t> got(out.begin(), out.begin() + exp.size());
      int bad = pycgn_test::compare(k, got, exp);
      for (std::size_t i = exp.size(); i < out.size(); ++i) bad += out[i] != 0xA5;
      if (bad) {
        std::fprintf(stderr, "FAIL %s (threads %d): %d wrong\n", k.name.c_str(), threads, bad);
        ++failed;
      }
    }
    // a thread's share: rows [r0, r1) (r = b * H + y, from the middle of an image to the middle
    // of another where the sizes allow) written as expected, and not a byte outside them
    std::fill(out.begin(), out.end(), 0xA5);
    const auto p = k.params(k.mask.storage.data(), k.fg.storage.data(), k.bg.storage.data(), k.host_offsets(0),
                            k.host_offsets(1), out.data());
    const std::int64_t rows = pycgn::composite_cpu_row_count(p), r0 = rows / 3, r1 = rows - rows / 4;
    pycgn::composite_cpu_rows(p, r0, r1);
    const std::int64_t c = k.c(), h = k.mask.size[2], w = k.mask.size[3];
    const std::size_t es = k.out_dtype == pycgn::OutDtype::kUint8 ? 1 : 4;
    std::vector<std::uint8_t> want(exp.size() + 64, 0xA5);
    for (std::int64_t r = r0; r < r1; ++r)
      for (std::int64_t ch = 0; ch < c; ++ch)
        for (std::int64_t x = 0; x < w; ++x) {
          const std::int64_t b = r / h, y = r % h;
          const std::int64_t i = k.layout == pycgn::Layout::kNCHW ? ((b * c + ch) * h + y) * w + x : (r * w + x) * c + ch;
          std::memcpy(want.data() + i * es, exp.data() + i * es, es);
        }
    std::vector<std::uint8_t> got(out.begin(), out.begin() + exp.size()), part(want.begin(), want.begin() + exp.size());
    const auto guard = std::count(out.begin() + static_cast<std::ptrdiff_t>(exp.size()), out.end(), 0xA5);
    if (const int bad = pycgn_test::compare(k, got, part) + static_cast<int>(64 - guard)) {
      std::fprintf(stderr, "FAIL %s (rows %lld..%lld of %lld): %d wrong\n", k.name.c_str(), (long long)r0,
                   (long long)r1, (long long)rows, bad);
      ++failed;
    }
  }
  // invalid parameters are refused with a message naming the argument
  pycgn::CompositeParams p;
  p.mask.size[0] = 1, p.mask.size[1] = 2, p.fg.size[0] = 1, p.fg.size[1] = 3, p.bg.size[0] = 1, p.bg.size[1] = 3;
  p.fg.size[2] = p.fg.size[3] = p.bg.size[2] = p.bg.size[3] = 1;
  try {
    pycgn::composite_cpu(p);
    std::fprintf(stderr, "FAIL: a 2-channel mask for 3 channels was accepted\n");
    ++failed;
  } catch (const std::invalid_argument& e) {
    if (!std::strstr(e.what(), "mask")) ++failed, std::fprintf(stderr, "FAIL: message %s\n", e.what());
  }
  // sizes whose product overflows int64 (reachable through broadcast views) are refused, not UB
  pycgn::CompositeParams huge;
  const std::int64_t big = std::int64_t(1) << 40;
  huge.mask.size[0] = huge.fg.size[0] = huge.bg.size[0] = big;
  huge.mask.size[1] = 1, huge.fg.size[1] = huge.bg.size[1] = 3;
  huge.mask.size[2] = huge.mask.size[3] = big;
  huge.fg.size[2] = huge.fg.size[3] = huge.bg.size[2] = huge.bg.size[3] = 1;
  const char* why = pycgn::composite_check(huge);
  if (!why || !std::strstr(why, "int64")) {
    std::fprintf(stderr, "FAIL: sizes overflowing int64 were %s\n", why ? why : "accepted");
    ++failed;
  }
  // the CUDA kernel indexes in int32 only when every index fits (a rule checked without a GPU)
  auto view = [](std::int64_t n, std::int64_t c, std::int64_t h, std::int64_t w, bool broadcast) {
    pycgn::Image4 v;
    const std::int64_t size[4] = {n, c, h, w}, stride[4] = {c * h * w, h * w, w, 1};
    for (int d = 0; d < 4; ++d) v.size[d] = size[d], v.stride[d] = broadcast ? 0 : stride[d];
    return v;
  };
  // (n, 1 or c, h, w) mask and (n, c, h, w) textures; broadcast: every stride 0 (as expand makes)
  auto call = [&](std::int64_t n, std::int64_t c, std::int64_t h, std::int64_t w, bool broadcast = false) {
    pycgn::CompositeParams q;
    q.mask = view(n, 1, h, w, broadcast), q.fg = view(n, c, h, w, broadcast), q.bg = view(n, c, h, w, broadcast);
    return q;
  };
  const std::int64_t k30 = std::int64_t{1} << 30, k31 = std::int64_t{1} << 31;
  struct Rule {
    const char* name;
    pycgn::CompositeParams q;
    std::int64_t counter;
    bool fits;
  };
  std::vector<Rule> rules = {
      {"64x3x256x256", call(64, 3, 256, 256), 64 * 256 * 64 + 1024, true},
      {"output of 3 * 2^29 elements", call(1, 3, 1, k30 / 2, true), 0, true},
      {"output of 3 * 2^30 elements", call(1, 3, 1, k30, true), 0, false},
      {"width 2^30", call(1, 1, 1, k30, true), 0, true},
      {"width 2^30 + 1", call(1, 1, 1, k30 + 1, true), 0, false},
      {"counter 2^31 - 1", call(1, 3, 8, 8), k31 - 1, true},
      {"counter 2^31", call(1, 3, 8, 8), k31, false},
      {"counter negative", call(1, 3, 8, 8), -1, false},
  };
  auto with_fg_stride = [&](const char* name, int d, std::int64_t stride, std::int64_t n, bool fits) {
    Rule r{name, call(n, 3, 8, 8), 64, fits};
    r.q.fg.stride[d] = stride;
    rules.push_back(r);
  };
  with_fg_stride("fg channel stride 2^29", 1, k30 / 2, 1, true);      // reaches 2^30 + 63
  with_fg_stride("fg channel stride 2^30", 1, k30, 1, false);         // reaches 2^31 + 63
  with_fg_stride("fg row stride -2^28", 2, -k30 / 4, 1, true);        // reaches 7 * 2^28 + ...
  with_fg_stride("fg row stride -2^29", 2, -k30 / 2, 1, false);       // reaches 7 * 2^29 + ...
  with_fg_stride("stride 2^40 of a size-1 batch", 0, k31 << 9, 1, true);
  with_fg_stride("stride 2^40 of a batch of 2", 0, k31 << 9, 2, false);
  for (const auto& r : rules) {
    if (pycgn::index_fits_int32(r.q, r.counter) != r.fits) {
      std::fprintf(stderr, "FAIL index_fits_int32(%s) should be %s\n", r.name, r.fits ? "true" : "false");
      ++failed;
    }
  }
  // texture_vec4: wherever it allows, every group of 4 columns the kernel reads as one float4
  // (x0 and the shift multiples of 4) is 4 consecutive floats at a 16-byte aligned address.
  // Random views: padded, strided, negative and size-1 strides, unaligned bases (addresses are
  // only computed, never read).
  std::mt19937_64 rng(20261130);
  int allowed = 0;
  for (int it = 0; it < 4000; ++it) {
    auto r = [&](std::int64_t lo, std::int64_t hi) { return lo + static_cast<std::int64_t>(rng() % (hi - lo + 1)); };
    pycgn::Image4 t;
    const std::int64_t size[4] = {r(1, 3), r(1, 3), r(1, 4), r(1, 4) == 1 ? r(1, 24) : 4 * r(1, 6)};
    std::int64_t stride = r(0, 3) ? 1 : r(0, 3);
    for (int d = 3; d >= 0; --d) {
      t.size[d] = size[d];
      t.stride[d] = d == 3 ? stride : (r(0, 5) == 0 ? -stride : stride);
      stride = std::abs(t.stride[d]) * size[d] + (r(0, 2) ? 0 : r(1, 6));
      if (r(0, 9) == 0) t.stride[d] = r(-9, 9);  // any stride (a size-1 dimension's never moves)
    }
    t.data = reinterpret_cast<const float*>(std::uintptr_t{1} << 20 | static_cast<std::uintptr_t>(r(0, 3) ? 0 : 4 * r(1, 3)));
    if (!pycgn::texture_vec4(t)) continue;
    ++allowed;
    const std::int64_t wt = t.size[3], wout = r(4, 40);
    for (std::int64_t b = 0; b < t.size[0]; ++b)
      for (std::int64_t c = 0; c < t.size[1]; ++c)
        for (std::int64_t y = 0; y < t.size[2]; ++y)
          for (std::int64_t dx = 0; dx < wt; dx += 4)
            for (std::int64_t x0 = 0; x0 + 3 < wout; x0 += 4) {
              auto at = [&](std::int64_t x) {
                const std::int64_t e = b * t.stride[0] + c * t.stride[1] + y * t.stride[2] +
                                       pycgn::column(x, dx, wt) * t.stride[3];
                return reinterpret_cast<std::uintptr_t>(t.data) + static_cast<std::uintptr_t>(e * 4);
              };
              bool ok = at(x0) % 16 == 0;
              for (int i = 1; i < 4; ++i) ok = ok && at(x0 + i) == at(x0) + 4 * static_cast<std::uintptr_t>(i);
              if (!ok) {
                std::fprintf(stderr, "FAIL texture_vec4: view (%lld %lld %lld %lld) strides (%lld %lld %lld %lld) "
                             "base %% 16 = %d, shift %lld, columns %lld..%lld are not one aligned float4\n",
                             (long long)t.size[0], (long long)t.size[1], (long long)t.size[2], (long long)t.size[3],
                             (long long)t.stride[0], (long long)t.stride[1], (long long)t.stride[2],
                             (long long)t.stride[3], (int)(reinterpret_cast<std::uintptr_t>(t.data) % 16),
                             (long long)dx, (long long)x0, (long long)x0 + 3);
                return 1;
              }
            }
  }
  if (allowed < 100) {  // the rule must not hold only because it never allows
    std::fprintf(stderr, "FAIL texture_vec4 allowed only %d of 4000 random views\n", allowed);
    ++failed;
  }
  std::printf("composite_cpu: %d cases, %d failed; texture_vec4 allowed %d of 4000 random views\n", total, failed,
              allowed);
  return failed ? 1 : 0;
}
