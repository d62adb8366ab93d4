// pycgn::Pipeline: TorchScript generators (libtorch) + the torch-free compositing core.
// The only translation unit of pycgn that includes libtorch's headers.
#include "pycgn/pipeline.h"

#include <c10/core/impl/DeviceGuardImplInterface.h>
#include <torch/cuda.h>
#include <torch/script.h>

#include <algorithm>
#include <mutex>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <utility>

#include "pycgn/composite.h"
#include "sidecar.h"

namespace fs = std::filesystem;

namespace pycgn {

namespace {

constexpr const char* kExtraFile = "pycgn.json";  // per-file record written by pycgn.export
using sidecar::kNets;

[[noreturn]] void fail(const fs::path& file, const std::string& what) {
  throw ExportError(file.string() + ": " + what);
}

// Generators are written as (N, C, H, W) float32; anything else is a broken export.
at::Tensor checked_output(const torch::IValue& out, const char* net, std::int64_t n, std::int64_t channels,
                          const fs::path& file) {
  if (!out.isTensor()) fail(file, std::string(net) + " generator did not return a tensor");
  at::Tensor t = out.toTensor();
  if (t.dim() != 4 || t.size(0) != n || t.size(1) != channels) {
    std::ostringstream s;
    s << net << " generator returned shape " << t.sizes() << ", expected (" << n << ", " << channels
      << ", H, W)";
    fail(file, s.str());
  }
  return t.to(at::kFloat).contiguous();
}

Image4 image4(const at::Tensor& t) {
  Image4 v;
  v.data = t.data_ptr<float>();
  for (int i = 0; i < 4; ++i) {
    v.size[i] = t.size(i);
    v.stride[i] = t.stride(i);
  }
  return v;
}

Offsets offsets4(const at::Tensor& t) {
  Offsets o;
  o.data = t.data_ptr<std::int64_t>();
  o.dtype = IndexDtype::kInt64;
  o.stride[0] = t.stride(0);
  o.stride[1] = t.stride(1);
  return o;
}

void check_draw(const Draw& d, const ExportInfo& info) {
  const auto n = static_cast<std::size_t>(d.size());
  const auto dim = static_cast<std::size_t>(info.latent_dim);
  if (d.latent_dim != info.latent_dim) {
    throw std::invalid_argument("draw.latent_dim is " + std::to_string(d.latent_dim) + ", the model's is " +
                                std::to_string(info.latent_dim));
  }
  auto sized = [&](const char* name, std::size_t got, std::size_t want) {
    if (got != want) {
      throw std::invalid_argument(std::string("draw.") + name + " has " + std::to_string(got) +
                                  " values, expected " + std::to_string(want));
    }
  };
  sized("shape", d.shape.size(), n);
  sized("texture", d.texture.size(), n);
  sized("bg", d.bg.size(), n);
  sized("u_shape", d.u_shape.size(), n * dim);
  sized("u_texture", d.u_texture.size(), n * dim);
  sized("u_bg", d.u_bg.size(), n * dim);
  sized("fg_offset", d.fg_offset.size(), 2 * n);
  sized("bg_offset", d.bg_offset.size(), 2 * n);
  auto classes = [&](const char* name, const std::vector<std::int64_t>& y) {
    for (auto v : y) {
      if (v < 0 || v >= info.n_classes) {
        throw std::invalid_argument(std::string("draw.") + name + " has class id " + std::to_string(v) +
                                    ", expected 0.." + std::to_string(info.n_classes - 1));
      }
    }
  };
  classes("shape", d.shape);
  classes("texture", d.texture);
  classes("bg", d.bg);
  auto offsets = [&](const char* name, const std::vector<std::int64_t>& o) {
    for (auto v : o) {
      if (v < 0) throw std::invalid_argument(std::string("draw.") + name + " has offset " + std::to_string(v) + ", expected >= 0");
    }
  };
  offsets("fg_offset", d.fg_offset);
  offsets("bg_offset", d.bg_offset);
}

}  // namespace

Device parse_device(const std::string& name) {
  if (name == "auto") return Device::kAuto;
  if (name == "cpu") return Device::kCpu;
  if (name == "cuda") return Device::kCuda;
  throw std::invalid_argument("device must be auto, cpu or cuda, got \"" + name + "\"");
}

const char* device_name(Device device) {
  switch (device) {
    case Device::kCpu: return "cpu";
    case Device::kCuda: return "cuda";
    default: return "auto";
  }
}

// MKL's vector math (tanh, exp, ...) sets itself up on its first call; when that call is split over
// OpenMP threads, a thread may compute its chunk differently (by up to 4e-5), so the first batch of
// a process could differ from the next with the same seed (seen as a flaky "same seed, same images").
// A first call too small to split runs on this thread only, as pycgn/_ext.py does for Python.
static void warm_vector_math() {
  static std::once_flag once;
  std::call_once(once, [] {
    const torch::NoGradGuard no_grad;
    const torch::Tensor x = torch::full({8}, 0.5f);
    (void)x.tanh(), (void)x.exp(), (void)x.log(), (void)x.sqrt(), (void)x.log1p(), (void)x.expm1();
  });
}

struct Pipeline::Impl {
  ExportInfo info;
  PipelineOptions options;
  Device device = Device::kCpu;
  fs::path files[3];
  // forward() of a loaded module does not modify it; mutable only because the API is non-const.
  mutable torch::jit::Module nets[3];

