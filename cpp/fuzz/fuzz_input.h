// Turns a fuzzer's bytes into typed choices. Our own (not libFuzzer's FuzzedDataProvider) so
// the harnesses also build with g++ and the standalone driver. Reads past the end give zeros:
// every input, however short, is a valid sequence of choices.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>

namespace pycgn_fuzz {

class Input {
 public:
  Input(const std::uint8_t* data, std::size_t size) : p_(data), n_(size) {}

  std::uint64_t bits(int bytes) {
    std::uint64_t v = 0;
    for (int i = 0; i < bytes; ++i) v = (v << 8) | (pos_ < n_ ? p_[pos_++] : 0);
    return v;
  }

  // Uniform-ish in [lo, hi] (lo <= hi), from as few bytes as the range needs.
  std::int64_t range(std::int64_t lo, std::int64_t hi) {
    const std::uint64_t span = static_cast<std::uint64_t>(hi) - static_cast<std::uint64_t>(lo);
    int bytes = 1;
    while (bytes < 8 && (span >> (8 * bytes)) != 0) ++bytes;
    const std::uint64_t v = bits(bytes);
    return static_cast<std::int64_t>(static_cast<std::uint64_t>(lo) + (span == UINT64_MAX ? v : v % (span + 1)));
  }

  bool flag() { return bits(1) & 1; }

  float raw_float() {
    const auto b = static_cast<std::uint32_t>(bits(4));
    float f;
    std::memcpy(&f, &b, sizeof f);
    return f;
  }

  std::int64_t raw_int64() { return static_cast<std::int64_t>(bits(8)); }

  // The bytes not read yet.
  std::string rest() {
    const std::string s(reinterpret_cast<const char*>(p_) + pos_, n_ - pos_);
    pos_ = n_;
    return s;
  }

 private:
  const std::uint8_t* p_;
  std::size_t n_, pos_ = 0;
};

}  // namespace pycgn_fuzz
