// Fuzzes the pipeline loader (ParsePipeline) with arbitrary bytes as a pipeline file.
//
// Properties beyond "no crash, no leak, no undefined behaviour, no hang": a refused file gets
// kInvalidArgument with a message that starts "<file>:<line>: ", as pipeline.h promises, and an
// accepted one satisfies what the engine relies on (a valid name, at least one region and
// wave, every wave selecting declared regions and at least one host of a non-empty region).

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "orchestrator/pipeline/pipeline.h"
#include "tests/fuzz/fuzz_check.h"

namespace lockstep {
namespace {

constexpr std::string_view kFile = "fuzz.yaml";

void CheckRefusal(const Status& status) {
  const std::string& m = status.message();
  LOCKSTEP_FUZZ_CHECK(status.code() == StatusCode::kInvalidArgument, "code %s: %s",
                      StatusCodeName(status.code()), m.c_str());
  LOCKSTEP_FUZZ_CHECK(m.starts_with(std::string(kFile) + ":"), "message: %s", m.c_str());
  size_t digits = m.find_first_not_of("0123456789", kFile.size() + 1);
  LOCKSTEP_FUZZ_CHECK(
      digits != std::string::npos && digits > kFile.size() + 1 && m.compare(digits, 2, ": ") == 0,
      "message names no line: %s", m.c_str());
  LOCKSTEP_FUZZ_CHECK(m[kFile.size() + 1] != '0', "line 0 or a leading zero: %s", m.c_str());
}

void CheckPipeline(const Pipeline& p) {
  LOCKSTEP_FUZZ_CHECK(!p.name.empty() && p.name.size() <= 64, "name \"%s\"", p.name.c_str());
  LOCKSTEP_FUZZ_CHECK(p.file == kFile, "file \"%s\"", p.file.c_str());
  LOCKSTEP_FUZZ_CHECK(!p.regions.empty(), "no regions");
  LOCKSTEP_FUZZ_CHECK(!p.waves.empty(), "no waves");
  for (const WaveSpec& wave : p.waves) {
    LOCKSTEP_FUZZ_CHECK(!wave.regions.empty(), "wave \"%s\" has no region", wave.name.c_str());
    LOCKSTEP_FUZZ_CHECK(wave.line >= 1, "wave \"%s\" on line %d", wave.name.c_str(), wave.line);
    LOCKSTEP_FUZZ_CHECK(wave.bake.count() >= 0, "wave \"%s\" bakes a negative time",
                        wave.name.c_str());
    for (const std::string& region : wave.regions) {
      LOCKSTEP_FUZZ_CHECK(p.HasRegion(region), "wave \"%s\" selects undeclared \"%s\"",
                          wave.name.c_str(), region.c_str());
    }
    for (int total : {1, 2, 7, 100, 1000000}) {
      int n = wave.hosts.Count(total);
      LOCKSTEP_FUZZ_CHECK(n >= 1 && n <= total, "wave \"%s\" selects %d of %d hosts (%s)",
                          wave.name.c_str(), n, total, wave.hosts.ToString().c_str());
    }
    LOCKSTEP_FUZZ_CHECK(wave.hosts.Count(0) == 0, "hosts selected from an empty region");
  }
  for (const MetricGateSpec& gate : p.metric_gates) {
    for (const std::string& region : gate.regions) {
      LOCKSTEP_FUZZ_CHECK(p.HasRegion(region), "gate \"%s\" names undeclared \"%s\"",
                          gate.name.c_str(), region.c_str());
    }
  }
  LOCKSTEP_FUZZ_CHECK(p.concurrency_per_region >= 1, "concurrency %d", p.concurrency_per_region);
  if (p.window) {
    LOCKSTEP_FUZZ_CHECK(p.window->start_minute >= 0 &&
                            p.window->start_minute < p.window->end_minute &&
                            p.window->end_minute <= 24 * 60,
                        "window %d-%d", p.window->start_minute, p.window->end_minute);
  }
}

}  // namespace
}  // namespace lockstep

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string text(reinterpret_cast<const char*>(data), size);
  lockstep::StatusOr<lockstep::Pipeline> pipeline =
      lockstep::ParsePipeline(text, std::string(lockstep::kFile));
  if (pipeline.ok()) {
    lockstep::CheckPipeline(*pipeline);
  } else {
    lockstep::CheckRefusal(pipeline.status());
  }
  return 0;
}
