#include "agents/artifact/unpack.h"

#include <archive.h>
#include <archive_entry.h>
#include <limits.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace lockstep::agent {
namespace {

// Linux's MAXSYMLINKS: a chain longer than this fails with ELOOP at run time anyway.
constexpr int kMaxSymlinkHops = 40;
constexpr size_t kReadBlockSize = 64 * 1024;

struct ReadArchiveFree {
  void operator()(struct archive* a) const { archive_read_free(a); }
};
struct WriteArchiveFree {
  void operator()(struct archive* a) const { archive_write_free(a); }
};
using ReadArchive = std::unique_ptr<struct archive, ReadArchiveFree>;
using WriteArchive = std::unique_ptr<struct archive, WriteArchiveFree>;

std::string ArchiveError(struct archive* a) {
  const char* message = archive_error_string(a);
  return message != nullptr ? message : "unknown libarchive error";
}

std::string Quoted(std::string_view s) { return "\"" + std::string(s) + "\""; }

Status EntryError(std::string_view name, const std::string& reason) {
  return InvalidArgument("artifact entry " + Quoted(name) + ": " + reason);
}

// Components of a relative path with "" and "." dropped; ".." is kept for the caller to judge.
std::vector<std::string> SplitPath(std::string_view path) {
  std::vector<std::string> components;
  size_t start = 0;
  while (start <= path.size()) {
    size_t end = path.find('/', start);
    if (end == std::string_view::npos) end = path.size();
    std::string_view component = path.substr(start, end - start);
    if (!component.empty() && component != ".") components.emplace_back(component);
    start = end + 1;
  }
  return components;
}

std::string JoinPath(const std::vector<std::string>& components, size_t count) {
  std::string path;
  for (size_t i = 0; i < count; ++i) {
    if (i > 0) path += '/';
    path += components[i];
  }
  return path;
}

std::string JoinPath(const std::vector<std::string>& components) {
  return JoinPath(components, components.size());
}

bool HasDotDot(const std::vector<std::string>& components) {
  for (const std::string& c : components) {
    if (c == "..") return true;
  }
  return false;
}

// The tree the archive has produced so far, keyed by normalized relative path. The destination
// starts empty, so this is exactly what is on disk, and symbolic links can be resolved against
// it without asking the filesystem (which a concurrent writer could change under us).
class TreeModel {
 public:
  enum class Kind { kDir, kFile, kSymlink };
  enum class Resolution { kInside, kEscapes, kTooManyLinks };

  struct Node {
    Kind kind;
    std::string symlink_target;
  };

  const Node* Find(const std::string& path) const {
    auto it = nodes_.find(path);
    return it == nodes_.end() ? nullptr : &it->second;
  }

  void Add(const std::vector<std::string>& components, Kind kind, std::string symlink_target) {
    for (size_t i = 1; i < components.size(); ++i) {
      nodes_.try_emplace(JoinPath(components, i), Node{Kind::kDir, ""});
    }
    std::string path = JoinPath(components);
    nodes_.insert_or_assign(path, Node{kind, std::move(symlink_target)});
    if (kind == Kind::kSymlink) symlinks_.push_back(path);
  }

  // Resolves `target` as the kernel would from the directory `link_dir`, following the links
  // recorded so far. Lexical resolution alone is not enough: with "a" -> "." already present,
  // "b" -> "a/.." looks harmless but lands in the destination's parent.
  Resolution Resolve(std::vector<std::string> link_dir, std::string_view target) const {
    int hops_left = kMaxSymlinkHops;
    return Walk(link_dir, target, hops_left);
  }

  const std::vector<std::string>& symlinks() const { return symlinks_; }

 private:
  Resolution Walk(std::vector<std::string>& at, std::string_view target, int& hops_left) const {
    for (const std::string& component : SplitPath(target)) {
      if (component == "..") {
        if (at.empty()) return Resolution::kEscapes;
        at.pop_back();
        continue;
      }
      at.push_back(component);
      const Node* node = Find(JoinPath(at));
      if (node == nullptr || node->kind != Kind::kSymlink) continue;
      if (--hops_left < 0) return Resolution::kTooManyLinks;
      at.pop_back();
      Resolution r = Walk(at, node->symlink_target, hops_left);
      if (r != Resolution::kInside) return r;
    }
    return Resolution::kInside;
  }

