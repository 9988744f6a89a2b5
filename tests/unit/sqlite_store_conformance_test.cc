// The store conformance suite (tests/support/store_conformance.h) against the SQLite store,
// twice: in memory, as most unit tests use it, and in a WAL file of its own scratch directory,
// as lockstepd runs it.

#include <gtest/gtest.h>
#include <stdlib.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <memory>
#include <string>
#include <system_error>
#include <type_traits>
#include <utility>

#include "orchestrator/store/store.h"
#include "tests/support/store_conformance.h"

namespace lockstep::store_conformance {
namespace {

// A private in-memory database, gone with the store.
struct InMemorySqlite {
  static std::unique_ptr<Store> Make() {
    auto opened = OpenSqliteStore(":memory:");
    if (!opened.ok()) {
      ADD_FAILURE() << "OpenSqliteStore(\":memory:\"): " << opened.status().ToString();
      return nullptr;
    }
    return std::move(opened).value();
  }
};

// A file-backed store that owns the scratch directory it lives in: closing the store first
// (so SQLite removes or releases its -wal and -shm files), then removing the directory.
class StoreInScratchDir final : public ForwardingStore {
 public:
  StoreInScratchDir(std::unique_ptr<Store> owned, std::string dir)
      : ForwardingStore(owned.get()), owned_(std::move(owned)), dir_(std::move(dir)) {}
  ~StoreInScratchDir() override {
    owned_.reset();
    std::error_code ignored;  // a leftover scratch directory must not fail the test
    std::filesystem::remove_all(dir_, ignored);
  }

 private:
  std::unique_ptr<Store> owned_;
  std::string dir_;
};

// A database file (WAL mode, as OpenSqliteStore always opens one) in a fresh directory under
// the system's temporary directory, removed when the store is destroyed.
struct WalFileSqlite {
  static std::unique_ptr<Store> Make() {
    std::error_code ec;
    std::filesystem::path tmp = std::filesystem::temp_directory_path(ec);
    if (ec) tmp = "/tmp";
    std::string dir = (tmp / "lockstep-conformance-XXXXXX").string();
    if (mkdtemp(dir.data()) == nullptr) {
      ADD_FAILURE() << "mkdtemp " << dir << ": " << std::strerror(errno);
      return nullptr;
    }
    auto opened = OpenSqliteStore(dir + "/lockstep.db");
    if (!opened.ok()) {
      ADD_FAILURE() << "OpenSqliteStore in " << dir << ": " << opened.status().ToString();
      std::filesystem::remove_all(dir, ec);
      return nullptr;
    }
    return std::make_unique<StoreInScratchDir>(std::move(opened).value(), dir);
  }
};

// Test names read Sqlite/StoreConformance/InMemory.<test> and
// Sqlite/StoreConformance/WalFile.<test>.
class SqliteBackendName {
 public:
  template <typename Factory>
  static std::string GetName(int) {
    if constexpr (std::is_same_v<Factory, InMemorySqlite>) {
      return "InMemory";
    } else {
      return "WalFile";
    }
  }
};

using SqliteBackends = ::testing::Types<InMemorySqlite, WalFileSqlite>;

}  // namespace

INSTANTIATE_TYPED_TEST_SUITE_P(Sqlite, StoreConformance, SqliteBackends, SqliteBackendName);

}  // namespace lockstep::store_conformance
