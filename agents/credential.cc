#include "agents/credential.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace lockstep::agent {

StatusOr<std::string> LoadHostCredential(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT) return std::string();
    return Unavailable("cannot read host credential " + path + ": " + std::strerror(errno));
  }
  char buf[512];
  ssize_t n = ::read(fd, buf, sizeof buf);
  ::close(fd);
  if (n < 0) return Unavailable("cannot read host credential " + path);
  std::string s(buf, static_cast<size_t>(n));
  while (!s.empty() && (s.back() == '\n' || s.back() == '\r')) s.pop_back();
  if (s.empty() || s.size() > 256 || s.find_first_of(" \t\r\n") != std::string::npos) {
    return DataLoss("host credential " + path +
                    " is malformed; remove it and re-enroll (lockstep "
                    "agents remove NAME, then restart the agent)");
  }
  return s;
}

Status SaveHostCredential(const std::string& path, const std::string& credential) {
  const std::string tmp = path + ".tmp";
  ::unlink(tmp.c_str());  // removes a leftover or a planted link itself, never its target
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
  if (fd < 0)
    return Unavailable("cannot write host credential " + tmp + ": " + std::strerror(errno));
  const std::string line = credential + "\n";
  bool ok = ::write(fd, line.data(), line.size()) == static_cast<ssize_t>(line.size());
  ok = ::fsync(fd) == 0 && ok;
  ::close(fd);
  if (!ok || ::rename(tmp.c_str(), path.c_str()) != 0) {
    ::unlink(tmp.c_str());
    return Unavailable("cannot write host credential " + path);
  }
  return Status::Ok();
}

}  // namespace lockstep::agent
