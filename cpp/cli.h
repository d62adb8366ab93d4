// The torch-free half of cgn_generate: its arguments, the grid's size and the output file's
// checks. Kept apart from libtorch so the fuzz targets (cpp/fuzz) can link it alone.
//
// Every error is a UsageError whose message names the argument (cgn_generate: exit 2).
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

namespace pycgn {
namespace cli {

struct UsageError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// Largest output accepted, in raw pixel bytes of the PNG (and in memory for the images and
// their inputs): far beyond any useful sheet, far below what would exhaust a machine.
constexpr std::uint64_t kMaxBytes = std::uint64_t{1} << 32;
// PNG stores width and height as 31-bit numbers.
constexpr std::int64_t kMaxSide = (std::int64_t{1} << 31) - 1;
// White pixels around and between the images of a sheet (pycgn.api.tile's default).
constexpr std::int64_t kPad = 2;

struct Args {
  bool help = false;
  std::string model_dir, out, device = "auto";
  std::string classes[3];  // --shape, --texture, --bg
  bool given[3] = {false, false, false};
  std::int64_t n = 16, cols = 0, scale = 4, start = 0;
  std::uint64_t seed = 0;
};

// `text` as one line of printable text: line breaks become spaces; other control characters,
// also UTF-8's C1 controls and line/paragraph separators, become '?'. Messages quote file
// names, arguments and sidecar strings through it.
std::string printable(const std::string& text);

extern const char* const kClassFlags[3];  // "--shape", "--texture", "--bg"
extern const char* const kUsage;

// argv[1..argc) -> Args; --model-dir and -o are required unless -h/--help is given.
Args parse_args(int argc, const char* const* argv);

// "3", "3,7,random", "seven": ids or the model's class names; random/none/empty entries are
// kRandomClass (-1).
std::vector<std::int64_t> parse_classes(const std::string& flag, const std::string& text,
                                        const std::vector<std::string>& names);

// Broadcast like pycgn: a list of classes sets n when n is 1; otherwise lists must have n
// entries. Returns the number of images; checks that start + n - 1 fits an int64.
std::int64_t resolve_n(std::int64_t n, std::int64_t start, const std::vector<std::int64_t> (&ids)[3]);

// A grid of n images of image_size px, each enlarged `scale` times, `cols` per row (0: square).
struct Sheet {
  std::int64_t cols = 0, rows = 0;
  std::int64_t cell = 0;  // image side after scaling, px
  std::int64_t width = 0, height = 0;
  std::uint64_t bytes = 0;  // raw PNG data: height * (1 + 3 * width)
};

// Every size computed with overflow checks; throws UsageError giving the size the request
// would need when the sheet or the images and latents in memory exceed the limits above.
Sheet plan_sheet(std::int64_t n, std::int64_t cols, std::int64_t scale, std::int64_t image_size,
                 std::int64_t latent_dim);

// What -o names now. Throws UsageError unless it is absent (its folder existing and writable)
// or a regular file the user may write (as open(path, "w") would allow, and with a write bit
// in its mode even for root): never a directory, device, FIFO or socket. A symbolic link is
// judged by what it points to; the rename replaces the link itself.
struct OutputTarget {
  bool exists = false;
  unsigned mode = 0;  // permission bits of the existing file, kept by its replacement
};
OutputTarget check_output(const std::string& path);
// The folder a temporary file beside `path` goes into: "." for a bare name.
std::string output_folder(const std::string& path);

}  // namespace cli
}  // namespace pycgn
