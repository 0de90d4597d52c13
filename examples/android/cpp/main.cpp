// golden_check: run an edgekit android artifact's model.pte on its golden inputs with the ExecuTorch
// C++ runtime and compare with the golden outputs: |actual - expected| <= atol + rtol * |expected|.
//
// Usage: golden_check <artifact-dir> [--atol A] [--rtol R]
//   <artifact-dir> holds model.pte and golden/input_<i>.npy, golden/output_<i>.npy (i = 0, 1, ...).
//   Pass the tolerance recorded in the artifact's manifest.json ("golden": {"atol", "rtol"}).
// Exit status: 0 every output matched, 1 a mismatch, 2 usage or loading error.
#include <executorch/extension/module/module.h>
#include <executorch/extension/tensor/tensor.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
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
  auto input_meta = meta.ok() ? meta->input_tensor_meta(0) : executorch::runtime::Result<executorch::runtime::TensorInfo>(executorch::runtime::Error::InvalidProgram);
  if (!input_meta.ok()) {
    std::fprintf(stderr, "model.pte has no tensor input for forward\n");
    return 2;
  }
  const size_t model_rank = input_meta->sizes().size();

  int checked = 0, failed = 0;
  for (int i = 0;; ++i) {
    fs::path input_path = dir / "golden" / ("input_" + std::to_string(i) + ".npy");
    fs::path output_path = dir / "golden" / ("output_" + std::to_string(i) + ".npy");
    if (!fs::exists(input_path)) break;
    try {
      npy::Array input = npy::load(input_path.string());
      npy::Array expected = npy::load(output_path.string());
      std::vector<executorch::aten::SizesType> sizes(input.shape.begin(), input.shape.end());
      if (sizes.size() + 1 == model_rank) sizes.insert(sizes.begin(), 1);  // a sample saved without its batch axis
      auto tensor = from_blob(input.data.data(), sizes, input.descr == "<i8" ? ScalarType::Long : ScalarType::Float);
      auto result = module.forward(tensor);
      if (!result.ok()) {
        std::printf("sample %d: forward failed with error 0x%x\n", i, static_cast<unsigned>(result.error()));
        ++failed;
      } else if (!matches((*result)[0].toTensor(), expected, atol, rtol, i)) {
        ++failed;
      }
    } catch (const std::exception& e) {
      std::fprintf(stderr, "sample %d: %s\n", i, e.what());
      return 2;
    }
    ++checked;
  }
  if (checked == 0) {
    std::fprintf(stderr, "no golden/input_0.npy in %s\n", dir.c_str());
    return 2;
  }
  std::printf("%d of %d golden samples matched (atol %g, rtol %g)\n", checked - failed, checked, atol, rtol);
  return failed == 0 ? 0 : 1;
}
