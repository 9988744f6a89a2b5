#include "agents/artifact/unpack.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/stat.h>

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "tests/support/tarball.h"

namespace lockstep::agent {
namespace {

namespace fs = std::filesystem;
using ::lockstep::testing::Script;
using ::lockstep::testing::TarEntry;
using ::testing::HasSubstr;
using Type = TarEntry::Type;

TarEntry File(const std::string& path, const std::string& contents, int mode = 0644) {
  TarEntry e;
  e.path = path;
  e.contents = contents;
  e.mode = mode;
  return e;
}

TarEntry Dir(const std::string& path, int mode = 0755) {
  TarEntry e;
  e.type = Type::kDir;
  e.path = path;
  e.mode = mode;
  return e;
}

TarEntry Link(Type type, const std::string& path, const std::string& target) {
  TarEntry e;
  e.type = type;
  e.path = path;
  e.target = target;
  return e;
}

TarEntry Special(Type type, const std::string& path) {
  TarEntry e;
  e.type = type;
  e.path = path;
  return e;
}

TarEntry Zeros(const std::string& path, int64_t size) {
  TarEntry e;
  e.path = path;
  e.sparse_size = size;
  return e;
}

std::string ReadFile(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

int Mode(const fs::path& path) {
  struct stat st;
  if (::lstat(path.c_str(), &st) != 0) return -1;
  return static_cast<int>(st.st_mode & 07777);
}

// One record of an uncompressed ustar archive, built by hand for what the gzip-only helper
// cannot make: plain tar, and pax headers written as a UTF-8 build machine would.
std::string TarRecord(const std::string& name, char typeflag, const std::string& data) {
  std::string header(512, '\0');
  auto put = [&](size_t offset, const std::string& field) {
    header.replace(offset, field.size(), field);
  };
  char size[12];
  std::snprintf(size, sizeof size, "%011o", static_cast<unsigned>(data.size()));
  put(0, name);
  put(100, "0000644");
  put(108, "0000000");
  put(116, "0000000");
  put(124, size);
  put(136, "14524770400");  // 1'700'000'000
  put(148, "        ");     // the checksum counts its own field as spaces
  header[156] = typeflag;
  put(257, "ustar");
  put(263, "00");
  unsigned sum = 0;
  for (unsigned char c : header) sum += c;
  char checksum[8];
  std::snprintf(checksum, sizeof checksum, "%06o", sum);
  put(148, std::string(checksum, 6) + std::string(1, '\0') + " ");
  std::string padded = data;
  padded.resize((data.size() + 511) / 512 * 512, '\0');
  return header + padded;
}

std::string EndOfTar() { return std::string(1024, '\0'); }

// Layout of every test: <base>/dest is where artifacts unpack; <base>/sentinel sits beside it
// and must stay empty whatever the artifact tries.
class UnpackTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/lockstep-unpack-test-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr) << std::strerror(errno);
    base_ = tmpl;
    dest_ = base_ / "dest";
    sentinel_ = base_ / "sentinel";
    fs::create_directory(dest_);
    fs::create_directory(sentinel_);
  }

  void TearDown() override {
    std::error_code ec;
    fs::remove_all(base_, ec);
  }

  std::string WriteArtifact(const std::vector<TarEntry>& entries) {
    const std::string path = (base_ / "artifact.tar.gz").string();
    Status st = lockstep::testing::WriteTarGz(path, entries);
    EXPECT_TRUE(st.ok()) << st.ToString();
    return path;
  }

  Status Unpack(const std::vector<TarEntry>& entries, const UnpackLimits& limits = {}) {
    return UnpackTarGz(WriteArtifact(entries), dest_.string(), limits);
  }

