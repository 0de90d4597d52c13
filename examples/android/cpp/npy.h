// Minimal reader and writer for the .npy files edgekit exchanges with native runners: format version
// 1.0, little endian, C order, dtype float32 ('<f4'), int64 ('<i8') or int32 ('<i4'). Anything else
// is rejected with a message.
#pragma once

#include <cstdint>
#include <fstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace npy {

struct Array {
  std::string descr;               // "<f4", "<i8" or "<i4"
  std::vector<int64_t> shape;      // empty for a scalar
  std::vector<unsigned char> data; // raw little-endian element bytes

  size_t count() const {
    size_t n = 1;
    for (int64_t d : shape) n *= static_cast<size_t>(d);
    return n;
  }
  size_t item_size() const { return descr == "<i8" ? 8 : 4; }
};

inline std::string field(const std::string& header, const std::string& key) {
  size_t at = header.find("'" + key + "'");
  if (at == std::string::npos) throw std::runtime_error("npy header lacks '" + key + "'");
  at = header.find(':', at);
  size_t start = header.find_first_not_of(" ", at + 1);
  if (header[start] == '\'') {
    size_t end = header.find('\'', start + 1);
    return header.substr(start + 1, end - start - 1);
  }
  if (header[start] == '(') return header.substr(start, header.find(')', start) - start + 1);
  return header.substr(start, header.find_first_of(",}", start) - start);
}

inline Array load(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot open " + path);
  char magic[8];
  in.read(magic, 8);
  if (!in || std::string(magic, 6) != "\x93NUMPY") throw std::runtime_error(path + " is not an .npy file");
  if (magic[6] != 1) throw std::runtime_error(path + ": only .npy format version 1.0 is supported");
  unsigned char len[2];
  in.read(reinterpret_cast<char*>(len), 2);
  std::string header(len[0] | (len[1] << 8), '\0');
  in.read(header.data(), static_cast<std::streamsize>(header.size()));

  Array array;
  array.descr = field(header, "descr");
  if (array.descr != "<f4" && array.descr != "<i8" && array.descr != "<i4")
    throw std::runtime_error(path + ": dtype " + array.descr + " is not float32, int64 or int32");
  if (field(header, "fortran_order") != "False") throw std::runtime_error(path + ": Fortran order is not supported");
  std::string shape = field(header, "shape");
  for (size_t i = 1; i < shape.size();) {
    size_t end = shape.find_first_of(",)", i);
    std::string digits = shape.substr(i, end - i);
    if (digits.find_first_of("0123456789") != std::string::npos) array.shape.push_back(std::stoll(digits));
    i = end + 1;
  }
  array.data.resize(array.count() * array.item_size());
  in.read(reinterpret_cast<char*>(array.data.data()), static_cast<std::streamsize>(array.data.size()));
  if (!in) throw std::runtime_error(path + " is truncated");
  return array;
}

// Write `count(shape)` elements of `descr` ("<f4", "<i8" or "<i4") from `data` as an .npy file.
inline void save(const std::string& path, const std::string& descr, const std::vector<int64_t>& shape, const void* data) {
  std::string dims;
  size_t count = 1;
  for (int64_t d : shape) {
    dims += std::to_string(d) + ",";
    count *= static_cast<size_t>(d);
  }
  if (shape.size() > 1) dims.pop_back();  // (3,) keeps its comma, (1, 10) does not need one
  std::string header = "{'descr': '" + descr + "', 'fortran_order': False, 'shape': (" + dims + "), }";
  // Pad with spaces so that magic (6) + version (2) + length (2) + header + '\n' is a multiple of 64.
  header.append(63 - (10 + header.size()) % 64, ' ');
  header += '\n';
  std::ofstream out(path, std::ios::binary);
  if (!out) throw std::runtime_error("cannot write " + path);
  out.write("\x93NUMPY\x01\x00", 8);
  const unsigned char len[2] = {static_cast<unsigned char>(header.size() & 0xff),
                                static_cast<unsigned char>(header.size() >> 8)};
  out.write(reinterpret_cast<const char*>(len), 2);
  out.write(header.data(), static_cast<std::streamsize>(header.size()));
  out.write(static_cast<const char*>(data), static_cast<std::streamsize>(count * (descr == "<i8" ? 8 : 4)));
  if (!out) throw std::runtime_error("cannot write " + path);
}

}  // namespace npy
