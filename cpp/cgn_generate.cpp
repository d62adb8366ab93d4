// cgn_generate: counterfactual images from an exported CGN, written as one PNG grid.
// The C++ counterpart of `pycgn generate`: same arguments, seeds, grid layout and images
// (within one uint8 level).
//
//   cgn_generate --model-dir export/ --shape 3 --texture 7 --bg 1 -n 16 --seed 5 -o out.png
//
// Bad arguments exit with status 2 and one line on stderr.
#include <zlib.h>

#if defined(__GLIBC__)
#include <malloc.h>
#endif

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <stdexcept>
#include <string>
#include <unistd.h>
#include <vector>

#include "pycgn/pipeline.h"

namespace fs = std::filesystem;

namespace {

struct UsageError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

constexpr const char* kUsage =
    "usage: cgn_generate --model-dir DIR -o OUT.png [--shape C] [--texture C] [--bg C] [-n N]\n"
    "                    [--seed S] [--cols N] [--scale N] [--start I] [--device auto|cpu|cuda]\n"
    "\n"
    "  --model-dir DIR  export directory of `pycgn export --format torchscript`\n"
    "  --shape/--texture/--bg C\n"
    "                   class of that mechanism: an id, a class name, a comma list (one per\n"
    "                   image) or 'random' (default: random)\n"
    "  -n N             number of images (default: 16)\n"
    "  --seed S         random seed, 0..2**64-1; same seed, same images (default: 0)\n"
    "  --cols N         images per row of the grid (default: square)\n"
    "  --scale N        enlarge each image this many times (default: 4)\n"
    "  --start I        first sample index (default: 0)\n"
    "  --device D       auto, cpu or cuda (default: auto)\n"
    "  -o OUT.png       output PNG file\n";

std::int64_t parse_int(const std::string& flag, const std::string& text, std::int64_t lowest) {
  char* end = nullptr;
  errno = 0;
  const long long v = std::strtoll(text.c_str(), &end, 10);
  if (text.empty() || *end != '\0' || errno == ERANGE) {
    throw UsageError(flag + " must be an integer, got '" + text + "'");
  }
  if (v < lowest) throw UsageError(flag + " must be >= " + std::to_string(lowest) + ", got " + text);
  return v;
}

std::uint64_t parse_seed(const std::string& text) {
  char* end = nullptr;
  errno = 0;
  const unsigned long long v = std::strtoull(text.c_str(), &end, 10);
  if (text.empty() || text[0] == '-' || *end != '\0' || errno == ERANGE) {
    throw UsageError("--seed must be an integer in 0..2**64-1, got '" + text + "'");
  }
  return v;
}

// "3", "3,7,random", "seven": ids or the model's class names; random/none entries are drawn.
std::vector<std::int64_t> parse_classes(const std::string& flag, const std::string& text,
                                        const std::vector<std::string>& names) {
  std::vector<std::int64_t> out;
  std::size_t pos = 0;
  while (true) {
    const std::size_t comma = text.find(',', pos);
    std::string item = text.substr(pos, comma == std::string::npos ? std::string::npos : comma - pos);
    item.erase(0, item.find_first_not_of(' '));
    item.erase(item.find_last_not_of(' ') + 1);
    std::string lower = item;
    std::transform(lower.begin(), lower.end(), lower.begin(), [](unsigned char c) { return std::tolower(c); });
    const auto named = std::find(names.begin(), names.end(), item);
    if (lower.empty() || lower == "random" || lower == "none") {
      out.push_back(pycgn::kRandomClass);
    } else if (named != names.end()) {
      out.push_back(named - names.begin());
    } else {
      char* end = nullptr;
      const long long v = std::strtoll(item.c_str(), &end, 10);
      if (*end != '\0' || v < 0 || v >= static_cast<long long>(names.size())) {
        throw UsageError(flag + " has class '" + item + "', expected an id 0.." + std::to_string(names.size() - 1) +
                         ", a class name of the model or 'random'");
      }
      out.push_back(v);
    }
    if (comma == std::string::npos) break;
    pos = comma + 1;
  }
  return out;
}

void put32(std::vector<unsigned char>& b, std::uint32_t v) {
  for (int s = 24; s >= 0; s -= 8) b.push_back(static_cast<unsigned char>(v >> s));
}

void chunk(std::vector<unsigned char>& png, const char* type, const std::vector<unsigned char>& data) {
  put32(png, static_cast<std::uint32_t>(data.size()));
  const std::size_t start = png.size();
  png.insert(png.end(), type, type + 4);
  png.insert(png.end(), data.begin(), data.end());
  put32(png, static_cast<std::uint32_t>(crc32(0L, png.data() + start, static_cast<uInt>(png.size() - start))));
}

// An 8-bit RGB PNG: every row with filter 0, deflated by zlib.
std::vector<unsigned char> encode_png(const std::vector<std::uint8_t>& rgb, std::int64_t width, std::int64_t height) {
  std::vector<unsigned char> raw;
  raw.reserve(static_cast<std::size_t>(height * (3 * width + 1)));
  for (std::int64_t y = 0; y < height; ++y) {
    raw.push_back(0);
    const auto row = rgb.begin() + y * 3 * width;
    raw.insert(raw.end(), row, row + 3 * width);
  }
  uLongf size = compressBound(static_cast<uLong>(raw.size()));
  std::vector<unsigned char> idat(size);
  if (compress2(idat.data(), &size, raw.data(), static_cast<uLong>(raw.size()), 6) != Z_OK) {
    throw std::runtime_error("zlib failed to compress the image");
  }
  idat.resize(size);
  std::vector<unsigned char> ihdr;
  put32(ihdr, static_cast<std::uint32_t>(width));
  put32(ihdr, static_cast<std::uint32_t>(height));
  ihdr.insert(ihdr.end(), {8, 2, 0, 0, 0});  // 8 bits, RGB, deflate, no filter choice, no interlace
  std::vector<unsigned char> png = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
  chunk(png, "IHDR", ihdr);
  chunk(png, "IDAT", idat);
  chunk(png, "IEND", {});
  return png;
}

// Same sheet as pycgn.api.tile: row-major, `pad` white pixels around and between images.
std::vector<std::uint8_t> tile(const pycgn::Images& img, std::int64_t cols, std::int64_t scale, std::int64_t pad,
                               std::int64_t& width, std::int64_t& height) {
  const std::int64_t h = img.height * scale, w = img.width * scale;
  const std::int64_t rows = std::max<std::int64_t>(1, (img.n + cols - 1) / cols);
  height = rows * (h + pad) + pad;
  width = cols * (w + pad) + pad;
  std::vector<std::uint8_t> sheet(static_cast<std::size_t>(height * width * 3), 255);
  for (std::int64_t i = 0; i < img.n; ++i) {
    const std::int64_t y0 = pad + (i / cols) * (h + pad), x0 = pad + (i % cols) * (w + pad);
    const std::uint8_t* src = img.image(i);
    for (std::int64_t y = 0; y < h; ++y) {
      for (std::int64_t x = 0; x < w; ++x) {
        const std::uint8_t* p = src + ((y / scale) * img.width + x / scale) * 3;
        std::copy(p, p + 3, sheet.begin() + ((y0 + y) * width + x0 + x) * 3);
      }
    }
  }
  return sheet;
}

// Temporary name beside the target, renamed over it once complete: no half-written PNG.
void write_atomic(const fs::path& path, const std::vector<unsigned char>& bytes) {
  const fs::path tmp = path.parent_path() / ("." + path.filename().string() + "." + std::to_string(::getpid()) + ".tmp");
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
    out.flush();
    if (!out) {
      std::error_code ec;
      fs::remove(tmp, ec);
      throw std::runtime_error("cannot write " + path.string());
    }
  }
  fs::rename(tmp, path);
}

