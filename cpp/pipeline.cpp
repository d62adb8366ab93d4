// pycgn::Pipeline: the generators of an export (AOTInductor packages or TorchScript modules,
// run with libtorch) + the torch-free compositing core and sampler (pycgn::core).
// The only translation unit of pycgn::pipeline that includes libtorch's headers.
#include "pycgn/pipeline.h"

#include <ATen/Parallel.h>
#include <ATen/Version.h>
#include <c10/core/impl/DeviceGuardImplInterface.h>
#include <torch/csrc/inductor/aoti_package/model_package_loader.h>
#include <torch/cuda.h>
#include <torch/script.h>
#include <torch/version.h>

#include <algorithm>
#include <mutex>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <utility>

#include "pycgn/composite.h"
#include "sidecar.h"
#include "torch_views.h"

namespace fs = std::filesystem;

namespace pycgn {

namespace {

constexpr const char* kExtraFile = "pycgn.json";  // per-file record written by pycgn.export
using sidecar::kNets;

[[noreturn]] void fail(const fs::path& file, const std::string& what) {
  throw ExportError(file.string() + ": " + what);
}

// Generators are written as (N, C, H, W) float32; anything else is a broken export.
at::Tensor checked_output(const at::Tensor& t, const char* net, std::int64_t n, std::int64_t channels,
                          const fs::path& file) {
  if (t.dim() != 4 || t.size(0) != n || t.size(1) != channels) {
    std::ostringstream s;
    s << net << " generator returned shape " << t.sizes() << ", expected (" << n << ", " << channels
      << ", H, W)";
    fail(file, s.str());
  }
  return t.to(at::kFloat).contiguous();
}

// One mechanism's generator: (u float32 (N, latent), y int64 (N,)) -> float32 (N, C, H, W).
class Net {
 public:
  virtual ~Net() = default;
  virtual at::Tensor forward(const at::Tensor& u, const at::Tensor& y) const = 0;
};

// A TorchScript module (pycgn export --format torchscript), with its pycgn.json record.
class TorchScriptNet : public Net {
 public:
  TorchScriptNet(const fs::path& file, const char* mechanism, const std::string& sha, const torch::Device& device) {
    torch::jit::ExtraFilesMap extra{{kExtraFile, ""}};
    try {
      module_ = torch::jit::load(file.string(), device, extra);
    } catch (const c10::Error& e) {
      const std::string msg = e.what_without_backtrace();
      fail(file, "not a loadable TorchScript module (truncated or corrupt): " + msg.substr(0, msg.find('\n')));
    }
    sidecar::check_record(extra[kExtraFile], mechanism, sha, file.string());
    module_.eval();
  }

  at::Tensor forward(const at::Tensor& u, const at::Tensor& y) const override {
    const torch::IValue out = module_.forward({u, y});
    if (!out.isTensor()) throw std::runtime_error("the generator did not return a tensor");
    return out.toTensor();
  }

 private:
  // forward() of a loaded module does not modify it; mutable only because the API is non-const.
  mutable torch::jit::Module module_;
};

// "2.13.0+cpu" -> "2.13.0": the local suffix names the wheel's build, not the library's ABI.
std::string release(const std::string& version) { return version.substr(0, version.find('+')); }

// Whether a CPU package compiled for vector ISA `arch` runs on this CPU (as pycgn.export's
// _arch_runs_here): an ISA at or below this machine's; a GPU package needs its exact architecture
// (checked by the CUDA runtime when it loads).
bool cpu_arch_runs_here(const std::string& arch) {
  static const char* const isas[] = {"DEFAULT", "AVX2", "AVX512"};
  const std::string here = at::get_cpu_capability();
  int a = -1, h = -1;
  for (int i = 0; i < 3; ++i) {
    if (arch == isas[i]) a = i;
    if (here == isas[i]) h = i;
  }
  return a >= 0 && h >= 0 ? a <= h : arch == here;
}

// An AOTInductor package (pycgn export --format aoti). Its metadata is checked before the
// compiled library in it is loaded: a package of another torch may not even load cleanly.
class AotiNet : public Net {
 public:
  AotiNet(const fs::path& file, const char* mechanism, const ExportInfo& info, const torch::Device& device) {
    std::unordered_map<std::string, std::string> meta;
    try {
      meta = torch::inductor::AOTIModelPackageLoader::load_metadata_from_package(file.string(), "model");
    } catch (const std::exception& e) {
      fail(file, std::string("not a readable AOTInductor package (truncated or corrupt): ") + first_line(e.what()));
    }
    auto field = [&](const char* key) {
      const auto it = meta.find(key);
      return it == meta.end() ? std::string("(missing)") : it->second;
    };
    if (field("pycgn.mechanism") != mechanism) {
      fail(file, "holds the \"" + field("pycgn.mechanism").substr(0, 40) + "\" generator, expected \"" + mechanism + "\"");
    }
    if (field("pycgn.weights_sha256") != info.weights_sha256) {
      fail(file, "exported from weights " + field("pycgn.weights_sha256").substr(0, 12) + "..., but the sidecar says " +
                     info.weights_sha256.substr(0, 12) + "...");
    }
    if (field("pycgn.precision") != info.precision) {
      fail(file, "computes in " + field("pycgn.precision").substr(0, 20) + ", but the sidecar's precision is " + info.precision);
    }
    if (release(field("pycgn.torch_version")) != TORCH_VERSION) {
      fail(file, "compiled by torch " + field("pycgn.torch_version").substr(0, 40) + "; this pycgn runs libtorch " +
                     TORCH_VERSION + " (re-export with pycgn export --format aoti)");
    }
    try {
      loader_ = std::make_unique<torch::inductor::AOTIModelPackageLoader>(
          file.string(), "model", /*run_single_threaded=*/false, /*num_runners=*/1,
          device.is_cuda() ? device.index() : c10::DeviceIndex(-1));
    } catch (const std::exception& e) {
      fail(file, std::string("cannot load the AOTInductor package: ") + first_line(e.what()));
    }
  }