  std::unordered_map<std::string, Node> nodes_;
  std::vector<std::string> symlinks_;
};

// Prefers the locale's form (what the disk writer uses). In the C locale libarchive 3.6 warns
// that a UTF-8 pax name cannot be converted but still hands back its bytes; the UTF-8 form is a
// fallback in case a version returns null instead.
std::string EntryString(const char* mbs, const char* utf8) {
  if (mbs != nullptr) return mbs;
  if (utf8 != nullptr) return utf8;
  return "";
}

class Unpacker {
 public:
  Unpacker(const std::string& archive_path, std::string dest, const UnpackLimits& limits)
      : archive_path_(archive_path), dest_(std::move(dest)), limits_(limits) {}

  Status Run() {
    ReadArchive in(archive_read_new());
    WriteArchive out(archive_write_disk_new());
    if (!in || !out) return Internal("unpack: libarchive could not allocate a handle");
    // gzip only: "all" filters would let a hostile artifact make libarchive spawn external
    // decompressors. Uncompressed tar is always recognised.
    archive_read_support_filter_gzip(in.get());
    archive_read_support_format_tar(in.get());
    // No ARCHIVE_EXTRACT_SECURE_NOABSOLUTEPATHS: every pathname is rewritten to an absolute
    // path under dest_ below, which is how we avoid chdir(). No ARCHIVE_EXTRACT_OWNER: files
    // belong to the agent, whatever uid the build machine had.
    archive_write_disk_set_options(out.get(), ARCHIVE_EXTRACT_TIME | ARCHIVE_EXTRACT_PERM |
                                                  ARCHIVE_EXTRACT_SECURE_NODOTDOT |
                                                  ARCHIVE_EXTRACT_SECURE_SYMLINKS);
    in_ = in.get();
    out_ = out.get();

    if (archive_read_open_filename(in_, archive_path_.c_str(), kReadBlockSize) != ARCHIVE_OK) {
      return Malformed(ArchiveError(in_));
    }
    for (;;) {
      struct archive_entry* entry = nullptr;
      int r = archive_read_next_header(in_, &entry);
      if (r == ARCHIVE_EOF) break;
      if (r != ARCHIVE_OK && r != ARCHIVE_WARN) return Malformed(ArchiveError(in_));
      if (++entries_ > limits_.max_entries) {
        return InvalidArgument("artifact " + archive_path_ + ": more than " +
                               std::to_string(limits_.max_entries) + " entries");
      }
      LOCKSTEP_RETURN_IF_ERROR(Extract(entry));
    }
    // A link can be harmless when written and escape once a later entry adds a link on its
    // path ("b" -> "a/.." then "a" -> "."), so the finished tree is checked again.
    for (const std::string& link : tree_.symlinks()) {
      const TreeModel::Node* node = tree_.Find(link);
      std::vector<std::string> dir = SplitPath(link);
      dir.pop_back();
      LOCKSTEP_RETURN_IF_ERROR(CheckSymlinkTarget(link, dir, node->symlink_target));
    }
    // Close applies the deferred directory modes and times; free alone would hide its errors.
    if (archive_write_close(out_) < ARCHIVE_WARN) {
      return Internal("unpacking into " + dest_ + ": " + ArchiveError(out_));
    }
    return Status::Ok();
  }

 private:
  Status Malformed(const std::string& why) const {
    return InvalidArgument("artifact " + archive_path_ + ": malformed archive: " + why);
  }

  // Full path of a validated relative path, refusing lengths that would make libarchive
  // "shorten" the path by chdir()ing into intermediate directories, which would change the
  // working directory of every thread in the agent.
  Status FullPath(std::string_view name, const std::vector<std::string>& components,
                  std::string* full) const {
    for (const std::string& c : components) {
      if (c.size() > NAME_MAX) return EntryError(name, "path component too long");
    }
    *full = dest_ + "/" + JoinPath(components);
    if (full->size() >= PATH_MAX) return EntryError(name, "path too long");
    return Status::Ok();
  }

  Status CheckSymlinkTarget(std::string_view name, const std::vector<std::string>& link_dir,
                            const std::string& target) const {
    if (target.empty()) return EntryError(name, "symbolic link with an empty target");
    if (target.front() == '/') {
      return EntryError(name, "symbolic link to absolute path " + Quoted(target));
    }
    switch (tree_.Resolve(link_dir, target)) {
      case TreeModel::Resolution::kInside:
        return Status::Ok();
      case TreeModel::Resolution::kEscapes:
        return EntryError(
            name, "symbolic link target " + Quoted(target) + " escapes the release directory");
      case TreeModel::Resolution::kTooManyLinks:
        break;
    }
    return EntryError(name, "too many levels of symbolic links in " + Quoted(target));
  }

