// A stand-in for libFuzzer's driver where Clang's libFuzzer is missing (g++ builds): runs
// the seed corpus, then -runs=N inputs, each either random bytes or a seed input with a few
// random byte edits, from a fixed -seed=S. Deterministic; no coverage feedback, so weaker
// than libFuzzer, but the sanitizers and the harness's checks still apply. Other libFuzzer
// flags (-max_len=, -dict=, ...) are accepted and ignored, except -max_len.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size);

namespace {

std::uint64_t state = 1;
std::uint64_t next() {  // SplitMix64
  std::uint64_t z = (state += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

std::vector<std::uint8_t> read(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

}  // namespace

int main(int argc, char** argv) {
  long long runs = 100000;
  std::size_t max_len = 4096;
  std::vector<std::vector<std::uint8_t>> seeds;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a.rfind("-runs=", 0) == 0) runs = std::atoll(a.c_str() + 6);
    else if (a.rfind("-seed=", 0) == 0) state = std::strtoull(a.c_str() + 6, nullptr, 10);
    else if (a.rfind("-max_len=", 0) == 0) max_len = std::strtoull(a.c_str() + 9, nullptr, 10);
    else if (a[0] == '-') continue;
    else if (std::filesystem::is_directory(a)) {
      for (const auto& e : std::filesystem::directory_iterator(a)) {
        if (e.is_regular_file()) seeds.push_back(read(e.path()));
      }
    } else {
      seeds.push_back(read(a));
    }
  }
  for (const auto& s : seeds) LLVMFuzzerTestOneInput(s.data(), s.size());
  std::vector<std::uint8_t> buf;
  for (long long r = 0; r < runs; ++r) {
    if (!seeds.empty() && next() % 2) {
      buf = seeds[next() % seeds.size()];
      for (int k = 0, edits = 1 + static_cast<int>(next() % 8); k < edits; ++k) {
        const std::size_t at = buf.empty() ? 0 : next() % buf.size();
        switch (next() % 3) {
          case 0: if (!buf.empty()) buf[at] = static_cast<std::uint8_t>(next()); break;
          case 1: if (buf.size() < max_len) buf.insert(buf.begin() + static_cast<long>(at), static_cast<std::uint8_t>(next())); break;
          default: if (!buf.empty()) buf.erase(buf.begin() + static_cast<long>(at)); break;
        }
      }
    } else {
      buf.resize(next() % (max_len + 1));
      for (auto& b : buf) b = static_cast<std::uint8_t>(next());
    }
    LLVMFuzzerTestOneInput(buf.data(), buf.size());
  }
  std::printf("standalone driver: %zu seed inputs and %lld generated inputs, no failure\n", seeds.size(), runs);
  return 0;
}