  torch::Device torch_device() const {
    return device == Device::kCuda ? torch::Device(torch::kCUDA) : torch::Device(torch::kCPU);
  }

  // One chunk [b0, b0 + n) of the draw into out (n images, NHWC uint8).
  void run(const Draw& d, std::int64_t b0, std::int64_t n, std::uint8_t* out) const;
};

Pipeline::Pipeline(const std::string& model_dir, PipelineOptions options) : impl_(std::make_unique<Impl>()) {
  const fs::path dir(model_dir);
  if (!fs::is_directory(dir)) {
    fail(dir, fs::exists(dir) ? "not a directory (expected a pycgn export directory)" : "no such directory");
  }
  if (options.batch_size < 1) {
    throw std::invalid_argument("batch_size must be >= 1, got " + std::to_string(options.batch_size));
  }
  // The sidecar's every field is checked (types, ranges, file names) before it is used.
  const sidecar::Sidecar side = sidecar::read(model_dir);
  const fs::path sidecar_file = dir / sidecar::kFileName;
  Impl& p = *impl_;
  p.info = side.info;
  p.options = options;
  if (p.info.runtime != "torchscript") {
    fail(sidecar_file, "runtime is \"" + p.info.runtime +
                      "\"; pycgn::Pipeline runs \"torchscript\" exports (pycgn export --format torchscript)");
  }

  const bool cuda_ok = PYCGN_PIPELINE_CUDA && torch::cuda::is_available();
  if (options.device == Device::kCuda && !cuda_ok) {
    throw std::invalid_argument(
        PYCGN_PIPELINE_CUDA ? "device is cuda, but libtorch sees no CUDA GPU (or is a CPU-only build)"
                            : "device is cuda, but pycgn was built without CUDA (no CUDA toolkit found)");
  }
  p.device = options.device == Device::kCpu ? Device::kCpu : (cuda_ok ? Device::kCuda : Device::kCpu);

  for (int i = 0; i < 3; ++i) {
    p.files[i] = dir / side.files[i];
    if (!fs::is_regular_file(p.files[i])) fail(p.files[i], "no such file (named by " + sidecar_file.string() + ")");
    torch::jit::ExtraFilesMap extra{{kExtraFile, ""}};
    try {
      p.nets[i] = torch::jit::load(p.files[i].string(), p.torch_device(), extra);
    } catch (const c10::Error& e) {
      const std::string msg = e.what_without_backtrace();
      fail(p.files[i], "not a loadable TorchScript module (truncated or corrupt): " + msg.substr(0, msg.find('\n')));
    }
    sidecar::check_record(extra[kExtraFile], kNets[i], p.info.weights_sha256, p.files[i].string());
    p.nets[i].eval();
  }
  warm_vector_math();
}

Pipeline::~Pipeline() = default;
Pipeline::Pipeline(Pipeline&&) noexcept = default;
Pipeline& Pipeline::operator=(Pipeline&&) noexcept = default;

const ExportInfo& Pipeline::info() const { return impl_->info; }
Device Pipeline::device() const { return impl_->device; }

Sampler Pipeline::sampler(std::uint64_t seed, std::int64_t counterfactuals) const {
  const auto& i = impl_->info;
  return Sampler(seed, i.n_classes, i.latent_dim, i.max_offset, counterfactuals);
}

void Pipeline::Impl::run(const Draw& d, std::int64_t b0, std::int64_t n, std::uint8_t* out) const {
  const std::int64_t dim = info.latent_dim;
  const auto dev = torch_device();
  // Views of the draw's memory (alive for this call); copied only when moved to a GPU.
  auto view = [&](const auto* data, c10::IntArrayRef size, torch::Dtype dtype) {
    return torch::from_blob(const_cast<void*>(static_cast<const void*>(data)), size, dtype).to(dev);
  };
  auto latents = [&](const std::vector<float>& u) { return view(u.data() + b0 * dim, {n, dim}, torch::kFloat); };
  auto labels = [&](const std::vector<std::int64_t>& y) { return view(y.data() + b0, {n}, torch::kLong); };
  auto offsets = [&](const std::vector<std::int64_t>& o) { return view(o.data() + 2 * b0, {n, 2}, torch::kLong); };
  at::Tensor mask, fg, bg;
  {
    c10::InferenceMode guard;
    mask = checked_output(nets[0].forward({latents(d.u_shape), labels(d.shape)}), "shape", n, 1, files[0]);
    fg = checked_output(nets[1].forward({latents(d.u_texture), labels(d.texture)}), "texture", n, 3, files[1]);
    bg = checked_output(nets[2].forward({latents(d.u_bg), labels(d.bg)}), "background", n, 3, files[2]);
  }
  const std::int64_t h = mask.size(2), w = mask.size(3);
  if (h != info.image_size || w != info.image_size) {
    fail(files[0], "shape generator returned " + std::to_string(h) + "x" + std::to_string(w) + " masks, the sidecar says " +
                       std::to_string(info.image_size));
  }
  const at::Tensor fo = offsets(d.fg_offset), bo = offsets(d.bg_offset);
  CompositeParams c;
  c.mask = image4(mask);
  c.fg = image4(fg);
  c.bg = image4(bg);
  c.fg_offset = offsets4(fo);
  c.bg_offset = offsets4(bo);
  c.out_dtype = OutDtype::kUint8;
  c.layout = Layout::kNHWC;
  c.lo = info.clamp_lo;
  c.hi = info.clamp_hi;
  if (device == Device::kCpu) {
    c.out = out;
    composite_cpu(c);
    return;
  }
#if PYCGN_PIPELINE_CUDA
  at::Tensor img = torch::empty({n, h, w, 3}, torch::TensorOptions().dtype(torch::kByte).device(dev));
  c.out = img.data_ptr<std::uint8_t>();
  if (const char* bad = composite_check(c)) throw std::invalid_argument(bad);
  // The caller's current stream, where libtorch ran the nets and runs the copy below (which
  // waits for it). Asked through c10's device-generic interface, not c10::cuda: this also
  // links against a CPU-only libtorch, and libtorch's CUDA library registers it at run time.
  const c10::Stream stream = c10::impl::getDeviceGuardImpl(dev.type())->getStream(dev);
  composite_cuda(c, static_cast<cudaStream_t>(stream.native_handle()));
  at::Tensor host = img.to(torch::kCPU);
  std::copy(host.data_ptr<std::uint8_t>(), host.data_ptr<std::uint8_t>() + host.numel(), out);
#endif
}

Images Pipeline::images(const Draw& draw) const {
  const Impl& p = *impl_;
  check_draw(draw, p.info);
  Images img;
  img.n = draw.size();
  img.height = img.width = p.info.image_size;
  img.channels = 3;
  const std::int64_t per = img.height * img.width * img.channels;
  img.data.resize(static_cast<std::size_t>(img.n * per));
  for (std::int64_t b0 = 0; b0 < img.n; b0 += p.options.batch_size) {
    const std::int64_t n = std::min(p.options.batch_size, img.n - b0);
    p.run(draw, b0, n, img.data.data() + b0 * per);
  }
  return img;
}

Images Pipeline::generate(std::uint64_t seed, std::int64_t n, const std::vector<std::int64_t>& shape,
                          const std::vector<std::int64_t>& texture, const std::vector<std::int64_t>& bg,
                          std::int64_t start, std::int64_t counterfactuals) const {
  return images(sampler(seed, counterfactuals).draw_n(n, start, shape, texture, bg));
}

}  // namespace pycgn
