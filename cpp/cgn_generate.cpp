// cgn_generate: counterfactual images from an exported CGN, written as one PNG grid.
// The C++ counterpart of `pycgn generate`: same arguments, seeds, grid layout and images
// (within one uint8 level).
//
//   cgn_generate --model-dir export/ --shape 3 --texture 7 --bg 1 -n 16 --seed 5 -o out.png
//
// Bad arguments exit with status 2 and one line on stderr.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#if defined(__GLIBC__)
#include <malloc.h>
#endif

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <stdexcept>
#include <string>
#include <vector>

#include "cli.h"
#include "pycgn/pipeline.h"

namespace {

using pycgn::cli::UsageError;

// Writes all of `data` to fd, or throws naming `what`.
void write_all(int fd, const unsigned char* data, std::size_t size, const std::string& what) {
  while (size > 0) {
    const ssize_t k = ::write(fd, data, size);
    if (k < 0 && errno == EINTR) continue;
    if (k <= 0) throw std::runtime_error("cannot write " + what + ": " + std::strerror(k < 0 ? errno : EIO));
    data += k;
    size -= static_cast<std::size_t>(k);
  }
}

// An 8-bit RGB PNG streamed to a file descriptor: rows go through zlib one at a time and the
// compressed stream is cut into IDAT chunks of at most kChunk bytes, so neither the raw image
// nor its compressed form is ever held whole (a PNG chunk is limited to 2**31-1 bytes).
class PngStream {
 public:
  static constexpr std::size_t kChunk = 1 << 20;

