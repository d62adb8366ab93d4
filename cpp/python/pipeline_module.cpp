// pycgn._pipeline: pybind11 bindings of pycgn::Pipeline (the whole C++ path: sampling, the
// generators, compositing). pycgn/pipeline.py wraps it as pycgn.Pipeline.
//
// A module of its own, not part of pycgn._C: _C is built for the stable ABI (abi3, one binary
// for every Python >= 3.10), which pybind11 cannot target, and _C stays small and quick to
// build; this one compiles the pipeline (libtorch's heavy headers) and is optional.
//
// generate() releases the GIL while it works, so Python threads can drive one Pipeline (or
// several) concurrently; the images come back as a uint8 torch tensor over the pipeline's own
// buffer, without a copy.
#include <torch/extension.h>

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "pycgn/pipeline.h"

namespace py = pybind11;

namespace {

// Hands the Images buffer to a tensor: the tensor's deleter owns it from then on.
at::Tensor to_tensor(pycgn::Images&& img) {
  auto* owned = new pycgn::Images(std::move(img));
  const std::vector<int64_t> shape{owned->n, owned->height, owned->width, owned->channels};
  return torch::from_blob(owned->data.data(), shape, [owned](void*) { delete owned; },
                          torch::TensorOptions().dtype(torch::kUInt8));
}

std::vector<std::int64_t> classes(const std::vector<std::int64_t>& v) { return v; }

}  // namespace

PYBIND11_MODULE(_pipeline, m) {
  m.doc() = "pycgn::Pipeline (C++), see pycgn.pipeline";
  py::register_exception<pycgn::ExportError>(m, "ExportError", PyExc_RuntimeError);

  py::class_<pycgn::Pipeline>(m, "Pipeline")
      .def(py::init([](const std::string& dir, const std::string& device, std::int64_t batch_size, bool cpu_chunks) {
             pycgn::PipelineOptions o;
             o.device = pycgn::parse_device(device);
             o.batch_size = batch_size;
             o.cpu_chunks = cpu_chunks;
             return std::make_unique<pycgn::Pipeline>(dir, o);
           }),
           py::arg("export_dir"), py::arg("device") = "auto", py::arg("batch_size") = 512, py::arg("cpu_chunks") = true,
           py::call_guard<py::gil_scoped_release>())
      .def("generate",
           [](const pycgn::Pipeline& p, std::uint64_t seed, std::int64_t n, const std::vector<std::int64_t>& shape,
              const std::vector<std::int64_t>& texture, const std::vector<std::int64_t>& bg, std::int64_t start,
              std::int64_t counterfactuals) {
             pycgn::Images img;
             {
               py::gil_scoped_release unlocked;
               img = p.generate(seed, n, classes(shape), classes(texture), classes(bg), start, counterfactuals);
             }
             return to_tensor(std::move(img));
           },
           py::arg("seed"), py::arg("n"), py::arg("shape") = std::vector<std::int64_t>{},
           py::arg("texture") = std::vector<std::int64_t>{}, py::arg("bg") = std::vector<std::int64_t>{},
           py::arg("start") = 0, py::arg("counterfactuals") = 1)
      .def_property_readonly("device", [](const pycgn::Pipeline& p) { return pycgn::device_name(p.device()); })
      .def_property_readonly("info", [](const pycgn::Pipeline& p) {
        const pycgn::ExportInfo& i = p.info();
        py::dict d;
        d["directory"] = i.directory;
        d["runtime"] = i.runtime;
        d["kind"] = i.kind;
        d["variant"] = i.variant;
        d["weights_sha256"] = i.weights_sha256;
        d["image_size"] = i.image_size;
        d["latent_dim"] = i.latent_dim;
        d["n_classes"] = i.n_classes;
        d["max_offset"] = i.max_offset;
        d["class_names"] = i.class_names;
        d["pycgn_version"] = i.pycgn_version;
        d["precision"] = i.precision;
        return d;
      });
}
