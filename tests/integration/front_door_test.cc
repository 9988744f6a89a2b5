// Every operator action through both front doors: the CLI (which calls lockstepd's gRPC
// ControlService) and the HTTP JSON API (/api/v1/...). Whichever door a user takes, they should
// get the same kind of outcome, the same message when refused, and the same effect when the
// request is done. The table below writes that down as data, one row per action and input
// case, and one loop runs it against the real lockstepd on loopback.
//
// How a row runs. Each door gets its own lane, set up the same way: a pipeline named after the
// row and the door ("r07-cli", "r07-http") and whatever the row needs (a release waiting for
// approval, a token, a host...). That way one door's success cannot change the other door's
// starting state. Every name a lane owns starts with its id. Lane pipelines deploy to a region
// that has no agent, so their releases get through a wave in one engine pass. Hosts join a
// pipeline of their own.
//
// How the answers are compared.
//  - Outcome. An HTTP status maps to an Outcome the way HttpStatusOf (common/status.cc)
//    assigns them. 409 covers both a failed precondition and "already exists", so HTTP cannot
//    tell those two apart. The CLI (cli/main.cc, cli/commands.cc) exits 0 when the request is
//    done, 2 when it refuses the input itself (a usage error, so an invalid argument), and 3
//    when lockstepd refused. In that last case it prints "lockstep: MESSAGE" without the gRPC
//    code. So after an exit 3 the test makes the same ControlService call again with a stub,
//    on the same state (a refusal changes nothing, which is also checked). The stub's code
//    counts as the CLI's outcome only if its message is exactly the one the CLI printed.
//  - Message. From the CLI: stderr without the "lockstep: " prefix (for a usage error, only the
//    first line, because the usage text follows it). From HTTP: the "error" field of the body.
//    In both, the lane id and the ids of releases the setup created are replaced by
//    placeholders. Those are the only parts that differ between lanes by construction.
//  - Effect. The lane as an admin reads it over HTTP (pause and freeze, releases, the lane's
//    tokens and hosts). A refused request must leave the lane as it was, a good request must
//    show its effect, and both doors must leave their lanes in the same state.

#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <httplib.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cstdint>
#include <functional>
#include <initializer_list>
#include <iostream>
#include <iterator>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "proto/lockstep.grpc.pb.h"
#include "tests/integration/fleet.h"

