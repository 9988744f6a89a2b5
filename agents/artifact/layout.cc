#include "agents/artifact/layout.h"

#include <sys/stat.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <vector>

namespace lockstep::agent {

namespace fs = std::filesystem;

namespace {

bool IsDirectory(const fs::path& p) {
  struct stat st;
  return ::lstat(p.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

std::string Mode(mode_t m) {
  char buf[8];
  std::snprintf(buf, sizeof buf, "%04o", static_cast<unsigned>(m & 07777));
  return buf;
}

}  // namespace

Status CheckArtifactLayout(const std::string& dir, const std::string& version) {
  const fs::path root(dir);
  const std::string release = "release " + version + ": ";
  if (!IsDirectory(root / "deploy")) {
    // Say what is there instead: usually the archive was packed one directory too deep.
    std::vector<std::string> top, nested;
    std::error_code ec;
    for (const auto& entry : fs::directory_iterator(root, ec)) {
      const std::string name = entry.path().filename().string();
      if (name.rfind(".lockstep", 0) == 0) continue;  // the agent's own marker
      top.push_back(name);
      if (IsDirectory(entry.path()) && IsDirectory(entry.path() / "deploy")) {
        nested.push_back(name + "/deploy/");
      }
    }
    std::sort(top.begin(), top.end());
    std::sort(nested.begin(), nested.end());
    std::string found;
    if (!nested.empty()) {
      found =
          "found " + nested.front() + " instead: pack the archive so that deploy/ is at its top";
    } else if (top.empty()) {
      found = "the archive is empty";
    } else {
      found = "its top holds ";
      for (size_t i = 0; i < top.size() && i < 5; ++i) found += (i ? ", " : "") + top[i];
      if (top.size() > 5) found += ", ...";
    }
    return FailedPrecondition(release + "no deploy/ directory at the top of the artifact (" +
                              found + ")");
  }
  bool runnable = false;
  for (const char* hook : {"stop", "start", "check"}) {
    const fs::path p = root / "deploy" / hook;
    struct stat st;
    if (::lstat(p.c_str(), &st) != 0) continue;  // every hook is optional on its own
    if (!S_ISREG(st.st_mode)) {
      return FailedPrecondition(release + "deploy/" + hook + " is not a regular file");
    }
    if ((st.st_mode & S_IXUSR) == 0) {
      return FailedPrecondition(release + "deploy/" + hook + " is not executable (mode " +
                                Mode(st.st_mode) + "): set its execute bit when packing");
    }
    if (std::string(hook) != "stop") runnable = true;
  }
  if (!runnable) {
    return FailedPrecondition(release +
                              "deploy/ has neither start nor check: nothing would start or "
                              "verify this release");
  }
  return Status::Ok();
}

}  // namespace lockstep::agent
