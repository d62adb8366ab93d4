// ctest: the CUDA kernel's own code (csrc/cuda/composite_kernel.cuh) run on the host, thread by
// thread over a grid (cuda_on_host.h), against the scalar loop, bit for bit, on the CUDA core test's
// cases: composite_cuda's own choices, then no fast path, then int64 indices, then an output off the
// vector grid, then textures whose rows are padded off the 4-float grid. No GPU needed: this is how CI tests the kernel's indexing, its fast-path rules
// (vector loads and stores, int32 indices) and its tails; gpu_check runs the same cases on a GPU.
#include "cuda_on_host.h"  // first: the CUDA names the kernel uses

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <vector>

#include "composite_cases.h"

namespace {

struct Counts {
  int vec_out = 0, vec_mask = 0, vec_fg = 0, vec_bg = 0, int32 = 0;
};

// t's values, NCHW with each row `pad` floats longer: with pad 2 a width in multiples of 4 no longer
// makes the row stride one (the make_cases layouts never have such gaps).
pycgn_test::Strided padded(const pycgn_test::Strided& t, std::int64_t pad) {
  pycgn_test::Strided r;
  for (int d = 0; d < 4; ++d) r.size[d] = t.size[d];
  r.stride[3] = 1, r.stride[2] = t.size[3] + pad, r.stride[1] = t.size[2] * r.stride[2];
  r.stride[0] = t.size[1] * r.stride[1];
  r.storage.resize(static_cast<std::size_t>(std::max<std::int64_t>(t.size[0] * r.stride[0], 1)));
  for (std::int64_t b = 0; b < t.size[0]; ++b)
    for (std::int64_t c = 0; c < t.size[1]; ++c)
      for (std::int64_t y = 0; y < t.size[2]; ++y)
        for (std::int64_t x = 0; x < t.size[3]; ++x)
          r.storage[static_cast<std::size_t>(b * r.stride[0] + c * r.stride[1] + y * r.stride[2] + x)] = t.at(b, c, y, x);
  return r;
}

// The number of wrong values (and of touched guard bytes) of one emulated launch of case k, its
// output `shift` elements from an aligned buffer's start.
template <typename T>
int check(const pycgn_test::Case& k, const std::vector<std::uint8_t>& exp, bool fast, bool wide, std::size_t shift,
          unsigned blocks, Counts& counts) {
  const std::size_t guard = 64, pad = shift * sizeof(T);
  std::vector<std::uint8_t> buf(pad + exp.size() + guard, 0xA5);
  const auto p = k.params(k.mask.storage.data(), k.fg.storage.data(), k.bg.storage.data(), k.host_offsets(0),
                          k.host_offsets(1), buf.data() + pad);
  if (pycgn::composite_check(p) != nullptr) return 1;
  const auto l = pycgn::kernel::plan<T>(p);
  if (fast) {
    counts.vec_out += l.flags.vec_out, counts.vec_mask += l.flags.vec_mask;
    counts.vec_fg += l.flags.vec_fg, counts.vec_bg += l.flags.vec_bg, counts.int32 += l.narrow && !wide;
  }
  pycgn_test::composite_cuda_on_host<T>(p, blocks, fast, wide);
  std::vector<std::uint8_t> got(buf.begin() + static_cast<std::ptrdiff_t>(pad),
                                buf.begin() + static_cast<std::ptrdiff_t>(pad + exp.size()));
  int bad = pycgn_test::compare(k, got, exp);
  for (std::size_t i = 0; i < pad; ++i) bad += buf[i] != 0xA5;
  for (std::size_t i = pad + exp.size(); i < buf.size(); ++i) bad += buf[i] != 0xA5;
  return bad;
}

}  // namespace

int main() {
  int failed = 0, runs = 0;
  Counts counts;
  const auto cases = pycgn_test::make_cases(20261129, 60);  // the CUDA core test's cases
  for (std::size_t ci = 0; ci < cases.size(); ++ci) {
    const auto& k = cases[ci];
    const auto exp = pycgn_test::expected(k);
    const bool u8 = k.out_dtype == pycgn::OutDtype::kUint8;
    pycgn_test::Case rows = k;
    rows.fg = padded(k.fg, 2), rows.bg = padded(k.bg, 2);
    for (int variant = 0; variant < 5; ++variant) {
      const bool fast = variant != 1, wide = variant == 2;
      const std::size_t shift = variant == 3 ? 1 : 0;
      const unsigned blocks = 1 + static_cast<unsigned>(ci % 3);
      const pycgn_test::Case& kv = variant == 4 ? rows : k;
      const long long before = pycgn_test::misaligned_vector_accesses();
      const int bad = u8 ? check<std::uint8_t>(kv, exp, fast, wide, shift, blocks, counts)
                         : check<float>(kv, exp, fast, wide, shift, blocks, counts);
      const long long misaligned = pycgn_test::misaligned_vector_accesses() - before;
      ++runs;
      if (bad || misaligned) {
        std::fprintf(stderr, "FAIL %s (variant %d): %d wrong, %lld misaligned vector accesses\n", k.name.c_str(),
                     variant, bad, misaligned);
        ++failed;
      }
    }
  }
  // the fast paths must have been taken, or the checks above say nothing about them
  if (!counts.vec_out || !counts.vec_mask || !counts.vec_fg || !counts.vec_bg || !counts.int32) {
    std::fprintf(stderr, "FAIL: a fast path never taken (vec_out %d, vec_mask %d, vec_fg %d, vec_bg %d, int32 %d)\n",
                 counts.vec_out, counts.vec_mask, counts.vec_fg, counts.vec_bg, counts.int32);
    ++failed;
  }
  std::printf("composite_cuda_emulated: %d runs of %zu cases, %d failed; with composite_cuda's choices: vector "
              "stores in %d, mask loads %d, fg loads %d, bg loads %d, int32 indices %d\n",
              runs, cases.size(), failed, counts.vec_out, counts.vec_mask, counts.vec_fg, counts.vec_bg, counts.int32);
  return failed ? 1 : 0;
}