  // Decides everything about an entry from the archive and the model alone, then writes it.
  Status Extract(struct archive_entry* entry) {
    const std::string name =
        EntryString(archive_entry_pathname(entry), archive_entry_pathname_utf8(entry));
    if (name.empty()) return EntryError(name, "empty path");
    if (name.front() == '/') {
      return EntryError(name, "absolute path escapes the release directory");
    }
    const std::vector<std::string> components = SplitPath(name);
    if (HasDotDot(components)) return EntryError(name, "path escapes the release directory");

    const char* hardlink_raw = archive_entry_hardlink(entry);
    const char* hardlink_utf8 = archive_entry_hardlink_utf8(entry);
    const bool is_hardlink = hardlink_raw != nullptr || hardlink_utf8 != nullptr;
    const mode_t type = archive_entry_filetype(entry);
    TreeModel::Kind kind = TreeModel::Kind::kFile;
    if (!is_hardlink) {
      switch (type) {
        case AE_IFREG:
          break;
        case AE_IFDIR:
          kind = TreeModel::Kind::kDir;
          break;
        case AE_IFLNK:
          kind = TreeModel::Kind::kSymlink;
          break;
        case AE_IFCHR:
          return EntryError(name, "character devices are not allowed");
        case AE_IFBLK:
          return EntryError(name, "block devices are not allowed");
        case AE_IFIFO:
          return EntryError(name, "FIFOs are not allowed");
        case AE_IFSOCK:
          return EntryError(name, "sockets are not allowed");
        default:
          return EntryError(name, "unsupported entry type");
      }
    }

    if (components.empty()) {
      // "./" names the destination itself; its mode is the caller's business, not the
      // artifact's.
      if (kind == TreeModel::Kind::kDir && !is_hardlink) return Status::Ok();
      return EntryError(name, "empty path");
    }
    std::string full;
    LOCKSTEP_RETURN_IF_ERROR(FullPath(name, components, &full));
    for (size_t i = 1; i < components.size(); ++i) {
      const std::string prefix = JoinPath(components, i);
      const TreeModel::Node* node = tree_.Find(prefix);
      if (node != nullptr && node->kind != TreeModel::Kind::kDir) {
        return EntryError(name, "path passes through non-directory entry " + Quoted(prefix));
      }
    }
    // Replacing an earlier entry would make the model differ from the disk (and is how a
    // directory checked as harmless could later become a link), so only a directory may
    // be restated.
    if (const TreeModel::Node* existing = tree_.Find(JoinPath(components))) {
      if (existing->kind != TreeModel::Kind::kDir || kind != TreeModel::Kind::kDir) {
        return EntryError(name, "replaces an earlier entry with the same path");
      }
    }

    std::string symlink_target;
    if (kind == TreeModel::Kind::kSymlink) {
      const char* raw = archive_entry_symlink(entry);
      symlink_target = EntryString(raw, archive_entry_symlink_utf8(entry));
      std::vector<std::string> link_dir = components;
      link_dir.pop_back();
      LOCKSTEP_RETURN_IF_ERROR(CheckSymlinkTarget(name, link_dir, symlink_target));
      if (raw == nullptr) archive_entry_copy_symlink(entry, symlink_target.c_str());
    }
    if (is_hardlink) {
      const std::string target = EntryString(hardlink_raw, hardlink_utf8);
      if (target.empty()) return EntryError(name, "hard link with an empty target");
      if (target.front() == '/') {
        return EntryError(name, "hard link to absolute path " + Quoted(target) +
                                    " is outside the release directory");
      }
      const std::vector<std::string> target_components = SplitPath(target);
      if (HasDotDot(target_components)) {
        return EntryError(name,
                          "hard link target " + Quoted(target) + " escapes the release directory");
      }
      // Only an earlier regular file: a hard link to a symbolic link would copy the link
      // into another directory, where its relative target means something else.
      const TreeModel::Node* node = tree_.Find(JoinPath(target_components));
      if (target_components.empty() || node == nullptr || node->kind != TreeModel::Kind::kFile) {
        return EntryError(name, "hard link target " + Quoted(target) +
                                    " is not a regular file earlier in the archive");
      }
      std::string full_target;
      LOCKSTEP_RETURN_IF_ERROR(FullPath(name, target_components, &full_target));
      archive_entry_copy_hardlink(entry, full_target.c_str());
    }

    // Header sizes are checked early to fail fast; the bytes actually written are counted
    // again below because a header can understate them.
    if (archive_entry_size_is_set(entry) &&
        archive_entry_size(entry) > limits_.max_total_bytes - total_bytes_) {
      return TooBig(name);
    }

    tree_.Add(components, kind, symlink_target);
    archive_entry_copy_pathname(entry, full.c_str());
    // Only the agent may change a release: whoever else can read it (a service running as
    // another user, the hook user) must not be able to rewrite what the digest vouched for.
    // Masked here rather than left to the umask, which ARCHIVE_EXTRACT_PERM ignores and which
    // belongs to whoever started the agent.
    mode_t perm =
        archive_entry_perm(entry) & ~static_cast<mode_t>(S_ISUID | S_ISGID | S_IWGRP | S_IWOTH);
    // The agent must always be able to list and prune its own release directories.
    if (kind == TreeModel::Kind::kDir) perm |= S_IRWXU;
    archive_entry_set_perm(entry, perm);

    if (archive_write_header(out_, entry) < ARCHIVE_WARN) {
      return Internal("writing artifact entry " + Quoted(name) + ": " + ArchiveError(out_));
    }
    // The disk writer zeroes the size of entries it will not take data for (links, dirs).
    if (archive_entry_size(entry) > 0) LOCKSTEP_RETURN_IF_ERROR(CopyData(name));
    if (archive_write_finish_entry(out_) < ARCHIVE_WARN) {
      return Internal("writing artifact entry " + Quoted(name) + ": " + ArchiveError(out_));
    }
    return Status::Ok();
  }

