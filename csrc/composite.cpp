// The torch operator pycgn::composite (and its out= overload): checks the tensors, fills a
// pycgn::CompositeParams and calls the torch-free core on CPU or CUDA. Inputs are float32;
// pycgn.ops.composite converts float16/bfloat16 first. The fake (meta) kernel, for
// torch.compile and torch.export, is registered in pycgn/ops.py.
#include <ATen/ATen.h>
#include <ATen/MemoryOverlap.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <utility>
#include <vector>

#ifdef PYCGN_WITH_CUDA
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#endif

#include "pycgn/composite.h"
#include "torch_views.h"

namespace pycgn {
namespace {

Layout parse_layout(c10::string_view layout) {
  if (layout == "NCHW") return Layout::kNCHW;
  if (layout == "NHWC") return Layout::kNHWC;
  TORCH_CHECK_VALUE(false, "composite: layout must be 'NCHW' or 'NHWC', got '", std::string(layout), "'");
}

OutDtype parse_dtype(at::ScalarType dtype) {
  TORCH_CHECK_TYPE(dtype == at::kFloat || dtype == at::kByte,
                   "composite: out_dtype must be float32 or uint8, got ", dtype);
  return dtype == at::kByte ? OutDtype::kUint8 : OutDtype::kFloat32;
}

// What the torch-free core cannot see (dtypes, ranks, devices, offset shapes) is checked here;
// sizes, channels and the clamp are checked once, by pycgn::composite_check.
void check_image(const at::Tensor& t, const char* name, const at::Tensor& mask) {
  TORCH_CHECK_TYPE(t.scalar_type() == at::kFloat, "composite: ", name, " must be float32, got ",
                   t.scalar_type());
  TORCH_CHECK_VALUE(t.dim() == 4, "composite: ", name, " must have 4 dimensions (N, C, H, W), got shape ",
                    t.sizes());
  TORCH_CHECK_VALUE(t.device() == mask.device(), "composite: ", name, " is on ", t.device(),
                    " but mask is on ", mask.device());
}

void check_offset(const c10::optional<at::Tensor>& o, const char* name, const at::Tensor& mask) {
  if (!o) return;
  TORCH_CHECK_TYPE(o->scalar_type() == at::kInt || o->scalar_type() == at::kLong, "composite: ", name,
                   " must be int32 or int64, got ", o->scalar_type());
  TORCH_CHECK_VALUE(o->dim() == 2 && o->size(0) == mask.size(0) && o->size(1) == 2, "composite: ", name,
                    " must have shape (", mask.size(0), ", 2), got ", o->sizes());
  TORCH_CHECK_VALUE(o->device() == mask.device(), "composite: ", name, " is on ", o->device(),
                    " but mask is on ", mask.device());
}

Offsets offsets(const c10::optional<at::Tensor>& o) { return o ? offsets_view(*o) : Offsets{}; }

// Checks the arguments and returns the core's parameters, all but `out`.
CompositeParams params(const at::Tensor& mask, const at::Tensor& fg, const at::Tensor& bg,
                       const c10::optional<at::Tensor>& fg_offset, const c10::optional<at::Tensor>& bg_offset,
                       at::ScalarType out_dtype, c10::string_view layout, double lo, double hi) {
  CompositeParams p;
  p.layout = parse_layout(layout);
  p.out_dtype = parse_dtype(out_dtype);
  check_image(mask, "mask", mask);
  check_image(fg, "fg", mask);
  check_image(bg, "bg", mask);
  check_offset(fg_offset, "fg_offset", mask);
  check_offset(bg_offset, "bg_offset", mask);
  // Checked in double: the float cast below must not turn lo > hi into lo == hi.
  TORCH_CHECK_VALUE(lo <= hi, "composite: clamp must have lo <= hi, got (", lo, ", ", hi, ")");
  p.mask = image_view(mask);
  p.fg = image_view(fg);
  p.bg = image_view(bg);
  p.fg_offset = offsets(fg_offset);
  p.bg_offset = offsets(bg_offset);
  p.lo = static_cast<float>(lo);
  p.hi = static_cast<float>(hi);
  p.out = &p;  // a non-null stand-in: the output is allocated (or checked) once its shape is known
  const char* err = composite_check(p);
  TORCH_CHECK_VALUE(err == nullptr, "composite: ", err ? err : "");
  p.out = nullptr;
  return p;
}

std::vector<int64_t> out_shape(const CompositeParams& p) {
  const int64_t n = p.mask.size[0], c = p.fg.size[1], h = p.mask.size[2], w = p.mask.size[3];
  return p.layout == Layout::kNHWC ? std::vector<int64_t>{n, h, w, c} : std::vector<int64_t>{n, c, h, w};
}

// Bytes [first, last] a tensor can touch: the kernel reads inputs through the read-only
// cache (CUDA) and __restrict pointers (CPU), so `out` must not share a byte with any input.
std::pair<uintptr_t, uintptr_t> span(const at::Tensor& t) {
  const auto base = reinterpret_cast<uintptr_t>(t.data_ptr());
  int64_t last = 0;
  for (int64_t d = 0; d < t.dim(); ++d) last += (t.size(d) - 1) * t.stride(d);
  return {base, base + static_cast<uintptr_t>((last + 1) * t.element_size()) - 1};
}

void check_no_overlap(const at::Tensor& out, const at::Tensor& t, const char* name) {
  if (t.numel() == 0) return;
  const auto a = span(out), b = span(t);
  TORCH_CHECK_VALUE(a.second < b.first || b.second < a.first, "composite: out shares memory with ", name,
                    "; pass a separate out tensor");
}

// Writes into `out`, which is dense in its layout.
void launch(CompositeParams p, const at::Tensor& mask, at::Tensor& out) {
  if (out.numel() == 0) return;
  p.out = out.data_ptr();
  if (mask.is_cpu()) {
    // torch's own pool, not OpenMP's beside it: one set of threads per process, sized and
    // pinned by torch.set_num_threads, and no second pool spinning while torch's works.
    const CompositeParams& q = p;
    at::parallel_for(0, composite_cpu_row_count(q), composite_cpu_grain(q),
                     [&q](std::int64_t r0, std::int64_t r1) { composite_cpu_rows(q, r0, r1); });
    return;
  }
#ifdef PYCGN_WITH_CUDA
  TORCH_CHECK(mask.is_cuda(), "composite: unsupported device ", mask.device());
  const c10::cuda::CUDAGuard guard(mask.device());
  composite_cuda(p, c10::cuda::getCurrentCUDAStream(mask.device().index()).stream());
#else
  TORCH_CHECK(false, "composite: pycgn was built without CUDA; got tensors on ", mask.device());
#endif
}

at::Tensor composite(const at::Tensor& mask, const at::Tensor& fg, const at::Tensor& bg,
                     const c10::optional<at::Tensor>& fg_offset, const c10::optional<at::Tensor>& bg_offset,
                     at::ScalarType out_dtype, c10::string_view layout, double lo, double hi) {
  const CompositeParams p = params(mask, fg, bg, fg_offset, bg_offset, out_dtype, layout, lo, hi);
  at::Tensor out = at::empty(out_shape(p), mask.options().dtype(out_dtype));
  launch(p, mask, out);
  return out;
}

at::Tensor& composite_out(const at::Tensor& mask, const at::Tensor& fg, const at::Tensor& bg,
                          const c10::optional<at::Tensor>& fg_offset,
                          const c10::optional<at::Tensor>& bg_offset, at::ScalarType out_dtype,
                          c10::string_view layout, double lo, double hi, at::Tensor& out) {
  const CompositeParams p = params(mask, fg, bg, fg_offset, bg_offset, out_dtype, layout, lo, hi);
  const auto shape = out_shape(p);
  TORCH_CHECK_TYPE(out.scalar_type() == out_dtype, "composite: out must be ", out_dtype, ", got ",
                   out.scalar_type());
  TORCH_CHECK_VALUE(out.sizes() == at::IntArrayRef(shape), "composite: out must have shape ", at::IntArrayRef(shape),
                    ", got ", out.sizes());
  TORCH_CHECK_VALUE(out.device() == mask.device(), "composite: out is on ", out.device(),
                    " but mask is on ", mask.device());
  if (out.numel() == 0) return out;
  TORCH_CHECK_VALUE(at::has_internal_overlap(out) != at::MemOverlap::Yes,
                    "composite: out has elements that share memory (a stride of 0, e.g. from expand)");
  check_no_overlap(out, mask, "mask");
  check_no_overlap(out, fg, "fg");
  check_no_overlap(out, bg, "bg");
  if (fg_offset) check_no_overlap(out, *fg_offset, "fg_offset");
  if (bg_offset) check_no_overlap(out, *bg_offset, "bg_offset");
  if (out.is_contiguous()) {
    launch(p, mask, out);
  } else {  // a strided view: compute densely, then copy into it
    at::Tensor dense = at::empty(shape, out.options().memory_format(at::MemoryFormat::Contiguous));
    launch(p, mask, dense);
    out.copy_(dense);
  }
  return out;
}

}  // namespace

TORCH_LIBRARY(pycgn, m) {
  m.def("composite(Tensor mask, Tensor fg, Tensor bg, Tensor? fg_offset, Tensor? bg_offset, "
        "ScalarType out_dtype, str layout, float lo, float hi) -> Tensor");
  m.def("composite.out(Tensor mask, Tensor fg, Tensor bg, Tensor? fg_offset, Tensor? bg_offset, "
        "ScalarType out_dtype, str layout, float lo, float hi, *, Tensor(a!) out) -> Tensor(a!)");
}

TORCH_LIBRARY_IMPL(pycgn, CPU, m) {
  m.impl("composite", &composite);
  m.impl("composite.out", &composite_out);
}

#ifdef PYCGN_WITH_CUDA
TORCH_LIBRARY_IMPL(pycgn, CUDA, m) {
  m.impl("composite", &composite);
  m.impl("composite.out", &composite_out);
}
#endif

}  // namespace pycgn
