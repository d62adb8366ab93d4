// Throughput of pycgn::Pipeline: seconds per call of generate(seed, n) (sampling, the three
// generators, compositing to uint8 NHWC), after one warm-up call. Prints one JSON line.
//
//   pycgn_pipeline_bench EXPORT_DIR N REPEATS [BATCH_SIZE]
#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <iostream>
#include <vector>

#include "pycgn/pipeline.h"

int main(int argc, char** argv) {
  if (argc < 4) {
    std::cerr << "usage: pycgn_pipeline_bench EXPORT_DIR N REPEATS [BATCH_SIZE]\n";
    return 2;
  }
  const std::int64_t n = std::atoll(argv[2]), repeats = std::atoll(argv[3]);
  pycgn::PipelineOptions options;
  options.device = pycgn::Device::kCpu;
  if (argc > 4) options.batch_size = std::atoll(argv[4]);
  const pycgn::Pipeline pipe(argv[1], options);
  using clock = std::chrono::steady_clock;
  std::uint64_t sink = pipe.generate(0, n).data[0];  // warm-up: the profiling executor's first runs
  std::vector<double> times;
  for (std::int64_t r = 0; r < repeats; ++r) {
    const auto t0 = clock::now();
    const pycgn::Images img = pipe.generate(static_cast<std::uint64_t>(r + 1), n);
    times.push_back(std::chrono::duration<double>(clock::now() - t0).count());
    sink += img.data[img.data.size() / 2];
  }
  std::sort(times.begin(), times.end());
  std::cout << "{\"n\": " << n << ", \"batch_size\": " << options.batch_size << ", \"median_s\": "
            << times[times.size() / 2] << ", \"min_s\": " << times.front() << ", \"sink\": " << sink % 2 << "}\n";
  return 0;
}
