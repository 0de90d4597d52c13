// golden_check: run an edgekit android artifact's model.pte on its golden inputs with the ExecuTorch
// C++ runtime and compare with the golden outputs: |actual - expected| <= atol + rtol * |expected|.
//
// Usage: golden_check <artifact-dir> [--atol A] [--rtol R]
//   <artifact-dir> holds model.pte and golden/<i>/inputs/<name>.npy, golden/<i>/outputs/<name>.npy
//   (i = 0, 1, ...) with the names in order in golden/inputs.txt and golden/outputs.txt; the older
//   layout golden/input_<i>.npy, golden/output_<i>.npy (one input, one output) is read too.
//   Pass the tolerance recorded in the artifact's manifest.json ("golden": {"atol", "rtol"}).
// Exit status: 0 every output matched, 1 a mismatch, 2 usage or loading error.
#include <executorch/extension/module/module.h>
#include <executorch/extension/tensor/tensor.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "npy.h"

using executorch::aten::ScalarType;
using executorch::extension::Module;
using executorch::extension::from_blob;
namespace fs = std::filesystem;

namespace {

int usage() {
  std::fprintf(stderr, "usage: golden_check <artifact-dir> [--atol A] [--rtol R]\n");
  return 2;
}

// Compare one output tensor with the expected array; print the worst element. Returns true on match.
bool matches(const executorch::aten::Tensor& actual, const npy::Array& expected, double atol, double rtol, int index) {
  if (static_cast<size_t>(actual.numel()) != expected.count()) {
    std::printf("sample %d: output has %zu elements, golden has %zu\n", index, static_cast<size_t>(actual.numel()), expected.count());
    return false;
  }
  double worst = 0.0;
  size_t bad = 0;
  for (size_t i = 0; i < expected.count(); ++i) {
    double want, got;
    if (expected.descr == "<i8") {
      int64_t w;
      std::memcpy(&w, expected.data.data() + 8 * i, 8);
      want = static_cast<double>(w);
      got = static_cast<double>(actual.const_data_ptr<int64_t>()[i]);
    } else if (expected.descr == "<i4") {
      int32_t w;
      std::memcpy(&w, expected.data.data() + 4 * i, 4);
      want = static_cast<double>(w);
      got = static_cast<double>(actual.const_data_ptr<int32_t>()[i]);
    } else {
      float w;
      std::memcpy(&w, expected.data.data() + 4 * i, 4);
      want = w;
      got = actual.const_data_ptr<float>()[i];
    }
    double err = std::fabs(got - want);
    worst = std::fmax(worst, err);
    if (!(err <= atol + rtol * std::fabs(want))) ++bad;  // NaN counts as a mismatch
  }
  std::printf("sample %d: max abs error %.3g, %zu of %zu elements outside tolerance\n", index, worst, bad, expected.count());
  return bad == 0;
}

// One golden sample: its input files in the program's input order, its output files in output order.
struct Sample {
  std::vector<fs::path> inputs, outputs;
};

std::vector<std::string> read_names(const fs::path& path) {
  std::vector<std::string> names;
  std::ifstream in(path);
  for (std::string line; std::getline(in, line);)
    if (!line.empty()) names.push_back(line);
  return names;
}

std::vector<Sample> find_samples(const fs::path& golden) {
  std::vector<Sample> samples;
  const auto inputs = read_names(golden / "inputs.txt"), outputs = read_names(golden / "outputs.txt");
  for (int i = 0;; ++i) {
    Sample sample;
    const fs::path folder = golden / std::to_string(i);
    if (!inputs.empty() && fs::is_directory(folder)) {
      for (const auto& name : inputs) sample.inputs.push_back(folder / "inputs" / (name + ".npy"));
      for (const auto& name : outputs) sample.outputs.push_back(folder / "outputs" / (name + ".npy"));
    } else if (inputs.empty() && fs::exists(golden / ("input_" + std::to_string(i) + ".npy"))) {
      sample.inputs.push_back(golden / ("input_" + std::to_string(i) + ".npy"));
      sample.outputs.push_back(golden / ("output_" + std::to_string(i) + ".npy"));
    } else {
      return samples;
    }
    samples.push_back(sample);
  }
}

ScalarType scalar_type(const std::string& descr) {
  return descr == "<i8" ? ScalarType::Long : descr == "<i4" ? ScalarType::Int : ScalarType::Float;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) return usage();
  fs::path dir = argv[1];
  double atol = 1e-3, rtol = 0.0;
  for (int i = 2; i < argc; ++i) {
    std::string arg = argv[i];
    if ((arg == "--atol" || arg == "--rtol") && i + 1 < argc) {
      (arg == "--atol" ? atol : rtol) = std::stod(argv[++i]);
    } else {
      return usage();
    }
  }

  Module module((dir / "model.pte").string());
  if (module.load_forward() != executorch::runtime::Error::Ok) {
    std::fprintf(stderr, "cannot load %s (missing delegate or kernel library?)\n", (dir / "model.pte").c_str());
    return 2;
  }
  auto meta = module.method_meta("forward");
  if (!meta.ok()) {
    std::fprintf(stderr, "model.pte has no forward method\n");
    return 2;
  }

  int checked = 0, failed = 0;
  for (const Sample& sample : find_samples(dir / "golden")) {
    const int i = checked++;
    try {
      std::vector<npy::Array> inputs;
      std::vector<executorch::extension::TensorPtr> tensors;
      std::vector<executorch::runtime::EValue> args;
      for (size_t k = 0; k < sample.inputs.size(); ++k) inputs.push_back(npy::load(sample.inputs[k].string()));
      for (size_t k = 0; k < inputs.size(); ++k) {
        auto info = meta->input_tensor_meta(k);
        if (!info.ok()) throw std::runtime_error("model.pte has no tensor input " + std::to_string(k));
        std::vector<executorch::aten::SizesType> sizes(inputs[k].shape.begin(), inputs[k].shape.end());
        if (sizes.size() + 1 == info->sizes().size()) sizes.insert(sizes.begin(), 1);  // saved without its batch axis
        tensors.push_back(from_blob(inputs[k].data.data(), sizes, scalar_type(inputs[k].descr)));
        args.emplace_back(*tensors.back());
      }
      auto result = module.forward(args);
      if (!result.ok()) {
        std::printf("sample %d: forward failed with error 0x%x\n", i, static_cast<unsigned>(result.error()));
        ++failed;
        continue;
      }
      bool all = result->size() >= sample.outputs.size();
      for (size_t k = 0; all && k < sample.outputs.size(); ++k)
        all = matches((*result)[k].toTensor(), npy::load(sample.outputs[k].string()), atol, rtol, i);
      if (!all) ++failed;
    } catch (const std::exception& e) {
      std::fprintf(stderr, "sample %d: %s\n", i, e.what());
      return 2;
    }
  }
  if (checked == 0) {
    std::fprintf(stderr, "no golden samples (golden/0/ or golden/input_0.npy) in %s\n", dir.c_str());
    return 2;
  }
  std::printf("%d of %d golden samples matched (atol %g, rtol %g)\n", checked - failed, checked, atol, rtol);
  return failed == 0 ? 0 : 1;
}
