// Reading and checking an export's sidecar and file records (see sidecar.h). Torch-free.
#include "sidecar.h"

#include <sys/stat.h>

#include <cerrno>
#include <cmath>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <vector>

namespace pycgn {
namespace sidecar {

const char* const kNets[3] = {"shape", "texture", "background"};
const char* const kKinds[2] = {"mnist_cgn", "imagenet_cgn"};
const char* const kRuntimes[2] = {"torchscript", "aoti"};

#ifndef PYCGN_VERSION
#error "PYCGN_VERSION (the pycgn version, e.g. \"0.1.0\") must be defined by the build"
#endif

namespace {

using json = nlohmann::json;

[[noreturn]] void fail(const std::string& file, const std::string& what) { throw ExportError(file + ": " + what); }

std::string quoted(const char* key) { return std::string("key \"") + key + "\""; }

// Deeper nesting than any sidecar has is refused before parsing: copying, comparing or
// printing a json value recurses once per level.
void check_depth(const std::string& text, const std::string& file) {
  int depth = 0;
  bool in_string = false, escaped = false;
  for (const char ch : text) {
    if (in_string) {
      if (escaped) escaped = false;
      else if (ch == '\\') escaped = true;
      else if (ch == '"') in_string = false;
    } else if (ch == '"') {
      in_string = true;
    } else if (ch == '[' || ch == '{') {
      if (++depth > kMaxDepth) fail(file, "JSON nested deeper than " + std::to_string(kMaxDepth) + " levels");
    } else if (ch == ']' || ch == '}') {
      --depth;
    }
  }
}

json parse_object(const std::string& text, const std::string& file) {
  check_depth(text, file);
  json j = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) fail(file, "not a JSON object");
  return j;
}

const json& require(const json& j, const char* key, const std::string& file) {
  const auto it = j.find(key);
  if (it == j.end()) fail(file, "missing " + quoted(key));
  return *it;
}

[[noreturn]] void wrong_type(const json& v, const char* key, const std::string& file, const char* expected) {
  fail(file, quoted(key) + " has the wrong type (" + v.type_name() + "), expected " + expected);
}

// An integer in [lo, hi]: not a float (28.0), a bool or a number beyond int64.
std::int64_t integer(const json& j, const char* key, const std::string& file, std::int64_t lo, std::int64_t hi) {
  const json& v = require(j, key, file);
  if (!v.is_number_integer()) wrong_type(v, key, file, "an integer");
  const bool big = v.is_number_unsigned() && v.get<std::uint64_t>() > static_cast<std::uint64_t>(hi);
  const std::int64_t x = big ? hi : v.get<std::int64_t>();
  if (big || x < lo || x > hi) {
    fail(file, quoted(key) + " is " + v.dump() + ", expected " + std::to_string(lo) + ".." + std::to_string(hi));
  }
  return x;
}

// Printable ASCII or UTF-8 text of 1..max_len bytes: no control characters (these strings end up
// in messages and on the terminal) and no NUL.
bool plain_text(const std::string& s, std::size_t max_len) {
  if (s.empty() || s.size() > max_len) return false;
  for (const char ch : s) {
    const auto u = static_cast<unsigned char>(ch);
    if (u < 0x20 || u == 0x7f) return false;
  }
  return true;
}

std::string text(const json& j, const char* key, const std::string& file, std::size_t max_len) {
  const json& v = require(j, key, file);
  if (!v.is_string()) wrong_type(v, key, file, "a string");
  const auto& s = v.get_ref<const std::string&>();
  if (!plain_text(s, max_len)) {
    fail(file, quoted(key) + " must be 1.." + std::to_string(max_len) + " bytes of text without control characters");
  }
  return s;
}

// The sidecar names files inside its directory; never follow it elsewhere.
std::string file_name(const json& files, const char* net, const std::string& file) {
  const auto it = files.find(net);
  const bool ok = it != files.end() && it->is_string();
  const std::string name = ok ? it->get<std::string>() : std::string();
  if (!ok || !plain_text(name, 255) || name == "." || name == ".." || name.find('/') != std::string::npos) {
    fail(file, std::string("files.") + net + " must be a file name in the export directory, got " +
                   (it == files.end() ? std::string("nothing") : it->dump().substr(0, 80)));
  }
  return name;
}

// One of `allowed` (n entries), else an error naming the field and the accepted values.
std::string one_of(const json& j, const char* key, const std::string& file, const char* const* allowed, int n) {
  const std::string v = text(j, key, file, 64);
  std::string list;
  for (int i = 0; i < n; ++i) {
    if (v == allowed[i]) return v;
    list += std::string(i ? ", " : "") + "\"" + allowed[i] + "\"";
  }
  fail(file, quoted(key) + " is \"" + v + "\", expected one of " + list + " (an export of another pycgn?)");
}

double positive(const json& j, const char* key, const std::string& file, double hi) {
  const json& v = require(j, key, file);
  if (!v.is_number() || v.is_boolean()) wrong_type(v, key, file, "a number");
  const double x = v.get<double>();
  if (!(x > 0.0 && x <= hi)) fail(file, quoted(key) + " is " + v.dump() + ", expected a number in (0, " + json(hi).dump() + "]");
  return x;
}

std::string major(const std::string& version) { return version.substr(0, version.find('.')); }

}  // namespace

Sidecar parse(const std::string& text_in, const std::string& dir, const std::string& file) {
  const json j = parse_object(text_in, file);
  const auto fmt = j.find("format");
  const std::string format = fmt != j.end() && fmt->is_string() ? fmt->get<std::string>().substr(0, 40) : "";
  if (format != kFormat) fail(file, "format is \"" + format + "\", expected \"" + kFormat + "\"");
  const json& version = require(j, "format_version", file);
  if (!version.is_number_integer()) wrong_type(version, "format_version", file, "an integer");
  if (version != kFormatVersion) {
    fail(file, "format_version " + version.dump() + " is not supported (this build reads " +
                   std::to_string(kFormatVersion) + "); re-export the model with a matching pycgn");
  }
  Sidecar s;
  ExportInfo& info = s.info;
  info.directory = dir;
  info.runtime = one_of(j, "runtime", file, kRuntimes, 2);
  info.kind = one_of(j, "kind", file, kKinds, 2);
  // Same major version: the export format's meaning (sampling, streams) may change across majors.
  info.pycgn_version = text(j, "pycgn_version", file, 64);
  if (major(info.pycgn_version) != major(PYCGN_VERSION)) {
    fail(file, quoted("pycgn_version") + " is \"" + info.pycgn_version + "\", this build reads exports of pycgn " +
                   major(PYCGN_VERSION) + ".x (" + PYCGN_VERSION + "); re-export the model");
  }
  info.variant = text(j, "variant", file, 128);
  info.weights_sha256 = text(j, "weights_sha256", file, 128);
  info.image_size = integer(j, "image_size", file, 1, kMaxImageSize);
  info.latent_dim = integer(j, "latent_dim", file, 1, kMaxLatentDim);
  info.n_classes = integer(j, "n_classes", file, 1, kMaxClasses);
  info.max_offset = integer(j, "max_offset", file, 0, kMaxOffset);
  if (j.contains("cpu_chunk")) info.cpu_chunk = integer(j, "cpu_chunk", file, 1, kMaxCpuChunk);

  const json& names = require(j, "class_names", file);
  if (!names.is_array()) wrong_type(names, "class_names", file, "an array of strings");
  if (static_cast<std::int64_t>(names.size()) != info.n_classes) {
    fail(file, "class_names has " + std::to_string(names.size()) + " entries, n_classes is " +
                   std::to_string(info.n_classes));
  }
  info.class_names.reserve(names.size());
  for (std::size_t i = 0; i < names.size(); ++i) {
    if (!names[i].is_string() || !plain_text(names[i].get_ref<const std::string&>(), 256)) {
      fail(file, "class_names[" + std::to_string(i) + "] must be 1..256 bytes of text without control characters");
    }
    info.class_names.push_back(names[i].get<std::string>());
  }

  // Mask clamp of the blend: a probability range, lo <= hi.
  const json& clamp = require(j, "clamp", file);
  if (!clamp.is_array() || clamp.size() != 2 || !clamp[0].is_number() || !clamp[1].is_number()) {
    fail(file, "clamp must be [lo, hi] with 0 <= lo <= hi <= 1, got " + clamp.dump().substr(0, 80));
  }
  const double lo = clamp[0].get<double>(), hi = clamp[1].get<double>();
  if (!(0.0 <= lo && lo <= hi && hi <= 1.0)) {
    fail(file, "clamp must be [lo, hi] with 0 <= lo <= hi <= 1, got " + clamp.dump());
  }
  info.clamp_lo = static_cast<float>(lo);
  info.clamp_hi = static_cast<float>(hi);

  if (info.kind == "imagenet_cgn") {
    info.truncation = static_cast<float>(positive(j, "truncation", file, 1.0));
    info.truncation_bound = static_cast<float>(positive(j, "truncation_bound", file, 1e6));
    // Class vectors (interpolations) would need another input than the ids the pipeline samples.
    const auto ci = j.find("class_input");
    if (ci != j.end() && !(ci->is_string() && *ci == "ids")) {
      fail(file, quoted("class_input") + " is " + ci->dump().substr(0, 40) +
                     ", pycgn::Pipeline runs \"ids\" exports (pycgn.export(..., class_input=\"ids\"))");
    }
  }
  if (info.runtime == "aoti") {
    info.precision = text(j, "precision", file, 32);
    info.torch_version = text(j, "torch_version", file, 64);
    info.compiled_for = text(j, "device", file, 32);
    info.arch = text(j, "arch", file, 32);
  }

  const json& files = require(j, "files", file);
  if (!files.is_object()) fail(file, "key \"files\" must be an object");
  for (int i = 0; i < 3; ++i) s.files[i] = file_name(files, kNets[i], file);
  return s;
}

Sidecar read(const std::string& dir) {
  const std::string file = (dir.empty() || dir.back() == '/' ? dir : dir + "/") + kFileName;
  // stat first: a FIFO or a device named like the sidecar must not block or flood the reader.
  struct stat st;
  if (::stat(file.c_str(), &st) != 0) {
    fail(file, errno == ENOENT ? "no such file (not a pycgn export directory?)"
                               : std::string("cannot be read: ") + std::strerror(errno));
  }
  if (!S_ISREG(st.st_mode)) fail(file, "not a regular file");
  if (static_cast<std::uint64_t>(st.st_size) > kMaxBytes) {
    fail(file, "is " + std::to_string(st.st_size) + " bytes, more than a sidecar's limit of " +
                   std::to_string(kMaxBytes));
  }
  std::ifstream in(file, std::ios::binary);
  if (!in) fail(file, "cannot be read");
  std::string text(kMaxBytes + 1, '\0');
  in.read(&text[0], static_cast<std::streamsize>(text.size()));
  text.resize(static_cast<std::size_t>(in.gcount()));
  if (text.size() > kMaxBytes) fail(file, "grew beyond a sidecar's limit of " + std::to_string(kMaxBytes) + " bytes");
  return parse(text, dir, file);
}

void check_record(const std::string& text_in, const char* net, const std::string& sha, const std::string& file) {
  json meta;
  try {
    meta = parse_object(text_in, file);
  } catch (const ExportError&) {
    fail(file, "its pycgn.json record is missing or corrupt");
  }
  const auto m = meta.find("mechanism");
  const std::string mechanism = m != meta.end() && m->is_string() ? m->get<std::string>() : "";
  if (mechanism != net) {
    fail(file, "holds the \"" + mechanism.substr(0, 40) + "\" generator, expected \"" + net + "\"");
  }
  const auto w = meta.find("weights_sha256");
  const std::string recorded = w != meta.end() && w->is_string() ? w->get<std::string>() : "";
  if (recorded != sha) {
    fail(file, "exported from weights " + recorded.substr(0, 12) + "..., but the sidecar says " + sha.substr(0, 12) + "...");
  }
}

}  // namespace sidecar
}  // namespace pycgn
