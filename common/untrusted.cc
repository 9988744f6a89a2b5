#include "common/untrusted.h"

#include <cstdio>

namespace lockstep {
namespace {

bool IsAlnum(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

}  // namespace

bool IsValidName(std::string_view name) {
  if (name.empty() || name.size() > kMaxNameLength || !IsAlnum(name.front())) return false;
  for (char c : name) {
    if (!IsAlnum(c) && c != '.' && c != '_' && c != '-') return false;
  }
  return true;
}

std::string CheckName(std::string_view what, std::string_view name) {
  if (name.empty()) return std::string(what) + " is empty";
  if (name.size() > kMaxNameLength) {
    return std::string(what) + " is " + std::to_string(name.size()) + " characters long (at most " +
           std::to_string(kMaxNameLength) + ")";
  }
  if (!IsValidName(name)) {
    return std::string(what) + " \"" + LogSafe(name, 64) +
           "\" must start with a letter or digit and hold only letters, digits, '.', '_' and '-'";
  }
  return "";
}

std::string LogSafe(std::string_view s, size_t max_chars) {
  std::string out;
  const size_t n = s.size() < max_chars ? s.size() : max_chars;
  out.reserve(n + 16);
  for (size_t i = 0; i < n; ++i) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    switch (c) {
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '"':
        out += "\\\"";
        break;
      default:
        if (c < 0x20 || c >= 0x7f) {
          char buf[8];
          std::snprintf(buf, sizeof buf, "\\x%02x", c);
          out += buf;
        } else {
          out += static_cast<char>(c);
        }
    }
  }
  if (s.size() > n) out += "...(" + std::to_string(s.size()) + " bytes)";
  return out;
}

std::string_view TrimSpace(std::string_view s) {
  auto space = [](char c) {
    return c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '\v' || c == '\f';
  };
  while (!s.empty() && space(s.front())) s.remove_prefix(1);
  while (!s.empty() && space(s.back())) s.remove_suffix(1);
  return s;
}

}  // namespace lockstep
