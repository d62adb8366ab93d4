// cgn_generate's arguments, grid geometry and output checks (see cli.h). Torch-free.
#include "cli.h"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>

#include "pycgn/sampler.h"  // kRandomClass

namespace pycgn {
namespace cli {

const char* const kClassFlags[3] = {"--shape", "--texture", "--bg"};

const char* const kUsage =
    "usage: cgn_generate --model-dir DIR -o OUT.png [--shape C] [--texture C] [--bg C] [-n N]\n"
    "                    [--seed S] [--cols N] [--scale N] [--start I] [--device auto|cpu|cuda]\n"
    "\n"
    "  --model-dir DIR  export directory of `pycgn export --format torchscript`\n"
    "  --shape/--texture/--bg C\n"
    "                   class of that mechanism: an id, a class name, a comma list (one per\n"
    "                   image) or 'random' (default: random)\n"
    "  -n N             number of images, 1..2**31-1 (default: 16)\n"
    "  --seed S         random seed, 0..2**64-1; same seed, same images (default: 0)\n"
    "  --cols N         images per row of the grid, 0..2**31-1 (default 0: square)\n"
    "  --scale N        enlarge each image this many times, 1..2**31-1 (default: 4)\n"
    "  --start I        first sample index, 0..2**63-n (default: 0)\n"
    "  --device D       auto, cpu or cuda (default: auto)\n"
    "  -o OUT.png       output PNG file: a new file or a regular file you may write\n"
    "\n"
    "The grid may have at most 2**31-1 px per side and 2**32 bytes of pixels.\n";

namespace {

constexpr std::int64_t kMaxArg = (std::int64_t{1} << 31) - 1;
constexpr std::int64_t kInt64Max = std::numeric_limits<std::int64_t>::max();

// Decimal digits with an optional leading '-', nothing else (no spaces, '+', hex): the value,
// or false when it is not such a number or does not fit 64 bits.
bool decimal(const std::string& text, bool& negative, std::uint64_t& magnitude) {
  negative = !text.empty() && text[0] == '-';
  const std::size_t first = negative ? 1 : 0;
  if (text.size() == first || text.size() - first > 20) return false;
  magnitude = 0;
  for (std::size_t i = first; i < text.size(); ++i) {
    if (text[i] < '0' || text[i] > '9') return false;
    if (__builtin_mul_overflow(magnitude, std::uint64_t{10}, &magnitude) ||
        __builtin_add_overflow(magnitude, static_cast<std::uint64_t>(text[i] - '0'), &magnitude)) {
      return false;
    }
  }
  return true;
}

// Arguments are echoed in messages: one line, bounded, printable.
std::string shown(const std::string& text, std::size_t max_len = 40) {
  const std::string s = printable(text.substr(0, max_len));
  return text.size() > max_len ? s + "..." : s;
}

std::int64_t parse_int(const std::string& flag, const std::string& text, std::int64_t lo, std::int64_t hi) {
  bool negative = false;
  std::uint64_t mag = 0;
  const std::string range = std::to_string(lo) + ".." + std::to_string(hi);
  if (!decimal(text, negative, mag)) throw UsageError(flag + " must be an integer in " + range + ", got '" + shown(text) + "'");
  if (negative && mag > 0) throw UsageError(flag + " must be >= " + std::to_string(lo) + ", got " + text);
  if (mag > static_cast<std::uint64_t>(hi)) throw UsageError(flag + " must be <= " + std::to_string(hi) + ", got " + text);
  const auto v = static_cast<std::int64_t>(mag);
  if (v < lo) throw UsageError(flag + " must be >= " + std::to_string(lo) + ", got " + text);
  return v;
}

std::uint64_t parse_seed(const std::string& text) {
  bool negative = false;
  std::uint64_t v = 0;
  if (!decimal(text, negative, v) || negative) {
    throw UsageError("--seed must be an integer in 0..2**64-1, got '" + shown(text) + "'");
  }
  return v;
}

std::string trim(const std::string& s) {
  const std::size_t a = s.find_first_not_of(' ');
  if (a == std::string::npos) return "";
  return s.substr(a, s.find_last_not_of(' ') - a + 1);
}

std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return s;
}

std::string approx(long double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, v < 1e15L ? "%.0Lf" : "%.3Lg", v);
  return buf;
}

const char* kind_of(mode_t mode) {
  if (S_ISDIR(mode)) return "a directory";
  if (S_ISCHR(mode)) return "a character device";
  if (S_ISBLK(mode)) return "a block device";
  if (S_ISFIFO(mode)) return "a FIFO";
  if (S_ISSOCK(mode)) return "a socket";
  return "not a regular file";
}

}  // namespace

