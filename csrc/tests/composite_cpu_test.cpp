// ctest: pycgn::composite_cpu against the plain scalar loop, bit for bit, on random inputs.
#include <cstring>
#include <stdexcept>

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
  std::printf("composite_cpu: %d cases, %d failed\n", total, failed);
  return failed ? 1 : 0;
}
