// The SQLite schema as an ordered list of migrations. Migration N takes a database at
// schema version N-1 (PRAGMA user_version) to N. Migrations are append-only: once released,
// a migration is never edited; a change to the schema is a new migration.
#pragma once

#include <vector>

namespace lockstep {

struct Migration {
  int version;
  const char* sql;
};

const std::vector<Migration>& SqliteMigrations();

}  // namespace lockstep