std::string printable(const std::string& text) {
  std::string out;
  out.reserve(text.size());
  for (std::size_t i = 0; i < text.size(); ++i) {
    const auto u = static_cast<unsigned char>(text[i]);
    const auto next = [&](std::size_t k) { return i + k < text.size() ? static_cast<unsigned char>(text[i + k]) : 0; };
    if (u == '\n' || u == '\r' || u == '\t') {
      out += ' ';
    } else if (u < 0x20 || u == 0x7f) {
      out += '?';
    } else if (u == 0xc2 && next(1) >= 0x80 && next(1) <= 0x9f) {  // C1 controls (NEL, CSI) in UTF-8
      out += '?';
      i += 1;
    } else if (u == 0xe2 && next(1) == 0x80 && (next(2) == 0xa8 || next(2) == 0xa9)) {  // U+2028, U+2029
      out += '?';
      i += 2;
    } else {
      out += text[i];
    }
  }
  return out;
}

Args parse_args(int argc, const char* const* argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    const std::string flag = argv[i] ? argv[i] : "";
    if (flag == "-h" || flag == "--help") {
      a.help = true;
      return a;
    }
    if (i + 1 >= argc || !argv[i + 1]) throw UsageError("unknown option or missing value: " + shown(flag));
    const std::string v = argv[++i];
    if (flag == "--model-dir") a.model_dir = v;
    else if (flag == "-o" || flag == "--out") a.out = v;
    else if (flag == "--device") a.device = v;
    else if (flag == "--shape") a.classes[0] = v, a.given[0] = true;
    else if (flag == "--texture") a.classes[1] = v, a.given[1] = true;
    else if (flag == "--bg") a.classes[2] = v, a.given[2] = true;
    else if (flag == "-n") a.n = parse_int("-n", v, 1, kMaxArg);
    else if (flag == "--cols") a.cols = parse_int("--cols", v, 0, kMaxArg);
    else if (flag == "--scale") a.scale = parse_int("--scale", v, 1, kMaxArg);
    else if (flag == "--start") a.start = parse_int("--start", v, 0, kInt64Max);
    else if (flag == "--seed") a.seed = parse_seed(v);
    else throw UsageError("unknown option: " + shown(flag));
  }
  if (a.model_dir.empty()) throw UsageError("--model-dir is required");
  if (a.out.empty()) throw UsageError("-o is required");
  return a;
}

std::vector<std::int64_t> parse_classes(const std::string& flag, const std::string& text,
                                        const std::vector<std::string>& names) {
  if (names.empty()) throw UsageError(flag + ": the model has no classes");
  const auto top = static_cast<std::int64_t>(names.size()) - 1;
  std::vector<std::int64_t> out;
  std::size_t pos = 0;
  while (true) {
    const std::size_t comma = text.find(',', pos);
    const std::string item = trim(text.substr(pos, comma == std::string::npos ? std::string::npos : comma - pos));
    const std::string low = lower(item);
    const auto named = std::find(names.begin(), names.end(), item);
    bool negative = false;
    std::uint64_t id = 0;
    if (low.empty() || low == "random" || low == "none") {
      out.push_back(kRandomClass);
    } else if (named != names.end()) {
      out.push_back(named - names.begin());
    } else if (decimal(item, negative, id) && !negative && id <= static_cast<std::uint64_t>(top)) {
      out.push_back(static_cast<std::int64_t>(id));
    } else {
      throw UsageError(flag + " has class '" + shown(item) + "', expected an id 0.." + std::to_string(top) +
                       ", a class name of the model or 'random'");
    }
    if (comma == std::string::npos) break;
    pos = comma + 1;
  }
  return out;
}