namespace lockstep::testing {
namespace {

namespace v1 = lockstep::v1;
using nlohmann::json;

// Every wait for lockstepd to act is bounded by this.
constexpr std::chrono::seconds kBound{30};

enum class Op {
  kReleaseCreate,  // lockstep release create    POST /api/v1/releases
  kApprove,        // lockstep approve ID        POST /api/v1/releases/ID/approve
  kPause,          // lockstep pause P           POST /api/v1/pipelines/P/pause
  kResume,         // lockstep resume P          POST /api/v1/pipelines/P/resume
  kAbort,          // lockstep abort ID          POST /api/v1/releases/ID/abort
  kRollback,       // lockstep rollback P        POST /api/v1/pipelines/P/rollback
  kFreeze,         // lockstep freeze P          POST /api/v1/pipelines/P/freeze
  kUnfreeze,       // lockstep unfreeze P        POST /api/v1/pipelines/P/unfreeze
  kTokenCreate,    // lockstep tokens create     POST /api/v1/tokens
  kTokenRevoke,    // lockstep tokens revoke N   POST /api/v1/tokens/N/revoke
  kTokenList,      // lockstep tokens list       GET  /api/v1/tokens
  kAgentRemove,    // lockstep agents remove N   POST /api/v1/agents/N/remove
};

// The lane's state before the call.
enum class Start {
  kPipeline,          // a pipeline with nothing released
  kPaused,            // the pipeline, paused
  kFrozen,            // the pipeline, frozen
  kAwaitingApproval,  // release v1 waits for a manual approval
  kBaking,            // release v1 in flight: its wave bakes for an hour before its approval
  kSucceeded,         // release v1 succeeded: it is final
  kTwoSucceeded,      // v1, then v2, succeeded: a rollback goes back to v1
  kToken,             // a viewer token named LANE-tok
  kAgent,             // a host LANE-host that enrolled and then went offline
};

// What the request carries: the good request, or one thing wrong with it.
enum class Input {
  kGood,
  kUnknown,        // names a pipeline, release id, token or host lockstepd never knew
  kBadVersion,     // release create --version ../v9
  kBadDigest,      // release create --sha256 abc123
  kEmptyReason,    // freeze --reason ""
  kBlankReason,    // freeze --reason "   "
  kTakenName,      // tokens create --name of a token that exists
  kNeverReleased,  // rollback --to a version the pipeline never had
};

enum class Outcome {
  kOk,
  kInvalidArgument,   // 400; the CLI's usage errors (exit 2)
  kUnauthenticated,   // 401
  kPermissionDenied,  // 403
  kNotFound,          // 404
  kConflict,          // failed precondition: 409
  kAlreadyExists,     // also 409 over HTTP
  kOther,             // anything else; never expected
};

enum class Door { kCli, kHttp };
constexpr Door kDoors[] = {Door::kCli, Door::kHttp};

// Callers: the admin, no token at all, or a role whose token may not do the row's action
// (orchestrator/auth/tokens.cc has the matrix).
constexpr const char* kAdmin = "admin";
constexpr const char* kNoToken = "";

struct Row {
  const char* name;  // names the row in failure messages
  Op op;
  Start setup;
  const char* caller;
  Input input;
  Outcome expect;  // for both doors
};

const std::vector<Row>& Table() {
  static const std::vector<Row> kRows = {
      // release create
      {"release create: good request", Op::kReleaseCreate, Start::kPipeline, kAdmin, Input::kGood,
       Outcome::kOk},
      {"release create: no token", Op::kReleaseCreate, Start::kPipeline, kNoToken, Input::kGood,
       Outcome::kUnauthenticated},
      {"release create: a viewer may not", Op::kReleaseCreate, Start::kPipeline, "viewer",
       Input::kGood, Outcome::kPermissionDenied},
      {"release create: unknown pipeline", Op::kReleaseCreate, Start::kPipeline, kAdmin,
       Input::kUnknown, Outcome::kNotFound},
      {"release create: bad version", Op::kReleaseCreate, Start::kPipeline, kAdmin,
       Input::kBadVersion, Outcome::kInvalidArgument},
      {"release create: bad sha256", Op::kReleaseCreate, Start::kPipeline, kAdmin,
       Input::kBadDigest, Outcome::kInvalidArgument},
      // approve
      {"approve: good request", Op::kApprove, Start::kAwaitingApproval, kAdmin, Input::kGood,
       Outcome::kOk},
      {"approve: no token", Op::kApprove, Start::kAwaitingApproval, kNoToken, Input::kGood,
       Outcome::kUnauthenticated},
      {"approve: on-call may not", Op::kApprove, Start::kAwaitingApproval, "on-call", Input::kGood,
       Outcome::kPermissionDenied},
      {"approve: unknown release id", Op::kApprove, Start::kPipeline, kAdmin, Input::kUnknown,
       Outcome::kNotFound},
      {"approve: release already final", Op::kApprove, Start::kSucceeded, kAdmin, Input::kGood,
       Outcome::kConflict},
      {"approve: nothing awaiting approval", Op::kApprove, Start::kBaking, kAdmin, Input::kGood,
       Outcome::kConflict},
      // pause
      {"pause: good request", Op::kPause, Start::kPipeline, kAdmin, Input::kGood, Outcome::kOk},
      {"pause: no token", Op::kPause, Start::kPipeline, kNoToken, Input::kGood,
       Outcome::kUnauthenticated},
      {"pause: a deployer may not", Op::kPause, Start::kPipeline, "deployer", Input::kGood,
       Outcome::kPermissionDenied},
      {"pause: unknown pipeline", Op::kPause, Start::kPipeline, kAdmin, Input::kUnknown,
       Outcome::kNotFound},
      // resume
      {"resume: good request", Op::kResume, Start::kPaused, kAdmin, Input::kGood, Outcome::kOk},
      {"resume: no token", Op::kResume, Start::kPaused, kNoToken, Input::kGood,
       Outcome::kUnauthenticated},
      {"resume: a deployer may not", Op::kResume, Start::kPaused, "deployer", Input::kGood,
       Outcome::kPermissionDenied},
      {"resume: unknown pipeline", Op::kResume, Start::kPipeline, kAdmin, Input::kUnknown,
       Outcome::kNotFound},
      // abort
      {"abort: good request", Op::kAbort, Start::kBaking, kAdmin, Input::kGood, Outcome::kOk},
      {"abort: no token", Op::kAbort, Start::kBaking, kNoToken, Input::kGood,
       Outcome::kUnauthenticated},
      {"abort: a deployer may not", Op::kAbort, Start::kBaking, "deployer", Input::kGood,
       Outcome::kPermissionDenied},
      {"abort: unknown release id", Op::kAbort, Start::kPipeline, kAdmin, Input::kUnknown,
       Outcome::kNotFound},
      {"abort: release already final", Op::kAbort, Start::kSucceeded, kAdmin, Input::kGood,
       Outcome::kConflict},
      // rollback
      {"rollback: good request", Op::kRollback, Start::kTwoSucceeded, kAdmin, Input::kGood,
       Outcome::kOk},
      {"rollback: no token", Op::kRollback, Start::kTwoSucceeded, kNoToken, Input::kGood,
       Outcome::kUnauthenticated},
      {"rollback: a deployer may not", Op::kRollback, Start::kTwoSucceeded, "deployer",
       Input::kGood, Outcome::kPermissionDenied},
      {"rollback: unknown pipeline", Op::kRollback, Start::kPipeline, kAdmin, Input::kUnknown,
       Outcome::kNotFound},
      {"rollback: to a version never released", Op::kRollback, Start::kTwoSucceeded, kAdmin,
       Input::kNeverReleased, Outcome::kNotFound},
      // freeze
      {"freeze: good request", Op::kFreeze, Start::kPipeline, kAdmin, Input::kGood, Outcome::kOk},
      {"freeze: no token", Op::kFreeze, Start::kPipeline, kNoToken, Input::kGood,
       Outcome::kUnauthenticated},
      {"freeze: a deployer may not", Op::kFreeze, Start::kPipeline, "deployer", Input::kGood,
       Outcome::kPermissionDenied},
      {"freeze: unknown pipeline", Op::kFreeze, Start::kPipeline, kAdmin, Input::kUnknown,
       Outcome::kNotFound},
      {"freeze: empty reason", Op::kFreeze, Start::kPipeline, kAdmin, Input::kEmptyReason,
       Outcome::kInvalidArgument},
      {"freeze: reason of blanks only", Op::kFreeze, Start::kPipeline, kAdmin, Input::kBlankReason,
       Outcome::kInvalidArgument},
      // unfreeze
      {"unfreeze: good request", Op::kUnfreeze, Start::kFrozen, kAdmin, Input::kGood, Outcome::kOk},
      {"unfreeze: no token", Op::kUnfreeze, Start::kFrozen, kNoToken, Input::kGood,
       Outcome::kUnauthenticated},
      {"unfreeze: a deployer may not", Op::kUnfreeze, Start::kFrozen, "deployer", Input::kGood,
       Outcome::kPermissionDenied},
      {"unfreeze: unknown pipeline", Op::kUnfreeze, Start::kPipeline, kAdmin, Input::kUnknown,
       Outcome::kNotFound},
      // tokens create
      {"tokens create: good request", Op::kTokenCreate, Start::kPipeline, kAdmin, Input::kGood,
       Outcome::kOk},
      {"tokens create: no token", Op::kTokenCreate, Start::kPipeline, kNoToken, Input::kGood,
       Outcome::kUnauthenticated},
      {"tokens create: a release-manager may not", Op::kTokenCreate, Start::kPipeline,
       "release-manager", Input::kGood, Outcome::kPermissionDenied},
      {"tokens create: name already taken", Op::kTokenCreate, Start::kToken, kAdmin,
       Input::kTakenName, Outcome::kAlreadyExists},
      // tokens revoke
      {"tokens revoke: good request", Op::kTokenRevoke, Start::kToken, kAdmin, Input::kGood,
       Outcome::kOk},
      {"tokens revoke: no token", Op::kTokenRevoke, Start::kToken, kNoToken, Input::kGood,
       Outcome::kUnauthenticated},
      {"tokens revoke: a release-manager may not", Op::kTokenRevoke, Start::kToken,
       "release-manager", Input::kGood, Outcome::kPermissionDenied},
      {"tokens revoke: unknown token", Op::kTokenRevoke, Start::kPipeline, kAdmin, Input::kUnknown,
       Outcome::kNotFound},
      // tokens list
      {"tokens list: good request", Op::kTokenList, Start::kToken, kAdmin, Input::kGood,
       Outcome::kOk},
      {"tokens list: no token", Op::kTokenList, Start::kToken, kNoToken, Input::kGood,
       Outcome::kUnauthenticated},
      {"tokens list: a release-manager may not", Op::kTokenList, Start::kToken, "release-manager",
       Input::kGood, Outcome::kPermissionDenied},
      // agents remove
      {"agents remove: good request", Op::kAgentRemove, Start::kAgent, kAdmin, Input::kGood,
       Outcome::kOk},
      {"agents remove: no token", Op::kAgentRemove, Start::kAgent, kNoToken, Input::kGood,
       Outcome::kUnauthenticated},
      {"agents remove: a release-manager may not", Op::kAgentRemove, Start::kAgent,
       "release-manager", Input::kGood, Outcome::kPermissionDenied},
      {"agents remove: unknown host", Op::kAgentRemove, Start::kPipeline, kAdmin, Input::kUnknown,
       Outcome::kNotFound},
  };
  return kRows;
}

// --- names, outcomes and messages ---

constexpr const char* kLaneRegion = "eu-west-1";  // no agent ever joins it
constexpr const char* kHostRegion = "us-east-1";  // the hosts' own pipeline
constexpr int64_t kUnknownRelease = 987654321;
constexpr std::string_view kCliPrefix = "lockstep: ";

const char* DoorName(Door door) { return door == Door::kCli ? "the CLI" : "HTTP"; }

// "r07-cli": the lane's pipeline, and the prefix of every name it owns.
std::string LaneId(size_t row, Door door) {
  std::string n = std::to_string(row + 1);
  if (n.size() < 2) n = "0" + n;
  return "r" + n + (door == Door::kCli ? "-cli" : "-http");
}

std::string LanePipeline(const std::string& id, Start setup) {
  std::string wave = "  - name: all\n    select: {per_region: \"100%\"}\n";
  if (setup == Start::kAwaitingApproval) wave += "    approval: manual\n";
  if (setup == Start::kBaking) wave += "    bake: 1h\n    approval: manual\n";
  return "pipeline: " + id + "\nregions: [" + kLaneRegion + "]\nwaves:\n" + wave;
}

const char* OutcomeName(Outcome o) {
  switch (o) {
    case Outcome::kOk:
      return "ok";
    case Outcome::kInvalidArgument:
      return "invalid argument";
    case Outcome::kUnauthenticated:
      return "unauthenticated";
    case Outcome::kPermissionDenied:
      return "permission denied";
    case Outcome::kNotFound:
      return "not found";
    case Outcome::kConflict:
      return "failed precondition (conflict)";
    case Outcome::kAlreadyExists:
      return "already exists";
    case Outcome::kOther:
      return "something else";
  }
  return "?";
}

// HTTP answers "already exists" with 409 like any conflict (HttpStatusOf).
Outcome AsHttpShowsIt(Outcome o) { return o == Outcome::kAlreadyExists ? Outcome::kConflict : o; }

Outcome FromHttp(int status) {
  if (status >= 200 && status < 300) return Outcome::kOk;
  switch (status) {
    case 400:
      return Outcome::kInvalidArgument;
    case 401:
      return Outcome::kUnauthenticated;
    case 403:
      return Outcome::kPermissionDenied;
    case 404:
      return Outcome::kNotFound;
    case 409:
      return Outcome::kConflict;
    default:
      return Outcome::kOther;
  }
}

Outcome FromGrpc(grpc::StatusCode code) {
  switch (code) {
    case grpc::StatusCode::OK:
      return Outcome::kOk;
    case grpc::StatusCode::INVALID_ARGUMENT:
      return Outcome::kInvalidArgument;
    case grpc::StatusCode::UNAUTHENTICATED:
      return Outcome::kUnauthenticated;
    case grpc::StatusCode::PERMISSION_DENIED:
      return Outcome::kPermissionDenied;
    case grpc::StatusCode::NOT_FOUND:
      return Outcome::kNotFound;
    case grpc::StatusCode::FAILED_PRECONDITION:
      return Outcome::kConflict;
    case grpc::StatusCode::ALREADY_EXISTS:
      return Outcome::kAlreadyExists;
    default:
      return Outcome::kOther;
  }
}

// The message of the CLI's error line (RpcError and Usage in cli/: "lockstep: MESSAGE\n").
// Stderr in any other form is returned whole, so it cannot match a server's message.
std::string CliMessage(const std::string& err, int exit_code) {
  if (err.rfind(kCliPrefix, 0) != 0) return err;
  std::string message = err.substr(kCliPrefix.size());
  if (exit_code == 2) return message.substr(0, message.find('\n'));  // the usage text follows
  if (!message.empty() && message.back() == '\n') message.pop_back();
  return message;
}

void ReplaceAll(std::string& text, const std::string& from, const std::string& to) {
  for (size_t pos = text.find(from); pos != std::string::npos; pos = text.find(from, pos)) {
    text.replace(pos, from.size(), to);
    pos += to.size();
  }
}

// Replaces `number` where it stands as a whole number, not inside a longer one.
void ReplaceNumber(std::string& text, int64_t number, const std::string& to) {
  const std::string digits = std::to_string(number);
  auto digit_at = [&text](size_t i) {
    return i < text.size() && std::isdigit(static_cast<unsigned char>(text[i])) != 0;
  };
  for (size_t pos = text.find(digits); pos != std::string::npos; pos = text.find(digits, pos)) {
    if ((pos > 0 && digit_at(pos - 1)) || digit_at(pos + digits.size())) {
      ++pos;
      continue;
    }
    text.replace(pos, digits.size(), to);
    pos += to.size();
  }
}

struct Lane {
  std::string id;
  std::vector<int64_t> releases;  // made by the setup, oldest first
};

// `text` with what differs between two lanes by construction replaced by placeholders.
std::string Normalise(std::string text, const Lane& lane) {
  ReplaceAll(text, lane.id, "{lane}");
  for (size_t i = 0; i < lane.releases.size(); ++i) {
    ReplaceNumber(text, lane.releases[i], "{release " + std::to_string(i + 1) + "}");
  }
  return text;
}

std::string StrField(const json& j, const char* key) {
  if (!j.is_object()) return "";
  auto it = j.find(key);
  return it != j.end() && it->is_string() ? it->get<std::string>() : "";
}

bool BoolField(const json& j, const char* key) {
  if (!j.is_object()) return false;
  auto it = j.find(key);
  return it != j.end() && it->is_boolean() && it->get<bool>();
}

std::string FirstWaveState(const json& release) {
  if (!release.is_object()) return "";
  auto waves = release.find("waves");
  if (waves == release.end() || !waves->is_array() || waves->empty()) return "";
  return StrField((*waves)[0], "state");
}

bool Succeeded(const json& release) { return StrField(release, "state") == "succeeded"; }

bool Has(const json& list, const std::string& item) {
  return list.is_array() && std::find(list.begin(), list.end(), json(item)) != list.end();
}

// --- the request, and the two doors ---

// One row's request for one lane, as both doors send it.
struct Request {
  std::string caller;                     // as in the row
  std::string token;                      // "" sends none
  std::string pipeline;                   // release create, switches, rollback
  int64_t release = 0;                    // approve, abort
  std::string name;                       // tokens create and revoke, agents remove
  std::string version, artifact, sha256;  // release create
  std::string reason;                     // freeze
  std::string to;                         // rollback; "" is the last good release
  std::string role;                       // tokens create
};

// What a door answered.
struct Answer {
  Outcome outcome = Outcome::kOther;
  std::string message;  // why it was refused, as lockstepd worded it; "" if done
  json body;            // the answer when done: the CLI's --output json, HTTP's body
  std::string raw;      // everything the door said, for failure messages
};

std::vector<std::string> CliArgs(Op op, const Request& q) {
  std::vector<std::string> args = {"--output", "json", "--token", q.token};
  auto add = [&args](std::initializer_list<std::string> more) { args.insert(args.end(), more); };
  switch (op) {
    case Op::kReleaseCreate:
      add({"release", "create", "--pipeline", q.pipeline, "--version", q.version, "--artifact",
           q.artifact, "--sha256", q.sha256});
      break;
    case Op::kApprove:
      add({"approve", std::to_string(q.release)});
      break;
    case Op::kPause:
      add({"pause", q.pipeline});
      break;
    case Op::kResume:
      add({"resume", q.pipeline});
      break;
    case Op::kAbort:
      add({"abort", std::to_string(q.release)});
      break;
    case Op::kRollback:
      // HTTP answers once the rollback is queued (202); so does the CLI with --no-wait.
      add({"rollback", q.pipeline, "--no-wait"});
      if (!q.to.empty()) add({"--to", q.to});
      break;
    case Op::kFreeze:
      add({"freeze", q.pipeline, "--reason", q.reason});
      break;
    case Op::kUnfreeze:
      add({"unfreeze", q.pipeline});
      break;
    case Op::kTokenCreate:
      add({"tokens", "create", "--role", q.role, "--name", q.name});
      break;
    case Op::kTokenRevoke:
      add({"tokens", "revoke", q.name});
      break;
    case Op::kTokenList:
      add({"tokens", "list"});
      break;
    case Op::kAgentRemove:
      add({"agents", "remove", q.name});
      break;
  }
  return args;
}

// The command line as a user would type it, the token shown as whose it is.
std::string CommandLine(const std::vector<std::string>& args, const std::string& caller) {
  std::string out = "lockstep";
  for (size_t i = 0; i < args.size(); ++i) {
    const bool secret = i > 0 && args[i - 1] == "--token";
    out += " " + (secret ? "<" + (caller.empty() ? std::string("none") : caller) + " token>"
                         : "'" + args[i] + "'");
  }
  return out;
}

struct HttpRequest {
  std::string method, path, body;
};

HttpRequest HttpOf(Op op, const Request& q) {
  const std::string release = "/api/v1/releases/" + std::to_string(q.release);
  const std::string pipeline = "/api/v1/pipelines/" + q.pipeline;
  switch (op) {
    case Op::kReleaseCreate:
      return {"POST", "/api/v1/releases",
              json{{"pipeline", q.pipeline},
                   {"version", q.version},
                   {"artifact", q.artifact},
                   {"sha256", q.sha256}}
                  .dump()};
    case Op::kApprove:
      return {"POST", release + "/approve", ""};
    case Op::kPause:
      return {"POST", pipeline + "/pause", ""};
    case Op::kResume:
      return {"POST", pipeline + "/resume", ""};
    case Op::kAbort:
      return {"POST", release + "/abort", ""};
    case Op::kRollback:
      return {"POST", pipeline + "/rollback", q.to.empty() ? "" : json{{"to", q.to}}.dump()};
    case Op::kFreeze:
      return {"POST", pipeline + "/freeze", json{{"reason", q.reason}}.dump()};
    case Op::kUnfreeze:
      return {"POST", pipeline + "/unfreeze", ""};
    case Op::kTokenCreate:
      return {"POST", "/api/v1/tokens", json{{"role", q.role}, {"name", q.name}}.dump()};
    case Op::kTokenRevoke:
      return {"POST", "/api/v1/tokens/" + q.name + "/revoke", ""};
    case Op::kTokenList:
      return {"GET", "/api/v1/tokens", ""};
    case Op::kAgentRemove:
      return {"POST", "/api/v1/agents/" + q.name + "/remove", ""};
  }
  return {"GET", "/", ""};
}

// The ControlService call the CLI makes for `op` (cli/commands.cc), made with a stub.
grpc::Status Grpc(const std::string& server, Op op, const Request& q) {
  auto stub =
      v1::ControlService::NewStub(grpc::CreateChannel(server, grpc::InsecureChannelCredentials()));
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(15));
  if (!q.token.empty()) ctx.AddMetadata("authorization", "Bearer " + q.token);
  switch (op) {
    case Op::kReleaseCreate: {
      v1::CreateReleaseRequest req;
      req.set_pipeline(q.pipeline);
      req.set_version(q.version);
      req.set_artifact_url(q.artifact);
      req.set_sha256(q.sha256);
      v1::Release out;
      return stub->CreateRelease(&ctx, req, &out);
    }
    case Op::kApprove:
    case Op::kAbort: {
      v1::ReleaseRef req;
      req.set_id(q.release);
      v1::Release out;
      return op == Op::kApprove ? stub->Approve(&ctx, req, &out) : stub->Abort(&ctx, req, &out);
    }
    case Op::kPause:
    case Op::kResume:
    case Op::kFreeze:
    case Op::kUnfreeze: {
      v1::PipelineRef req;
      req.set_pipeline(q.pipeline);
      if (op == Op::kFreeze) req.set_reason(q.reason);
      v1::Empty out;
      if (op == Op::kPause) return stub->Pause(&ctx, req, &out);
      if (op == Op::kResume) return stub->Resume(&ctx, req, &out);
      if (op == Op::kFreeze) return stub->Freeze(&ctx, req, &out);
      return stub->Unfreeze(&ctx, req, &out);
    }
    case Op::kRollback: {
      v1::RollbackRequest req;
      req.set_pipeline(q.pipeline);
      req.set_to_version(q.to);
      v1::Release out;
      return stub->Rollback(&ctx, req, &out);
    }
    case Op::kTokenCreate: {
      v1::CreateTokenRequest req;
      req.set_role(q.role);
      req.set_name(q.name);
      v1::CreateTokenResponse out;
      return stub->CreateToken(&ctx, req, &out);
    }
    case Op::kTokenRevoke: {
      v1::TokenRef req;
      req.set_name(q.name);
      v1::Empty out;
      return stub->RevokeToken(&ctx, req, &out);
    }
    case Op::kTokenList: {
      v1::Empty req;
      v1::ListTokensResponse out;
      return stub->ListTokens(&ctx, req, &out);
    }
    case Op::kAgentRemove: {
      v1::AgentRef req;
      req.set_name(q.name);
      v1::Empty out;
      return stub->RemoveAgent(&ctx, req, &out);
    }
  }
  return grpc::Status(grpc::StatusCode::INTERNAL, "no such operation");
}

struct HttpAnswer {
  int status = 0;  // 0: no answer
  std::string raw;
  json body;
};

class FrontDoorTest : public ::testing::Test {
 protected:
  void SetUp() override {
    fleet_.WritePipeline("hosts.yaml", std::string("pipeline: hosts\nregions: [") + kHostRegion +
                                           "]\nwaves:\n  - name: all\n"
                                           "    select: {per_region: \"100%\"}\n");
    for (size_t i = 0; i < Table().size(); ++i) {
      for (Door door : kDoors) {
        const std::string id = LaneId(i, door);
        fleet_.WritePipeline(id + ".yaml", LanePipeline(id, Table()[i].setup));
      }
    }
    // Lane pipelines have no hosts: the artifact is never fetched, but it is a real one.
    artifact_ = fleet_.ServeApp("front-door");
    fleet_.StartOrchestrator();
    if (HasFatalFailure()) return;
    for (const char* role : {"viewer", "deployer", "release-manager", "on-call"}) {
      role_tokens_[role] = fleet_.CreateToken(role, std::string("fd-") + role);
    }
  }

