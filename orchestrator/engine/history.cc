#include "orchestrator/engine/history.h"

namespace lockstep {
namespace {

StatusOr<std::optional<ReleaseRecord>> First(StoreReader& store, ReleaseQuery q) {
  q.limit = 1;
  LOCKSTEP_ASSIGN_OR_RETURN(auto found, store.FindReleases(q));
  if (found.empty()) return std::optional<ReleaseRecord>();
  return std::optional<ReleaseRecord>(std::move(found.front()));
}

}  // namespace

const std::vector<std::string>& OpenStates() {
  static const std::vector<std::string> open = [] {
    std::vector<std::string> out;
    for (const auto& s : release_state::All()) {
      if (!release_state::IsFinal(s)) out.push_back(s);
    }
    return out;
  }();
  return open;
}

StatusOr<std::vector<ReleaseRecord>> OpenReleases(StoreReader& store, const std::string& pipeline) {
  ReleaseQuery q;
  q.pipeline = pipeline;
  q.states = OpenStates();
  q.oldest_first = true;
  q.limit = 0;
  return store.FindReleases(q);
}

StatusOr<std::optional<ReleaseRecord>> DesiredRelease(StoreReader& store,
                                                      const std::string& pipeline) {
  ReleaseQuery succeeded;
  succeeded.pipeline = pipeline;
  succeeded.states = {release_state::kSucceeded};
  LOCKSTEP_ASSIGN_OR_RETURN(auto last_good, First(store, succeeded));
  ReleaseQuery rollback = succeeded;
  rollback.states = {release_state::kFailed};
  rollback.kinds = {release_kind::kRollback};
  LOCKSTEP_ASSIGN_OR_RETURN(auto last_rollback, First(store, rollback));
  if (last_rollback.has_value() && (!last_good.has_value() || last_rollback->id > last_good->id)) {
    return last_rollback;
  }
  return last_good;
}

StatusOr<std::optional<ReleaseRecord>> SucceededWithVersion(StoreReader& store,
                                                            const std::string& pipeline,
                                                            const std::string& version) {
  ReleaseQuery q;
  q.pipeline = pipeline;
  q.version = version;
  q.states = {release_state::kSucceeded};
  return First(store, q);
}

StatusOr<std::optional<ReleaseRecord>> FirstWithArtifact(StoreReader& store,
                                                         const std::string& pipeline,
                                                         const std::string& version) {
  ReleaseQuery q;
  q.pipeline = pipeline;
  q.version = version;
  q.oldest_first = true;
  q.limit = 0;  // a version has a handful of releases
  LOCKSTEP_ASSIGN_OR_RETURN(auto found, store.FindReleases(q));
  for (auto& r : found) {
    if (!r.sha256.empty()) return std::optional<ReleaseRecord>(std::move(r));
  }
  return std::optional<ReleaseRecord>();
}

}  // namespace lockstep