std::int64_t resolve_n(std::int64_t n, std::int64_t start, const std::vector<std::int64_t> (&ids)[3]) {
  for (int m = 0; m < 3; ++m) {
    const auto len = static_cast<std::int64_t>(ids[m].size());
    if (len <= 1) continue;
    if (n == 1) {
      n = len;
    } else if (len != n) {
      throw UsageError(std::string(kClassFlags[m]) + " has " + std::to_string(len) + " entries, expected 1 or n=" +
                       std::to_string(n));
    }
  }
  if (n < 1 || n > kMaxArg) throw UsageError("-n must be 1.." + std::to_string(kMaxArg) + ", got " + std::to_string(n));
  if (start < 0 || start > kInt64Max - (n - 1)) {
    throw UsageError("--start " + std::to_string(start) + " with n=" + std::to_string(n) +
                     " reaches sample indices beyond 2**63-1");
  }
  return n;
}

Sheet plan_sheet(std::int64_t n, std::int64_t cols, std::int64_t scale, std::int64_t image_size,
                 std::int64_t latent_dim) {
  if (n < 1) throw UsageError("-n must be >= 1, got " + std::to_string(n));
  if (cols < 0) throw UsageError("--cols must be >= 0, got " + std::to_string(cols));
  if (scale < 1) throw UsageError("--scale must be >= 1, got " + std::to_string(scale));
  if (image_size < 1 || latent_dim < 1) throw UsageError("the model's image size and latent size must be >= 1");
  Sheet s;
  // Square by default, like pycgn: ceil(sqrt(n)) columns (exact: n < 2**53).
  s.cols = cols > 0 ? cols : static_cast<std::int64_t>(std::ceil(std::sqrt(static_cast<double>(n))));
  s.rows = std::max<std::int64_t>(1, n / s.cols + (n % s.cols != 0));
  const std::string request = "-n " + std::to_string(n) + " --cols " + std::to_string(s.cols) + " --scale " +
                              std::to_string(scale) + " with " + std::to_string(image_size) + " px images";

  // The images and every input drawn for them stay in memory until the sheet is written:
  // n * (3 * size^2 bytes of pixels + 3 * latent_dim floats + 7 int64 classes and offsets).
  std::uint64_t pixels = 0, inputs = 0, per_image = 0, held = 0;
  const auto size = static_cast<std::uint64_t>(image_size), dim = static_cast<std::uint64_t>(latent_dim);
  const bool held_overflow = __builtin_mul_overflow(size, size, &pixels) ||
                             __builtin_mul_overflow(pixels, std::uint64_t{3}, &pixels) ||
                             __builtin_mul_overflow(dim, std::uint64_t{12}, &inputs) ||
                             __builtin_add_overflow(inputs, std::uint64_t{56}, &inputs) ||
                             __builtin_add_overflow(pixels, inputs, &per_image) ||
                             __builtin_mul_overflow(per_image, static_cast<std::uint64_t>(n), &held);
  if (held_overflow || held > kMaxBytes) {
    const long double need = static_cast<long double>(n) * (3.0L * size * size + 12.0L * dim + 56.0L);
    throw UsageError("-n " + std::to_string(n) + " needs " + approx(need) + " bytes for the images and their inputs " +
                     "(" + std::to_string(image_size) + " px, latent size " + std::to_string(latent_dim) +
                     "); the limit is " + std::to_string(kMaxBytes) + "; lower -n");
  }

  // width = cols * (cell + pad) + pad, height = rows * (cell + pad) + pad,
  // bytes = height * (1 + 3 * width): the PNG's raw rows, each with its filter byte.
  std::int64_t step = 0, width = 0, height = 0;
  std::uint64_t row = 0, bytes = 0;
  const bool overflow = __builtin_mul_overflow(image_size, scale, &s.cell) ||
                        __builtin_add_overflow(s.cell, kPad, &step) ||
                        __builtin_mul_overflow(s.cols, step, &width) || __builtin_add_overflow(width, kPad, &width) ||
                        __builtin_mul_overflow(s.rows, step, &height) || __builtin_add_overflow(height, kPad, &height) ||
                        __builtin_mul_overflow(static_cast<std::uint64_t>(width), std::uint64_t{3}, &row) ||
                        __builtin_add_overflow(row, std::uint64_t{1}, &row) ||
                        __builtin_mul_overflow(static_cast<std::uint64_t>(height), row, &bytes);
  if (overflow || width > kMaxSide || height > kMaxSide || bytes > kMaxBytes) {
    const long double cell = static_cast<long double>(image_size) * scale;
    const long double w = s.cols * (cell + kPad) + kPad, h = s.rows * (cell + kPad) + kPad;
    throw UsageError(request + " make a grid of " + approx(w) + " x " + approx(h) + " px (" +
                     approx(h * (1 + 3 * w)) + " bytes); the limit is " + std::to_string(kMaxSide) +
                     " px per side and " + std::to_string(kMaxBytes) + " bytes; lower --scale, --cols or -n");
  }
  s.width = width;
  s.height = height;
  s.bytes = bytes;
  return s;
}

