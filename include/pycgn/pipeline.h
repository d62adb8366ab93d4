// pycgn::Pipeline: counterfactual images from an exported CGN, in C++ without Python.
//
// Loads the three generators written by `pycgn export --format aoti` (AOTInductor packages) or
// `--format torchscript` and their sidecar pycgn_export.json, samples every input from a seed
// exactly like pycgn.Sampler (the ImageNet CGN: its truncated noise), runs the generators with
// libtorch and composites uint8 NHWC images with the torch-free core (pycgn::composite). Images
// are bit-identical to pycgn's Python runner of the same files for the same classes and seed
// (on the CPU both compute in the sidecar's cpu_chunk), and within one uint8 level of eager PyTorch.
//
// This header is torch-free: libtorch is a private dependency of the library, so programs
// using it compile without libtorch's headers.
#pragma once

#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "pycgn/export.h"
#include "pycgn/sampler.h"

namespace pycgn {

// A missing, unreadable or incompatible export; the message names the file.
class PYCGN_API ExportError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// The sidecar pycgn_export.json (format "pycgn-export", format_version 1).
struct ExportInfo {
  std::string directory;
  std::string runtime;
  std::string kind;
  std::string variant;
  std::string weights_sha256;
  std::int64_t image_size = 0;
  std::int64_t latent_dim = 0;
  std::int64_t n_classes = 0;
  std::int64_t max_offset = 0;
  // On the CPU every forward pass is exactly this many samples, the last padded, as pycgn's
  // Python runners compute (pycgn.runtime._in_chunks): a sample's bits then never depend on how
  // many came with it. 0: none (batches of PipelineOptions::batch_size).
  std::int64_t cpu_chunk = 0;
  std::vector<std::string> class_names;
  float clamp_lo = 0.0f;
  float clamp_hi = 1.0f;
  std::string pycgn_version;  // of the pycgn that wrote the export; its major must be this build's
  // ImageNet CGN (kind "imagenet_cgn"): latents are truncation * a normal truncated to
  // [-truncation_bound, truncation_bound], as the exported batch norms expect.
  float truncation = 0.0f;
  float truncation_bound = 0.0f;
  // AOTInductor exports (runtime "aoti"): the compute precision inside the packages, the torch
  // version that compiled them, and the device they were compiled for ("cpu" or "cuda").
  std::string precision;
  std::string torch_version;
  std::string compiled_for;
  std::string arch;  // CPU vector ISA ("AVX2", "AVX512", ...) or GPU architecture ("sm_90")
};

// uint8 images, NHWC, row-major: pixel (i, y, x, c) is data[((i * height + y) * width + x) * channels + c].
struct Images {
  std::int64_t n = 0, height = 0, width = 0, channels = 0;
  std::vector<std::uint8_t> data;

  const std::uint8_t* image(std::int64_t i) const { return data.data() + i * height * width * channels; }
};

enum class Device { kAuto, kCpu, kCuda };

// "auto", "cpu" or "cuda" -> Device; anything else throws std::invalid_argument.
PYCGN_API Device parse_device(const std::string& name);
PYCGN_API const char* device_name(Device device);

struct PipelineOptions {
  // kAuto: CUDA when libtorch and the compositing core both have it and a GPU is present.
  Device device = Device::kAuto;
  // Samples per forward pass, on a GPU and for exports without a cpu_chunk (the ImageNet CGN);
  // bounds memory (~0.6 MiB per MNIST sample), not the result. On the CPU an export's
  // cpu_chunk (64 for the MNIST CGNs) is the batch instead, as in Python.
  std::int64_t batch_size = 512;
  // true: on the CPU, compute in the export's cpu_chunk, the last chunk padded: images
  // bit-identical to Python's, and per image as fast as larger batches from 64 images a call.
  // false: batches of batch_size as they come: a single MNIST image ~7x sooner (218 vs 31 img/s
  // on a 2-core Xeon), but its last bits may differ from Python's by a uint8 level.
  bool cpu_chunks = true;
};

class PYCGN_API Pipeline {
 public:
  // Throws ExportError naming the file for a missing directory, sidecar or generator, a
  // sidecar of another format or version, or a generator libtorch cannot load.
  explicit Pipeline(const std::string& model_dir, PipelineOptions options = {});
  ~Pipeline();
  Pipeline(Pipeline&&) noexcept;
  Pipeline& operator=(Pipeline&&) noexcept;

  const ExportInfo& info() const;
  // The device the generators run on (kCpu or kCuda, never kAuto).
  Device device() const;

  // A sampler with this model's classes, latent size and crop range, like pycgn.Generator.sampler.
  Sampler sampler(std::uint64_t seed, std::int64_t counterfactuals = 1) const;

  // uint8 NHWC images for the inputs `draw`. Throws std::invalid_argument for a draw that
  // does not fit this model (latent size, class ids, offsets, inconsistent lengths).
  Images images(const Draw& draw) const;

  // Samples start .. start + n - 1 of `seed`; class vectors as in Sampler::draw.
  Images generate(std::uint64_t seed, std::int64_t n, const std::vector<std::int64_t>& shape = {},
                  const std::vector<std::int64_t>& texture = {},
                  const std::vector<std::int64_t>& bg = {}, std::int64_t start = 0,
                  std::int64_t counterfactuals = 1) const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace pycgn