  // The refusal names the entry, so an operator knows what to fix in the build.
  void ExpectRefused(const Status& st, const std::string& entry, const std::string& reason) {
    EXPECT_EQ(st.code(), StatusCode::kInvalidArgument) << st.ToString();
    EXPECT_THAT(st.message(), HasSubstr("artifact entry \"" + entry + "\""));
    EXPECT_THAT(st.message(), HasSubstr(reason));
    EXPECT_TRUE(fs::is_empty(sentinel_)) << "something was written beside the destination";
  }

  fs::path base_;
  fs::path dest_;
  fs::path sentinel_;
};

TEST_F(UnpackTest, UnpacksFilesDirsModesAndExecutableBits) {
  Status st = Unpack({
      Dir("app", 0755),
      Dir("app/conf", 0750),
      File("app/conf/app.yaml", "port: 8080\n", 0640),
      Script("app/bin/start", "exec true\n"),
      File("README", "read me", 0444),
  });
  ASSERT_TRUE(st.ok()) << st.ToString();

  EXPECT_EQ(ReadFile(dest_ / "app/conf/app.yaml"), "port: 8080\n");
  EXPECT_EQ(ReadFile(dest_ / "app/bin/start"), "#!/bin/sh\nexec true\n");
  EXPECT_EQ(ReadFile(dest_ / "README"), "read me");
  EXPECT_TRUE(fs::is_directory(dest_ / "app/bin"));
  EXPECT_EQ(Mode(dest_ / "app"), 0755);
  EXPECT_EQ(Mode(dest_ / "app/conf"), 0750);
  EXPECT_EQ(Mode(dest_ / "app/conf/app.yaml"), 0640);
  EXPECT_EQ(Mode(dest_ / "app/bin/start"), 0755);
  EXPECT_EQ(Mode(dest_ / "README"), 0444);
}

