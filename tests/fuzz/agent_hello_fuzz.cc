// Fuzzes what lockstepd does with an agent's first message before it knows who sent it: the
// bytes are parsed as an AgentHello (as gRPC would) and checked against the hello's field
// limits (orchestrator/server/hello_limits.h), and every string is escaped for the log
// (common/untrusted.h). Properties: nothing throws or crashes; a hello that passes has names
// of the safe alphabet within 253 characters; an escaped string holds only printable ASCII.

#include <string>

#include "common/untrusted.h"
#include "orchestrator/server/hello_limits.h"
#include "tests/fuzz/fuzz_check.h"

namespace {

void CheckEscaped(const std::string& s) {
  const std::string safe = lockstep::LogSafe(s, 128);
  for (char c : safe) {
    LOCKSTEP_FUZZ_CHECK(c >= 0x20 && c < 0x7f, "LogSafe let byte 0x%02x through",
                        static_cast<unsigned char>(c));
  }
  LOCKSTEP_FUZZ_CHECK(safe.size() <= 4 * 128 + 32, "LogSafe output too long: %zu", safe.size());
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  lockstep::v1::AgentHello hello;
  if (!hello.ParseFromArray(data, static_cast<int>(size))) {
    // Not a hello: the same bytes as a name must still be judged and escaped safely.
    std::string s(reinterpret_cast<const char*>(data), size);
    (void)lockstep::CheckName("agent name", s);
    CheckEscaped(s);
    return 0;
  }
  const std::string verdict = lockstep::CheckHelloFields(hello);
  if (verdict.empty()) {
    LOCKSTEP_FUZZ_CHECK(lockstep::IsValidName(hello.name()), "accepted name");
    LOCKSTEP_FUZZ_CHECK(lockstep::IsValidName(hello.region()), "accepted region");
    LOCKSTEP_FUZZ_CHECK(hello.name().size() <= 253, "name too long accepted");
  }
  CheckEscaped(verdict);
  CheckEscaped(hello.name());
  CheckEscaped(hello.region());
  CheckEscaped(hello.current_version());
  return 0;
}
