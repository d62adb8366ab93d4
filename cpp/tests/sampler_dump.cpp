// Tests of the C++ sampler.
//
//   pycgn_sampler_dump --self-test        properties that need no Python (exit 0 = pass)
//   pycgn_sampler_dump CASES.json OUT.json
//       draws every case of CASES.json ([{seed, indices, n_classes, latent_dim, max_offset,
//       counterfactuals, shape, texture, bg}], classes as lists with -1 = random) and writes
//       the draws to OUT.json; check_sampler.py compares them with pycgn.sampler.
#include <cmath>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <string>

#include "pycgn/sampler.h"

using json = nlohmann::json;
using pycgn::Draw;
using pycgn::Sampler;

namespace {

int failures = 0;

void expect(bool ok, const std::string& what) {
  if (!ok) {
    ++failures;
    std::cerr << "FAIL: " << what << "\n";
  }
}

template <typename F>
void expect_throws(F&& f, const std::string& needle, const std::string& what) {
  try {
    f();
  } catch (const std::invalid_argument& e) {
    expect(std::string(e.what()).find(needle) != std::string::npos,
           what + ": message '" + e.what() + "' lacks '" + needle + "'");
    return;
  }
  expect(false, what + ": no std::invalid_argument");
}

// Sample b of draw a equals sample c of draw b in every field.
bool same_sample(const Draw& a, std::size_t i, const Draw& b, std::size_t j) {
  const auto d = static_cast<std::size_t>(a.latent_dim);
  for (std::size_t k = 0; k < d; ++k) {
    if (a.u_shape[i * d + k] != b.u_shape[j * d + k] || a.u_texture[i * d + k] != b.u_texture[j * d + k] ||
        a.u_bg[i * d + k] != b.u_bg[j * d + k]) {
      return false;
    }
  }
  for (std::size_t k = 0; k < 2; ++k) {
    if (a.fg_offset[2 * i + k] != b.fg_offset[2 * j + k] || a.bg_offset[2 * i + k] != b.bg_offset[2 * j + k]) {
      return false;
    }
  }
  return a.shape[i] == b.shape[j] && a.texture[i] == b.texture[j] && a.bg[i] == b.bg[j] && a.index[i] == b.index[j];
}

int self_test() {
  // SplitMix64's published first output from state 0 (Vigna's splitmix64.c).
  expect(pycgn::rng::mix(0) == 0xE220A8397B1DCDAFull, "mix(0) is SplitMix64's first output");

  const Sampler s(0x0123456789ABCDEFull, 7, 5, 13);
  const Draw batch = s.draw_n(37, 11);
  expect(batch.size() == 37 && batch.u_shape.size() == 37 * 5 && batch.fg_offset.size() == 74, "sizes");
  // Counter-based: a sample alone equals the same sample in a batch.
  for (std::size_t i : {0u, 5u, 36u}) {
    const Draw one = s.draw({batch.index[i]});
    expect(same_sample(one, 0, batch, i), "sample " + std::to_string(i) + " alone equals it in the batch");
  }
  // Fixing some classes changes nothing else.
  std::vector<std::int64_t> shape(37, pycgn::kRandomClass);
  shape[3] = 6;
  shape[20] = 0;
  const Draw fixed = s.draw(batch.index, shape, {2}, {});
  expect(fixed.shape[3] == 6 && fixed.shape[20] == 0, "fixed shape classes are used");
  for (std::size_t i = 0; i < 37; ++i) {
    expect(fixed.texture[i] == 2, "broadcast texture class");
    if (i != 3 && i != 20) expect(fixed.shape[i] == batch.shape[i], "unfixed classes unchanged");
    expect(fixed.u_shape == batch.u_shape && fixed.fg_offset == batch.fg_offset, "latents do not depend on classes");
  }
  // Ranges over many draws: classes in 0..6 and all of them hit; offsets in 0..13.
  const Draw many = s.draw_n(4000);
  std::vector<int> hits(7, 0);
  for (auto y : many.bg) {
    expect(y >= 0 && y < 7, "class in range");
    if (y >= 0 && y < 7) ++hits[static_cast<std::size_t>(y)];
  }
  for (int h : hits) expect(h > 400, "every class drawn about 1/7 of the time");
  std::int64_t lo = 99, hi = -1;
  for (auto o : many.fg_offset) lo = std::min(lo, o), hi = std::max(hi, o);
  expect(lo == 0 && hi == 13, "offsets span 0..max_offset");
  // Normals: mean ~0, variance ~1 over 20000 values (5 sigma bounds).
  double sum = 0, sq = 0;
  for (float v : many.u_texture) sum += v, sq += double(v) * v;
  const double m = sum / many.u_texture.size(), var = sq / many.u_texture.size() - m * m;
  expect(std::fabs(m) < 5 / std::sqrt(20000.0) && std::fabs(var - 1) < 0.05, "normal mean and variance");
  // Counterfactuals: shape inputs keyed by i / K, texture ones by i.
  const Sampler k3(99, 10, 4, 32, 3);
  const Draw cf = k3.draw_n(9);
  const Draw plain = Sampler(99, 10, 4, 32, 1).draw({0, 1, 2});
  for (std::size_t i = 0; i < 9; ++i) {
    const std::size_t g = i / 3;
    expect(cf.shape[i] == plain.shape[g], "counterfactual shape class keyed by i / K");
    expect(std::equal(cf.u_shape.begin() + 4 * i, cf.u_shape.begin() + 4 * i + 4, plain.u_shape.begin() + 4 * g),
           "counterfactual shape latent keyed by i / K");
  }
  expect(!std::equal(cf.u_texture.begin(), cf.u_texture.begin() + 4, cf.u_texture.begin() + 4),
         "counterfactual textures differ");
  // Different seeds and streams differ.
  expect(Sampler(1).draw_n(1).u_shape != Sampler(2).draw_n(1).u_shape, "seeds differ");
  expect(batch.u_shape != batch.u_texture, "streams differ");
  // Bad arguments name themselves.
  expect_throws([] { Sampler(0, 0); }, "n_classes", "n_classes 0");
  expect_throws([] { Sampler(0, 10, 0); }, "latent_dim", "latent_dim 0");
  expect_throws([] { Sampler(0, 10, 32, -1); }, "max_offset", "max_offset -1");
  expect_throws([] { Sampler(0, 10, 32, 32, 0); }, "counterfactuals", "counterfactuals 0");
  expect_throws([&] { s.draw({3, -1}); }, "indices", "negative index");
  expect_throws([&] { s.draw({1, 2, 3}, {1, 2}); }, "shape has 2 entries", "shape length");
  expect_throws([&] { s.draw({1}, {}, {7}); }, "texture has class id 7", "texture class range");
  expect_throws([&] { s.draw({1}, {}, {}, {-2}); }, "bg has class id -2", "bg class -2");
  expect_throws([&] { s.draw_n(-1); }, "n must be", "n -1");
  // Sizes whose arithmetic would overflow: refused, not wrapped.
  expect_throws([] { Sampler(0, 10, std::int64_t{1} << 31); }, "latent_dim must be <= 2147483647", "latent_dim 2**31");
  expect_throws([] { Sampler(0, 10, 32, INT64_MAX); }, "max_offset must be <=", "max_offset 2**63-1");
  expect_throws([&] { s.draw_n(2, INT64_MAX); }, "start + n - 1 must be <= 2**63-1", "start 2**63-1, n 2");
  expect(s.draw_n(1, INT64_MAX).index == std::vector<std::int64_t>{INT64_MAX}, "start 2**63-1, n 1 is the last index");
  std::cout << (failures ? "sampler self-test FAILED" : "sampler self-test passed") << "\n";
  return failures ? 1 : 0;
}

int dump(const char* cases_path, const char* out_path) {
  std::ifstream in(cases_path);
  if (!in) throw std::runtime_error(std::string(cases_path) + ": cannot be read");
  const json cases = json::parse(in);
  json out = json::array();
  for (const auto& c : cases) {
    const Sampler s(c.at("seed").get<std::uint64_t>(), c.at("n_classes"), c.at("latent_dim"), c.at("max_offset"),
                    c.at("counterfactuals"));
    const Draw d = s.draw(c.at("indices").get<std::vector<std::int64_t>>(), c.at("shape"), c.at("texture"),
                          c.at("bg"));
    out.push_back({{"index", d.index}, {"shape", d.shape}, {"texture", d.texture}, {"bg", d.bg},
                   {"u_shape", d.u_shape}, {"u_texture", d.u_texture}, {"u_bg", d.u_bg},
                   {"fg_offset", d.fg_offset}, {"bg_offset", d.bg_offset}});
  }
  std::ofstream(out_path) << out.dump();
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    if (argc == 2 && std::string(argv[1]) == "--self-test") return self_test();
    if (argc == 3) return dump(argv[1], argv[2]);
    std::cerr << "usage: pycgn_sampler_dump --self-test | CASES.json OUT.json\n";
    return 2;
  } catch (const std::exception& e) {
    std::cerr << "pycgn_sampler_dump: " << e.what() << "\n";
    return 1;
  }
}