TEST_F(UnpackTest, RestoresModificationTimes) {
  ASSERT_TRUE(Unpack({File("a.txt", "a")}).ok());
  struct stat st;
  ASSERT_EQ(::stat((dest_ / "a.txt").c_str(), &st), 0);
  EXPECT_EQ(st.st_mtime, 1'700'000'000);  // the time tarball.cc stamps on every entry
}

TEST_F(UnpackTest, StripsSetuidAndSetgidBits) {
  ASSERT_TRUE(Unpack({File("bin/su", "x", 06755), Dir("shared", 02755)}).ok());
  EXPECT_EQ(Mode(dest_ / "bin/su"), 0755);
  EXPECT_EQ(Mode(dest_ / "shared"), 0755);
}

TEST_F(UnpackTest, UnpackedFilesLoseGroupAndOtherWriteBits) {
  // The umask would hide a missing mask; ARCHIVE_EXTRACT_PERM ignores it, but make sure.
  const mode_t old_umask = ::umask(0);
  Status st = Unpack({
      File("wide-open", "x", 0777),
      Dir("shared", 0777),
      File("shared/data", "d", 0666),
      File("shared/group-only", "g", 0770),
  });
  ::umask(old_umask);
  ASSERT_TRUE(st.ok()) << st.ToString();

  EXPECT_EQ(Mode(dest_ / "wide-open"), 0755);
  EXPECT_EQ(Mode(dest_ / "shared"), 0755);
  EXPECT_EQ(Mode(dest_ / "shared/data"), 0644);
  EXPECT_EQ(Mode(dest_ / "shared/group-only"), 0750);
}

TEST_F(UnpackTest, KeepsDirectoriesWritableByTheAgent) {
  ASSERT_TRUE(Unpack({Dir("ro", 0555), File("ro/f", "x")}).ok());
  EXPECT_EQ(Mode(dest_ / "ro"), 0755);
}

TEST_F(UnpackTest, IgnoresTheEntryForTheDestinationItself) {
  fs::permissions(dest_, fs::perms(0750));
  ASSERT_TRUE(Unpack({Dir("./", 0777), File("./a", "a")}).ok());
  EXPECT_EQ(Mode(dest_), 0750);
  EXPECT_EQ(ReadFile(dest_ / "a"), "a");
}

TEST_F(UnpackTest, UnpacksNonAsciiNamesStoredAsBytes) {
  ASSERT_TRUE(Unpack({File("donn\xc3\xa9"
                           "es.txt",
                           "d")})
                  .ok());
  EXPECT_EQ(ReadFile(dest_ / "donn\xc3\xa9"
                             "es.txt"),
            "d");
}

TEST_F(UnpackTest, UnpacksIntoDestinationReachedThroughSymlink) {
  fs::create_directory_symlink(dest_, base_ / "via-link");
  Status st = UnpackTarGz(WriteArtifact({File("a", "a")}), (base_ / "via-link").string());
  ASSERT_TRUE(st.ok()) << st.ToString();
  EXPECT_EQ(ReadFile(dest_ / "a"), "a");
}

TEST_F(UnpackTest, AcceptsPlainUncompressedTar) {
  const fs::path archive = base_ / "plain.tar";
  std::ofstream(archive, std::ios::binary) << TarRecord("plain.txt", '0', "hello") << EndOfTar();
  Status st = UnpackTarGz(archive.string(), dest_.string());
  ASSERT_TRUE(st.ok()) << st.ToString();
  EXPECT_EQ(ReadFile(dest_ / "plain.txt"), "hello");
}

TEST_F(UnpackTest, UnpacksUtf8NamesWhateverTheLocale) {
  // The agent runs in the C locale, where libarchive cannot convert a UTF-8 pax name and
  // returns ARCHIVE_WARN for the header; that must not stop the unpack.
  const std::string name =
      "donn\xc3\xa9"
      "es.txt";
  const std::string record = "path=" + name + "\n";
  const std::string pax = std::to_string(record.size() + 3) + " " + record;
  ASSERT_EQ(pax.size(), record.size() + 3);  // the length counts its own two digits
  const fs::path archive = base_ / "utf8.tar";
  std::ofstream(archive, std::ios::binary)
      << TarRecord("PaxHeaders/x", 'x', pax) << TarRecord("placeholder", '0', "d") << EndOfTar();
  Status st = UnpackTarGz(archive.string(), dest_.string());
  ASSERT_TRUE(st.ok()) << st.ToString();
  EXPECT_EQ(ReadFile(dest_ / name), "d");
}

TEST_F(UnpackTest, RefusesAbsolutePath) {
  const std::string evil = (sentinel_ / "evil").string();
  ExpectRefused(Unpack({File(evil, "pwned")}), evil, "absolute path");
}

TEST_F(UnpackTest, RefusesDotDotComponent) {
  ExpectRefused(Unpack({File("../sentinel/evil", "pwned")}), "../sentinel/evil",
                "path escapes the release directory");
}

TEST_F(UnpackTest, RefusesDotDotComponentInTheMiddleOfAPath) {
  ExpectRefused(Unpack({Dir("a"), File("a/../../sentinel/evil", "pwned")}), "a/../../sentinel/evil",
                "path escapes the release directory");
}

TEST_F(UnpackTest, RefusesSymlinkToAbsolutePath) {
  ExpectRefused(Unpack({Link(Type::kSymlink, "out", sentinel_.string())}), "out",
                "symbolic link to absolute path");
  EXPECT_FALSE(fs::exists(fs::symlink_status(dest_ / "out")));
}

TEST_F(UnpackTest, RefusesSymlinkEscapingDestination) {
  ExpectRefused(Unpack({Dir("lib"), Link(Type::kSymlink, "lib/out", "../../sentinel"),
                        File("lib/out/evil", "pwned")}),
                "lib/out", "escapes the release directory");
  EXPECT_FALSE(fs::exists(fs::symlink_status(dest_ / "lib/out")));
}

TEST_F(UnpackTest, RefusesSymlinkEscapingThroughAnEarlierSymlink) {
  ExpectRefused(Unpack({Link(Type::kSymlink, "here", "."), Link(Type::kSymlink, "up", "here/..")}),
                "up", "escapes the release directory");
}

TEST_F(UnpackTest, RefusesSymlinkThatEscapesOnceALaterSymlinkExists) {
  // "up" -> "here/.." is harmless while "here" does not exist; it escapes once "here" -> ".".
  ExpectRefused(Unpack({Link(Type::kSymlink, "up", "here/.."), Link(Type::kSymlink, "here", ".")}),
                "up", "escapes the release directory");
}

TEST_F(UnpackTest, AcceptsSymlinkInsideDestination) {
  Status st = Unpack({
      File("lib/libfoo.so.1.2", "elf"),
      Link(Type::kSymlink, "lib/libfoo.so", "libfoo.so.1"),  // forward reference: fine
      Link(Type::kSymlink, "lib/libfoo.so.1", "libfoo.so.1.2"),
      Link(Type::kSymlink, "bin/foo", "../lib/libfoo.so"),
  });
  ASSERT_TRUE(st.ok()) << st.ToString();
  EXPECT_EQ(fs::read_symlink(dest_ / "bin/foo"), "../lib/libfoo.so");
  EXPECT_EQ(ReadFile(dest_ / "bin/foo"), "elf");
}

TEST_F(UnpackTest, RefusesEntryInsideSymlinkedDirectory) {
  ExpectRefused(Unpack({Dir("real"), Link(Type::kSymlink, "alias", "real"), File("alias/f", "x")}),
                "alias/f", "passes through non-directory entry \"alias\"");
  EXPECT_FALSE(fs::exists(dest_ / "real/f"));
}

TEST_F(UnpackTest, RefusesEntryThatReplacesAnEarlierEntry) {
  ExpectRefused(Unpack({Dir("a"), Link(Type::kSymlink, "a", ".")}), "a",
                "replaces an earlier entry");
}

TEST_F(UnpackTest, AcceptsHardlinkInsideDestination) {
  ASSERT_TRUE(Unpack({File("a", "shared"), Link(Type::kHardlink, "sub/b", "a")}).ok());
  EXPECT_EQ(ReadFile(dest_ / "sub/b"), "shared");
  EXPECT_EQ(fs::hard_link_count(dest_ / "a"), 2u);
}

TEST_F(UnpackTest, RefusesHardlinkOutside) {
  std::ofstream(base_ / "outside.txt") << "secret";
  ExpectRefused(Unpack({Link(Type::kHardlink, "h", "../outside.txt")}), "h",
                "escapes the release directory");
  EXPECT_FALSE(fs::exists(dest_ / "h"));
  EXPECT_EQ(fs::hard_link_count(base_ / "outside.txt"), 1u);
}

TEST_F(UnpackTest, RefusesHardlinkToAbsolutePath) {
  std::ofstream(base_ / "outside.txt") << "secret";
  ExpectRefused(Unpack({Link(Type::kHardlink, "h", (base_ / "outside.txt").string())}), "h",
                "outside the release directory");
  EXPECT_EQ(fs::hard_link_count(base_ / "outside.txt"), 1u);
}

TEST_F(UnpackTest, RefusesHardlinkToSymlink) {
  // The copy of the link would sit in another directory, where "../x" means something else.
  ExpectRefused(Unpack({Link(Type::kSymlink, "a/s", "../x"), Link(Type::kHardlink, "s", "a/s")}),
                "s", "is not a regular file earlier in the archive");
}

TEST_F(UnpackTest, RefusesCharacterDevice) {
  ExpectRefused(Unpack({Special(Type::kCharDevice, "null")}), "null", "character device");
  EXPECT_FALSE(fs::exists(fs::symlink_status(dest_ / "null")));
}

TEST_F(UnpackTest, RefusesFifo) {
  ExpectRefused(Unpack({Special(Type::kFifo, "pipe")}), "pipe", "FIFO");
  EXPECT_FALSE(fs::exists(fs::symlink_status(dest_ / "pipe")));
}

TEST_F(UnpackTest, RefusesBlockDevice) {
  const fs::path archive = base_ / "disk.tar";
  std::ofstream(archive, std::ios::binary) << TarRecord("disk", '4', "") << EndOfTar();
  ExpectRefused(UnpackTarGz(archive.string(), dest_.string()), "disk", "block devices");
  EXPECT_FALSE(fs::exists(fs::symlink_status(dest_ / "disk")));
}

TEST_F(UnpackTest, RefusesExpansionBeyondLimit) {
  UnpackLimits limits;
  limits.max_total_bytes = 1 << 20;
  ExpectRefused(Unpack({Zeros("bomb", 16 << 20)}, limits), "bomb", "expands past the limit");
}

TEST_F(UnpackTest, RefusesManySmallFilesAddingUpBeyondLimit) {
  UnpackLimits limits;
  limits.max_total_bytes = 1 << 20;
  ExpectRefused(
      Unpack({Zeros("a", 400 << 10), Zeros("b", 400 << 10), Zeros("c", 400 << 10)}, limits), "c",
      "expands past the limit");
}

TEST_F(UnpackTest, RefusesAGzipBombWithoutWritingPastTheLimit) {
  // 32 MiB of zeros that gzip squeezes a thousandfold; every entry is within the limit on its
  // own, so only the running total stops it.
  std::vector<TarEntry> entries;
  for (int i = 0; i < 32; ++i) entries.push_back(Zeros("z" + std::to_string(i), 1 << 20));
  const std::string archive = WriteArtifact(entries);
  ASSERT_LT(fs::file_size(archive), 64u << 10);
  UnpackLimits limits;
  limits.max_total_bytes = 4 << 20;

  ExpectRefused(UnpackTarGz(archive, dest_.string(), limits), "z4", "expands past the limit");
  uintmax_t written = 0;
  for (const auto& entry : fs::recursive_directory_iterator(dest_)) {
    if (entry.is_regular_file()) written += entry.file_size();
  }
  EXPECT_LE(written, static_cast<uintmax_t>(limits.max_total_bytes));
}

TEST_F(UnpackTest, AcceptsArchiveExactlyAtTheLimits) {
  UnpackLimits limits;
  limits.max_total_bytes = 1 << 20;
  limits.max_entries = 2;
  ASSERT_TRUE(Unpack({Zeros("a", 512 << 10), Zeros("b", 512 << 10)}, limits).ok());
  EXPECT_EQ(fs::file_size(dest_ / "b"), 512u << 10);
}

TEST_F(UnpackTest, RefusesTooManyEntries) {
  std::vector<TarEntry> entries;
  for (int i = 0; i < 11; ++i) entries.push_back(File("f" + std::to_string(i), ""));
  UnpackLimits limits;
  limits.max_entries = 10;
  Status st = Unpack(entries, limits);
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument) << st.ToString();
  EXPECT_THAT(st.message(), HasSubstr("more than 10 entries"));
}

