// Links pycgn::core alone (no libtorch, checked with ldd by tools/cpp_check.sh): composites a
// tiny batch with the torch-free core, checks one pixel against the formula, and samples.
//
//   pycgn_core_consumer
#include <pycgn/composite.h>
#include <pycgn/sampler.h>

#include <cmath>
#include <cstdint>
#include <iostream>
#include <vector>

int main() {
  // 1. The core: one 3-channel 5x7 image, 1-channel mask, textures shifted by (dy, dx).
  const std::int64_t c = 3, h = 5, w = 7;
  std::vector<float> mask(h * w), fg(c * h * w), bg(c * h * w);
  for (std::size_t i = 0; i < mask.size(); ++i) mask[i] = 0.1f + 0.8f * std::sin(float(i)) * std::sin(float(i));
  for (std::size_t i = 0; i < fg.size(); ++i) fg[i] = std::cos(0.3f * float(i)), bg[i] = std::sin(0.7f * float(i));
  const std::int64_t fg_off[2] = {2, 3}, bg_off[2] = {4, 1};
  std::vector<std::uint8_t> out(c * h * w);
  auto image4 = [&](const std::vector<float>& v, std::int64_t ch) {
    pycgn::Image4 im;
    im.data = v.data();
    const std::int64_t size[4] = {1, ch, h, w}, stride[4] = {ch * h * w, h * w, w, 1};
    for (int d = 0; d < 4; ++d) im.size[d] = size[d], im.stride[d] = stride[d];
    return im;
  };
  pycgn::CompositeParams p;
  p.mask = image4(mask, 1);
  p.fg = image4(fg, c);
  p.bg = image4(bg, c);
  p.fg_offset.data = fg_off;
  p.bg_offset.data = bg_off;
  p.out = out.data();
  p.out_dtype = pycgn::OutDtype::kUint8;
  p.layout = pycgn::Layout::kNHWC;
  pycgn::composite_cpu(p);
  // Pixel (y=1, x=2), channel 0, by the formula in composite.h.
  const float m = mask[1 * w + 2];
  const float v = m * fg[((1 + 2) % h) * w + (2 + 3) % w] + (1 - m) * bg[((1 + 4) % h) * w + (2 + 1) % w];
  const int want = static_cast<int>(std::nearbyint(std::fmin(std::fmax((v + 1) * 127.5f, 0.f), 255.f)));
  const int got = out[(1 * w + 2) * c + 0];
  std::cout << "pycgn::composite: pixel (1, 2, 0) = " << got << " (expected " << want << ")\n";
  if (std::abs(got - want) > 1) return 1;

  // 2. The sampler: the same draws as pycgn.Sampler(seed=0) (tests compare them with Python).
  const pycgn::Draw d = pycgn::Sampler(0).draw_n(2, 0, {3});
  std::cout << "pycgn::Sampler: seed 0, sample 1: shape " << d.shape[1] << ", texture " << d.texture[1]
            << ", u_shape[0] " << d.u_shape[0] << "\n";
  return d.shape[1] == 3 ? 0 : 1;

}
