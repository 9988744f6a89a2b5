// The store conformance suite (tests/support/store_conformance.h) against the PostgreSQL store,
// on a real PostgreSQL 15 server (tests/support/postgres_server.h) started once for the whole
// test binary, with a fresh database for every test, dropped when its store is destroyed.
//
// When the server cannot be started (PostgreSQL not installed, initdb failing, ...), every test
// fails with the reason: a backend that was never tested must not look like one that passed.

#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <utility>

#include "common/status.h"
#include "orchestrator/store/store.h"
#include "tests/support/postgres_server.h"
#include "tests/support/store_conformance.h"

namespace lockstep::store_conformance {
namespace {

using ::lockstep::testing::PostgresServer;

// The one server of this binary: started before the first test, stopped (and its directory
// removed) after the last.
class PostgresEnvironment final : public ::testing::Environment {
 public:
  void SetUp() override {
    auto started = PostgresServer::Start();
    if (started.ok()) {
      server_ = std::move(started).value();
    } else {
      why_ = started.status().ToString();
    }
  }
  void TearDown() override { server_.reset(); }

  // Null if the server could not be started; why() then says why.
  PostgresServer* server() const { return server_.get(); }
  const std::string& why() const { return why_; }

 private:
  std::unique_ptr<PostgresServer> server_;
  std::string why_ = "the PostgreSQL test environment was not set up";
};

// Owned by GoogleTest once registered; registered before main() runs the tests.
PostgresEnvironment* const kPostgres = [] {
  auto* environment = new PostgresEnvironment;
  ::testing::AddGlobalTestEnvironment(environment);
  return environment;
}();

// A PostgreSQL store that owns the scratch database it lives in: closing the store first (its
// connections), then dropping the database.
class StoreInScratchDatabase final : public ForwardingStore {
 public:
  StoreInScratchDatabase(std::unique_ptr<Store> owned, PostgresServer* server, std::string database)
      : ForwardingStore(owned.get()),
        owned_(std::move(owned)),
        server_(server),
        database_(std::move(database)) {}
  ~StoreInScratchDatabase() override {
    owned_.reset();
    Status dropped = server_->DropDatabase(database_);
    EXPECT_TRUE(dropped.ok()) << dropped.ToString();
  }

 private:
  std::unique_ptr<Store> owned_;
  PostgresServer* const server_;
  const std::string database_;
};

// A fresh, empty database on the binary's server, migrated by OpenPostgresStore.
struct PostgresFactory {
  static std::unique_ptr<Store> Make() {
    PostgresServer* server = kPostgres->server();
    if (server == nullptr) {
      ADD_FAILURE() << "no PostgreSQL server to test against: " << kPostgres->why();
      return nullptr;
    }
    std::string database;
    auto conninfo = server->CreateDatabase(&database);
    if (!conninfo.ok()) {
      ADD_FAILURE() << conninfo.status().ToString();
      return nullptr;
    }
    auto opened = OpenPostgresStore(*conninfo);
    if (!opened.ok()) {
      ADD_FAILURE() << "OpenPostgresStore(\"" << *conninfo << "\"): " << opened.status().ToString();
      Status dropped = server->DropDatabase(database);
      EXPECT_TRUE(dropped.ok()) << dropped.ToString();
      return nullptr;
    }
    return std::make_unique<StoreInScratchDatabase>(std::move(opened).value(), server, database);
  }
};

// Test names read Postgres/StoreConformance/FreshDatabase.<test>.
class PostgresBackendName {
 public:
  template <typename Factory>
  static std::string GetName(int) {
    return "FreshDatabase";
  }
};

}  // namespace

INSTANTIATE_TYPED_TEST_SUITE_P(Postgres, StoreConformance, ::testing::Types<PostgresFactory>,
                               PostgresBackendName);

}  // namespace lockstep::store_conformance
