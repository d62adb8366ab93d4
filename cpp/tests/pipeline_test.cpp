// Tests of pycgn::Pipeline on an export directory (made by check_pipeline.py):
// loading, the sidecar, determinism, batching, threads, bad draws and bad exports.
//
//   pycgn_pipeline_test EXPORT_DIR WORK_DIR     (exit 0 = pass)
#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>

#include "pycgn/pipeline.h"

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

int failures = 0;

void expect(bool ok, const std::string& what) {
  if (!ok) {
    ++failures;
    std::cerr << "FAIL: " << what << "\n";
  }
}

// Largest per-value difference of two image batches (256 when the shapes differ).
int max_diff(const pycgn::Images& a, const pycgn::Images& b) {
  if (a.n != b.n || a.height != b.height || a.width != b.width || a.channels != b.channels) return 256;
  int d = 0;
  for (std::size_t i = 0; i < a.data.size(); ++i) d = std::max(d, std::abs(int(a.data[i]) - int(b.data[i])));
  return d;
}

template <typename E, typename F>
void expect_throws(F&& f, const std::string& needle, const std::string& what) {
  try {
    f();
  } catch (const E& e) {
    expect(std::string(e.what()).find(needle) != std::string::npos,
           what + ": message '" + e.what() + "' lacks '" + needle + "'");
    return;
  } catch (const std::exception& e) {
    expect(false, what + ": wrong exception type: " + e.what());
    return;
  }
  expect(false, what + ": nothing thrown");
}

// A copy of the export whose sidecar is edited by `edit`.
fs::path broken_copy(const fs::path& src, const fs::path& work, const std::string& name,
                     void (*edit)(json&)) {
  const fs::path dst = work / name;
  fs::remove_all(dst);
  fs::create_directories(dst);
  for (const auto& e : fs::directory_iterator(src)) fs::copy(e.path(), dst / e.path().filename());
  std::ifstream in(dst / "pycgn_export.json");
  json j = json::parse(in);
  in.close();
  edit(j);
  std::ofstream(dst / "pycgn_export.json") << j.dump(2);
  return dst;
}

void good_export(const fs::path& dir) {
  const pycgn::Pipeline p(dir.string(), {pycgn::Device::kCpu, 512});
  const auto& info = p.info();
  expect(info.latent_dim > 0 && info.n_classes == static_cast<std::int64_t>(info.class_names.size()),
         "sidecar parsed");
  expect(info.max_offset == info.image_size, "max_offset is the image size (the published shuffler)");
  expect(p.device() == pycgn::Device::kCpu, "device cpu");

  const pycgn::Images a = p.generate(7, 10, {3}, {}, {1});
  expect(a.n == 10 && a.height == info.image_size && a.width == info.image_size && a.channels == 3 &&
             a.data.size() == static_cast<std::size_t>(10 * 3 * info.image_size * info.image_size),
         "image batch shape");
  expect(max_diff(a, p.generate(7, 10, {3}, {}, {1})) == 0, "same seed, same images");
  expect(max_diff(a, p.generate(8, 10, {3}, {}, {1})) > 0, "other seed, other images");
  int lo = 255, hi = 0;
  for (auto v : a.data) lo = std::min(lo, int(v)), hi = std::max(hi, int(v));
  expect(hi - lo > 50, "images are not flat");

  // Batching and the start index do not change the images (per-sample nets, eval mode).
  const pycgn::Pipeline small(dir.string(), {pycgn::Device::kCpu, 3});
  expect(max_diff(a, small.generate(7, 10, {3}, {}, {1})) <= 1, "batch_size 3 equals batch_size 512");
  const pycgn::Images tail = p.generate(7, 4, {3}, {}, {1}, /*start=*/6);
  pycgn::Images part = a;
  part.n = 4;
  part.data.assign(a.image(6), a.image(6) + 4 * 3 * info.image_size * info.image_size);
  expect(max_diff(part, tail) <= 1, "samples 6..9 alone equal them in the batch");

  // Concurrent calls on one Pipeline give the serial result.
  const pycgn::Draw d = p.sampler(11).draw_n(17);
  const pycgn::Images serial = p.images(d);
  pycgn::Images t1, t2;
  std::thread th1([&] { t1 = p.images(d); }), th2([&] { t2 = p.images(d); });
  th1.join();
  th2.join();
  expect(max_diff(serial, t1) == 0 && max_diff(serial, t2) == 0, "two threads equal the serial result");

  const pycgn::Images none = p.images(p.sampler(1).draw({}));
  expect(none.n == 0 && none.data.empty(), "an empty draw gives no images");

  // Draws that do not fit the model.
  pycgn::Draw wrong = p.sampler(3).draw_n(2);
  wrong.shape[1] = info.n_classes;
  expect_throws<std::invalid_argument>([&] { p.images(wrong); }, "draw.shape has class id", "class out of range");
  pycgn::Draw other = pycgn::Sampler(3, info.n_classes, info.latent_dim + 1).draw_n(2);
  expect_throws<std::invalid_argument>([&] { p.images(other); }, "latent_dim", "latent size");
  pycgn::Draw cut = p.sampler(3).draw_n(2);
  cut.u_bg.pop_back();
  expect_throws<std::invalid_argument>([&] { p.images(cut); }, "draw.u_bg has", "short latents");
  pycgn::Draw neg = p.sampler(3).draw_n(2);
  neg.bg_offset[0] = -1;
  expect_throws<std::invalid_argument>([&] { p.images(neg); }, "draw.bg_offset", "negative offset");
  expect_throws<std::invalid_argument>([&] { pycgn::Pipeline(dir.string(), {pycgn::Device::kCpu, 0}); },
                                       "batch_size", "batch_size 0");
  expect_throws<std::invalid_argument>([] { pycgn::parse_device("gpu"); }, "device must be", "device name");

  // CUDA: where libtorch sees a GPU, its images equal the CPU ones within one level; else a
  // clear error.
  try {
    const pycgn::Pipeline gpu(dir.string(), {pycgn::Device::kCuda, 512});
    expect(gpu.device() == pycgn::Device::kCuda, "device cuda");
    const int diff = max_diff(a, gpu.generate(7, 10, {3}, {}, {1}));
    expect(diff <= 1, "CUDA images equal CPU images within one level (max diff " + std::to_string(diff) + ")");
    std::cout << "cuda: images within " << diff << " level(s) of the CPU's\n";
  } catch (const std::invalid_argument& e) {
    expect(std::string(e.what()).find("device is cuda, but") == 0, std::string("no-CUDA message: ") + e.what());
    std::cout << "cuda: skipped (" << e.what() << ")\n";
  }
}