TEST_F(UnpackTest, RefusesPathLongerThanPathMax) {
  // libarchive would chdir() to shorten such a path, moving every thread's working directory.
  std::string deep;
  for (int i = 0; i < 20; ++i) deep += std::string(250, 'd') + "/";
  deep += "f";
  Status st = Unpack({File(deep, "x")});
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument) << st.ToString();
  EXPECT_THAT(st.message(), HasSubstr("path too long"));
}

TEST_F(UnpackTest, RefusesCorruptArchive) {
  StatusOr<std::string> bytes =
      lockstep::testing::TarGzBytes({File("data.txt", std::string(100000, 'x'))});
  ASSERT_TRUE(bytes.ok()) << bytes.status().ToString();
  // Damage the first deflate block, just past the 10-byte gzip header. libarchive does not check
  // the gzip CRC, so damage further in that still decodes would go unnoticed; the artifact's
  // sha256, checked before unpacking, is what guards against that.
  std::string corrupt = *bytes;
  for (size_t i = 12; i < 28; ++i) corrupt[i] ^= 0x5a;
  const fs::path archive = base_ / "corrupt.tar.gz";
  std::ofstream(archive, std::ios::binary) << corrupt;

  Status st = UnpackTarGz(archive.string(), dest_.string());
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument) << st.ToString();
  EXPECT_THAT(st.message(), HasSubstr("malformed archive: gzip decompression failed"));
}

