#include "agents/agent_state.h"

#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/stat.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>

namespace lockstep::agent {
namespace {

namespace fs = std::filesystem;

std::string ReadFile(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

lockstep::v1::TaskResult Result(const std::string& task_id) {
  lockstep::v1::TaskResult r;
  r.set_task_id(task_id);
  r.set_ok(true);
  return r;
}

// <base>/root is the agent's root; <base>/outside holds files the agent must never touch.
class TaskJournalTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/lockstep-journal-test-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr) << std::strerror(errno);
    base_ = tmpl;
    root_ = base_ / "root";
    fs::create_directories(root_);
    fs::create_directories(base_ / "outside");
    journal_path_ = root_ / "agent-tasks.json";
  }

  void TearDown() override {
    std::error_code ec;
    fs::remove_all(base_, ec);
  }

  fs::path base_;
  fs::path root_;
  fs::path journal_path_;
};

TEST_F(TaskJournalTest, RecordedResultsSurviveARestart) {
  {
    TaskJournal journal(journal_path_.string());
    journal.Load();
    ASSERT_TRUE(journal.Record(Result("t1")).ok());
  }
  TaskJournal restarted(journal_path_.string());
  restarted.Load();

  ASSERT_TRUE(restarted.Find("t1").has_value());
  EXPECT_TRUE(restarted.Find("t1")->ok());
  struct stat st;
  ASSERT_EQ(::stat(journal_path_.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
}

TEST_F(TaskJournalTest, AJournalSymlinkInTheRootIsNotFollowed) {
  // A journal elsewhere that names a task: read through the link, it would answer "t-old".
  const fs::path target = base_ / "outside/journal.json";
  const std::string target_text =
      R"({"results":[{"task_id":"t-old","ok":true,"error":"","failed_step":""}]})";
  std::ofstream(target) << target_text;
  fs::create_symlink(target, journal_path_);
  // And a link where the temporary file goes: written through, it would clobber its target.
  const fs::path precious = base_ / "outside/precious";
  std::ofstream(precious) << "precious";
  fs::create_symlink(precious, root_ / "agent-tasks.json.tmp");

  TaskJournal journal(journal_path_.string());
  journal.Load();
  EXPECT_FALSE(journal.Find("t-old").has_value());
  Status st = journal.Record(Result("t-new"));

  ASSERT_TRUE(st.ok()) << st.ToString();
  EXPECT_EQ(ReadFile(target), target_text);
  EXPECT_EQ(ReadFile(precious), "precious");
  EXPECT_TRUE(fs::is_regular_file(fs::symlink_status(journal_path_)));
  EXPECT_FALSE(fs::exists(fs::symlink_status(root_ / "agent-tasks.json.tmp")));
  TaskJournal restarted(journal_path_.string());
  restarted.Load();
  EXPECT_TRUE(restarted.Find("t-new").has_value());
}

}  // namespace
}  // namespace lockstep::agent
