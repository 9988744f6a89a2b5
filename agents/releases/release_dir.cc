#include "agents/releases/release_dir.h"

#include <dirent.h>
#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <charconv>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <memory>
#include <random>
#include <string_view>
#include <utility>

#include "agents/artifact/unpack.h"
#include "common/clock.h"
#include "common/sha256.h"

namespace lockstep::agent {
namespace {

namespace fs = std::filesystem;

constexpr char kMarkerName[] = ".lockstep-release";
constexpr char kCurrentPrefix[] = "releases/";
constexpr size_t kMaxMarkerBytes = 4096;
constexpr size_t kMaxVersionLength = 128;

struct Marker {
  std::string sha256;
  UnixMs installed_at_ms = 0;
};

Status ErrnoError(const std::string& what, int err) {
  return Internal(what + ": " + std::strerror(err));
}

Status FsError(const std::string& what, const fs::filesystem_error& e) {
  return Internal(what + ": " + e.code().message() + " [" + e.path1().string() + "]");
}

std::string Lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return s;
}

std::string RandomSuffix() {
  static constexpr char kHex[] = "0123456789abcdef";
  // Seeded once per thread: opening a random_device for every switch costs more than the
  // switch's own system calls.
  thread_local std::mt19937 rng(std::random_device{}());
  std::string s;
  for (int i = 0; i < 4; ++i) {
    uint32_t v = rng();
    for (int j = 0; j < 4; ++j, v >>= 4) s.push_back(kHex[v & 0xf]);
  }
  return s;
}

class Fd {
 public:
  explicit Fd(int fd) : fd_(fd) {}
  ~Fd() {
    if (fd_ >= 0) ::close(fd_);
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int get() const { return fd_; }

 private:
  int fd_;
};

Status FsyncPath(const std::string& path) {
  Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (fd.get() < 0) return ErrnoError("open " + path, errno);
  if (::fsync(fd.get()) != 0) return ErrnoError("fsync " + path, errno);
  return Status::Ok();
}

// The marker of a release directory, or nullopt if the directory is not a complete release we
// installed. Neither the directory nor the marker may be a symlink: the artifact controls what
// is inside the directory and could otherwise point the marker at a file of its choosing.
std::optional<Marker> ReadMarker(const std::string& release_path) {
  struct stat st;
  if (::lstat(release_path.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) return std::nullopt;
  const std::string path = release_path + "/" + kMarkerName;
  Fd fd(::open(path.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC));
  if (fd.get() < 0 || ::fstat(fd.get(), &st) != 0 || !S_ISREG(st.st_mode)) return std::nullopt;
  std::string text(kMaxMarkerBytes, '\0');
  ssize_t n = ::read(fd.get(), text.data(), text.size());
  if (n <= 0) return std::nullopt;
  text.resize(static_cast<size_t>(n));

  Marker marker;
  std::string_view rest = text;
  while (!rest.empty()) {
    size_t eol = rest.find('\n');
    std::string_view line = rest.substr(0, eol);
    rest = eol == std::string_view::npos ? std::string_view() : rest.substr(eol + 1);
    size_t eq = line.find('=');
    if (eq == std::string_view::npos) continue;
    std::string_view key = line.substr(0, eq);
    std::string_view value = line.substr(eq + 1);
    if (key == "sha256") {
      marker.sha256 = std::string(value);
    } else if (key == "installed_at_ms") {
      std::from_chars(value.data(), value.data() + value.size(), marker.installed_at_ms);
    }
  }
  if (!IsSha256Hex(marker.sha256)) return std::nullopt;
  return marker;
}

// Written last, so its presence means the unpack finished. Any entry of that name that the
// artifact itself brought is removed first so that the write cannot follow a link.
Status WriteMarker(const std::string& dir, const Marker& marker) {
  const std::string path = dir + "/" + kMarkerName;
  std::error_code ec;
  fs::remove_all(path, ec);
  if (ec) return Internal("removing " + path + ": " + ec.message());
  const std::string text = "sha256=" + marker.sha256 +
                           "\ninstalled_at_ms=" + std::to_string(marker.installed_at_ms) + "\n";
  Fd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644));
  if (fd.get() < 0) return ErrnoError("create " + path, errno);
  if (::write(fd.get(), text.data(), text.size()) != static_cast<ssize_t>(text.size())) {
    return ErrnoError("write " + path, errno);
  }
  if (::fsync(fd.get()) != 0) return ErrnoError("fsync " + path, errno);
  return FsyncPath(dir);
}

// Makes the unpacked tree durable before the marker vouches for it. One syncfs() rather than
// an fsync() per file: an artifact may hold thousands of files, some not even readable.
Status SyncFilesystem(const std::string& dir) {
  Fd fd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (fd.get() < 0) return ErrnoError("open " + dir, errno);
  if (::syncfs(fd.get()) != 0) return ErrnoError("syncfs " + dir, errno);
  return Status::Ok();
}

bool Exists(const std::string& path) {
  struct stat st;
  return ::lstat(path.c_str(), &st) == 0;
}

struct DirCloser {
  void operator()(DIR* dir) const { ::closedir(dir); }
};

// Empties the directory open at `dir_fd` (shown as `path` in errors) without following any
// symbolic link: entries are removed by name relative to their parent's descriptor and
// subdirectories are opened with O_NOFOLLOW, so neither a link inside nor one swapped in
// while this runs can lead it outside.
Status ClearDirectoryAt(int dir_fd, const std::string& path) {
  // fdopendir takes the descriptor it is given; the caller keeps its own for the *at calls.
  const int list_fd = ::fcntl(dir_fd, F_DUPFD_CLOEXEC, 0);
  if (list_fd < 0) return ErrnoError("dup " + path, errno);
  std::unique_ptr<DIR, DirCloser> dir(::fdopendir(list_fd));
  if (!dir) {
    const int err = errno;
    ::close(list_fd);
    return ErrnoError("opendir " + path, err);
  }
  std::vector<std::string> names;
  errno = 0;
  while (const struct dirent* e = ::readdir(dir.get())) {
    const std::string_view name = e->d_name;
    if (name != "." && name != "..") names.emplace_back(name);
  }
  if (errno != 0) return ErrnoError("readdir " + path, errno);

  for (const std::string& name : names) {
    const std::string shown = path + "/" + name;
    if (::unlinkat(dir_fd, name.c_str(), 0) == 0) continue;  // files and links alike
    if (errno != EISDIR && errno != EPERM) return ErrnoError("unlink " + shown, errno);
    Fd sub(::openat(dir_fd, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
    if (sub.get() < 0) return ErrnoError("open " + shown, errno);
    LOCKSTEP_RETURN_IF_ERROR(ClearDirectoryAt(sub.get(), shown));
    if (::unlinkat(dir_fd, name.c_str(), AT_REMOVEDIR) != 0) {
      return ErrnoError("rmdir " + shown, errno);
    }
  }
  return Status::Ok();
}

// What to do when a name the agent keeps a directory under is something else.
enum class IfNotADirectory {
  kReplace,  // scratch space: remove the link or file itself and make the directory
  kRefuse,   // may hold what the operator wants kept: stop and say so
};

// Makes ROOT/<name> a real directory, looked at without following a link, and returns it
// open (O_NOFOLLOW) for use relative to its descriptor.
StatusOr<int> OwnDirectoryAt(int root_fd, const std::string& root, const char* name, mode_t mode,
                             IfNotADirectory if_not) {
  const std::string path = root + "/" + name;
  struct stat st;
  if (::fstatat(root_fd, name, &st, AT_SYMLINK_NOFOLLOW) == 0) {
    if (!S_ISDIR(st.st_mode)) {
      const char* what = S_ISLNK(st.st_mode) ? "a symbolic link" : "not a directory";
      if (if_not == IfNotADirectory::kRefuse) {
        return FailedPrecondition(path + " is " + what +
                                  "; the agent does not follow links for its own files: make "
                                  "it a directory (a bind mount can put it on another disk)");
      }
      if (::unlinkat(root_fd, name, 0) != 0) return ErrnoError("unlink " + path, errno);
      spdlog::warn("{} was {}; removed it and made a directory (a link's target is untouched)",
                   path, what);
    }
  } else if (errno != ENOENT) {
    return ErrnoError("stat " + path, errno);
  }
  if (::mkdirat(root_fd, name, mode) != 0 && errno != EEXIST) {
    return ErrnoError("mkdir " + path, errno);
  }
  // O_NOFOLLOW: a link swapped in since the check above is refused here, not followed.
  const int fd = ::openat(root_fd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ELOOP || errno == ENOTDIR) {
      return FailedPrecondition(path + " is not a directory (it changed during start-up)");
    }
    return ErrnoError("open " + path, errno);
  }
  return fd;
}

}  // namespace

ReleaseDir::ReleaseDir(std::string root) : root_(std::move(root)) {}

std::string ReleaseDir::ReleasePath(const std::string& version) const {
  return root_ + "/releases/" + version;
}

std::string ReleaseDir::TmpPath(const std::string& name) const { return root_ + "/tmp/" + name; }

bool ReleaseDir::IsValidVersion(const std::string& version) {
  if (version.empty() || version.size() > kMaxVersionLength || version.front() == '.') {
    return false;
  }
  return std::all_of(version.begin(), version.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
           c == '_' || c == '-' || c == '+';
  });
}

