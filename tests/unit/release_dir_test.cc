#include "agents/releases/release_dir.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <stdlib.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "common/sha256.h"
#include "tests/support/tarball.h"

namespace lockstep::agent {
namespace {

namespace fs = std::filesystem;
using ::lockstep::testing::Script;
using ::lockstep::testing::TarEntry;
using ::testing::ElementsAre;
using ::testing::IsEmpty;
using ::testing::UnorderedElementsAre;

std::string ReadFile(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

std::vector<std::string> Names(const fs::path& dir) {
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(dir)) names.push_back(e.path().filename());
  return names;
}

struct Artifact {
  std::string path;
  std::string sha256;
};

class ReleaseDirTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/lockstep-release-dir-test-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr) << std::strerror(errno);
    base_ = tmpl;
    root_ = base_ / "root";
    fs::create_directory(base_ / "artifacts");
  }

  void TearDown() override {
    std::error_code ec;
    fs::remove_all(base_, ec);
  }

  // An artifact whose bin/run prints `tag`, so tests can tell releases apart on disk.
  Artifact MakeArtifact(const std::string& tag, std::vector<TarEntry> extra = {}) {
    std::vector<TarEntry> entries = {Script("bin/run", "echo " + tag + "\n")};
    entries.insert(entries.end(), extra.begin(), extra.end());
    Artifact a;
    a.path = (base_ / "artifacts" / (tag + "-" + std::to_string(next_id_++) + ".tar.gz")).string();
    Status st = lockstep::testing::WriteTarGz(a.path, entries);
    EXPECT_TRUE(st.ok()) << st.ToString();
    StatusOr<std::string> sha = Sha256File(a.path);
    EXPECT_TRUE(sha.ok()) << sha.status().ToString();
    if (sha.ok()) a.sha256 = *sha;
    return a;
  }

  // Installs `version` from a fresh artifact tagged with the version itself.
  Artifact InstallVersion(ReleaseDir& dir, const std::string& version) {
    Artifact a = MakeArtifact(version);
    Status st = dir.Install(version, a.sha256, a.path);
    EXPECT_TRUE(st.ok()) << st.ToString();
    return a;
  }

  std::string RunScriptOf(const fs::path& release) { return ReadFile(release / "bin/run"); }

  fs::path base_;
  fs::path root_;
  int next_id_ = 0;
};

TEST_F(ReleaseDirTest, InstallThenSwitchCurrentPointsCurrentAtTheRelease) {
  ReleaseDir dir(root_.string());
  ASSERT_TRUE(dir.Init().ok());
  EXPECT_EQ(dir.Current(), std::nullopt);

  Artifact a = InstallVersion(dir, "1.0.0");
  EXPECT_TRUE(dir.HasRelease("1.0.0", a.sha256));
  ASSERT_TRUE(dir.SwitchCurrent("1.0.0").ok());

  EXPECT_EQ(dir.Current(), "1.0.0");
  EXPECT_EQ(fs::read_symlink(root_ / "current"), "releases/1.0.0");
  EXPECT_EQ(RunScriptOf(root_ / "current"), "#!/bin/sh\necho 1.0.0\n");
  EXPECT_THAT(Names(root_ / "tmp"), IsEmpty());
}

TEST_F(ReleaseDirTest, SwitchCurrentReplacesThePreviousLink) {
  ReleaseDir dir(root_.string());
  ASSERT_TRUE(dir.Init().ok());
  InstallVersion(dir, "1.0.0");
  InstallVersion(dir, "1.1.0");
  ASSERT_TRUE(dir.SwitchCurrent("1.0.0").ok());
  ASSERT_TRUE(dir.SwitchCurrent("1.1.0").ok());
  EXPECT_EQ(dir.Current(), "1.1.0");
  EXPECT_EQ(RunScriptOf(root_ / "current"), "#!/bin/sh\necho 1.1.0\n");
  EXPECT_THAT(Names(root_ / "tmp"), IsEmpty());
}

TEST_F(ReleaseDirTest, CurrentSurvivesRestart) {
  {
    ReleaseDir dir(root_.string());
    ASSERT_TRUE(dir.Init().ok());
    InstallVersion(dir, "2.0.0");
    ASSERT_TRUE(dir.SwitchCurrent("2.0.0").ok());
  }
  ReleaseDir restarted(root_.string());
  ASSERT_TRUE(restarted.Init().ok());
  EXPECT_EQ(restarted.Current(), "2.0.0");
  EXPECT_THAT(restarted.Versions(), ElementsAre("2.0.0"));
}

