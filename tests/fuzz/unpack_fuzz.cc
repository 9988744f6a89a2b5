// Fuzzes the artifact unpacker (UnpackTarGz) with arbitrary bytes as a release artifact.
//
// Every input is written to <sandbox>/artifact and unpacked into a fresh <sandbox>/dest, which
// is removed afterwards. Properties beyond "no crash, no leak, no undefined behaviour, no
// hang", checked whether the artifact was accepted or refused (a refusal may leave a partial
// tree, and that must be harmless too):
//   - the outcome is OK or kInvalidArgument (kInternal would blame the machine for the bytes);
//   - nothing appears in the sandbox beside dest, and the working directory is unchanged;
//   - dest holds only directories, regular files and symbolic links; no set-user-ID or
//     set-group-ID bit; no regular file shares its inode with a file outside dest; the files
//     add up to no more than the byte limit;
//   - after success, every symbolic link resolves inside dest. A refused artifact may leave a
//     link that a later entry made escaping ("b -> a/.." then "a -> ."): refusing it is what
//     the final check of the tree is for, and the agent deletes the partial tree without
//     following links (ReleaseDir::Install), as unpack.h asks of callers.

#include <limits.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <string>
#include <system_error>
#include <utility>

#include "agents/artifact/unpack.h"
#include "tests/fuzz/fuzz_check.h"

namespace lockstep::agent {
namespace {

namespace fs = std::filesystem;

// Small limits, so that a bomb is refused quickly and cannot fill the disk.
constexpr int64_t kMaxBytes = int64_t{1} << 20;
constexpr int64_t kMaxEntries = 512;

struct Sandbox {
  fs::path base;
  fs::path archive;
  fs::path dest;
  fs::path cwd;
};

Sandbox* sandbox = nullptr;

void RemoveSandbox() {
  if (sandbox == nullptr) return;
  std::error_code ec;
  fs::remove_all(sandbox->base, ec);
}

// True if `path` (canonical) is `root` or below it.
bool IsWithin(const fs::path& path, const fs::path& root) {
  auto [r, p] = std::mismatch(root.begin(), root.end(), path.begin(), path.end());
  return r == root.end();
}

void CheckTree(const fs::path& dest, bool accepted) {
  const fs::path root = fs::canonical(dest);
  std::map<std::pair<dev_t, ino_t>, nlink_t> links_seen;  // inode -> links found in dest
  std::map<std::pair<dev_t, ino_t>, nlink_t> links_total;
  int64_t bytes = 0;
  std::error_code ec;
  for (fs::recursive_directory_iterator it(dest, ec), end; !ec && it != end; it.increment(ec)) {
    const fs::path& path = it->path();
    struct stat st;
    LOCKSTEP_FUZZ_CHECK(::lstat(path.c_str(), &st) == 0, "lstat %s", path.c_str());
    LOCKSTEP_FUZZ_CHECK(S_ISDIR(st.st_mode) || S_ISREG(st.st_mode) || S_ISLNK(st.st_mode),
                        "%s has file type %o", path.c_str(), st.st_mode & S_IFMT);
    LOCKSTEP_FUZZ_CHECK((st.st_mode & (S_ISUID | S_ISGID)) == 0, "%s has mode %o", path.c_str(),
                        st.st_mode & 07777);
    if (S_ISLNK(st.st_mode) && accepted) {
      std::error_code link_ec;
      fs::path resolved = fs::weakly_canonical(path, link_ec);
      if (!link_ec) {
        LOCKSTEP_FUZZ_CHECK(IsWithin(resolved, root), "%s -> %s resolves to %s outside %s",
                            path.c_str(), fs::read_symlink(path).c_str(), resolved.c_str(),
                            root.c_str());
      } else {
        // Only a loop makes resolution fail here, and a loop stays inside.
        LOCKSTEP_FUZZ_CHECK(link_ec == std::errc::too_many_symbolic_link_levels, "resolving %s: %s",
                            path.c_str(), link_ec.message().c_str());
      }
    } else if (S_ISREG(st.st_mode)) {
      // A hard link takes no more room than its first name.
      std::pair<dev_t, ino_t> inode{st.st_dev, st.st_ino};
      if (links_seen[inode]++ == 0) {
        links_total[inode] = st.st_nlink;
        bytes += st.st_size;
      }
    }
  }
  LOCKSTEP_FUZZ_CHECK(!ec, "listing %s: %s", dest.c_str(), ec.message().c_str());
  for (const auto& [inode, total] : links_total) {
    LOCKSTEP_FUZZ_CHECK(links_seen[inode] == total,
                        "a file in dest has %ju links, %ju of them inside dest",
                        static_cast<uintmax_t>(total), static_cast<uintmax_t>(links_seen[inode]));
  }
  LOCKSTEP_FUZZ_CHECK(bytes <= kMaxBytes, "dest holds %jd bytes, limit %jd",
                      static_cast<intmax_t>(bytes), static_cast<intmax_t>(kMaxBytes));
}

void CheckSandbox() {
  std::set<std::string> names;
  for (const auto& entry : fs::directory_iterator(sandbox->base)) {
    names.insert(entry.path().filename().string());
  }
  LOCKSTEP_FUZZ_CHECK((names == std::set<std::string>{"artifact", "dest"}),
                      "%zu names beside dest in %s", names.size(), sandbox->base.c_str());
  std::error_code ec;
  LOCKSTEP_FUZZ_CHECK(fs::current_path(ec) == sandbox->cwd && !ec, "the working directory changed");
}

}  // namespace
}  // namespace lockstep::agent

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  using namespace lockstep::agent;
  std::string tmpl = (fs::temp_directory_path() / "lockstep-fuzz-unpack-XXXXXX").string();
  if (::mkdtemp(tmpl.data()) == nullptr) {
    std::perror("mkdtemp");
    std::abort();
  }
  sandbox =
      new Sandbox{tmpl, fs::path(tmpl) / "artifact", fs::path(tmpl) / "dest", fs::current_path()};
  std::atexit(RemoveSandbox);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace lockstep;
  using namespace lockstep::agent;
  {
    std::ofstream out(sandbox->archive, std::ios::binary | std::ios::trunc);
    out.write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(size));
    LOCKSTEP_FUZZ_CHECK(out.good(), "cannot write %s", sandbox->archive.c_str());
  }
  LOCKSTEP_FUZZ_CHECK(fs::create_directory(sandbox->dest), "%s was left behind",
                      sandbox->dest.c_str());

  UnpackLimits limits;
  limits.max_total_bytes = kMaxBytes;
  limits.max_entries = kMaxEntries;
  Status st = UnpackTarGz(sandbox->archive.string(), sandbox->dest.string(), limits);
  LOCKSTEP_FUZZ_CHECK(st.ok() || st.code() == StatusCode::kInvalidArgument, "%s",
                      st.ToString().c_str());

  CheckSandbox();
  CheckTree(sandbox->dest, st.ok());

  std::error_code ec;
  fs::remove_all(sandbox->dest, ec);
  LOCKSTEP_FUZZ_CHECK(!ec, "removing %s: %s", sandbox->dest.c_str(), ec.message().c_str());
  return 0;
}