  HttpAnswer Http(const std::string& method, const std::string& path, const std::string& token,
                  const std::string& body = "") {
    httplib::Client cli("127.0.0.1", fleet_.http_port());
    cli.set_connection_timeout(std::chrono::seconds(5));
    cli.set_read_timeout(std::chrono::seconds(60));
    httplib::Headers headers;
    if (!token.empty()) headers.emplace("Authorization", "Bearer " + token);
    httplib::Result r = method == "GET" ? cli.Get(path.c_str(), headers)
                                        : cli.Post(path.c_str(), headers, body, "application/json");
    HttpAnswer out;
    if (!r) return out;
    out.status = r->status;
    out.raw = r->body;
    out.body = json::parse(r->body, nullptr, /*allow_exceptions=*/false);
    return out;
  }

  // --- setting a lane up, as the admin over HTTP ---

  bool SetupCall(const std::string& method, const std::string& path, const std::string& body) {
    HttpAnswer r = Http(method, path, fleet_.admin_token(), body);
    if (r.status >= 200 && r.status < 300) return true;
    ADD_FAILURE() << "setup: " << method << " " << path << " " << body << " -> " << r.status << " "
                  << r.raw;
    return false;
  }

  // Creates release `version` in the lane and waits until `reached` holds for it.
  bool MakeRelease(Lane& lane, const std::string& version,
                   const std::function<bool(const json&)>& reached, const char* what) {
    HttpAnswer created = Http("POST", "/api/v1/releases", fleet_.admin_token(),
                              json{{"pipeline", lane.id},
                                   {"version", version},
                                   {"artifact", artifact_.url},
                                   {"sha256", artifact_.sha256}}
                                  .dump());
    if (created.status != 201 || !created.body.is_object() || !created.body["id"].is_number()) {
      ADD_FAILURE() << "setup: creating " << version << " in " << lane.id << ": " << created.raw;
      return false;
    }
    const int64_t id = created.body["id"].get<int64_t>();
    lane.releases.push_back(id);
    json last;
    const bool reached_it = Fleet::WaitFor(
        [&] {
          last = Http("GET", "/api/v1/releases/" + std::to_string(id), fleet_.admin_token()).body;
          return reached(last);
        },
        kBound);
    if (!reached_it) {
      ADD_FAILURE() << "setup: release " << version << " of " << lane.id << " is not " << what
                    << ": " << last.dump();
    }
    return reached_it;
  }

