// Fuzz target: cgn_generate's argument parsing and grid sizing (cpp/cli.cpp), without libtorch.
//
// Input: a mode byte, the model's sizes, then argv tokens separated by NUL bytes. Arguments
// that parse must give values in their documented ranges and a grid whose size, recomputed
// here in 128-bit arithmetic, is within the limits; arguments that do not parse must throw
// UsageError (anything else escaping is a crash). Mode 1 feeds plan_sheet arbitrary int64s.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "cli.h"
#include "fuzz_input.h"
#include "pycgn/sampler.h"

namespace {

namespace cli = pycgn::cli;

[[noreturn]] void bug(const std::string& what) {
  std::fprintf(stderr, "args_fuzz: %s\n", what.c_str());
  std::abort();
}

void expect(bool ok, const char* what) {
  if (!ok) bug(what);
}

// A sheet returned by plan_sheet: its sizes agree with exact arithmetic and the limits.
void check_sheet(const cli::Sheet& s, std::int64_t n, std::int64_t cols, std::int64_t scale, std::int64_t image_size,
                 std::int64_t latent_dim) {
  using i128 = __int128;
  expect(cols == 0 || s.cols == cols, "cols kept");
  expect(s.cols >= 1 && s.rows >= 1 && i128(s.rows) * s.cols >= n && i128(s.rows - 1) * s.cols < n, "rows hold n");
  expect(i128(s.cell) == i128(image_size) * scale, "cell = size * scale");
  const i128 w = i128(s.cols) * (i128(s.cell) + cli::kPad) + cli::kPad;
  const i128 h = i128(s.rows) * (i128(s.cell) + cli::kPad) + cli::kPad;
  expect(w == s.width && h == s.height, "width and height");
  expect(w <= cli::kMaxSide && h <= cli::kMaxSide, "PNG side limit");
  expect(h * (1 + 3 * w) == i128(s.bytes) && s.bytes <= cli::kMaxBytes, "byte limit");
  const i128 held = i128(n) * (3 * i128(image_size) * image_size + 12 * i128(latent_dim) + 56);
  expect(held <= cli::kMaxBytes, "memory limit");
}

void check_printable(const std::string& msg) {
  const std::string p = cli::printable(msg);
  for (std::size_t i = 0; i < p.size(); ++i) {
    const auto u = static_cast<unsigned char>(p[i]);
    const auto next = [&](std::size_t k) { return i + k < p.size() ? static_cast<unsigned char>(p[i + k]) : 0; };
    expect(u >= 0x20 && u != 0x7f, "printable: no control characters");
    expect(!(u == 0xc2 && next(1) >= 0x80 && next(1) <= 0x9f), "printable: no C1 controls");
    expect(!(u == 0xe2 && next(1) == 0x80 && (next(2) == 0xa8 || next(2) == 0xa9)), "printable: no U+2028/9");
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  pycgn_fuzz::Input in(data, size);
  const auto mode = in.range(0, 3);
  if (mode == 1) {
    const std::int64_t v[5] = {in.raw_int64(), in.raw_int64(), in.raw_int64(), in.raw_int64(), in.raw_int64()};
    try {
      check_sheet(cli::plan_sheet(v[0], v[1], v[2], v[3], v[4]), v[0], v[1], v[2], v[3], v[4]);
    } catch (const cli::UsageError& e) {
      check_printable(e.what());
    }
    return 0;
  }
  const std::int64_t image_size = in.range(1, 4096), latent_dim = in.range(1, 1 << 16);
  std::vector<std::string> names;
  for (std::int64_t i = 0, k = in.range(1, 12); i < k; ++i) names.push_back(i % 3 == 2 ? "c" + std::to_string(i) : std::to_string(i));
  std::vector<std::string> tokens = {"cgn_generate"};
  std::string cur;
  for (const char ch : in.rest()) {
    if (ch == '\0') {
      tokens.push_back(cur);
      cur.clear();
      if (tokens.size() > 64) break;
    } else {
      cur += ch;
    }
  }
  if (!cur.empty()) tokens.push_back(cur);
  std::vector<const char*> argv;
  for (const auto& t : tokens) argv.push_back(t.c_str());
  try {
    const cli::Args a = cli::parse_args(static_cast<int>(argv.size()), argv.data());
    if (a.help) return 0;
    expect(!a.model_dir.empty() && !a.out.empty(), "required arguments");
    expect(a.n >= 1 && a.n <= cli::kMaxSide && a.cols >= 0 && a.cols <= cli::kMaxSide, "-n and --cols ranges");
    expect(a.scale >= 1 && a.scale <= cli::kMaxSide && a.start >= 0, "--scale and --start ranges");
    std::vector<std::int64_t> ids[3];
    for (int m = 0; m < 3; ++m) {
      if (!a.given[m]) continue;
      ids[m] = cli::parse_classes(cli::kClassFlags[m], a.classes[m], names);
      for (const auto id : ids[m]) {
        expect(id == pycgn::kRandomClass || (id >= 0 && id < static_cast<std::int64_t>(names.size())), "class ids");
      }
    }
    const std::int64_t n = cli::resolve_n(a.n, a.start, ids);
    expect(n >= 1 && a.start <= INT64_MAX - (n - 1), "start + n - 1 fits");
    check_sheet(cli::plan_sheet(n, a.cols, a.scale, image_size, latent_dim), n, a.cols, a.scale, image_size, latent_dim);
  } catch (const cli::UsageError& e) {
    check_printable(e.what());
  }
  return 0;
}
