// Unpacking release artifacts (.tar.gz) with libarchive, refusing anything that could write
// outside the release directory.
//
// Refused, with an error naming the offending entry: absolute paths, any ".." component,
// symbolic links whose target is absolute or resolves outside the destination, hard links to
// paths outside the destination, device files, FIFOs and sockets, and archives that expand
// past `max_total_bytes` or `max_entries` (a decompression bomb). Extraction uses libarchive's
// secure flags as a second line of defence (ARCHIVE_EXTRACT_SECURE_NODOTDOT,
// ARCHIVE_EXTRACT_SECURE_SYMLINKS) and never changes the process's working directory.
//
// Modes: every file and directory keeps its mode from the archive minus the setuid and setgid
// bits and minus group and other write (mode & ~06022), whatever the agent's umask; directories
// are always rwx for the agent. Owners are not restored: everything belongs to the agent.
//
// On failure the destination directory may hold a partial tree; callers unpack into a
// scratch directory and rename it into place only on success.
#pragma once

#include <cstdint>
#include <string>

#include "common/status.h"

namespace lockstep::agent {

struct UnpackLimits {
  int64_t max_total_bytes = int64_t{8} << 30;
  int64_t max_entries = 200000;
};

// REQUIRES: dest_dir exists and is empty. Returns kInvalidArgument for a hostile or
// malformed archive, kInternal for local I/O failures.
Status UnpackTarGz(const std::string& archive_path, const std::string& dest_dir,
                   const UnpackLimits& limits = {});

}  // namespace lockstep::agent
