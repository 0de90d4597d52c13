// Minimal JSON reader for edgekit's request.json (objects, arrays, strings, numbers, true/false/null),
// and string escaping for the result.json a runner writes. Not a general-purpose library: no
// \uXXXX escapes beyond ASCII, numbers as double.
#pragma once

#include <cstdio>
#include <cstdlib>
#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

namespace json {

struct Value {
  enum class Kind { Null, Bool, Number, String, Array, Object } kind = Kind::Null;
  bool boolean = false;
  double number = 0.0;
  std::string string;
  std::vector<Value> array;
  std::map<std::string, Value> object;

  const Value& at(const std::string& key) const {
    auto found = object.find(key);
    if (kind != Kind::Object || found == object.end()) throw std::runtime_error("request.json lacks '" + key + "'");
    return found->second;
  }
  bool has(const std::string& key) const { return kind == Kind::Object && object.count(key) > 0; }
  const std::string& str() const {
    if (kind != Kind::String) throw std::runtime_error("request.json: expected a string");
    return string;
  }
  long long integer() const {
    if (kind != Kind::Number) throw std::runtime_error("request.json: expected a number");
    return static_cast<long long>(number);
  }
};

class Parser {
 public:
  explicit Parser(const std::string& text) : text_(text) {}

  Value parse() {
    Value value = parse_value();
    skip_space();
    if (at_ != text_.size()) fail("trailing characters");
    return value;
  }

 private:
  const std::string& text_;
  size_t at_ = 0;

  [[noreturn]] void fail(const std::string& what) const {
    throw std::runtime_error("request.json: " + what + " at offset " + std::to_string(at_));
  }
  void skip_space() {
    while (at_ < text_.size() && (text_[at_] == ' ' || text_[at_] == '\n' || text_[at_] == '\r' || text_[at_] == '\t'))
      ++at_;
  }
  bool take(const std::string& word) {
    if (text_.compare(at_, word.size(), word) != 0) return false;
    at_ += word.size();
    return true;
  }
  Value parse_value() {
    skip_space();
    if (at_ >= text_.size()) fail("unexpected end");
    Value value;
    char c = text_[at_];
    if (c == '{') {
      value.kind = Value::Kind::Object;
      ++at_;
      skip_space();
      if (take("}")) return value;
      do {
        skip_space();
        std::string key = parse_string();
        skip_space();
        if (!take(":")) fail("expected ':'");
        value.object[key] = parse_value();
        skip_space();
      } while (take(","));
      if (!take("}")) fail("expected '}'");
    } else if (c == '[') {
      value.kind = Value::Kind::Array;
      ++at_;
      skip_space();
      if (take("]")) return value;
      do {
        value.array.push_back(parse_value());
        skip_space();
      } while (take(","));
      if (!take("]")) fail("expected ']'");
    } else if (c == '"') {
      value.kind = Value::Kind::String;
      value.string = parse_string();
    } else if (take("true")) {
      value.kind = Value::Kind::Bool;
      value.boolean = true;
    } else if (take("false")) {
      value.kind = Value::Kind::Bool;
    } else if (take("null")) {
      value.kind = Value::Kind::Null;
    } else {
      const char* start = text_.c_str() + at_;
      char* end = nullptr;
      value.kind = Value::Kind::Number;
      value.number = std::strtod(start, &end);
      if (end == start) fail("unexpected character");
      at_ += static_cast<size_t>(end - start);
    }
    return value;
  }
  std::string parse_string() {
    if (!take("\"")) fail("expected a string");
    std::string out;
    while (at_ < text_.size() && text_[at_] != '"') {
      char c = text_[at_++];
      if (c != '\\') {
        out += c;
        continue;
      }
      if (at_ >= text_.size()) fail("unterminated escape");
      char e = text_[at_++];
      switch (e) {
        case 'n': out += '\n'; break;
        case 't': out += '\t'; break;
        case 'r': out += '\r'; break;
        case 'b': out += '\b'; break;
        case 'f': out += '\f'; break;
        case 'u': {
          if (at_ + 4 > text_.size()) fail("short \\u escape");
          long code = std::strtol(text_.substr(at_, 4).c_str(), nullptr, 16);
          if (code > 0x7f) fail("non-ASCII \\u escape");
          out += static_cast<char>(code);
          at_ += 4;
          break;
        }
        default: out += e;  // \" \\ \/
      }
    }
    if (!take("\"")) fail("unterminated string");
    return out;
  }
};

inline std::string quote(const std::string& text) {
  std::string out = "\"";
  for (char c : text) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (static_cast<unsigned char>(c) < 0x20) {
      char buffer[8];
      std::snprintf(buffer, sizeof buffer, "\\u%04x", static_cast<unsigned>(static_cast<unsigned char>(c)));
      out += buffer;
    } else {
      out += c;
    }
  }
  return out + "\"";
}

}  // namespace json