  at::Tensor forward(const at::Tensor& u, const at::Tensor& y) const override {
    std::vector<at::Tensor> out = loader_->run({u, y});
    if (out.size() != 1) throw std::runtime_error("the generator returned " + std::to_string(out.size()) + " tensors");
    return out[0];
  }

 private:
  static std::string first_line(const std::string& s) { return s.substr(0, s.find('\n')); }
  // run() may be called from several threads: the container hands each call a free runner.
  std::unique_ptr<torch::inductor::AOTIModelPackageLoader> loader_;
};

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
  std::unique_ptr<Net> nets[3];

  torch::Device torch_device() const {
    return device == Device::kCuda ? torch::Device(torch::kCUDA) : torch::Device(torch::kCPU);
  }

  // One chunk [b0, b0 + n) of the draw into out (n images, NHWC uint8), computed as a batch of
  // `rows` >= n samples: the chunk padded with copies of its first sample, as Python pads.
  void run(const Draw& d, std::int64_t b0, std::int64_t n, std::int64_t rows, std::uint8_t* out) const;
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
  // kind and runtime are among those this build runs (sidecar::kKinds, kRuntimes): checked by sidecar::read.

  const bool cuda_ok = PYCGN_PIPELINE_CUDA && torch::cuda::is_available();
  if (options.device == Device::kCuda && !cuda_ok) {
    throw std::invalid_argument(
        PYCGN_PIPELINE_CUDA ? "device is cuda, but libtorch sees no CUDA GPU (or is a CPU-only build)"
                            : "device is cuda, but pycgn was built without CUDA (no CUDA toolkit found)");
  }
  p.device = options.device == Device::kCpu ? Device::kCpu : (cuda_ok ? Device::kCuda : Device::kCpu);
  if (p.info.runtime == "aoti") {
    // An AOTInductor package holds code compiled for one device: it runs there or nowhere.
    if (p.info.compiled_for != "cpu" && p.info.compiled_for != "cuda") {
      fail(sidecar_file, "key \"device\" is \"" + p.info.compiled_for + "\", expected \"cpu\" or \"cuda\"");
    }
    const Device compiled = p.info.compiled_for == "cuda" ? Device::kCuda : Device::kCpu;
    if (options.device != Device::kAuto && options.device != compiled) {
      fail(sidecar_file, std::string("key \"device\": the AOTInductor packages were compiled for ") +
                             p.info.compiled_for + ", not " + device_name(options.device));
    }
    if (compiled == Device::kCuda && !cuda_ok) {
      fail(sidecar_file, "key \"device\": the AOTInductor packages were compiled for cuda, and no CUDA GPU is usable here");
    }
    p.device = compiled;
    if (compiled == Device::kCpu && !cpu_arch_runs_here(p.info.arch)) {
      fail(sidecar_file, "key \"arch\" is \"" + p.info.arch + "\": the packages use CPU instructions this CPU (" +
                             at::get_cpu_capability() + ") lacks; export them again on this machine");
    }
    if (release(p.info.torch_version) != TORCH_VERSION) {
      fail(sidecar_file, "key \"torch_version\" is \"" + p.info.torch_version + "\": AOTInductor packages run only "
                         "with the torch that compiled them; this pycgn runs libtorch " TORCH_VERSION);
    }
  }

