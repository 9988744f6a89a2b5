// Fuzzes the dashboard's static-file resolution (orchestrator/server/static_files.h) with any
// request path. Properties: it never throws, and whatever it returns is a regular file inside
// the web directory. The directory holds a file, a subdirectory, a hidden file and links
// pointing out of it, so escapes have something to find.

#include <sys/stat.h>
#include <unistd.h>

#include <climits>
#include <cstdlib>
#include <fstream>
#include <string>

#include "orchestrator/server/static_files.h"
#include "tests/fuzz/fuzz_check.h"

namespace {

std::string MakeWebDir() {
  char tmpl[] = "/tmp/lockstep-fuzz-web-XXXXXX";
  char* dir = ::mkdtemp(tmpl);
  if (!dir) std::abort();
  std::string d(dir);
  ::mkdir((d + "/web").c_str(), 0755);
  ::mkdir((d + "/web/sub").c_str(), 0755);
  std::ofstream(d + "/web/index.html") << "index";
  std::ofstream(d + "/web/sub/app.js") << "js";
  std::ofstream(d + "/web/.hidden") << "hidden";
  std::ofstream(d + "/secret") << "secret";
  (void)::symlink((d + "/secret").c_str(), (d + "/web/out").c_str());
  (void)::symlink("..", (d + "/web/up").c_str());
  char real[PATH_MAX];
  if (!::realpath((d + "/web").c_str(), real)) std::abort();
  return real;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::string web = MakeWebDir();
  std::string path(reinterpret_cast<const char*>(data), size);
  auto file = lockstep::ResolveStaticPath(web, path);
  if (file) {
    LOCKSTEP_FUZZ_CHECK(file->rfind(web + "/", 0) == 0, "escaped: %s -> %s", path.c_str(),
                        file->c_str());
    struct stat st;
    LOCKSTEP_FUZZ_CHECK(::stat(file->c_str(), &st) == 0 && S_ISREG(st.st_mode),
                        "not a regular file: %s", file->c_str());
    LOCKSTEP_FUZZ_CHECK(file->find("/.") == std::string::npos, "hidden file served: %s",
                        file->c_str());
  }
  (void)lockstep::StaticContentType(path);
  return 0;
}
