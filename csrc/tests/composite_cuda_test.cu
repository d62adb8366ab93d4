// ctest: pycgn::composite_cuda against the plain scalar loop, bit for bit, on random inputs,
// on a non-default stream. Exits 77 (skipped) without a CUDA device.
// `composite_cuda_test small` runs a few small cases (for compute-sanitizer).
#include <cuda_runtime.h>

#include <cstdlib>
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

int main(int argc, char** argv) {
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
    std::printf("no CUDA device: skipped\n");
    return 77;
  }
  const bool small = argc > 1 && std::strcmp(argv[1], "small") == 0;
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