std::string output_folder(const std::string& path) {
  const std::size_t slash = path.find_last_of('/');
  if (slash == std::string::npos) return ".";
  return slash == 0 ? "/" : path.substr(0, slash);
}

OutputTarget check_output(const std::string& path) {
  if (path.empty()) throw UsageError("-o is required");
  const std::string p = shown(path, 400);
  const std::string folder = output_folder(path);
  OutputTarget t;
  struct stat link {}, st {};
  if (::lstat(path.c_str(), &link) == 0) {
    // A link is judged by its target; a dangling one is replaced like a missing file.
    bool dangling = false;
    if (!S_ISLNK(link.st_mode)) {
      st = link;
    } else if (::stat(path.c_str(), &st) != 0) {
      if (errno != ENOENT) throw UsageError("output " + p + " cannot be inspected: " + std::strerror(errno));
      dangling = true;
    }
    if (!dangling) {
      if (S_ISDIR(st.st_mode)) throw UsageError("output " + p + " is a directory; give a file name");
      if (!S_ISREG(st.st_mode)) {
        throw UsageError("output " + p + " is " + kind_of(st.st_mode) + ", not a regular file; refusing to replace it");
      }
      // Root passes access(); the mode's write bits still say the file is meant to stay.
      if ((st.st_mode & 0222) == 0 || ::access(path.c_str(), W_OK) != 0) {
        char mode[8];
        std::snprintf(mode, sizeof mode, "%04o", static_cast<unsigned>(st.st_mode & 07777));
        throw UsageError("output " + p + " is read-only (mode " + mode + "); refusing to replace it");
      }
      t.exists = true;
      t.mode = static_cast<unsigned>(st.st_mode & 0777);
    }
  } else if (errno != ENOENT && errno != ENOTDIR) {
    throw UsageError("output " + p + " cannot be inspected: " + std::strerror(errno));
  }
  struct stat dir {};
  if (::stat(folder.c_str(), &dir) != 0 || !S_ISDIR(dir.st_mode)) {
    throw UsageError("output folder " + shown(folder, 400) + " does not exist");
  }
  if (::access(folder.c_str(), W_OK | X_OK) != 0) throw UsageError("output folder " + shown(folder, 400) + " is not writable");
  return t;
}

}  // namespace cli
}  // namespace pycgn