  bool WaitForHost(const std::string& name, bool connected) {
    json last;
    const bool seen = Fleet::WaitFor(
        [&] {
          last = Http("GET", "/api/v1/agents", fleet_.admin_token()).body;
          if (!last.is_array()) return false;
          for (const auto& host : last) {
            if (StrField(host, "name") == name) return BoolField(host, "connected") == connected;
          }
          return false;
        },
        kBound);
    if (!seen) {
      ADD_FAILURE() << "setup: host " << name << " is not " << (connected ? "connected" : "offline")
                    << ": " << last.dump();
    }
    return seen;
  }

  // A host that enrolled and then went away for good (SIGKILL): what an operator retires. A
  // host still running would enroll again once removed, with the enrollment token it still
  // has (trust_boundary_test covers that).
  bool EnrollThenLose(const std::string& name) {
    fleet_.StartAgent(name, kHostRegion);
    if (HasFatalFailure() || !WaitForHost(name, true)) return false;
    fleet_.KillAgent(name);
    return WaitForHost(name, false);
  }

  bool Prepare(Start setup, Lane& lane) {
    const std::string pipeline = "/api/v1/pipelines/" + lane.id;
    switch (setup) {
      case Start::kPipeline:
        return true;
      case Start::kPaused:
        return SetupCall("POST", pipeline + "/pause", "");
      case Start::kFrozen:
        return SetupCall("POST", pipeline + "/freeze",
                         json{{"reason", "frozen by the test's setup"}}.dump());
      case Start::kAwaitingApproval:
        return MakeRelease(
            lane, "v1", [](const json& r) { return FirstWaveState(r) == "awaiting_approval"; },
            "awaiting approval");
      case Start::kBaking:
        return MakeRelease(
            lane, "v1", [](const json& r) { return FirstWaveState(r) == "baking"; }, "baking");
      case Start::kSucceeded:
        return MakeRelease(lane, "v1", Succeeded, "succeeded");
      case Start::kTwoSucceeded:
        return MakeRelease(lane, "v1", Succeeded, "succeeded") &&
               MakeRelease(lane, "v2", Succeeded, "succeeded");
      case Start::kToken:
        return SetupCall("POST", "/api/v1/tokens",
                         json{{"role", "viewer"}, {"name", lane.id + "-tok"}}.dump());
      case Start::kAgent:
        return EnrollThenLose(lane.id + "-host");
    }
    return false;
  }