void bad_exports(const fs::path& dir, const fs::path& work) {
  using pycgn::ExportError;
  auto load = [](const fs::path& d) { return [d] { pycgn::Pipeline p(d.string()); }; };
  expect_throws<ExportError>(load(work / "nowhere"), "nowhere: no such directory", "missing directory");

  const fs::path empty = work / "empty";
  fs::create_directories(empty);
  expect_throws<ExportError>(load(empty), "pycgn_export.json: no such file", "missing sidecar");

  const fs::path notjson = broken_copy(dir, work, "notjson", [](json&) {});
  std::ofstream(notjson / "pycgn_export.json") << "{ this is not json";
  expect_throws<ExportError>(load(notjson), "pycgn_export.json: not a JSON object", "bad JSON");

  expect_throws<ExportError>(load(broken_copy(dir, work, "format", [](json& j) { j["format"] = "other"; })),
                             "format is \"other\", expected \"pycgn-export\"", "wrong format");
  expect_throws<ExportError>(load(broken_copy(dir, work, "version", [](json& j) { j["format_version"] = 2; })),
                             "format_version 2 is not supported", "wrong version");
  expect_throws<ExportError>(load(broken_copy(dir, work, "runtime", [](json& j) { j["runtime"] = "onnx"; })),
                             "key \"runtime\" is \"onnx\"", "wrong runtime");
  expect_throws<ExportError>(load(broken_copy(dir, work, "kind", [](json& j) { j["kind"] = "imagenet"; })),
                             "key \"kind\" is \"imagenet\"", "unknown kind");
  expect_throws<ExportError>(load(broken_copy(dir, work, "major", [](json& j) { j["pycgn_version"] = "1.0.0"; })),
                             "key \"pycgn_version\" is \"1.0.0\"", "other pycgn major version");
  expect_throws<ExportError>(load(broken_copy(dir, work, "nokey", [](json& j) { j.erase("latent_dim"); })),
                             "missing key \"latent_dim\"", "missing key");
  expect_throws<ExportError>(load(broken_copy(dir, work, "type", [](json& j) { j["n_classes"] = "ten"; })),
                             "key \"n_classes\" has the wrong type", "wrong type");
  expect_throws<ExportError>(
      load(broken_copy(dir, work, "escape", [](json& j) { j["files"]["texture"] = "../texture.pt"; })),
      "files.texture must be a file name", "file outside the directory");

  // Fields out of range or of a near-miss type: each refused, naming the field, before any use.
  struct Hostile {
    const char* name;
    void (*edit)(json&);
    const char* needle;
  };
  const Hostile hostile[] = {
      {"huge_classes", [](json& j) { j["n_classes"] = 18446744073709551615ull; }, "key \"n_classes\" is 18446744073709551615"},
      {"zero_classes", [](json& j) { j["n_classes"] = 0; }, "key \"n_classes\" is 0, expected 1..100000"},
      {"float_classes", [](json& j) { j["n_classes"] = 10.0; }, "key \"n_classes\" has the wrong type (number)"},
      {"bool_size", [](json& j) { j["image_size"] = true; }, "key \"image_size\" has the wrong type (boolean)"},
      {"max_offset", [](json& j) { j["max_offset"] = 9223372036854775807ll; }, "key \"max_offset\" is 9223372036854775807"},
      {"neg_offset", [](json& j) { j["max_offset"] = -1; }, "key \"max_offset\" is -1"},
      {"latent", [](json& j) { j["latent_dim"] = 1ll << 40; }, "key \"latent_dim\" is 1099511627776"},
      {"image_size", [](json& j) { j["image_size"] = 1 << 20; }, "key \"image_size\" is 1048576"},
      {"names_type", [](json& j) { j["class_names"][3] = 3; }, "class_names[3] must be"},
      {"names_count", [](json& j) { j["class_names"].erase(0); }, "class_names has 9 entries, n_classes is 10"},
      {"clamp", [](json& j) { j["clamp"] = {-1.0, 2.0}; }, "clamp must be [lo, hi] with 0 <= lo <= hi <= 1"},
      {"clamp_type", [](json& j) { j["clamp"] = "0,1"; }, "clamp must be [lo, hi]"},
      {"variant", [](json& j) { j["variant"] = "a\nb"; }, "key \"variant\" must be 1..128 bytes of text"},
      {"nul_file", [](json& j) { j["files"]["shape"] = std::string("a\0b", 3); }, "files.shape must be a file name"},
      {"deep", [](json& j) { json v = 1; for (int i = 0; i < 100; ++i) v = json::array({v}); j["inputs"] = v; },
       "JSON nested deeper than 32 levels"},
  };
  for (const auto& h : hostile) {
    expect_throws<ExportError>(load(broken_copy(dir, work, h.name, h.edit)), h.needle, std::string("sidecar ") + h.name);
  }
  const fs::path big = broken_copy(dir, work, "big", [](json& j) { j["pad"] = std::string(2 << 20, ' '); });
  expect_throws<ExportError>(load(big), "more than a sidecar's limit", "sidecar over 1 MiB");

  const fs::path gone = broken_copy(dir, work, "gone", [](json&) {});
  fs::remove(gone / "background.torchscript.pt");
  expect_throws<ExportError>(load(gone), "background.torchscript.pt: no such file", "missing generator");

  const fs::path garbage = broken_copy(dir, work, "garbage", [](json&) {});
  std::ofstream(garbage / "shape.torchscript.pt", std::ios::trunc) << "not a zip archive at all";
  expect_throws<ExportError>(load(garbage), "shape.torchscript.pt: not a loadable TorchScript module",
                             "corrupt generator");

  // A generator under another mechanism's name, and one from other weights.
  const fs::path swapped = broken_copy(dir, work, "swapped", [](json& j) {
    j["files"]["texture"] = j["files"]["shape"];
  });
  expect_throws<ExportError>(load(swapped), "holds the \"shape\" generator, expected \"texture\"",
                             "generator under another name");
  const fs::path other = broken_copy(dir, work, "other", [](json& j) { j["weights_sha256"] = "0123456789abcdef"; });
  expect_throws<ExportError>(load(other), "but the sidecar says 0123456789ab", "weights of another model");
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 3) {
    std::cerr << "usage: pycgn_pipeline_test EXPORT_DIR WORK_DIR\n";
    return 2;
  }
  try {
    good_export(argv[1]);
    bad_exports(argv[1], argv[2]);
  } catch (const std::exception& e) {
    std::cerr << "FAIL: unexpected exception: " << e.what() << "\n";
    return 1;
  }
  std::cout << (failures ? "pipeline test FAILED" : "pipeline test passed") << "\n";
  return failures ? 1 : 0;
}