  for (int i = 0; i < 3; ++i) {
    p.files[i] = dir / side.files[i];
    if (!fs::is_regular_file(p.files[i])) fail(p.files[i], "no such file (named by " + sidecar_file.string() + ")");
    if (p.info.runtime == "aoti") {
      p.nets[i] = std::make_unique<AotiNet>(p.files[i], kNets[i], p.info, p.torch_device());
    } else {
      p.nets[i] = std::make_unique<TorchScriptNet>(p.files[i], kNets[i], p.info.weights_sha256, p.torch_device());
    }
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
  Noise noise;  // N(0, 1) latents (the MNIST CGNs)
  if (i.kind == "imagenet_cgn") {
    noise.truncated = true;  // as pycgn.models.imagenet.imagenet_draw, with shared noise (published)
    noise.truncation = i.truncation;
    noise.bound = i.truncation_bound;
  }
  return Sampler(seed, i.n_classes, i.latent_dim, i.max_offset, counterfactuals, noise);
}

void Pipeline::Impl::run(const Draw& d, std::int64_t b0, std::int64_t n, std::int64_t rows, std::uint8_t* out) const {
  const std::int64_t dim = info.latent_dim;
  const auto dev = torch_device();
  // Views of the draw's memory (alive for this call); copied only when moved to a GPU or padded.
  auto view = [&](const auto* data, c10::IntArrayRef size, torch::Dtype dtype) {
    return torch::from_blob(const_cast<void*>(static_cast<const void*>(data)), size, dtype).to(dev);
  };
  auto padded = [&](const at::Tensor& t) {  // rows - n copies of the first sample appended
    if (rows == n) return t;
    std::vector<std::int64_t> size = t.sizes().vec();
    size[0] = rows - n;
    return torch::cat({t, t.slice(0, 0, 1).expand(size)});
  };
  auto latents = [&](const std::vector<float>& u) {
    return padded(view(u.data() + b0 * dim, {n, dim}, torch::kFloat));
  };
  auto labels = [&](const std::vector<std::int64_t>& y) { return padded(view(y.data() + b0, {n}, torch::kLong)); };
  auto offsets = [&](const std::vector<std::int64_t>& o) { return view(o.data() + 2 * b0, {n, 2}, torch::kLong); };
  at::Tensor mask, fg, bg;
  {
    c10::InferenceMode guard;
    auto net = [&](int i, const std::vector<float>& u, const std::vector<std::int64_t>& y, std::int64_t channels) {
      at::Tensor out;
      try {
        out = nets[i]->forward(latents(u), labels(y));
      } catch (const std::exception& e) {
        const std::string msg = e.what();
        fail(files[i], std::string(kNets[i]) + " generator failed: " + msg.substr(0, msg.find('\n')));
      }
      return checked_output(out, kNets[i], rows, channels, files[i]).slice(0, 0, n);
    };
    mask = net(0, d.u_shape, d.shape, 1);
    fg = net(1, d.u_texture, d.texture, 3);
    bg = net(2, d.u_bg, d.bg, 3);
  }
  const std::int64_t h = mask.size(2), w = mask.size(3);
  if (h != info.image_size || w != info.image_size) {
    fail(files[0], "shape generator returned " + std::to_string(h) + "x" + std::to_string(w) + " masks, the sidecar says " +
                       std::to_string(info.image_size));
  }
  const at::Tensor fo = offsets(d.fg_offset), bo = offsets(d.bg_offset);
  CompositeParams c;
  c.mask = image_view(mask);
  c.fg = image_view(fg);
  c.bg = image_view(bg);
  c.fg_offset = offsets_view(fo);
  c.bg_offset = offsets_view(bo);
  c.out_dtype = OutDtype::kUint8;
  c.layout = Layout::kNHWC;
  c.lo = info.clamp_lo;
  c.hi = info.clamp_hi;
  if (device == Device::kCpu) {
    c.out = out;
    if (const char* bad = composite_check(c)) throw std::invalid_argument(bad);
    // On libtorch's pool, like the torch operator: no OpenMP pool beside the one the nets use.
    at::parallel_for(0, composite_cpu_row_count(c), composite_cpu_grain(c),
                     [&c](std::int64_t r0, std::int64_t r1) { composite_cpu_rows(c, r0, r1); });
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
  // The CPU computes in the export's chunks (bit-identical to Python's runners, and 64 MNIST
  // samples a pass is faster here than 512: cpp/bench/chunk_probe.py); otherwise batch_size.
  const std::int64_t chunk = p.device == Device::kCpu && p.options.cpu_chunks ? p.info.cpu_chunk : 0;
  const std::int64_t step = chunk > 0 ? chunk : p.options.batch_size;
  for (std::int64_t b0 = 0; b0 < img.n; b0 += step) {
    const std::int64_t n = std::min(step, img.n - b0);
    p.run(draw, b0, n, chunk > 0 ? chunk : n, img.data.data() + b0 * per);
  }
  return img;
}

Images Pipeline::generate(std::uint64_t seed, std::int64_t n, const std::vector<std::int64_t>& shape,
                          const std::vector<std::int64_t>& texture, const std::vector<std::int64_t>& bg,
                          std::int64_t start, std::int64_t counterfactuals) const {
  return images(sampler(seed, counterfactuals).draw_n(n, start, shape, texture, bg));
}

}  // namespace pycgn