  // --- the request and the doors ---

  Request Build(const Row& row, const Lane& lane) const {
    Request q;
    q.caller = row.caller;
    q.token = q.caller == kAdmin ? fleet_.admin_token()
              : q.caller.empty() ? ""
                                 : role_tokens_.at(q.caller);
    const bool unknown = row.input == Input::kUnknown;
    q.pipeline = unknown ? "no-such-pipeline" : lane.id;
    q.release = unknown ? kUnknownRelease : lane.releases.empty() ? 0 : lane.releases.back();
    q.version = row.input == Input::kBadVersion ? "../v9" : "v9";
    q.artifact = artifact_.url;
    q.sha256 = row.input == Input::kBadDigest ? "abc123" : artifact_.sha256;
    q.reason = row.input == Input::kEmptyReason   ? ""
               : row.input == Input::kBlankReason ? "   "
                                                  : "incident 42";
    q.to = row.input == Input::kNeverReleased ? "v7" : "";
    q.role = "viewer";
    if (row.op == Op::kTokenCreate) {
      q.name = lane.id + (row.input == Input::kTakenName ? "-tok" : "-new");
    } else if (row.op == Op::kTokenRevoke) {
      q.name = unknown ? "no-such-token" : lane.id + "-tok";
    } else if (row.op == Op::kAgentRemove) {
      q.name = unknown ? "no-such-host" : lane.id + "-host";
    }
    return q;
  }

