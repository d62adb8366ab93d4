// Seeded, counter-based sampling of every random input of a CGN: the C++ twin of
// pycgn/sampler.py, bit for bit.
//
// Each value is a pure function of (seed, index, stream, k) through a SplitMix64 hash, so
// sample i is the same whether it is drawn alone, in a batch, on another thread or in
// Python. Uniforms and integers equal Python's exactly; normals equal them up to the last
// float32 bit where libm's log1p/cos and numpy's differ in the last double bit (rare).
//
// Torch-free: needs only the C++17 standard library.
#pragma once

#include <cstdint>
#include <vector>

#include "pycgn/export.h"

namespace pycgn {

// Stream ids: part of the format, shared with Python. Never renumber.
enum Stream : std::uint32_t {
  kUShape = 0,
  kUTexture = 1,
  kUBg = 2,
  kYShape = 3,
  kYTexture = 4,
  kYBg = 5,
  kFgOffset = 6,
  kBgOffset = 7,
  // The ImageNet CGN's truncated noise (pycgn/models/imagenet.py): shape (also texture and
  // background with shared noise, the published scheme), texture, background.
  kUTrunc = 16,
  kUTruncTexture = 17,
  kUTruncBg = 18,
};

// A class entry meaning "draw this one at random" (Python's None).
constexpr std::int64_t kRandomClass = -1;

namespace rng {

// SplitMix64 finaliser: bijective, full avalanche.
inline std::uint64_t mix(std::uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

// hash(hash(hash(seed) ^ index) ^ (stream << 32 | k)).
inline std::uint64_t bits(std::uint64_t seed, std::uint64_t index, std::uint32_t stream,
                          std::uint32_t k) {
  const std::uint64_t base = mix(mix(seed) ^ index);
  return mix(base ^ ((static_cast<std::uint64_t>(stream) << 32) | k));
}

// Uniform double in [0, 1) from the top 53 bits (exact).
inline double uniform(std::uint64_t seed, std::uint64_t index, std::uint32_t stream,
                      std::uint32_t k) {
  return static_cast<double>(bits(seed, index, stream, k) >> 11) * 0x1.0p-53;
}

// Standard normal: Box-Muller on the uniforms (2j, 2j + 1), in double, then float.
PYCGN_API float normal(std::uint64_t seed, std::uint64_t index, std::uint32_t stream, std::uint32_t j);

// Uniform integer in {0, ..., high - 1}: floor(uniform * high).
PYCGN_API std::int64_t integer(std::uint64_t seed, std::uint64_t index, std::uint32_t stream,
                     std::uint32_t k, std::int64_t high);

// Standard normal restricted to [-bound, bound], coordinates 0..dim-1 into out[0..dim-1], like
// pycgn.models.imagenet.truncated_normal: try a of coordinate j is normal(.., a * dim + j); the
// first try with |x| <= bound is kept; after kTruncAttempts failures the last try is clipped.
constexpr std::int64_t kTruncAttempts = 16;
PYCGN_API void truncated_normal(std::uint64_t seed, std::uint64_t index, std::uint32_t stream, std::int64_t dim,
                                float bound, float* out);

}  // namespace rng

// Latent noise of a Sampler: pycgn.Sampler's N(0, 1) (MNIST CGNs), or the ImageNet CGN's
// truncation * truncated normal on streams 16-18 (pycgn.models.imagenet.imagenet_draw).
struct Noise {
  bool truncated = false;
  float truncation = 1.0f;  // in (0, 1]
  float bound = 2.0f;       // > 0
  bool shared = true;       // one noise vector (the shape's) for the three mechanisms
};

// Every input of a batch of samples; with the model's weights it fixes the images.
// Layout matches pycgn.sampler.Draw: latents row-major (N, latent_dim), offsets (N, 2) as
// (dy, dx) of the circular texture crop.
struct Draw {
  std::int64_t latent_dim = 0;
  std::vector<std::int64_t> index;
  std::vector<std::int64_t> shape, texture, bg;
  std::vector<float> u_shape, u_texture, u_bg;
  std::vector<std::int64_t> fg_offset, bg_offset;

  std::int64_t size() const { return static_cast<std::int64_t>(index.size()); }
};

// Draws latents, classes and crop offsets for sample indices from one seed.
//
// Class arguments of draw(): empty (all random), one entry (broadcast) or one per index;
// an entry kRandomClass (-1) is drawn at random. Random draws never depend on which
// classes are fixed. With counterfactuals = K > 1 the shape inputs of sample i are keyed
// by i / K (the K counterfactuals of one shape share its mask). Bad arguments throw
// std::invalid_argument naming the argument.
class PYCGN_API Sampler {
 public:
  explicit Sampler(std::uint64_t seed, std::int64_t n_classes = 10, std::int64_t latent_dim = 32,
                   std::int64_t max_offset = 32, std::int64_t counterfactuals = 1, Noise noise = {});

  Draw draw(const std::vector<std::int64_t>& indices, const std::vector<std::int64_t>& shape = {},
            const std::vector<std::int64_t>& texture = {},
            const std::vector<std::int64_t>& bg = {}) const;

  // Indices start, start + 1, ..., start + n - 1.
  Draw draw_n(std::int64_t n, std::int64_t start = 0, const std::vector<std::int64_t>& shape = {},
              const std::vector<std::int64_t>& texture = {},
              const std::vector<std::int64_t>& bg = {}) const;

  std::uint64_t seed() const { return seed_; }
  std::int64_t n_classes() const { return n_classes_; }
  std::int64_t latent_dim() const { return latent_dim_; }
  std::int64_t max_offset() const { return max_offset_; }
  std::int64_t counterfactuals() const { return counterfactuals_; }
  const Noise& noise() const { return noise_; }

 private:
  void truncated_noise(std::uint64_t shape_idx, std::uint64_t idx, float* u_shape, float* u_texture,
                       float* u_bg) const;

  std::uint64_t seed_;
  std::int64_t n_classes_, latent_dim_, max_offset_, counterfactuals_;
  Noise noise_;
};

}  // namespace pycgn