TEST_F(UnpackTest, RefusesTarHeaderWithBadChecksum) {
  std::string tar = TarRecord("a.txt", '0', "a");
  tar[0] = 'b';  // the name no longer matches the header checksum
  const fs::path archive = base_ / "damaged.tar";
  std::ofstream(archive, std::ios::binary) << tar << EndOfTar();
  Status st = UnpackTarGz(archive.string(), dest_.string());
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument) << st.ToString();
  EXPECT_THAT(st.message(), HasSubstr("malformed archive"));
}

TEST_F(UnpackTest, RefusesTruncatedArchive) {
  StatusOr<std::string> bytes =
      lockstep::testing::TarGzBytes({File("a", std::string(100000, 'a')), File("b", "b")});
  ASSERT_TRUE(bytes.ok()) << bytes.status().ToString();
  const fs::path archive = base_ / "truncated.tar.gz";
  std::ofstream(archive, std::ios::binary) << bytes->substr(0, bytes->size() / 2);

  Status st = UnpackTarGz(archive.string(), dest_.string());
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument) << st.ToString();
}

TEST_F(UnpackTest, RefusesFileThatIsNotAnArchive) {
  const fs::path archive = base_ / "notes.txt";
  std::ofstream(archive) << "this is not a tarball\n";
  Status st = UnpackTarGz(archive.string(), dest_.string());
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument) << st.ToString();
  EXPECT_THAT(st.message(), HasSubstr("malformed archive"));
}