  Answer ThroughCli(Op op, const Request& q) {
    const std::vector<std::string> args = CliArgs(op, q);
    CommandResult r = fleet_.Cli(args, std::chrono::seconds(60));
    Answer answer;
    answer.raw = CommandLine(args, q.caller) + "\n  exit " + std::to_string(r.exit_code) +
                 "\n  stdout: " + r.out + "\n  stderr: " + r.err;
    if (r.exit_code == 0) {
      answer.outcome = Outcome::kOk;
      answer.body = json::parse(r.out, nullptr, /*allow_exceptions=*/false);
      return answer;
    }
    answer.message = CliMessage(r.err, r.exit_code);
    if (r.exit_code == 2) {
      answer.outcome = Outcome::kInvalidArgument;  // refused by the CLI, nothing sent
      return answer;
    }
    if (r.exit_code != 3) return answer;  // kOther
    // lockstepd refused; the CLI printed its message but not its code.
    grpc::Status st = Grpc(fleet_.server(), op, q);
    answer.raw += "\n  the same call as gRPC: code " +
                  std::to_string(static_cast<int>(st.error_code())) + ": " + st.error_message();
    answer.outcome =
        st.error_message() == answer.message ? FromGrpc(st.error_code()) : Outcome::kOther;
    return answer;
  }

