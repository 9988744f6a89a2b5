// The SQLite store: migrations, atomic batches, round trips.

#include "orchestrator/store/store.h"

#include <gtest/gtest.h>
#include <sqlite3.h>
#include <stdlib.h>

#include <filesystem>

#include "orchestrator/engine/history.h"
#include "orchestrator/store/migrations.h"

namespace lockstep {
namespace {

class TempDir {
 public:
  TempDir() {
    char tmpl[] = "/tmp/lockstep-store-XXXXXX";
    path_ = mkdtemp(tmpl);
  }
  ~TempDir() { std::filesystem::remove_all(path_); }
  std::string File(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

void ExecRaw(const std::string& path, const std::string& sql) {
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(path.c_str(), &db), SQLITE_OK);
  char* err = nullptr;
  int rc = sqlite3_exec(db, sql.c_str(), nullptr, nullptr, &err);
  std::string msg = err ? err : "";
  sqlite3_free(err);
  sqlite3_close(db);
  ASSERT_EQ(rc, SQLITE_OK) << msg;
}

AuditRecord Audit(const std::string& actor) {
  AuditRecord a;
  a.at = 1;
  a.actor = actor;
  a.action = "release.create";
  return a;
}

ReleaseRecord SampleRelease() {
  ReleaseRecord r;
  r.pipeline = "monolith";
  r.version = "v1";
  r.artifact_url = "http://127.0.0.1:1/v1.tar.gz";
  r.sha256 = std::string(64, 'a');
  r.created_at = 1000;
  return r;
}

TEST(SqliteStore, MigratesAVersionOneFileKeepingItsRows) {
  TempDir dir;
  std::string path = dir.File("old.db");
  // A store as the first schema left it, with one release in it.
  ExecRaw(path, std::string(SqliteMigrations().front().sql) +
                    "INSERT INTO releases (pipeline, version, artifact_url, sha256, state, "
                    "created_at) VALUES ('monolith', 'v0', 'http://x/v0.tar.gz', 'ab', "
                    "'succeeded', 5);"
                    "PRAGMA user_version=1;");

  auto store = OpenSqliteStore(path);
  ASSERT_TRUE(store.ok()) << store.status().ToString();
  auto r = (*store)->GetRelease(1);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->version, "v0");
  EXPECT_EQ(r->state, "succeeded");
  EXPECT_EQ(r->author, "");  // column added by migration 2, defaulted

  // The tables added later are usable.
  WriteBatch b;
  WaveRecord wave;
  wave.release_id = 1;
  wave.name = "canary";
  wave.state = "done";
  b.waves.push_back(wave);
  b.audit.push_back({0, 10, "test", "release.note", "release/1", "", "ok"});
  ASSERT_TRUE((*store)->Write(b).ok());
  EXPECT_EQ((*store)->Waves(1)->size(), 1u);
  EXPECT_EQ((*store)->Audit(10)->size(), 1u);
  store->reset();

  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(path.c_str(), &db), SQLITE_OK);
  sqlite3_stmt* stmt = nullptr;
  sqlite3_prepare_v2(db, "PRAGMA user_version", -1, &stmt, nullptr);
  ASSERT_EQ(sqlite3_step(stmt), SQLITE_ROW);
  EXPECT_EQ(sqlite3_column_int(stmt, 0), SqliteSchemaVersion());
  sqlite3_finalize(stmt);
  sqlite3_close(db);
}

TEST(SqliteStore, RefusesAFileFromANewerVersion) {
  TempDir dir;
  std::string path = dir.File("new.db");
  ExecRaw(path, "PRAGMA user_version=999;");
  auto store = OpenSqliteStore(path);
  ASSERT_FALSE(store.ok());
  EXPECT_NE(store.status().message().find("newer than this lockstepd understands"),
            std::string::npos)
      << store.status().message();
}

TEST(SqliteStore, UsesWriteAheadLogging) {
  TempDir dir;
  std::string path = dir.File("wal.db");
  auto store = OpenSqliteStore(path);
  ASSERT_TRUE(store.ok());
  auto created = (*store)->CreateRelease(SampleRelease(), Audit("t"));
  ASSERT_TRUE(created.ok());
  EXPECT_TRUE(std::filesystem::exists(path + "-wal"));
}

TEST(SqliteStore, ABatchThatFailsChangesNothing) {
  auto store = OpenSqliteStore(":memory:");
  ASSERT_TRUE(store.ok());
  auto created = (*store)->CreateRelease(SampleRelease(), Audit("t"));
  ASSERT_TRUE(created.ok());

  ReleaseRecord changed = *created;
  changed.state = "rolling";
  WriteBatch b;
  b.releases.push_back(changed);
  HostRecord orphan;  // refers to a release that does not exist: a foreign-key violation
  orphan.release_id = 999;
  orphan.agent = "a";
  orphan.region = "r";
  b.hosts.push_back(orphan);
  Status st = (*store)->Write(b);
  EXPECT_FALSE(st.ok());
  EXPECT_NE(st.message().find("nothing changed"), std::string::npos) << st.message();
  EXPECT_EQ((*store)->GetRelease(created->id)->state, "queued");
}

TEST(SqliteStore, CreateReleaseAssignsIdsAndAuditsTheCreation) {
  auto store = OpenSqliteStore(":memory:");
  ASSERT_TRUE(store.ok());
  auto a = (*store)->CreateRelease(SampleRelease(), Audit("alice"));
  auto b = (*store)->CreateRelease(SampleRelease(), Audit("bob"));
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_LT(a->id, b->id);
  auto audit = (*store)->Audit(10);
  ASSERT_EQ(audit->size(), 2u);
  EXPECT_EQ((*audit)[0].actor, "bob");
  EXPECT_EQ((*audit)[0].target, "release/" + std::to_string(b->id));
}

TEST(SqliteStore, OpenReleasesAreQueuedOrRollingOldestFirst) {
  auto store = OpenSqliteStore(":memory:");
  ASSERT_TRUE(store.ok());
  auto a = (*store)->CreateRelease(SampleRelease(), {});
  auto b = (*store)->CreateRelease(SampleRelease(), {});
  auto c = (*store)->CreateRelease(SampleRelease(), {});
  ReleaseRecord done = *a;
  done.state = "succeeded";
  WriteBatch batch;
  batch.releases.push_back(done);
  ASSERT_TRUE((*store)->Write(batch).ok());
  auto open = OpenReleases(**store, "monolith");
  ASSERT_EQ(open->size(), 2u);
  EXPECT_EQ((*open)[0].id, b->id);
  EXPECT_EQ((*open)[1].id, c->id);
  EXPECT_EQ((*DesiredRelease(**store, "monolith"))->id, a->id);
}

TEST(SqliteStore, AgentsRoundTripWithTheirVersionsOnDisk) {
  auto store = OpenSqliteStore(":memory:");
  ASSERT_TRUE(store.ok());
  AgentRecord a{"eu-1", "eu-west-1", "monolith", "v2", {"v1", "v2"}, true, 5, 6, "0.1.0 (abc)"};
  WriteBatch b;
  b.agents.push_back(a);
  ASSERT_TRUE((*store)->Write(b).ok());
  auto got = (*store)->GetAgent("eu-1");
  ASSERT_TRUE(got.ok() && got->has_value());
  EXPECT_EQ((*got)->versions_on_disk, (std::vector<std::string>{"v1", "v2"}));
  EXPECT_TRUE((*got)->connected);
  EXPECT_EQ((*got)->agent_version, "0.1.0 (abc)");
  EXPECT_FALSE((*(*store)->GetAgent("nobody")).has_value());
}

}  // namespace
}  // namespace lockstep