  Status TooBig(std::string_view name) const {
    return EntryError(name, "archive expands past the limit of " +
                                std::to_string(limits_.max_total_bytes) + " bytes");
  }

  Status CopyData(std::string_view name) {
    // Counted as the furthest offset reached, so holes in a sparse entry count as well: the
    // file's apparent size is what a later copy of the release would pay for.
    int64_t extent = 0;
    for (;;) {
      const void* buffer = nullptr;
      size_t size = 0;
      la_int64_t offset = 0;
      int r = archive_read_data_block(in_, &buffer, &size, &offset);
      if (r == ARCHIVE_EOF) break;
      if (r != ARCHIVE_OK) {
        return EntryError(name, "corrupt archive data: " + ArchiveError(in_));
      }
      if (offset < 0 || size > static_cast<size_t>(INT64_MAX - offset)) {
        return EntryError(name, "corrupt archive data: bad block offset");
      }
      extent = std::max<int64_t>(extent, offset + static_cast<int64_t>(size));
      if (extent > limits_.max_total_bytes - total_bytes_) return TooBig(name);
      if (archive_write_data_block(out_, buffer, size, offset) != ARCHIVE_OK) {
        return Internal("writing artifact entry " + Quoted(name) + ": " + ArchiveError(out_));
      }
    }
    total_bytes_ += extent;
    return Status::Ok();
  }

  const std::string archive_path_;
  const std::string dest_;
  const UnpackLimits limits_;
  struct archive* in_ = nullptr;   // owned by Run()
  struct archive* out_ = nullptr;  // owned by Run()
  TreeModel tree_;
  int64_t entries_ = 0;
  int64_t total_bytes_ = 0;
};

}  // namespace

Status UnpackTarGz(const std::string& archive_path, const std::string& dest_dir,
                   const UnpackLimits& limits) {
  // libarchive's open errors do not tell a missing file from a malformed one; check first so
  // that local trouble is reported as kInternal, not blamed on the artifact.
  if (::access(archive_path.c_str(), R_OK) != 0) {
    return Internal("cannot read artifact " + archive_path + ": " + std::strerror(errno));
  }
  // Canonical, because ARCHIVE_EXTRACT_SECURE_SYMLINKS checks every component of the absolute
  // paths we hand it and would refuse a destination reached through, say, a symlinked /tmp.
  std::error_code ec;
  std::filesystem::path dest = std::filesystem::canonical(dest_dir, ec);
  if (ec) return Internal("unpack destination " + dest_dir + ": " + ec.message());
  if (!std::filesystem::is_directory(dest, ec)) {
    return Internal("unpack destination " + dest_dir + " is not a directory");
  }
  Unpacker unpacker(archive_path, dest.string(), limits);
  return unpacker.Run();
}

}  // namespace lockstep::agent
