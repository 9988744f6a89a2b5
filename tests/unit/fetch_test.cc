#include "agents/artifact/fetch.h"

#include <gtest/gtest.h>
#include <stdlib.h>

#include <cctype>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "common/sha256.h"
#include "tests/support/http_server.h"

namespace lockstep::agent {
namespace {

namespace fs = std::filesystem;
using std::chrono::milliseconds;

std::string ReadFile(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

std::string ToUpper(std::string s) {
  for (char& c : s) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return s;
}

class FetchTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { CurlGlobalInit(); }

  void SetUp() override {
    char tmpl[] = "/tmp/lockstep-fetch-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    dest_ = (dir_ / "artifact.tar.gz").string();
    // Fast retries: the tests check how often the server is asked, not how long it waits.
    options_.backoff = milliseconds(1);
    options_.timeout = milliseconds(5000);
    options_.connect_timeout = milliseconds(2000);
  }

  void TearDown() override { fs::remove_all(dir_); }

  bool NothingLeftBehind() const { return !fs::exists(dest_) && !fs::exists(dest_ + ".part"); }

  testing::TestHttpServer server_;
  fs::path dir_;
  std::string dest_;
  FetchOptions options_;
};

const std::string kBody = "release 1.2.3 bytes\n";

TEST_F(FetchTest, VerifiedArtifactIsPlacedAtDest) {
  server_.Serve("/a.tgz", kBody);

  Status st = FetchArtifact(server_.Url("/a.tgz"), Sha256Hex(kBody), dest_, options_);

  ASSERT_TRUE(st.ok()) << st.ToString();
  EXPECT_EQ(ReadFile(dest_), kBody);
  EXPECT_FALSE(fs::exists(dest_ + ".part"));
}

TEST_F(FetchTest, UpperCaseExpectedDigestIsAccepted) {
  server_.Serve("/a.tgz", kBody);

  Status st = FetchArtifact(server_.Url("/a.tgz"), ToUpper(Sha256Hex(kBody)), dest_, options_);

  ASSERT_TRUE(st.ok()) << st.ToString();
  EXPECT_EQ(ReadFile(dest_), kBody);
}

TEST_F(FetchTest, MalformedExpectedDigestIsInvalidArgumentWithoutRequest) {
  server_.Serve("/a.tgz", kBody);

  Status st = FetchArtifact(server_.Url("/a.tgz"), "not-a-digest", dest_, options_);

  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument) << st.ToString();
  EXPECT_EQ(server_.Hits("/a.tgz"), 0);
  EXPECT_TRUE(NothingLeftBehind());
}

TEST_F(FetchTest, WrongDigestIsDataLossAndLeavesNoFile) {
  server_.Serve("/a.tgz", kBody);
  const std::string expected = Sha256Hex("other bytes");

  Status st = FetchArtifact(server_.Url("/a.tgz"), expected, dest_, options_);

  EXPECT_EQ(st.code(), StatusCode::kDataLoss) << st.ToString();
  EXPECT_NE(st.message().find("sha256 mismatch"), std::string::npos) << st.message();
  EXPECT_NE(st.message().find(expected), std::string::npos) << st.message();
  EXPECT_NE(st.message().find(Sha256Hex(kBody)), std::string::npos) << st.message();
  EXPECT_TRUE(NothingLeftBehind());
}

TEST_F(FetchTest, SameWrongDigestIsNotFetchedMoreThanTwice) {
  server_.Serve("/a.tgz", kBody);
  options_.attempts = 5;

  Status st = FetchArtifact(server_.Url("/a.tgz"), Sha256Hex("other"), dest_, options_);

  EXPECT_EQ(st.code(), StatusCode::kDataLoss) << st.ToString();
  EXPECT_EQ(server_.Hits("/a.tgz"), 2);
}

TEST_F(FetchTest, ServerErrorIsRetriedUntilAttemptsRunOut) {
  server_.ServeStatus("/a.tgz", 500, "boom");
  options_.attempts = 3;
  std::vector<std::string> notes;

  Status st = FetchArtifact(server_.Url("/a.tgz"), Sha256Hex(kBody), dest_, options_,
                            [&notes](const std::string& n) { notes.push_back(n); });

  EXPECT_EQ(st.code(), StatusCode::kUnavailable) << st.ToString();
  EXPECT_NE(st.message().find("500"), std::string::npos) << st.message();
  EXPECT_EQ(server_.Hits("/a.tgz"), 3);
  EXPECT_EQ(notes.size(), 2u);
  EXPECT_TRUE(NothingLeftBehind());
}

TEST_F(FetchTest, NotFoundIsNotRetried) {
  options_.attempts = 3;

  Status st = FetchArtifact(server_.Url("/missing.tgz"), Sha256Hex(kBody), dest_, options_);

  EXPECT_EQ(st.code(), StatusCode::kNotFound) << st.ToString();
  EXPECT_NE(st.message().find(server_.Url("/missing.tgz")), std::string::npos) << st.message();
  EXPECT_EQ(server_.Hits("/missing.tgz"), 1);
  EXPECT_TRUE(NothingLeftBehind());
}

TEST_F(FetchTest, TruncatedBodyFails) {
  const std::string body(100000, 'x');
  server_.ServeTruncated("/a.tgz", body, 1000);
  options_.attempts = 2;

  Status st = FetchArtifact(server_.Url("/a.tgz"), Sha256Hex(body), dest_, options_);

  EXPECT_EQ(st.code(), StatusCode::kDataLoss) << st.ToString();
  EXPECT_NE(st.message().find("truncated"), std::string::npos) << st.message();
  EXPECT_EQ(server_.Hits("/a.tgz"), 2);
  EXPECT_TRUE(NothingLeftBehind());
}

TEST_F(FetchTest, ArtifactLargerThanMaxBytesIsRefused) {
  const std::string body(10000, 'x');
  server_.Serve("/a.tgz", body);
  options_.max_bytes = 100;

  Status st = FetchArtifact(server_.Url("/a.tgz"), Sha256Hex(body), dest_, options_);

  EXPECT_EQ(st.code(), StatusCode::kFailedPrecondition) << st.ToString();
  EXPECT_NE(st.message().find("larger than"), std::string::npos) << st.message();
  EXPECT_EQ(server_.Hits("/a.tgz"), 1);
  EXPECT_TRUE(NothingLeftBehind());
}

TEST_F(FetchTest, NonHttpSchemeIsRefused) {
  Status st = FetchArtifact("file:///etc/passwd", Sha256Hex(kBody), dest_, options_);

  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument) << st.ToString();
  EXPECT_TRUE(NothingLeftBehind());
}

TEST_F(FetchTest, ResponseSlowerThanTimeoutFails) {
  server_.Serve("/a.tgz", kBody);
  server_.SetDelay("/a.tgz", milliseconds(3000));
  options_.timeout = milliseconds(200);
  options_.attempts = 1;

  const auto start = std::chrono::steady_clock::now();
  Status st = FetchArtifact(server_.Url("/a.tgz"), Sha256Hex(kBody), dest_, options_);
  const auto elapsed = std::chrono::steady_clock::now() - start;

  EXPECT_EQ(st.code(), StatusCode::kUnavailable) << st.ToString();
  EXPECT_NE(st.message().find("timed out"), std::string::npos) << st.message();
  EXPECT_LT(elapsed, milliseconds(2500));
  EXPECT_TRUE(NothingLeftBehind());
}

}  // namespace
}  // namespace lockstep::agent
