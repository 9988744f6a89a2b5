// The on-disk layout an agent manages under its root:
//
//   ROOT/releases/<version>/   an unpacked, complete release (a marker file
//                              ".lockstep-release" inside records its sha256)
//   ROOT/current               symlink to releases/<version>, switched atomically
//   ROOT/tmp/                  downloads and partial unpacks; emptied at start-up
//
// A release directory appears under releases/ only once complete (unpacked in tmp/, then
// renamed), and `current` is replaced by rename(2) of a fresh symlink, so a kill -9 at any
// moment leaves `current` naming a complete release (or the previous one).
//
// Symbolic links: ROOT itself may be one (the operator chose it), but the agent never follows
// a link inside ROOT for its own files. `current` is the only link it makes; a link found in
// place of tmp/ is removed (the link, never what it points at) and replaced by a directory;
// a link in place of releases/ is refused at Init, since the releases may really live there;
// links inside tmp/ are removed, not followed.
//
// Thread safety: not thread-safe; the agent's executor owns it and calls it from one thread.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "common/status.h"

namespace lockstep::agent {

class ReleaseDir {
 public:
  explicit ReleaseDir(std::string root);

  // Creates ROOT, releases/ and tmp/ (0700) if missing and removes leftovers in tmp/ from an
  // interrupted run. Call once at start-up. kFailedPrecondition, naming the path, if
  // releases/ is a symbolic link or not a directory; kInternal for I/O failures.
  Status Init();

  const std::string& root() const { return root_; }
  std::string ReleasePath(const std::string& version) const;
  std::string TmpPath(const std::string& name) const;

  // Version names become directory names: letters, digits, '.', '_', '-', '+', at most 128
  // characters, not starting with '.'.
  static bool IsValidVersion(const std::string& version);

  // The version `current` points at, or nullopt if there is no current link.
  std::optional<std::string> Current() const;
  // Complete releases on disk (those with the marker), sorted by name.
  std::vector<std::string> Versions() const;
  // True if releases/<version> is complete and was unpacked from an artifact with `sha256`
  // (any sha256 if `sha256` is empty).
  bool HasRelease(const std::string& version, const std::string& sha256 = "") const;

  // Unpacks `archive_path` (already verified) into releases/<version> through tmp/, writing
  // the marker last. Replaces an incomplete or different-digest directory of the same name.
  Status Install(const std::string& version, const std::string& sha256,
                 const std::string& archive_path);

  // Points `current` at releases/<version> atomically. REQUIRES: HasRelease(version).
  Status SwitchCurrent(const std::string& version);

  // Removes the oldest releases (by installation time) beyond `keep`, never the current one
  // nor any listed in `protect`.
  Status Prune(size_t keep, const std::vector<std::string>& protect);

 private:
  std::string root_;
};

}  // namespace lockstep::agent
