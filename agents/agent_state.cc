#include "agents/agent_state.h"

#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <nlohmann/json.hpp>

namespace lockstep::agent {

TaskJournal::TaskJournal(std::string path, size_t capacity)
    : path_(std::move(path)), capacity_(capacity) {}

namespace {

// Reads a regular file without following a link at `path`. nullopt with `err` set when it
// cannot: ENOENT when missing, ELOOP when a link, EINVAL when not a regular file.
std::optional<std::string> ReadOwnFile(const std::string& path, int& err) {
  // O_NONBLOCK: a FIFO planted in its place must not hang the agent at start-up.
  const int fd = ::open(path.c_str(), O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) {
    err = errno;
    return std::nullopt;
  }
  std::optional<std::string> data;
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    err = errno;
  } else if (!S_ISREG(st.st_mode)) {
    err = EINVAL;
  } else {
    data.emplace();
    std::array<char, 65536> buf;
    for (;;) {
      const ssize_t n = ::read(fd, buf.data(), buf.size());
      if (n > 0) {
        data->append(buf.data(), static_cast<size_t>(n));
      } else if (n == 0) {
        break;
      } else if (errno != EINTR) {
        err = errno;
        data.reset();
        break;
      }
    }
  }
  ::close(fd);
  return data;
}

}  // namespace

void TaskJournal::Load() {
  results_.clear();
  int err = 0;
  std::optional<std::string> text = ReadOwnFile(path_, err);
  if (!text) {
    if (err != ENOENT) {
      spdlog::warn("task journal {} cannot be read ({}); starting with an empty one", path_,
                   err == ELOOP ? "it is a symbolic link, which the agent does not follow"
                                : std::strerror(err));
    }
    return;
  }
  try {
    auto j = nlohmann::json::parse(*text);
    for (const auto& e : j.at("results")) {
      lockstep::v1::TaskResult r;
      r.set_task_id(e.at("task_id").get<std::string>());
      r.set_ok(e.at("ok").get<bool>());
      r.set_error(e.value("error", ""));
      r.set_failed_step(e.value("failed_step", ""));
      results_.push_back(std::move(r));
    }
  } catch (const nlohmann::json::exception& e) {
    spdlog::warn("task journal {} is unreadable ({}); starting with an empty one", path_, e.what());
    results_.clear();
  }
}

std::optional<lockstep::v1::TaskResult> TaskJournal::Find(const std::string& task_id) const {
  for (auto it = results_.rbegin(); it != results_.rend(); ++it) {
    if (it->task_id() == task_id) return *it;
  }
  return std::nullopt;
}

Status TaskJournal::Record(const lockstep::v1::TaskResult& result) {
  results_.push_back(result);
  while (results_.size() > capacity_) results_.pop_front();
  return Save();
}

Status TaskJournal::Save() const {
  nlohmann::json j;
  j["results"] = nlohmann::json::array();
  for (const auto& r : results_) {
    j["results"].push_back({{"task_id", r.task_id()},
                            {"ok", r.ok()},
                            {"error", r.error()},
                            {"failed_step", r.failed_step()}});
  }
  const std::string tmp = path_ + ".tmp";
  const std::string data = j.dump();
  // Whatever has the temporary name (a leftover, or a link planted there) is removed, not
  // written through; O_EXCL | O_NOFOLLOW then refuses anything that appears in between.
  if (::unlink(tmp.c_str()) != 0 && errno != ENOENT) {
    return Internal("cannot write task journal: unlink " + tmp + ": " + std::strerror(errno));
  }
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
  if (fd < 0) {
    return Internal("cannot write task journal: create " + tmp + ": " + std::strerror(errno));
  }
  int err = 0;
  for (size_t done = 0; done < data.size() && err == 0;) {
    const ssize_t n = ::write(fd, data.data() + done, data.size() - done);
    if (n > 0) {
      done += static_cast<size_t>(n);
    } else if (n == 0) {
      err = EIO;
    } else if (errno != EINTR) {
      err = errno;
    }
  }
  if (err == 0 && ::fsync(fd) != 0) err = errno;
  ::close(fd);
  // rename() replaces a link at path_ itself; it never writes to where the link points.
  if (err == 0 && std::rename(tmp.c_str(), path_.c_str()) != 0) err = errno;
  if (err != 0) {
    ::unlink(tmp.c_str());
    return Internal("cannot write task journal " + path_ + ": " + std::strerror(err));
  }
  return Status::Ok();
}

}  // namespace lockstep::agent
