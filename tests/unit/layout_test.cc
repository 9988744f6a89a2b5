// What a release artifact must look like for a host to take it (agents/artifact/layout.h).

#include "agents/artifact/layout.h"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <filesystem>
#include <fstream>

namespace lockstep::agent {
namespace {

namespace fs = std::filesystem;

class LayoutTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("lockstep-layout-" + std::to_string(::getpid()) + "-" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  void File(const std::string& rel, mode_t mode) {
    fs::create_directories((dir_ / rel).parent_path());
    std::ofstream(dir_ / rel) << "#!/bin/sh\nexit 0\n";
    ::chmod((dir_ / rel).c_str(), mode);
  }
  Status Check() { return CheckArtifactLayout(dir_.string(), "v1"); }

  fs::path dir_;
};

TEST_F(LayoutTest, ExecutableHooksUnderATopLevelDeployAreAccepted) {
  File("deploy/start", 0755);
  File("deploy/stop", 0755);
  File("bin/app", 0644);
  EXPECT_TRUE(Check().ok()) << Check().ToString();
}

TEST_F(LayoutTest, ACheckAloneIsEnough) {
  File("deploy/check", 0700);
  EXPECT_TRUE(Check().ok()) << Check().ToString();
}

TEST_F(LayoutTest, AnArchivePackedOneDirectoryTooDeepNamesWhatWasFound) {
  File("app/deploy/start", 0755);
  Status st = Check();
  EXPECT_EQ(st.code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(st.message().find("no deploy/ directory at the top"), std::string::npos)
      << st.message();
  EXPECT_NE(st.message().find("found app/deploy/"), std::string::npos) << st.message();
}

TEST_F(LayoutTest, WithoutAnyDeployTheTopIsListed) {
  File("README", 0644);
  File("bin/app", 0755);
  Status st = Check();
  EXPECT_NE(st.message().find("its top holds README, bin"), std::string::npos) << st.message();
}

TEST_F(LayoutTest, AHookWithoutTheExecuteBitIsRefused) {
  File("deploy/start", 0644);
  Status st = Check();
  EXPECT_EQ(st.code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(st.message().find("deploy/start is not executable (mode 0644)"), std::string::npos)
      << st.message();
}

TEST_F(LayoutTest, AStopHookAloneStartsNothing) {
  File("deploy/stop", 0755);
  Status st = Check();
  EXPECT_NE(st.message().find("neither start nor check"), std::string::npos) << st.message();
}

TEST_F(LayoutTest, AHookThatIsALinkOrADirectoryIsRefused) {
  fs::create_directories(dir_ / "deploy" / "start");
  EXPECT_NE(Check().message().find("deploy/start is not a regular file"), std::string::npos);
  fs::remove_all(dir_ / "deploy" / "start");
  File("bin/run", 0755);
  fs::create_symlink("../bin/run", dir_ / "deploy" / "start");
  EXPECT_NE(Check().message().find("deploy/start is not a regular file"), std::string::npos);
}

}  // namespace
}  // namespace lockstep::agent
