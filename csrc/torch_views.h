// Tensor -> the torch-free core's views (pycgn::Image4, pycgn::Offsets). Private: shared by
// the torch operator (csrc/composite.cpp) and pycgn::Pipeline (cpp/pipeline.cpp), the two
// places that hand libtorch tensors to the core. The caller checks dtypes and ranks first.
#pragma once

#include <ATen/ATen.h>

#include "pycgn/composite.h"

namespace pycgn {

// A float32 tensor of 4 dimensions, any strides.
inline Image4 image_view(const at::Tensor& t) {
  Image4 v;
  v.data = t.data_ptr<float>();
  for (int d = 0; d < 4; ++d) {
    v.size[d] = t.size(d);
    v.stride[d] = t.stride(d);
  }
  return v;
}

// An int32 or int64 tensor of shape (N, 2); an empty one means "no offsets".
inline Offsets offsets_view(const at::Tensor& t) {
  Offsets o;
  if (t.numel() == 0) return o;
  o.data = t.data_ptr();
  o.dtype = t.scalar_type() == at::kInt ? IndexDtype::kInt32 : IndexDtype::kInt64;
  o.stride[0] = t.stride(0);
  o.stride[1] = t.stride(1);
  return o;
}

}  // namespace pycgn