  Answer ThroughHttp(Op op, const Request& q) {
    const HttpRequest req = HttpOf(op, q);
    HttpAnswer r = Http(req.method, req.path, q.token, req.body);
    Answer answer;
    answer.raw = req.method + " " + req.path + " " + req.body + " as " +
                 (q.caller.empty() ? std::string("nobody") : q.caller) + "\n  -> " +
                 std::to_string(r.status) + " " + r.raw;
    answer.outcome = FromHttp(r.status);
    if (answer.outcome == Outcome::kOk) {
      answer.body = r.body;
    } else {
      answer.message = StrField(r.body, "error");
      if (answer.message.empty()) answer.message = r.raw;
    }
    return answer;
  }

  // --- what the lane looks like ---

  // The lane as an admin reads it, with its own names and release ids replaced (Normalise),
  // so that two lanes in the same state compare equal.
  json Snapshot(const Lane& lane) {
    const std::string& admin = fleet_.admin_token();
    HttpAnswer pipeline = Http("GET", "/api/v1/pipelines/" + lane.id, admin);
    HttpAnswer releases = Http("GET", "/api/v1/releases?limit=1000&pipeline=" + lane.id, admin);
    HttpAnswer tokens = Http("GET", "/api/v1/tokens", admin);
    HttpAnswer hosts = Http("GET", "/api/v1/agents", admin);
    EXPECT_EQ(pipeline.status, 200) << pipeline.raw;
    EXPECT_EQ(releases.status, 200) << releases.raw;
    EXPECT_EQ(tokens.status, 200) << tokens.raw;
    EXPECT_EQ(hosts.status, 200) << hosts.raw;
    json out = {{"pipeline",
                 {{"paused", BoolField(pipeline.body, "paused")},
                  {"frozen", BoolField(pipeline.body, "frozen")},
                  {"freeze_reason", StrField(pipeline.body, "freeze_reason")}}},
                {"releases", json::array()},
                {"tokens", json::array()},
                {"agents", json::array()}};
    const std::string mine = lane.id + "-";
    if (releases.body.is_array()) {
      for (const auto& r : releases.body) {
        out["releases"].push_back(StrField(r, "kind") + " " + StrField(r, "version") + " " +
                                  StrField(r, "state"));
      }
    }
    if (tokens.body.is_array()) {
      for (const auto& t : tokens.body) {
        const std::string name = StrField(t, "name");
        if (name.rfind(mine, 0) != 0) continue;
        const bool revoked = t.is_object() && t.contains("revoked") && !t.at("revoked").is_null();
        out["tokens"].push_back(Normalise(name, lane) + " " + StrField(t, "role") +
                                (revoked ? " revoked" : ""));
      }
    }
    if (hosts.body.is_array()) {
      for (const auto& h : hosts.body) {
        const std::string name = StrField(h, "name");
        if (name.rfind(mine, 0) == 0) out["agents"].push_back(Normalise(name, lane));
      }
    }
    return out;
  }