TEST_F(ReleaseDirTest, InitRemovesLeftoversInTmp) {
  ReleaseDir dir(root_.string());
  ASSERT_TRUE(dir.Init().ok());
  InstallVersion(dir, "1.0.0");
  // What a kill -9 mid-install or mid-switch leaves behind.
  fs::create_directories(root_ / "tmp/unpack-1.1.0-abcdef/bin");
  std::ofstream(root_ / "tmp/unpack-1.1.0-abcdef/bin/run") << "partial";
  fs::create_symlink("releases/1.0.0", root_ / "tmp/current-0123");
  std::ofstream(root_ / "tmp/download.part") << "partial";

  ReleaseDir restarted(root_.string());
  ASSERT_TRUE(restarted.Init().ok());
  EXPECT_THAT(Names(root_ / "tmp"), IsEmpty());
  EXPECT_TRUE(restarted.HasRelease("1.0.0"));
}

TEST_F(ReleaseDirTest, ATmpSymlinkInTheRootIsNotFollowed) {
  // Someone (or an old layout) pointed ROOT/tmp at a directory that matters.
  fs::create_directories(base_ / "precious");
  std::ofstream(base_ / "precious/keep") << "not the agent's";
  fs::create_directories(root_);
  fs::create_directory_symlink(base_ / "precious", root_ / "tmp");

  ReleaseDir dir(root_.string());
  Status st = dir.Init();

  ASSERT_TRUE(st.ok()) << st.ToString();
  EXPECT_EQ(ReadFile(base_ / "precious/keep"), "not the agent's");
  EXPECT_TRUE(fs::is_directory(fs::symlink_status(root_ / "tmp")));
  EXPECT_THAT(Names(root_ / "tmp"), IsEmpty());
  // And the agent works in its own tmp/ from then on.
  InstallVersion(dir, "1.0.0");
  EXPECT_TRUE(dir.HasRelease("1.0.0"));
  EXPECT_THAT(Names(base_ / "precious"), ElementsAre("keep"));
}

TEST_F(ReleaseDirTest, AReleasesSymlinkInTheRootIsRefused) {
  fs::create_directories(base_ / "elsewhere");
  std::ofstream(base_ / "elsewhere/keep") << "kept";
  fs::create_directories(root_);
  fs::create_directory_symlink(base_ / "elsewhere", root_ / "releases");

  ReleaseDir dir(root_.string());
  Status st = dir.Init();

  EXPECT_EQ(st.code(), StatusCode::kFailedPrecondition) << st.ToString();
  EXPECT_THAT(st.message(), ::testing::HasSubstr((root_ / "releases").string()));
  EXPECT_THAT(st.message(), ::testing::HasSubstr("symbolic link"));
  EXPECT_EQ(ReadFile(base_ / "elsewhere/keep"), "kept");
  EXPECT_TRUE(fs::is_symlink(root_ / "releases"));
}

TEST_F(ReleaseDirTest, LinksLeftInTmpAreRemovedNotFollowed) {
  ReleaseDir dir(root_.string());
  ASSERT_TRUE(dir.Init().ok());
  fs::create_directories(base_ / "outside/sub");
  std::ofstream(base_ / "outside/sub/keep") << "kept";
  // A partial unpack whose tree holds links out of the root, and a link directly in tmp/.
  fs::create_directories(root_ / "tmp/unpack-1.0.0-abcdef/deep");
  fs::create_directory_symlink(base_ / "outside", root_ / "tmp/unpack-1.0.0-abcdef/deep/out");
  fs::create_directory_symlink(base_ / "outside/sub", root_ / "tmp/out");
  fs::create_symlink(base_ / "outside/sub/keep", root_ / "tmp/file-link");

  ReleaseDir restarted(root_.string());
  Status st = restarted.Init();

  ASSERT_TRUE(st.ok()) << st.ToString();
  EXPECT_THAT(Names(root_ / "tmp"), IsEmpty());
  EXPECT_EQ(ReadFile(base_ / "outside/sub/keep"), "kept");
}