Status ReleaseDir::Init() {
  try {
    fs::create_directories(root_);  // ROOT itself may be a link: the operator chose it
  } catch (const fs::filesystem_error& e) {
    return FsError("initialising release directory " + root_, e);
  }
  Fd root(::open(root_.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (root.get() < 0) return ErrnoError("open " + root_, errno);
  LOCKSTEP_ASSIGN_OR_RETURN(
      auto releases, OwnDirectoryAt(root.get(), root_, "releases", 0755, IfNotADirectory::kRefuse));
  Fd releases_fd(releases);
  // 0700: downloads and partial unpacks are nobody else's business.
  LOCKSTEP_ASSIGN_OR_RETURN(
      auto tmp, OwnDirectoryAt(root.get(), root_, "tmp", 0700, IfNotADirectory::kReplace));
  Fd tmp_fd(tmp);
  return ClearDirectoryAt(tmp_fd.get(), root_ + "/tmp");
}

std::optional<std::string> ReleaseDir::Current() const {
  std::error_code ec;
  const std::string target = fs::read_symlink(root_ + "/current", ec).string();
  if (ec) return std::nullopt;
  std::string_view prefix = kCurrentPrefix;
  if (target.compare(0, prefix.size(), prefix) != 0) return std::nullopt;
  std::string version = target.substr(prefix.size());
  if (!HasRelease(version)) return std::nullopt;
  return version;
}

std::vector<std::string> ReleaseDir::Versions() const {
  std::vector<std::string> versions;
  std::error_code ec;
  for (fs::directory_iterator it(root_ + "/releases", ec), end; !ec && it != end;
       it.increment(ec)) {
    std::string name = it->path().filename().string();
    if (IsValidVersion(name) && ReadMarker(ReleasePath(name))) versions.push_back(name);
  }
  std::sort(versions.begin(), versions.end());
  return versions;
}

bool ReleaseDir::HasRelease(const std::string& version, const std::string& sha256) const {
  if (!IsValidVersion(version)) return false;
  std::optional<Marker> marker = ReadMarker(ReleasePath(version));
  return marker && (sha256.empty() || Lower(sha256) == Lower(marker->sha256));
}

Status ReleaseDir::Install(const std::string& version, const std::string& sha256,
                           const std::string& archive_path) {
  if (!IsValidVersion(version))
    return InvalidArgument("invalid release version \"" + version + "\"");
  if (!IsSha256Hex(sha256)) {
    return InvalidArgument("release " + version + ": invalid sha256 \"" + sha256 + "\"");
  }
  const std::string digest = Lower(sha256);
  // Re-sending an install after a reconnect must not churn a release that is already there.
  if (HasRelease(version, digest)) return Status::Ok();

  // Installation order is what Prune goes by, so it must not tie or run backwards when the
  // wall clock is coarse or stepped: each install is stamped after every existing one.
  Marker marker{digest, SystemClock::Get()->Now()};
  for (const std::string& v : Versions()) {
    if (std::optional<Marker> m = ReadMarker(ReleasePath(v))) {
      marker.installed_at_ms = std::max(marker.installed_at_ms, m->installed_at_ms + 1);
    }
  }

  std::string staging = TmpPath("unpack-" + version + "-XXXXXX");
  if (::mkdtemp(staging.data()) == nullptr) return ErrnoError("mkdtemp " + staging, errno);
  const std::string final_path = ReleasePath(version);
  Status st = [&]() -> Status {
    LOCKSTEP_RETURN_IF_ERROR(UnpackTarGz(archive_path, staging));
    // mkdtemp made it 0700; services running as other users need to read their release.
    if (::chmod(staging.c_str(), 0755) != 0) return ErrnoError("chmod " + staging, errno);
    LOCKSTEP_RETURN_IF_ERROR(SyncFilesystem(staging));
    LOCKSTEP_RETURN_IF_ERROR(WriteMarker(staging, marker));
    if (!Exists(final_path)) {
      if (::rename(staging.c_str(), final_path.c_str()) != 0) {
        return ErrnoError("rename " + staging + " to " + final_path, errno);
      }
      return Status::Ok();
    }
    // An exchange keeps releases/<version> present at every instant, so `current` never
    // dangles if we are killed here; the old tree ends up in tmp/ and is deleted below.
    if (::renameat2(AT_FDCWD, staging.c_str(), AT_FDCWD, final_path.c_str(), RENAME_EXCHANGE) ==
        0) {
      return Status::Ok();
    }
    if (errno != EINVAL) return ErrnoError("exchange " + staging + " with " + final_path, errno);
    // The filesystem cannot exchange: move the old tree aside, accepting a short gap.
    const std::string aside = TmpPath("replaced-" + version + "-" + RandomSuffix());
    if (::rename(final_path.c_str(), aside.c_str()) != 0) {
      return ErrnoError("rename " + final_path + " to " + aside, errno);
    }
    if (::rename(staging.c_str(), final_path.c_str()) != 0) {
      return ErrnoError("rename " + staging + " to " + final_path, errno);
    }
    std::error_code ec;
    fs::remove_all(aside, ec);
    return Status::Ok();
  }();
  // After success `staging` holds the replaced tree, if any; after failure, the partial one.
  std::error_code ec;
  fs::remove_all(staging, ec);
  if (!st.ok()) return st.WithContext("installing release " + version);
  if (ec) return Internal("removing " + staging + ": " + ec.message());
  return FsyncPath(root_ + "/releases");
}

Status ReleaseDir::SwitchCurrent(const std::string& version) {
  if (!IsValidVersion(version))
    return InvalidArgument("invalid release version \"" + version + "\"");
  if (!HasRelease(version)) {
    return FailedPrecondition("cannot switch current to release " + version +
                              ": it is not installed");
  }
  // The target is relative so that the whole root can be moved or bind-mounted elsewhere.
  const std::string target = kCurrentPrefix + version;
  std::string link;
  for (int attempt = 0;; ++attempt) {
    link = TmpPath("current-" + RandomSuffix());
    if (::symlink(target.c_str(), link.c_str()) == 0) break;
    if (errno != EEXIST || attempt >= 10) return ErrnoError("symlink " + link, errno);
  }
  const std::string current = root_ + "/current";
  if (::rename(link.c_str(), current.c_str()) != 0) {
    int err = errno;
    ::unlink(link.c_str());
    return ErrnoError("rename " + link + " to " + current, err);
  }
  return FsyncPath(root_);
}

Status ReleaseDir::Prune(size_t keep, const std::vector<std::string>& protect) {
  const std::optional<std::string> current = Current();
  std::vector<std::pair<UnixMs, std::string>> newest_first;
  for (const std::string& v : Versions()) {
    if (std::optional<Marker> m = ReadMarker(ReleasePath(v))) {
      newest_first.emplace_back(m->installed_at_ms, v);
    }
  }
  std::sort(newest_first.begin(), newest_first.end(),
            [](const auto& a, const auto& b) { return a > b; });

  bool removed = false;
  for (size_t i = keep; i < newest_first.size(); ++i) {
    const std::string& version = newest_first[i].second;
    if (version == current || std::find(protect.begin(), protect.end(), version) != protect.end()) {
      continue;
    }
    // Renamed out of releases/ first, so an interrupted delete never leaves a half-removed
    // tree that still carries its marker; Init() finishes the job after a crash.
    const std::string aside = TmpPath("pruned-" + version + "-" + RandomSuffix());
    if (::rename(ReleasePath(version).c_str(), aside.c_str()) != 0) {
      return ErrnoError("pruning release " + version, errno);
    }
    removed = true;
    std::error_code ec;
    fs::remove_all(aside, ec);
    if (ec) return Internal("pruning release " + version + ": " + ec.message());
  }
  return removed ? FsyncPath(root_ + "/releases") : Status::Ok();
}

}  // namespace lockstep::agent