  // Whether the lane (`seen`, a Snapshot) and the door's answer show what a good `op` does.
  static bool Done(Op op, const Lane& lane, const Request& q, const Answer& answer,
                   const json& seen) {
    const json& pipeline = seen.at("pipeline");
    const json& releases = seen.at("releases");
    switch (op) {
      case Op::kReleaseCreate:  // a pipeline without hosts: it succeeds at once
        return Has(releases, "rollout " + q.version + " succeeded");
      case Op::kApprove:
        return Has(releases, "rollout v1 succeeded");
      case Op::kPause:
        return BoolField(pipeline, "paused");
      case Op::kResume:
        return !BoolField(pipeline, "paused");
      case Op::kAbort:
        // The lane's first release: with no earlier release to go back to, an abort ends it
        // failed, its reason "aborted by ...; no earlier release to roll back to".
        return Has(releases, "rollout v1 failed");
      case Op::kRollback:
        // An on-call rollback ends with the pipeline held (paused) for a human. The snapshot
        // reads the pipeline and its releases in two requests, so it waits for both.
        return Has(releases, "rollback v1 succeeded") && BoolField(pipeline, "paused");
      case Op::kFreeze:
        return BoolField(pipeline, "frozen") && StrField(pipeline, "freeze_reason") == q.reason;
      case Op::kUnfreeze:
        return !BoolField(pipeline, "frozen");
      case Op::kTokenCreate:
        return Has(seen.at("tokens"), "{lane}-new viewer") &&
               StrField(answer.body, "token").rfind("lst_", 0) == 0;
      case Op::kTokenRevoke:
        return Has(seen.at("tokens"), "{lane}-tok viewer revoked");
      case Op::kTokenList: {
        if (!answer.body.is_array()) return false;
        for (const auto& t : answer.body) {
          if (StrField(t, "name") == lane.id + "-tok") return StrField(t, "role") == "viewer";
        }
        return false;
      }
      case Op::kAgentRemove:
        return !Has(seen.at("agents"), "{lane}-host");
    }
    return false;
  }

  Fleet fleet_;
  Artifact artifact_;
  std::map<std::string, std::string> role_tokens_;  // by role
};

TEST_F(FrontDoorTest, EveryOperatorActionEndsTheSameThroughTheCliAndTheHttpApi) {
  const std::vector<Row>& rows = Table();
  std::vector<std::string> failed_rows;
  for (size_t i = 0; i < rows.size(); ++i) {
    const Row& row = rows[i];
    const std::string label = "row " + std::to_string(i + 1) + " (" + row.name + ")";
    const int parts_before =
        ::testing::UnitTest::GetInstance()->current_test_info()->result()->total_part_count();
    std::map<Door, Answer> answers;
    std::map<Door, json> after;
    for (Door door : kDoors) {
      const std::string where = label + " through " + DoorName(door);
      SCOPED_TRACE(where);
      Lane lane{LaneId(i, door), {}};
      if (!Prepare(row.setup, lane)) {
        ADD_FAILURE() << where << ": the setup failed";
        continue;
      }
      const Request q = Build(row, lane);
      const json before = Snapshot(lane);
      Answer answer = door == Door::kCli ? ThroughCli(row.op, q) : ThroughHttp(row.op, q);
      answer.message = Normalise(answer.message, lane);

      const Outcome want = door == Door::kHttp ? AsHttpShowsIt(row.expect) : row.expect;
      EXPECT_STREQ(OutcomeName(answer.outcome), OutcomeName(want))
          << where << ": the outcome\n  " << answer.raw;
      json seen = Snapshot(lane);
      if (answer.outcome != Outcome::kOk) {
        EXPECT_FALSE(answer.message.empty())
            << where << ": refused without a reason\n  " << answer.raw;
        EXPECT_EQ(seen.dump(), before.dump()) << where << ": refused, yet the lane changed";
      } else if (row.expect == Outcome::kOk) {
        const bool done = Fleet::WaitFor(
            [&] {
              seen = Snapshot(lane);
              return Done(row.op, lane, q, answer, seen);
            },
            kBound);
        EXPECT_TRUE(done) << where << ": the effect did not show; the lane: " << seen.dump()
                          << "\n  " << answer.raw;
      }
      after[door] = seen;
      answers[door] = answer;
    }

    if (answers.size() == std::size(kDoors)) {
      const Answer& cli = answers.at(Door::kCli);
      const Answer& http = answers.at(Door::kHttp);
      if (cli.outcome != Outcome::kOk && http.outcome != Outcome::kOk) {
        EXPECT_EQ(cli.message, http.message)
            << label << ": the two doors word the refusal differently\n  " << cli.raw << "\n  "
            << http.raw;
      }
      EXPECT_EQ(after.at(Door::kCli).dump(), after.at(Door::kHttp).dump())
          << label << ": the two doors left their lanes in different states";
    }
    if (::testing::UnitTest::GetInstance()->current_test_info()->result()->total_part_count() >
        parts_before) {
      failed_rows.push_back(label);
    }
  }
  if (!failed_rows.empty()) {
    std::cout << "front doors: " << failed_rows.size() << " of " << rows.size()
              << " rows differ from the table:\n";
    for (const auto& r : failed_rows) std::cout << "  " << r << "\n";
  }
}

}  // namespace
}  // namespace lockstep::testing