TEST_F(ReleaseDirTest, InstallReplacesAnIncompleteReleaseDirectory) {
  ReleaseDir dir(root_.string());
  ASSERT_TRUE(dir.Init().ok());
  fs::create_directories(root_ / "releases/1.0.0/bin");
  std::ofstream(root_ / "releases/1.0.0/stale") << "from an older layout";
  EXPECT_FALSE(dir.HasRelease("1.0.0"));
  EXPECT_THAT(dir.Versions(), IsEmpty());

  Artifact a = InstallVersion(dir, "1.0.0");
  EXPECT_TRUE(dir.HasRelease("1.0.0", a.sha256));
  EXPECT_FALSE(fs::exists(root_ / "releases/1.0.0/stale"));
  EXPECT_EQ(RunScriptOf(root_ / "releases/1.0.0"), "#!/bin/sh\necho 1.0.0\n");
  EXPECT_THAT(Names(root_ / "tmp"), IsEmpty());
}

TEST_F(ReleaseDirTest, InstallReplacesAReleaseWithADifferentDigest) {
  ReleaseDir dir(root_.string());
  ASSERT_TRUE(dir.Init().ok());
  Artifact first = MakeArtifact("first");
  Artifact second = MakeArtifact("second");
  ASSERT_TRUE(dir.Install("1.0.0", first.sha256, first.path).ok());
  ASSERT_TRUE(dir.SwitchCurrent("1.0.0").ok());

  ASSERT_TRUE(dir.Install("1.0.0", second.sha256, second.path).ok());
  EXPECT_TRUE(dir.HasRelease("1.0.0", second.sha256));
  EXPECT_FALSE(dir.HasRelease("1.0.0", first.sha256));
  EXPECT_EQ(RunScriptOf(root_ / "current"), "#!/bin/sh\necho second\n");
  EXPECT_THAT(Names(root_ / "tmp"), IsEmpty());
}

TEST_F(ReleaseDirTest, InstallOfAnInstalledDigestLeavesTheReleaseAlone) {
  ReleaseDir dir(root_.string());
  ASSERT_TRUE(dir.Init().ok());
  Artifact a = InstallVersion(dir, "1.0.0");
  std::ofstream(root_ / "releases/1.0.0/written-by-the-service") << "state";

  ASSERT_TRUE(dir.Install("1.0.0", a.sha256, a.path).ok());
  EXPECT_TRUE(fs::exists(root_ / "releases/1.0.0/written-by-the-service"));
}

TEST_F(ReleaseDirTest, HasReleaseIsFalseForAWrongDigest) {
  ReleaseDir dir(root_.string());
  ASSERT_TRUE(dir.Init().ok());
  Artifact a = InstallVersion(dir, "1.0.0");
  EXPECT_TRUE(dir.HasRelease("1.0.0"));
  EXPECT_FALSE(dir.HasRelease("1.0.0", Sha256Hex("something else")));
  EXPECT_FALSE(dir.HasRelease("1.0.1", a.sha256));
}

TEST_F(ReleaseDirTest, ArtifactCannotForgeTheMarker) {
  ReleaseDir dir(root_.string());
  ASSERT_TRUE(dir.Init().ok());
  TarEntry forged;
  forged.path = ".lockstep-release";
  forged.contents = "sha256=" + Sha256Hex("forged") + "\n";
  Artifact a = MakeArtifact("1.0.0", {forged});
  ASSERT_TRUE(dir.Install("1.0.0", a.sha256, a.path).ok());
  EXPECT_TRUE(dir.HasRelease("1.0.0", a.sha256));
  EXPECT_FALSE(dir.HasRelease("1.0.0", Sha256Hex("forged")));
}

TEST_F(ReleaseDirTest, FailedInstallLeavesNoReleaseAndNoLeftovers) {
  ReleaseDir dir(root_.string());
  ASSERT_TRUE(dir.Init().ok());
  TarEntry evil;
  evil.path = "../../escape";
  Artifact a = MakeArtifact("1.0.0", {evil});

  Status st = dir.Install("1.0.0", a.sha256, a.path);
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument) << st.ToString();
  EXPECT_FALSE(dir.HasRelease("1.0.0"));
  EXPECT_FALSE(fs::exists(root_ / "releases/1.0.0"));
  EXPECT_THAT(Names(root_ / "tmp"), IsEmpty());
}

TEST_F(ReleaseDirTest, VersionsListsCompleteReleasesSortedByName) {
  ReleaseDir dir(root_.string());
  ASSERT_TRUE(dir.Init().ok());
  InstallVersion(dir, "b");
  InstallVersion(dir, "a");
  InstallVersion(dir, "c");
  fs::create_directories(root_ / "releases/incomplete");
  EXPECT_THAT(dir.Versions(), ElementsAre("a", "b", "c"));
}

