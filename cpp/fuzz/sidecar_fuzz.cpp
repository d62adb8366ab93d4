// Fuzz target: the export sidecar and file-record parsers (cpp/sidecar.cpp), without libtorch.
//
// Any text must either parse into an ExportInfo whose every field is within the documented
// ranges, or throw ExportError; any other exception (nlohmann's type errors, length_error)
// or a crash is a bug. The seed corpus (corpus/sidecar) holds a real sidecar.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "sidecar.h"

namespace {

void expect(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "sidecar_fuzz: %s\n", what);
    std::abort();
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  namespace sc = pycgn::sidecar;
  const std::string text(reinterpret_cast<const char*>(data), size);
  try {
    const sc::Sidecar s = sc::parse(text, "dir", "dir/pycgn_export.json");
    const pycgn::ExportInfo& i = s.info;
    expect(i.image_size >= 1 && i.image_size <= sc::kMaxImageSize, "image_size range");
    expect(i.latent_dim >= 1 && i.latent_dim <= sc::kMaxLatentDim, "latent_dim range");
    expect(i.n_classes >= 1 && i.n_classes <= sc::kMaxClasses, "n_classes range");
    expect(i.max_offset >= 0 && i.max_offset <= sc::kMaxOffset, "max_offset range");
    expect(static_cast<std::int64_t>(i.class_names.size()) == i.n_classes, "one name per class");
    for (const auto& name : i.class_names) expect(!name.empty() && name.size() <= 256, "class name length");
    expect(0.0f <= i.clamp_lo && i.clamp_lo <= i.clamp_hi && i.clamp_hi <= 1.0f, "clamp range");
    for (const auto& f : s.files) {
      expect(!f.empty() && f != "." && f != ".." && f.find('/') == std::string::npos && f.find('\0') == std::string::npos,
             "file names stay in the directory");
    }
  } catch (const pycgn::ExportError&) {
  }
  try {
    sc::check_record(text, "shape", "0123456789abcdef", "dir/shape.torchscript.pt");
  } catch (const pycgn::ExportError&) {
  }
  return 0;
}
