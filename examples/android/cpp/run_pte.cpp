// run_pte: execute an ExecuTorch program on the named inputs of an edgekit request folder and write the
// named outputs back, for `edgekit verify --on aarch64` (emulated) and `--on ssh://...` (a real board).
//
// Usage: run_pte <request-dir>
//   <request-dir>/request.json  {"artifact": "model.pte", "inputs": [{"name", "dtype", "shape"}, ...],
//                                "outputs": [{"name", ...}, ...], "samples": N}
//   <request-dir>/samples/<i>/inputs/<name>.npy    one file per named input, in the program's input order
// Writes <request-dir>/samples/<i>/outputs/<name>.npy and <request-dir>/result.json (runtime, version,
// samples that failed and why). A batch-1 program runs a sample with a larger batch one row at a time;
// a sample saved without its batch axis gets one. No timing is recorded: under emulation it means nothing.
// Exit status: 0 every sample ran, 1 some sample failed, 2 usage or loading error.
#include <executorch/extension/module/module.h>
#include <executorch/extension/tensor/tensor.h>

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "json.h"
#include "npy.h"

#ifndef EDGEKIT_EXECUTORCH_VERSION
#define EDGEKIT_EXECUTORCH_VERSION "unknown"
#endif

using executorch::aten::ScalarType;
using executorch::extension::Module;
using executorch::extension::from_blob;
using executorch::runtime::EValue;
namespace fs = std::filesystem;

