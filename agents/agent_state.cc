#include "agents/agent_state.h"

#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

namespace lockstep::agent {

TaskJournal::TaskJournal(std::string path, size_t capacity)
    : path_(std::move(path)), capacity_(capacity) {}

void TaskJournal::Load() {
  results_.clear();
  std::ifstream in(path_);
  if (!in) return;
  std::stringstream buf;
  buf << in.rdbuf();
  try {
    auto j = nlohmann::json::parse(buf.str());
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
  std::string tmp = path_ + ".tmp";
  std::string data = j.dump();
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return Internal("cannot write " + tmp);
  bool ok = ::write(fd, data.data(), data.size()) == static_cast<ssize_t>(data.size());
  ok = ::fsync(fd) == 0 && ok;
  ::close(fd);
  if (!ok || std::rename(tmp.c_str(), path_.c_str()) != 0) {
    return Internal("cannot write task journal " + path_);
  }
  return Status::Ok();
}

}  // namespace lockstep::agent