TEST_F(UnpackTest, MissingArtifactIsALocalError) {
  Status st = UnpackTarGz((base_ / "missing.tar.gz").string(), dest_.string());
  EXPECT_EQ(st.code(), StatusCode::kInternal) << st.ToString();
}

TEST_F(UnpackTest, NothingWrittenOutsideDestination) {
  const std::vector<std::vector<TarEntry>> hostile = {
      {File("ok", "fine"), File("../sentinel/evil", "x")},
      {File((sentinel_ / "evil").string(), "x")},
      {Link(Type::kSymlink, "s", "../sentinel"), File("s/evil", "x")},
      {Link(Type::kSymlink, "s", sentinel_.string()), File("s/evil", "x")},
      {Link(Type::kSymlink, "here", "."), Link(Type::kSymlink, "s", "here/../sentinel"),
       File("s/evil", "x")},
      {Link(Type::kHardlink, "evil", "../sentinel/evil")},
      {Special(Type::kCharDevice, "../sentinel/evil")},
      {Special(Type::kFifo, "../sentinel/evil")},
  };
  for (size_t i = 0; i < hostile.size(); ++i) {
    Status st = Unpack(hostile[i]);
    EXPECT_EQ(st.code(), StatusCode::kInvalidArgument) << "archive " << i << ": " << st.ToString();
    std::vector<fs::path> beside;
    for (const auto& e : fs::directory_iterator(base_)) beside.push_back(e.path().filename());
    EXPECT_THAT(beside, ::testing::UnorderedElementsAre("artifact.tar.gz", "dest", "sentinel"))
        << "archive " << i;
    EXPECT_TRUE(fs::is_empty(sentinel_)) << "archive " << i;
    fs::remove_all(dest_);
    fs::create_directory(dest_);
  }
}

}  // namespace
}  // namespace lockstep::agent
