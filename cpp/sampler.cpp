// The C++ twin of pycgn/sampler.py. Compiled without floating-point contraction so that
// every double operation rounds exactly like numpy's (see cpp/CMakeLists.txt).
#include "pycgn/sampler.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <stdexcept>
#include <string>

namespace pycgn {
namespace rng {

float normal(std::uint64_t seed, std::uint64_t index, std::uint32_t stream, std::uint32_t j) {
  const double u1 = uniform(seed, index, stream, 2 * j);
  const double u2 = uniform(seed, index, stream, 2 * j + 1);
  // Same operation order as numpy: sqrt(-2.0 * log1p(-u1)) * cos((2.0 * pi) * u2).
  const double r = std::sqrt(-2.0 * std::log1p(-u1));
  const double pi = 3.141592653589793;
  return static_cast<float>(r * std::cos(2.0 * pi * u2));
}

std::int64_t integer(std::uint64_t seed, std::uint64_t index, std::uint32_t stream,
                     std::uint32_t k, std::int64_t high) {
  return static_cast<std::int64_t>(
      std::floor(uniform(seed, index, stream, k) * static_cast<double>(high)));
}

void truncated_normal(std::uint64_t seed, std::uint64_t index, std::uint32_t stream, std::int64_t dim, float bound,
                      float* out) {
  for (std::int64_t j = 0; j < dim; ++j) {
    float x = 0.0f;
    for (std::int64_t a = 0; a < kTruncAttempts; ++a) {
      x = normal(seed, index, stream, static_cast<std::uint32_t>(a * dim + j));
      if (std::fabs(x) <= bound) break;
    }
    out[j] = std::fmin(std::fmax(x, -bound), bound);  // a no-op unless every try failed
  }
}

}  // namespace rng

namespace {

void check_positive(const char* name, std::int64_t v, std::int64_t lowest) {
  if (v < lowest) {
    throw std::invalid_argument(std::string(name) + " must be >= " + std::to_string(lowest) +
                                ", got " + std::to_string(v));
  }
}

void check_at_most(const char* name, std::int64_t v, std::int64_t highest) {
  if (v > highest) {
    throw std::invalid_argument(std::string(name) + " must be <= " + std::to_string(highest) + ", got " +
                                std::to_string(v));
  }
}

// The class argument broadcast to n entries, kRandomClass where it is drawn.
std::vector<std::int64_t> fixed_classes(const char* name, const std::vector<std::int64_t>& value,
                                        std::size_t n, std::int64_t n_classes) {
  if (value.empty()) return std::vector<std::int64_t>(n, kRandomClass);
  if (value.size() != 1 && value.size() != n) {
    throw std::invalid_argument(std::string(name) + " has " + std::to_string(value.size()) +
                                " entries, expected 1 or n=" + std::to_string(n));
  }
  for (std::int64_t v : value) {
    if (v != kRandomClass && (v < 0 || v >= n_classes)) {
      throw std::invalid_argument(std::string(name) + " has class id " + std::to_string(v) +
                                  ", expected 0.." + std::to_string(n_classes - 1) +
                                  " or -1 (random)");
    }
  }
  return value.size() == 1 ? std::vector<std::int64_t>(n, value[0]) : value;
}

}  // namespace

Sampler::Sampler(std::uint64_t seed, std::int64_t n_classes, std::int64_t latent_dim,
                 std::int64_t max_offset, std::int64_t counterfactuals, Noise noise)
    : seed_(seed),
      n_classes_(n_classes),
      latent_dim_(latent_dim),
      max_offset_(max_offset),
      counterfactuals_(counterfactuals),
      noise_(noise) {
  if (noise.truncated) {
    if (!(noise.truncation > 0.0f && noise.truncation <= 1.0f)) {
      throw std::invalid_argument("noise.truncation must be in (0, 1], got " + std::to_string(noise.truncation));
    }
    if (!(noise.bound > 0.0f && std::isfinite(noise.bound))) {
      throw std::invalid_argument("noise.bound must be a positive number, got " + std::to_string(noise.bound));
    }
    // Tries use the counters a * dim + j < kTruncAttempts * dim: 32 bits, doubled by Box-Muller.
    check_at_most("latent_dim", latent_dim, ((std::int64_t{1} << 31) - 1) / rng::kTruncAttempts);
  }
  check_positive("n_classes", n_classes, 1);
  check_positive("latent_dim", latent_dim, 1);
  check_positive("max_offset", max_offset, 0);
  check_positive("counterfactuals", counterfactuals, 1);
  // Normals use the 32-bit counters 2j and 2j + 1; integers come from a double, exact below 2**53.
  check_at_most("latent_dim", latent_dim, (std::int64_t{1} << 31) - 1);
  check_at_most("n_classes", n_classes, std::int64_t{1} << 53);
  check_at_most("max_offset", max_offset, (std::int64_t{1} << 53) - 1);
}

Draw Sampler::draw(const std::vector<std::int64_t>& indices, const std::vector<std::int64_t>& shape,
                   const std::vector<std::int64_t>& texture,
                   const std::vector<std::int64_t>& bg) const {
  const std::size_t n = indices.size();
  for (std::int64_t i : indices) {
    if (i < 0) throw std::invalid_argument("indices must be >= 0, got " + std::to_string(i));
  }
  const auto fixed_shape = fixed_classes("shape", shape, n, n_classes_);
  const auto fixed_texture = fixed_classes("texture", texture, n, n_classes_);
  const auto fixed_bg = fixed_classes("bg", bg, n, n_classes_);

  Draw d;
  d.latent_dim = latent_dim_;
  d.index = indices;
  d.shape.resize(n);
  d.texture.resize(n);
  d.bg.resize(n);
  const std::size_t dim = static_cast<std::size_t>(latent_dim_);
  std::size_t values = 0;
  if (__builtin_mul_overflow(n, dim, &values) || values > d.u_shape.max_size()) {
    throw std::invalid_argument("indices: " + std::to_string(n) + " samples of " + std::to_string(dim) +
                                " latents do not fit in memory");
  }
  d.u_shape.resize(n * dim);
  d.u_texture.resize(n * dim);
  d.u_bg.resize(n * dim);
  d.fg_offset.resize(2 * n);
  d.bg_offset.resize(2 * n);
  const std::int64_t span = max_offset_ + 1;
  const std::uint64_t s = seed_;
  for (std::size_t b = 0; b < n; ++b) {
    const auto idx = static_cast<std::uint64_t>(indices[b]);
    const auto shape_idx = static_cast<std::uint64_t>(indices[b] / counterfactuals_);
    // A fixed class replaces the drawn one; the draw itself never depends on it.
    auto pick = [&](std::int64_t fixed, std::uint64_t key, Stream stream) {
      return fixed != kRandomClass ? fixed : rng::integer(s, key, stream, 0, n_classes_);
    };
    d.shape[b] = pick(fixed_shape[b], shape_idx, kYShape);
    d.texture[b] = pick(fixed_texture[b], idx, kYTexture);
    d.bg[b] = pick(fixed_bg[b], idx, kYBg);
    if (noise_.truncated) {
      truncated_noise(shape_idx, idx, &d.u_shape[b * dim], &d.u_texture[b * dim], &d.u_bg[b * dim]);
    } else {
      for (std::size_t j = 0; j < dim; ++j) {
        const auto k = static_cast<std::uint32_t>(j);
        d.u_shape[b * dim + j] = rng::normal(s, shape_idx, kUShape, k);
        d.u_texture[b * dim + j] = rng::normal(s, idx, kUTexture, k);
        d.u_bg[b * dim + j] = rng::normal(s, idx, kUBg, k);
      }
    }
    for (std::uint32_t k = 0; k < 2; ++k) {
      d.fg_offset[2 * b + k] = rng::integer(s, idx, kFgOffset, k, span);
      d.bg_offset[2 * b + k] = rng::integer(s, idx, kBgOffset, k, span);
    }
  }
  return d;
}

// As imagenet_draw: truncation * truncated_normal, multiplied in float32 like numpy.
void Sampler::truncated_noise(std::uint64_t shape_idx, std::uint64_t idx, float* u_shape, float* u_texture,
                              float* u_bg) const {
  const std::int64_t dim = latent_dim_;
  auto fill = [&](std::uint64_t key, std::uint32_t stream, float* out) {
    rng::truncated_normal(seed_, key, stream, dim, noise_.bound, out);
    for (std::int64_t j = 0; j < dim; ++j) out[j] *= noise_.truncation;
  };
  fill(shape_idx, kUTrunc, u_shape);
  if (noise_.shared) {
    std::copy(u_shape, u_shape + dim, u_texture);
    std::copy(u_shape, u_shape + dim, u_bg);
  } else {
    fill(idx, kUTruncTexture, u_texture);
    fill(idx, kUTruncBg, u_bg);
  }
}

Draw Sampler::draw_n(std::int64_t n, std::int64_t start, const std::vector<std::int64_t>& shape,
                     const std::vector<std::int64_t>& texture,
                     const std::vector<std::int64_t>& bg) const {
  check_positive("n", n, 0);
  check_positive("start", start, 0);
  if (n > 0 && start > std::numeric_limits<std::int64_t>::max() - (n - 1)) {
    throw std::invalid_argument("start + n - 1 must be <= 2**63-1, got start " + std::to_string(start) + " and n " +
                                std::to_string(n));
  }
  std::vector<std::int64_t> indices(static_cast<std::size_t>(n));
  for (std::int64_t i = 0; i < n; ++i) indices[static_cast<std::size_t>(i)] = start + i;
  return draw(indices, shape, texture, bg);
}

}  // namespace pycgn