void check_writable(const fs::path& path) {
  const fs::path folder = path.parent_path().empty() ? fs::path(".") : path.parent_path();
  if (fs::is_directory(path)) throw UsageError("output " + path.string() + " is a directory; give a file name");
  if (!fs::is_directory(folder)) throw UsageError("output folder " + folder.string() + " does not exist");
  if (::access(folder.c_str(), W_OK) != 0) throw UsageError("output folder " + folder.string() + " is not writable");
}

int run(int argc, char** argv) {
  std::string model_dir, out, device = "auto";
  std::string classes[3];
  bool given[3] = {false, false, false};
  std::int64_t n = 16, cols = 0, scale = 4, start = 0;
  std::uint64_t seed = 0;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "-h" || a == "--help") {
      std::cout << kUsage;
      return 0;
    }
    if (i + 1 >= argc) throw UsageError("unknown option or missing value: " + a);
    const std::string v = argv[++i];
    if (a == "--model-dir") model_dir = v;
    else if (a == "-o" || a == "--out") out = v;
    else if (a == "--device") device = v;
    else if (a == "--shape") classes[0] = v, given[0] = true;
    else if (a == "--texture") classes[1] = v, given[1] = true;
    else if (a == "--bg") classes[2] = v, given[2] = true;
    else if (a == "-n") n = parse_int("-n", v, 1);
    else if (a == "--cols") cols = parse_int("--cols", v, 0);
    else if (a == "--scale") scale = parse_int("--scale", v, 1);
    else if (a == "--start") start = parse_int("--start", v, 0);
    else if (a == "--seed") seed = parse_seed(v);
    else throw UsageError("unknown option: " + a);
  }
  if (model_dir.empty()) throw UsageError("--model-dir is required");
  if (out.empty()) throw UsageError("-o is required");
  check_writable(out);

  pycgn::PipelineOptions options;
  options.device = pycgn::parse_device(device);
  pycgn::Pipeline pipe(model_dir, options);
  const char* flags[3] = {"--shape", "--texture", "--bg"};
  std::vector<std::int64_t> ids[3];
  for (int m = 0; m < 3; ++m) {
    if (given[m]) ids[m] = parse_classes(flags[m], classes[m], pipe.info().class_names);
  }
  // Broadcast like pycgn: a list sets n when n is 1; otherwise lists must have n entries.
  for (int m = 0; m < 3; ++m) {
    const auto len = static_cast<std::int64_t>(ids[m].size());
    if (len <= 1) continue;
    if (n == 1) n = len;
    else if (len != n) throw UsageError(std::string(flags[m]) + " has " + std::to_string(len) + " entries, expected 1 or n=" + std::to_string(n));
  }
  const pycgn::Images img = pipe.generate(seed, n, ids[0], ids[1], ids[2], start);
  if (cols == 0) cols = static_cast<std::int64_t>(std::ceil(std::sqrt(static_cast<double>(img.n))));
  std::int64_t width = 0, height = 0;
  const auto sheet = tile(img, cols, scale, /*pad=*/2, width, height);
  write_atomic(out, encode_png(sheet, width, height));
  std::cout << "wrote " << out << ": " << img.n << " images (" << pipe.info().variant << ", "
            << pycgn::device_name(pipe.device()) << ", seed " << seed << ")\n";
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
#if defined(__GLIBC__)
  // Keep libtorch's large temporaries on the heap between batches instead of mmap/munmap
  // (page faults) each time: 1.6x faster here (benchmarks/results/cpp-pipeline.md). The same
  // settings as pycgn.runtime.tune_malloc; PYCGN_MALLOC=default turns them off.
  const char* malloc_mode = std::getenv("PYCGN_MALLOC");
  if (!malloc_mode || std::string(malloc_mode) != "default") {
    mallopt(M_MMAP_MAX, 0);
    mallopt(M_TRIM_THRESHOLD, 1 << 30);
  }
#endif
  // One line on stderr, like `pycgn`: bad input (arguments, export files) is status 2.
  auto report = [](const std::exception& e, int status) {
    std::string msg = e.what();
    std::replace(msg.begin(), msg.end(), '\n', ' ');
    std::cerr << "cgn_generate: error: " << msg << "\n";
    return status;
  };
  try {
    return run(argc, argv);
  } catch (const UsageError& e) {
    return report(e, 2);
  } catch (const pycgn::ExportError& e) {
    return report(e, 2);
  } catch (const std::invalid_argument& e) {
    return report(e, 2);
  } catch (const std::exception& e) {
    return report(e, 1);
  }
}
