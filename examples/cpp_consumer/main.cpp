// Uses pycgn::pipeline from an installed package: generates images from an export directory
// (AOTInductor or TorchScript: the pipeline reads which from the export's sidecar).
//
//   pycgn_consumer EXPORT_DIR
#include <pycgn/pipeline.h>

#include <cstdint>
#include <iostream>

int main(int argc, char** argv) {
  if (argc < 2) {
    std::cerr << "usage: pycgn_consumer EXPORT_DIR\n";
    return 2;
  }
  // A "3" textured like a "7" on a "1"'s background, seeds 0..3.
  pycgn::Pipeline pipe(argv[1]);
  const pycgn::Images img = pipe.generate(/*seed=*/0, /*n=*/4, {3}, {7}, {1});
  std::uint64_t sum = 0;
  for (auto b : img.data) sum += b;
  std::cout << "pycgn::pipeline: " << img.n << " images " << img.height << "x" << img.width << "x" << img.channels
            << " from " << pipe.info().variant << " on " << pycgn::device_name(pipe.device())
            << ", pixel sum " << sum << "\n";
  return img.n == 4 ? 0 : 1;
}
