// History: the rules that pick releases out of a pipeline's history. They are the engine's,
// written once over the generic StoreReader::FindReleases, so every store backend agrees on
// them without copying them into its queries.
//
// Thread safety: as the store's (any thread).
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "common/status.h"
#include "orchestrator/store/store.h"

namespace lockstep {

// Releases of a pipeline that are not final (queued or in flight), oldest first.
StatusOr<std::vector<ReleaseRecord>> OpenReleases(StoreReader& store, const std::string& pipeline);

// The release every host of the pipeline should run at rest: the newest that succeeded, or
// the newest on-call rollback even if some host could not confirm it (that host converges
// when it returns; the fleet must never be taken back to what was rolled back from).
StatusOr<std::optional<ReleaseRecord>> DesiredRelease(StoreReader& store,
                                                      const std::string& pipeline);

// The newest succeeded release of a pipeline with this version, if any.
StatusOr<std::optional<ReleaseRecord>> SucceededWithVersion(StoreReader& store,
                                                            const std::string& pipeline,
                                                            const std::string& version);

// The first release of a pipeline with this version that has a sha256: the one that named the
// version's artifact. Releases still waiting for their artifact (no sha256 yet) are skipped.
StatusOr<std::optional<ReleaseRecord>> FirstWithArtifact(StoreReader& store,
                                                         const std::string& pipeline,
                                                         const std::string& version);

// The states that are not final, in the order of release_state::All().
const std::vector<std::string>& OpenStates();

}  // namespace lockstep
