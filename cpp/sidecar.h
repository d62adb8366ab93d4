// The export sidecar pycgn_export.json and the per-file records of an export, read and checked
// without libtorch: pycgn::Pipeline uses it, and so do the fuzz targets (cpp/fuzz), which link
// it alone. Every field is checked for type and range before anything uses it; a bad one
// throws ExportError naming the file and the field.
//
// Private to the library: not installed.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "pycgn/pipeline.h"  // ExportInfo, ExportError (torch-free)

namespace pycgn {
namespace sidecar {

constexpr const char* kFileName = "pycgn_export.json";
constexpr const char* kFormat = "pycgn-export";
constexpr std::int64_t kFormatVersion = 1;
// What this build runs: the kinds of model (each samples its own way), the runtimes (formats of
// the generator files) and, for the ImageNet CGN, the class input.
extern const char* const kKinds[2];     // "mnist_cgn", "imagenet_cgn"
extern const char* const kRuntimes[2];  // "torchscript", "aoti"
// Mechanisms in the order of the files below; also the keys of "files".
extern const char* const kNets[3];

// Ranges accepted for the model's sizes: wide enough for every CGN pycgn exports (MNIST 28..64
// px, ImageNet's 1000 classes), narrow enough that no size computed from them overflows.
constexpr std::int64_t kMaxImageSize = 4096;
constexpr std::int64_t kMaxLatentDim = 1 << 16;
constexpr std::int64_t kMaxClasses = 100000;
constexpr std::int64_t kMaxOffset = (std::int64_t{1} << 31) - 1;
constexpr std::int64_t kMaxCpuChunk = 1 << 16;
// A real sidecar is about 1.5 KB and 4 levels deep; nothing sane is near these.
constexpr std::size_t kMaxBytes = 1 << 20;
constexpr int kMaxDepth = 32;

struct Sidecar {
  ExportInfo info;        // directory set to the `dir` given
  std::string files[3];   // bare file names in the export directory, as kNets
};

// Parses and checks the text of a sidecar; `file` names it in errors.
Sidecar parse(const std::string& text, const std::string& dir, const std::string& file);

// Reads dir/pycgn_export.json (a regular file of at most kMaxBytes) and parses it.
Sidecar read(const std::string& dir);

// The record a generator file carries (TorchScript extra file pycgn.json): it must name the
// mechanism `net` and the weights `sha`. `file` names the generator in errors.
void check_record(const std::string& text, const char* net, const std::string& sha, const std::string& file);

}  // namespace sidecar
}  // namespace pycgn
