// TaskJournal: the results of tasks this agent finished, kept on disk so that a task id sent
// again (after a reconnect, or after either side restarted) is answered from the journal
// instead of being run twice. Bounded to the most recent `capacity` results.
//
// The file is replaced atomically (write to a fresh temporary file, fsync, rename), so a
// kill -9 leaves either the old or the new journal. It lives in the agent's root, which the
// agent never follows links in: the journal is read with O_NOFOLLOW (a link there is ignored,
// and replaced by the next write), and the temporary file is created with O_CREAT | O_EXCL |
// O_NOFOLLOW after removing whatever had its name, so a planted link can neither be read
// through nor written through. Mode 0600: task errors are the agent's business.
//
// Thread safety: not thread-safe; owned by the executor thread.
#pragma once

#include <deque>
#include <optional>
#include <string>

#include "common/status.h"
#include "proto/lockstep.pb.h"

namespace lockstep::agent {

class TaskJournal {
 public:
  TaskJournal(std::string path, size_t capacity = 200);

  // Loads the journal; a missing file is an empty journal, a corrupt one is discarded with a
  // warning (it only saves work, it is never the truth about what runs).
  void Load();
  std::optional<lockstep::v1::TaskResult> Find(const std::string& task_id) const;
  Status Record(const lockstep::v1::TaskResult& result);

 private:
  Status Save() const;
  std::string path_;
  size_t capacity_;
  std::deque<lockstep::v1::TaskResult> results_;  // oldest first
};

}  // namespace lockstep::agent
