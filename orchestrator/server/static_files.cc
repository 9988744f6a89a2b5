#include "orchestrator/server/static_files.h"

#include <sys/stat.h>

#include <climits>
#include <cstdlib>
#include <fstream>
#include <map>
#include <sstream>

namespace lockstep {

std::optional<std::string> ResolveStaticPath(const std::string& web_dir_real,
                                             std::string_view request_path) {
  if (web_dir_real.empty() || web_dir_real.front() != '/') return std::nullopt;
  if (request_path.empty() || request_path.front() != '/') return std::nullopt;
  if (request_path.size() > 1024) return std::nullopt;
  // Rebuild the relative path from its segments. Empty segments ("//") are dropped, so
  // "//etc/passwd" is "etc/passwd" relative to the web directory, never an absolute path.
  std::string relative;
  size_t pos = 0;
  while (pos < request_path.size()) {
    size_t end = request_path.find('/', pos);
    if (end == std::string_view::npos) end = request_path.size();
    std::string_view seg = request_path.substr(pos, end - pos);
    pos = end + 1;
    if (seg.empty()) continue;
    if (seg.front() == '.') return std::nullopt;  // ".", "..", hidden files
    for (char c : seg) {
      if (c == '\0' || c == '\\') return std::nullopt;
    }
    if (!relative.empty()) relative += '/';
    relative += seg;
  }
  if (relative.empty() || request_path.back() == '/') {
    relative += relative.empty() ? "index.html" : "/index.html";
  }
  const std::string candidate = web_dir_real + "/" + relative;
  char resolved[PATH_MAX];
  if (::realpath(candidate.c_str(), resolved) == nullptr) return std::nullopt;
  std::string real(resolved);
  if (real.size() <= web_dir_real.size() + 1 ||
      real.compare(0, web_dir_real.size(), web_dir_real) != 0 || real[web_dir_real.size()] != '/') {
    return std::nullopt;
  }
  struct stat st;
  if (::stat(real.c_str(), &st) != 0 || !S_ISREG(st.st_mode)) return std::nullopt;
  return real;
}

const char* StaticContentType(std::string_view file_name) {
  static const std::map<std::string, const char*, std::less<>> kTypes = {
      {".html", "text/html; charset=utf-8"},
      {".js", "text/javascript; charset=utf-8"},
      {".mjs", "text/javascript; charset=utf-8"},
      {".css", "text/css; charset=utf-8"},
      {".json", "application/json"},
      {".svg", "image/svg+xml"},
      {".png", "image/png"},
      {".ico", "image/x-icon"},
      {".txt", "text/plain; charset=utf-8"},
      {".map", "application/json"}};
  size_t dot = file_name.rfind('.');
  size_t slash = file_name.rfind('/');
  if (dot == std::string_view::npos || (slash != std::string_view::npos && dot < slash)) {
    return "application/octet-stream";
  }
  auto it = kTypes.find(file_name.substr(dot));
  return it == kTypes.end() ? "application/octet-stream" : it->second;
}

std::optional<StaticFile> LoadStaticFile(const std::string& web_dir_real,
                                         std::string_view request_path) {
  if (web_dir_real.empty() || request_path.rfind("/api/", 0) == 0 ||
      request_path.rfind("/hooks/", 0) == 0) {
    return std::nullopt;
  }
  auto file = ResolveStaticPath(web_dir_real, request_path);
  if (!file) return std::nullopt;
  std::ifstream in(*file, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  if (!in) return std::nullopt;
  return StaticFile{ss.str(), StaticContentType(*file)};
}

}  // namespace lockstep