TEST_F(ReleaseDirTest, PruneKeepsFiveNewestAndNeverCurrentOrProtected) {
  ReleaseDir dir(root_.string());
  ASSERT_TRUE(dir.Init().ok());
  for (int i = 1; i <= 9; ++i) InstallVersion(dir, "v" + std::to_string(i));
  ASSERT_TRUE(dir.SwitchCurrent("v1").ok());

  ASSERT_TRUE(dir.Prune(5, {"v2"}).ok());
  EXPECT_THAT(dir.Versions(), UnorderedElementsAre("v1", "v2", "v5", "v6", "v7", "v8", "v9"));
  EXPECT_EQ(dir.Current(), "v1");
  EXPECT_THAT(Names(root_ / "tmp"), IsEmpty());
}

TEST_F(ReleaseDirTest, PruneGoesByInstallationTimeNotByName) {
  ReleaseDir dir(root_.string());
  ASSERT_TRUE(dir.Init().ok());
  InstallVersion(dir, "1.10.0");
  InstallVersion(dir, "1.9.0");
  InstallVersion(dir, "1.0.0");  // a rollback rebuild: oldest name, newest install

  ASSERT_TRUE(dir.Prune(2, {}).ok());
  EXPECT_THAT(dir.Versions(), ElementsAre("1.0.0", "1.9.0"));
}

TEST_F(ReleaseDirTest, PruneSurvivesRestart) {
  {
    ReleaseDir dir(root_.string());
    ASSERT_TRUE(dir.Init().ok());
    InstallVersion(dir, "b");
    InstallVersion(dir, "a");
  }
  ReleaseDir restarted(root_.string());
  ASSERT_TRUE(restarted.Init().ok());
  ASSERT_TRUE(restarted.Prune(1, {}).ok());
  EXPECT_THAT(restarted.Versions(), ElementsAre("a"));
}

TEST_F(ReleaseDirTest, SwitchCurrentToMissingVersionFailsAndLeavesCurrentUnchanged) {
  ReleaseDir dir(root_.string());
  ASSERT_TRUE(dir.Init().ok());
  InstallVersion(dir, "1.0.0");
  ASSERT_TRUE(dir.SwitchCurrent("1.0.0").ok());

  Status st = dir.SwitchCurrent("9.9.9");
  EXPECT_EQ(st.code(), StatusCode::kFailedPrecondition) << st.ToString();
  EXPECT_EQ(dir.Current(), "1.0.0");
  EXPECT_EQ(fs::read_symlink(root_ / "current"), "releases/1.0.0");
  EXPECT_THAT(Names(root_ / "tmp"), IsEmpty());
}

TEST_F(ReleaseDirTest, CurrentIgnoresALinkItDidNotMake) {
  ReleaseDir dir(root_.string());
  ASSERT_TRUE(dir.Init().ok());
  fs::create_directory_symlink("/etc", root_ / "current");
  EXPECT_EQ(dir.Current(), std::nullopt);
  fs::remove(root_ / "current");
  fs::create_directory_symlink("releases/gone", root_ / "current");
  EXPECT_EQ(dir.Current(), std::nullopt);
}

TEST_F(ReleaseDirTest, InvalidVersionNamesAreRejected) {
  const std::vector<std::string> bad_names = {
      "", ".", "..", ".hidden", "a/b", "../x", "a b", "v1\n", "caf\xc3\xa9", std::string(129, 'v')};
  for (const std::string& bad : bad_names) {
    EXPECT_FALSE(ReleaseDir::IsValidVersion(bad)) << '"' << bad << '"';
  }
  for (const std::string& good :
       std::vector<std::string>{"1.2.3", "1.2.3-rc.1+build_5", "v", std::string(128, 'v')}) {
    EXPECT_TRUE(ReleaseDir::IsValidVersion(good)) << '"' << good << '"';
  }

  ReleaseDir dir(root_.string());
  ASSERT_TRUE(dir.Init().ok());
  Artifact a = MakeArtifact("x");
  EXPECT_EQ(dir.Install("../x", a.sha256, a.path).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(dir.SwitchCurrent("../x").code(), StatusCode::kInvalidArgument);
  EXPECT_FALSE(fs::exists(base_ / "x"));
}

}  // namespace
}  // namespace lockstep::agent