namespace {

struct Failure {
  long long sample;
  std::string error;
};

void write_result(const fs::path& dir, long long samples, const std::vector<Failure>& failed, const std::string& error) {
  std::ofstream out(dir / "result.json");
  out << "{\"protocol\": 1, \"runner\": \"run_pte\", \"runtime\": \"executorch\", \"runtime_version\": "
      << json::quote(EDGEKIT_EXECUTORCH_VERSION) << ", \"samples\": " << samples << ", \"error\": " << json::quote(error)
      << ", \"failed\": [";
  for (size_t i = 0; i < failed.size(); ++i) {
    out << (i ? ", " : "") << "{\"sample\": " << failed[i].sample << ", \"error\": " << json::quote(failed[i].error) << "}";
  }
  out << "]}\n";
}

ScalarType scalar_type(const std::string& descr) {
  if (descr == "<i8") return ScalarType::Long;
  if (descr == "<i4") return ScalarType::Int;
  return ScalarType::Float;
}

std::string descr_of(ScalarType type) {
  switch (type) {
    case ScalarType::Float: return "<f4";
    case ScalarType::Long: return "<i8";
    case ScalarType::Int: return "<i4";
    default: throw std::runtime_error("output dtype " + std::to_string(static_cast<int>(type)) + " is not float32, int64 or int32");
  }
}

// One named output of one sample, gathered over the rows of a batch run one row at a time.
struct Gathered {
  std::string descr;
  std::vector<int64_t> shape;
  std::vector<unsigned char> data;
};

void run_sample(Module& module, const json::Value& request, const fs::path& sample) {
  const auto& inputs = request.at("inputs").array;
  const auto& outputs = request.at("outputs").array;
  auto meta = module.method_meta("forward");
  if (!meta.ok()) throw std::runtime_error("the program has no forward method");
  if (meta->num_inputs() != inputs.size())
    throw std::runtime_error("the program takes " + std::to_string(meta->num_inputs()) + " inputs, the request names " +
                             std::to_string(inputs.size()));

  std::vector<npy::Array> arrays;
  int64_t rows = -1;
  for (size_t k = 0; k < inputs.size(); ++k) {
    const std::string& name = inputs[k].at("name").str();
    npy::Array array = npy::load((sample / "inputs" / (name + ".npy")).string());
    auto info = meta->input_tensor_meta(k);
    if (!info.ok()) throw std::runtime_error("input '" + name + "' is not a tensor input");
    if (scalar_type(array.descr) != info->scalar_type())
      throw std::runtime_error("input '" + name + "' is " + array.descr + " but the program takes another dtype");
    const size_t rank = info->sizes().size();
    if (array.shape.size() + 1 == rank) array.shape.insert(array.shape.begin(), 1);  // saved without its batch axis
    if (array.shape.size() != rank) throw std::runtime_error("input '" + name + "' has the wrong rank");
    int64_t batch = rank ? array.shape[0] : 1;
    if (rows >= 0 && batch != rows) throw std::runtime_error("inputs disagree on the batch size");
    rows = batch;
    arrays.push_back(std::move(array));
  }
  // A program exported for batch 1 (what edgekit builds) runs a larger batch one row at a time.
  const bool per_row = rows > 1 && meta->input_tensor_meta(0)->sizes().size() > 0 && meta->input_tensor_meta(0)->sizes()[0] == 1;
  const int64_t runs = per_row ? rows : 1;
  std::vector<Gathered> gathered(outputs.size());
  for (int64_t r = 0; r < runs; ++r) {
    std::vector<executorch::extension::TensorPtr> tensors;
    std::vector<EValue> args;
    for (auto& array : arrays) {
      std::vector<executorch::aten::SizesType> sizes(array.shape.begin(), array.shape.end());
      unsigned char* data = array.data.data();
      if (per_row) {
        sizes[0] = 1;
        data += static_cast<size_t>(r) * (array.count() / static_cast<size_t>(rows)) * array.item_size();
      }
      tensors.push_back(from_blob(data, sizes, scalar_type(array.descr)));
      args.emplace_back(*tensors.back());
    }
    auto result = module.forward(args);
    if (!result.ok()) {
      char code[16];
      std::snprintf(code, sizeof code, "0x%x", static_cast<unsigned>(result.error()));
      throw std::runtime_error(std::string("forward failed with error ") + code);
    }
    if (result->size() < outputs.size())
      throw std::runtime_error("the program returned " + std::to_string(result->size()) + " outputs, the request names " +
                               std::to_string(outputs.size()));
    for (size_t k = 0; k < outputs.size(); ++k) {
      if (!(*result)[k].isTensor()) throw std::runtime_error("output '" + outputs[k].at("name").str() + "' is not a tensor");
      const auto& tensor = (*result)[k].toTensor();
      Gathered& out = gathered[k];
      out.descr = descr_of(tensor.scalar_type());
      std::vector<int64_t> shape(tensor.sizes().begin(), tensor.sizes().end());
      if (r == 0) {
        out.shape = shape;
      } else if (!out.shape.empty()) {
        out.shape[0] += shape.empty() ? 1 : shape[0];
      }
      const auto* bytes = static_cast<const unsigned char*>(tensor.const_data_ptr());
      out.data.insert(out.data.end(), bytes, bytes + tensor.nbytes());
    }
  }
  fs::create_directories(sample / "outputs");
  for (size_t k = 0; k < outputs.size(); ++k) {
    const Gathered& out = gathered[k];
    npy::save((sample / "outputs" / (outputs[k].at("name").str() + ".npy")).string(), out.descr, out.shape, out.data.data());
  }
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: run_pte <request-dir>\n");
    return 2;
  }
  const fs::path dir = argv[1];
  json::Value request;
  long long samples = 0;
  try {
    std::ifstream in(dir / "request.json");
    if (!in) throw std::runtime_error("cannot read " + (dir / "request.json").string());
    std::stringstream text;
    text << in.rdbuf();
    request = json::Parser(text.str()).parse();
    samples = request.at("samples").integer();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s\n", e.what());
    write_result(dir, 0, {}, e.what());
    return 2;
  }

  const fs::path artifact = dir / request.at("artifact").str();
  Module module(artifact.string());
  if (module.load_forward() != executorch::runtime::Error::Ok) {
    std::string error = "cannot load " + artifact.filename().string() + " (missing delegate or kernel library?)";
    std::fprintf(stderr, "%s\n", error.c_str());
    write_result(dir, samples, {}, error);
    return 2;
  }
  std::vector<Failure> failed;
  for (long long i = 0; i < samples; ++i) {
    try {
      run_sample(module, request, dir / "samples" / std::to_string(i));
    } catch (const std::exception& e) {
      std::fprintf(stderr, "sample %lld: %s\n", i, e.what());
      failed.push_back({i, e.what()});
    }
  }
  write_result(dir, samples, failed, "");
  std::printf("%lld of %lld samples ran\n", samples - static_cast<long long>(failed.size()), samples);
  return failed.empty() ? 0 : 1;
}