  PngStream(int fd, std::string what, std::int64_t width, std::int64_t height) : fd_(fd), what_(std::move(what)) {
    if (width < 1 || height < 1 || width > pycgn::cli::kMaxSide || height > pycgn::cli::kMaxSide) {
      throw std::logic_error("PNG size out of range");  // plan_sheet guarantees it
    }
    const unsigned char signature[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    write_all(fd_, signature, sizeof signature, what_);
    std::vector<unsigned char> ihdr;
    put32(ihdr, static_cast<std::uint32_t>(width));
    put32(ihdr, static_cast<std::uint32_t>(height));
    ihdr.insert(ihdr.end(), {8, 2, 0, 0, 0});  // 8 bits, RGB, deflate, no filter choice, no interlace
    chunk("IHDR", ihdr.data(), ihdr.size());
    if (deflateInit(&z_, 6) != Z_OK) throw std::runtime_error("zlib failed to start");
    buf_.resize(kChunk);
  }
  ~PngStream() { deflateEnd(&z_); }
  PngStream(const PngStream&) = delete;
  PngStream& operator=(const PngStream&) = delete;

  // One row: its filter byte (0) then 3 * width bytes.
  void row(const unsigned char* data, std::size_t size) {
    const unsigned char filter = 0;
    feed(&filter, 1, Z_NO_FLUSH);
    feed(data, size, Z_NO_FLUSH);
  }

  void finish() {
    feed(nullptr, 0, Z_FINISH);
    if (z_.avail_out < kChunk) chunk("IDAT", buf_.data(), kChunk - z_.avail_out);
    chunk("IEND", nullptr, 0);
  }

 private:
  static void put32(std::vector<unsigned char>& b, std::uint32_t v) {
    for (int s = 24; s >= 0; s -= 8) b.push_back(static_cast<unsigned char>(v >> s));
  }

  void chunk(const char* type, const unsigned char* data, std::size_t size) {
    std::vector<unsigned char> head;
    put32(head, static_cast<std::uint32_t>(size));
    head.insert(head.end(), type, type + 4);
    uLong crc = crc32(0L, reinterpret_cast<const Bytef*>(type), 4);
    if (size > 0) crc = crc32(crc, data, static_cast<uInt>(size));
    std::vector<unsigned char> tail;
    put32(tail, static_cast<std::uint32_t>(crc));
    write_all(fd_, head.data(), head.size(), what_);
    if (size > 0) write_all(fd_, data, size, what_);
    write_all(fd_, tail.data(), tail.size(), what_);
  }

  void feed(const unsigned char* data, std::size_t size, int flush) {
    z_.next_in = const_cast<Bytef*>(data);
    z_.avail_in = static_cast<uInt>(size);  // rows are < 2**32 bytes: plan_sheet bounds them
    while (true) {
      if (z_.avail_out == 0) {
        if (z_.next_out) chunk("IDAT", buf_.data(), kChunk);
        z_.next_out = buf_.data();
        z_.avail_out = static_cast<uInt>(kChunk);
      }
      const int rc = deflate(&z_, flush);
      if (rc == Z_STREAM_END) return;
      if (rc != Z_OK && rc != Z_BUF_ERROR) throw std::runtime_error("zlib failed to compress the image");
      if (flush == Z_NO_FLUSH && z_.avail_in == 0 && z_.avail_out > 0) return;
    }
  }

  int fd_;
  std::string what_;
  z_stream z_{};
  std::vector<unsigned char> buf_;
};

// Row y of the same sheet as pycgn.api.tile: row-major, kPad white pixels around and between
// images, each pixel repeated `scale` times across and down.
void sheet_row(const pycgn::Images& img, const pycgn::cli::Sheet& s, std::int64_t scale, std::int64_t y,
               std::vector<unsigned char>& row) {
  using pycgn::cli::kPad;
  std::fill(row.begin(), row.end(), 255);
  const std::int64_t step = s.cell + kPad;
  if (y < kPad) return;
  const std::int64_t r = (y - kPad) / step, cy = (y - kPad) % step;
  if (cy >= s.cell) return;
  for (std::int64_t c = 0; c < s.cols; ++c) {
    const std::int64_t i = r * s.cols + c;
    if (i >= img.n) break;
    const std::uint8_t* src = img.image(i) + (cy / scale) * img.width * 3;
    unsigned char* dst = row.data() + (kPad + c * step) * 3;
    for (std::int64_t x = 0; x < img.width; ++x, src += 3) {
      for (std::int64_t k = 0; k < scale; ++k, dst += 3) std::copy(src, src + 3, dst);
    }
  }
}

mode_t process_umask() {
  const mode_t mask = ::umask(0);
  ::umask(mask);
  return mask;
}

// The sheet written to a temporary file beside `out` (created exclusively: never through a
// planted link), then renamed over it once complete and once `out` has been checked again.
void write_sheet(const std::string& out, mode_t umask, const pycgn::Images& img, const pycgn::cli::Sheet& s,
                 std::int64_t scale) {
  const auto target = pycgn::cli::check_output(out);
  const std::size_t slash = out.find_last_of('/');
  const std::string name = slash == std::string::npos ? out : out.substr(slash + 1);
  std::string tmp = pycgn::cli::output_folder(out) + "/." + name.substr(0, 200) + ".XXXXXX.tmp";
  const int fd = ::mkstemps(&tmp[0], 4);
  if (fd < 0) throw std::runtime_error("cannot create a temporary file beside " + out + ": " + std::strerror(errno));
  try {
    // An existing file keeps its permissions, as if written in place; a new one gets the umask's.
    const mode_t mode = target.exists ? static_cast<mode_t>(target.mode) : (0666 & ~umask);
    if (::fchmod(fd, mode) != 0) throw std::runtime_error("cannot set the mode of " + tmp + ": " + std::strerror(errno));
    PngStream png(fd, out, s.width, s.height);
    std::vector<unsigned char> row(static_cast<std::size_t>(s.width) * 3);
    for (std::int64_t y = 0; y < s.height; ++y) {
      sheet_row(img, s, scale, y, row);
      png.row(row.data(), row.size());
    }
    png.finish();
    if (::fsync(fd) != 0) throw std::runtime_error("cannot write " + out + ": " + std::strerror(errno));
  } catch (...) {
    ::close(fd);
    ::unlink(tmp.c_str());
    throw;
  }
  if (::close(fd) != 0) {
    const int err = errno;
    ::unlink(tmp.c_str());
    throw std::runtime_error("cannot write " + out + ": " + std::strerror(err));
  }
  try {
    pycgn::cli::check_output(out);  // it may have been replaced while the images were made
  } catch (...) {
    ::unlink(tmp.c_str());
    throw;
  }
  if (::rename(tmp.c_str(), out.c_str()) != 0) {
    const int err = errno;
    ::unlink(tmp.c_str());
    throw std::runtime_error("cannot rename " + tmp + " to " + out + ": " + std::strerror(err));
  }
}

int run(int argc, char** argv) {
  const mode_t umask = process_umask();  // before libtorch starts threads: umask() is process-wide
  const pycgn::cli::Args a = pycgn::cli::parse_args(argc, argv);
  if (a.help) {
    std::cout << pycgn::cli::kUsage;
    return 0;
  }
  pycgn::cli::check_output(a.out);  // fail before any work

  pycgn::PipelineOptions options;
  options.device = pycgn::parse_device(a.device);
  pycgn::Pipeline pipe(a.model_dir, options);
  const pycgn::ExportInfo& info = pipe.info();
  std::vector<std::int64_t> ids[3];
  for (int m = 0; m < 3; ++m) {
    if (a.given[m]) ids[m] = pycgn::cli::parse_classes(pycgn::cli::kClassFlags[m], a.classes[m], info.class_names);
  }
  const std::int64_t n = pycgn::cli::resolve_n(a.n, a.start, ids);
  const pycgn::cli::Sheet sheet = pycgn::cli::plan_sheet(n, a.cols, a.scale, info.image_size, info.latent_dim);
  const pycgn::Images img = pipe.generate(a.seed, n, ids[0], ids[1], ids[2], a.start);
  if (img.n != n || img.height != info.image_size || img.width != info.image_size || img.channels != 3) {
    throw std::logic_error("the pipeline returned images of another size than planned");
  }
  write_sheet(a.out, umask, img, sheet, a.scale);
  std::cout << "wrote " << a.out << ": " << img.n << " images (" << info.variant << ", "
            << pycgn::device_name(pipe.device()) << ", seed " << a.seed << ")\n";
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
    // One line of plain text, whatever file names or sidecar strings the message quotes.
    std::cerr << "cgn_generate: error: " << pycgn::cli::printable(e.what()) << "\n";
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
