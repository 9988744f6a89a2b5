// Building .tar.gz artifacts in tests with libarchive, including hostile ones (absolute
// paths, "..", escaping symlinks and hard links, device files, huge expansion).
#pragma once

#include <string>
#include <vector>

#include "common/status.h"

namespace lockstep::testing {

struct TarEntry {
  enum class Type { kFile, kDir, kSymlink, kHardlink, kCharDevice, kFifo };
  Type type = Type::kFile;
  std::string path;          // stored as given, even if absolute or containing ".."
  std::string contents;      // kFile
  std::string target;        // kSymlink / kHardlink
  int mode = 0644;           // 0755 for executables
  int64_t sparse_size = -1;  // kFile: if >= 0, a file of this many zero bytes (for bombs)
};

// Writes a gzip-compressed tar with exactly these entries, in order.
Status WriteTarGz(const std::string& path, const std::vector<TarEntry>& entries);
// Same, returned as bytes.
StatusOr<std::string> TarGzBytes(const std::vector<TarEntry>& entries);

// An executable shell-script entry ("#!/bin/sh\n" + body).
TarEntry Script(const std::string& path, const std::string& body);

}  // namespace lockstep::testing
