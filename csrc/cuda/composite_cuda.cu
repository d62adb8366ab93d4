// CUDA path of the compositing kernel: the launch. The kernel and the rules of its fast paths are
// in composite_kernel.cuh. Runs on the caller's stream.
#include <cuda_runtime.h>

#include <cstdint>
#include <stdexcept>
#include <string>

#include "composite_kernel.cuh"
#include "pycgn/composite.h"

namespace pycgn {
namespace {

using namespace kernel;

template <typename T, typename I>
void launch(const CompositeParams& p, const Flags& fl, std::int64_t blocks, cudaStream_t stream) {
  if (p.fg.size[1] == 3) {
    composite_kernel<T, 3, I><<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(p, fl);
  } else {
    composite_kernel<T, 0, I><<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(p, fl);
  }
}

template <typename T>
void launch(const CompositeParams& p, cudaStream_t stream) {
  const Launch l = plan<T>(p);
  if (l.narrow) {
    launch<T, std::int32_t>(p, l.flags, l.blocks, stream);
  } else {
    launch<T, std::int64_t>(p, l.flags, l.blocks, stream);
  }
  const cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) throw std::runtime_error(std::string("composite_cuda: ") + cudaGetErrorString(err));
}

}  // namespace

void composite_cuda(const CompositeParams& p, cudaStream_t stream) {
  if (const char* err = composite_check(p)) throw std::invalid_argument(err);
  if (p.mask.size[0] * p.fg.size[1] * p.mask.size[2] * p.mask.size[3] == 0) return;
  if (p.out_dtype == OutDtype::kUint8) {
    launch<std::uint8_t>(p, stream);
  } else {
    launch<float>(p, stream);
  }
}

}  // namespace pycgn
