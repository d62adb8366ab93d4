// ctest: pycgn::composite_cuda against the plain scalar loop, bit for bit, on random inputs,
// on a non-default stream. Exits 77 (skipped) without a CUDA device.
// `composite_cuda_test small` runs a few small cases (for compute-sanitizer);
// `composite_cuda_test bench` times 64x3x256x256 float32 -> uint8 NHWC against a device copy
// of the same bytes (and is the short program ncu profiles).
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdlib>
#include <vector>
#include <cstring>

#include "composite_cases.h"

#define CHECK(x)                                                                              \
  do {                                                                                        \
    cudaError_t e_ = (x);                                                                     \
    if (e_ != cudaSuccess) {                                                                  \
      std::fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #x, cudaGetErrorString(e_)); \
      std::exit(1);                                                                           \
    }                                                                                         \
  } while (0)

template <typename T>
T* upload(const T* src, std::size_t bytes) {
  void* d = nullptr;
  CHECK(cudaMalloc(&d, bytes ? bytes : 1));
  if (bytes) CHECK(cudaMemcpy(d, src, bytes, cudaMemcpyHostToDevice));
  return static_cast<T*>(d);
}

// Median milliseconds of `reps` runs of f, timed with events on `stream`.
template <typename F>
float median_ms(F f, cudaStream_t stream, int reps) {
  cudaEvent_t a, b;
  CHECK(cudaEventCreate(&a));
  CHECK(cudaEventCreate(&b));
  std::vector<float> ms(reps);
  for (int i = 0; i < reps; ++i) {
    CHECK(cudaEventRecord(a, stream));
    f();
    CHECK(cudaEventRecord(b, stream));
    CHECK(cudaEventSynchronize(b));
    CHECK(cudaEventElapsedTime(&ms[i], a, b));
  }
  CHECK(cudaEventDestroy(a));
  CHECK(cudaEventDestroy(b));
  std::sort(ms.begin(), ms.end());
  return ms[reps / 2];
}

int bench(cudaStream_t stream) {
  const std::int64_t n = 64, c = 3, h = 256, w = 256;
  const std::size_t in_floats = static_cast<std::size_t>(n * h * w + 2 * n * c * h * w);
  const std::size_t out_bytes = static_cast<std::size_t>(n * h * w * c);
  float* in = nullptr;
  std::uint8_t* out = nullptr;
  CHECK(cudaMalloc(&in, in_floats * 4));
  CHECK(cudaMalloc(&out, out_bytes));
  CHECK(cudaMemset(in, 0, in_floats * 4));  // zeros: the arithmetic does not change the traffic
  pycgn::CompositeParams p;
  pycgn::Image4* im[3] = {&p.mask, &p.fg, &p.bg};
  const float* base = in;
  for (int i = 0; i < 3; ++i) {
    const std::int64_t ch = i == 0 ? 1 : c;
    const std::int64_t size[4] = {n, ch, h, w}, stride[4] = {ch * h * w, h * w, w, 1};
    im[i]->data = base;
    for (int d = 0; d < 4; ++d) im[i]->size[d] = size[d], im[i]->stride[d] = stride[d];
    base += n * ch * h * w;
  }
  p.out = out;
  p.out_dtype = pycgn::OutDtype::kUint8;
  p.layout = pycgn::Layout::kNHWC;
  // A device copy moving the same bytes: it reads and writes `half` bytes each.
  const std::size_t moved = in_floats * 4 + out_bytes, half = moved / 2;
  void* copy = nullptr;
  CHECK(cudaMalloc(&copy, half));
  for (int i = 0; i < 3; ++i) pycgn::composite_cuda(p, stream);  // warm-up
  const float t_comp = median_ms([&] { pycgn::composite_cuda(p, stream); }, stream, 50);
  const float t_copy = median_ms([&] { CHECK(cudaMemcpyAsync(copy, in, half, cudaMemcpyDeviceToDevice, stream)); },
                                 stream, 50);
  std::printf("bench 64x3x256x256 float32 -> uint8 NHWC: composite %.3f ms (%.0f GB/s), "
              "same-bytes device copy %.3f ms (%.0f GB/s): %.0f %% of the copy's rate\n",
              t_comp, moved / t_comp / 1e6, t_copy, moved / t_copy / 1e6, 100.0 * t_copy / t_comp);
  for (void* q : {static_cast<void*>(in), static_cast<void*>(out), copy}) CHECK(cudaFree(q));
  return 0;
}

int main(int argc, char** argv) {
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
    std::printf("no CUDA device: skipped\n");
    return 77;
  }
  const bool small = argc > 1 && std::strcmp(argv[1], "small") == 0;
  if (argc > 1 && std::strcmp(argv[1], "bench") == 0) {
    cudaStream_t s;
    CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
    const int rc = bench(s);
    CHECK(cudaStreamDestroy(s));
    return rc;
  }
  cudaStream_t stream;
  CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  int failed = 0, total = 0;
  auto cases = pycgn_test::make_cases(20261129, small ? 4 : 60);
  for (std::size_t ci = 0; ci < cases.size(); ++ci) {
    const auto& k = cases[ci];
    if (small && (k.out_elems() > 20000 || ci % 3)) continue;
    ++total;
    const auto exp = pycgn_test::expected(k);
    const float* m = upload(k.mask.storage.data(), k.mask.storage.size() * 4);
    const float* f = upload(k.fg.storage.data(), k.fg.storage.size() * 4);
    const float* g = upload(k.bg.storage.data(), k.bg.storage.size() * 4);
    const void* o0 = upload(static_cast<const char*>(k.host_offsets(0)), k.offset_bytes(0));
    const void* o1 = upload(static_cast<const char*>(k.host_offsets(1)), k.offset_bytes(1));
    const std::size_t guard = 64;
    std::uint8_t* out = nullptr;
    CHECK(cudaMalloc(&out, exp.size() + guard));
    CHECK(cudaMemset(out, 0xA5, exp.size() + guard));
    pycgn::composite_cuda(k.params(m, f, g, o0, o1, out), stream);
    CHECK(cudaStreamSynchronize(stream));
    std::vector<std::uint8_t> got(exp.size() + guard);
    CHECK(cudaMemcpy(got.data(), out, got.size(), cudaMemcpyDeviceToHost));
    int bad = pycgn_test::compare(k, std::vector<std::uint8_t>(got.begin(), got.begin() + exp.size()), exp);
    for (std::size_t i = exp.size(); i < got.size(); ++i) bad += got[i] != 0xA5;
    if (bad) {
      std::fprintf(stderr, "FAIL %s: %d wrong\n", k.name.c_str(), bad);
      ++failed;
    }
    for (const void* p : {static_cast<const void*>(m), static_cast<const void*>(f), static_cast<const void*>(g), o0,
                          o1, static_cast<const void*>(out)})
      CHECK(cudaFree(const_cast<void*>(p)));
  }
  CHECK(cudaStreamDestroy(stream));
  std::printf("composite_cuda: %d cases, %d failed\n", total, failed);
  return failed ? 1 : 0;
}
