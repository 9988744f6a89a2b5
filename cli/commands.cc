#include "cli/commands.h"

#include <grpcpp/grpcpp.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <functional>
#include <iostream>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>
#include <thread>
#include <vector>

#include "common/clock.h"
#include "common/duration.h"
#include "common/json_views.h"
#include "common/random.h"
#include "common/standby.h"
#include "proto/lockstep.grpc.pb.h"

namespace lockstep::cli {
namespace {

using nlohmann::json;

constexpr int kOk = 0;
constexpr int kNotReached = 1;
constexpr int kUsage = 2;
constexpr int kServerError = 3;

// Following a watch (WatchRelease, WatchStatus) across lockstepd restarts: the first retry
// comes after kFirstRetry, doubling up to kMaxRetry; the channel reconnects as often.
constexpr std::chrono::milliseconds kFirstRetry{100};
constexpr std::chrono::milliseconds kMaxRetry{2000};
// lockstepd sends the current view again after 15 s without a message, so a watch silent
// for this long has a dead or wedged lockstepd at the other end (or a dead network).
constexpr std::chrono::milliseconds kSilenceLimit{40'000};
// `release create` tries again this long when lockstepd does not answer (a failover takes a
// lease ttl and a reconnect); its request id makes the retries one release.
constexpr std::chrono::milliseconds kCreateRetryFor{30'000};
// How long a call to several servers waits for a failover to produce a leader.
constexpr std::chrono::milliseconds kFailoverWait{15'000};

int Error(int code, const std::string& msg) {
  std::fprintf(stderr, "lockstep: %s\n", msg.c_str());
  return code;
}

int RpcError(const Context& ctx, const grpc::Status& st) {
  if (st.error_code() == grpc::StatusCode::UNAVAILABLE ||
      st.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED) {
    // Either the connection failed or lockstepd itself is unavailable (e.g. it cannot write
    // its store); the message says which. A connection cut during the first exchange is
    // most often one side speaking TLS and the other not: say so.
    const std::string& m = st.error_message();
    std::string hint;
    const bool cut = m.find("Socket closed") != std::string::npos ||
                     m.find("Connection reset") != std::string::npos;
    const bool handshake = m.find("andshake") != std::string::npos ||
                           m.find("SSL") != std::string::npos || m.find("ssl") != std::string::npos;
    if (!ctx.tls.enabled() && cut) {
      hint =
          " (if lockstepd serves gRPC with TLS, pass --tls-ca, and for mutual TLS --tls-cert "
          "and --tls-key)";
    } else if (ctx.tls.enabled() && (handshake || cut)) {
      hint =
          " (the TLS handshake failed: check that lockstepd serves TLS, that --tls-ca signed "
          "its certificate, and whether it requires a client certificate)";
    }
    return Error(kServerError, "lockstepd at " + ctx.server + " is unavailable: " + m + hint);
  }
  return Error(kServerError, st.error_message());
}

// Whether a call failed the way a failover looks: no lockstepd reached, one going away, or a
// standby that knows no leader yet. Not: a lockstepd that answered it cannot do the work (its
// store refuses writes), which waiting does not mend.
bool FailingOver(const grpc::Status& st) {
  if (st.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED) return true;
  if (st.error_code() != grpc::StatusCode::UNAVAILABLE) return false;
  for (const char* sign :
       {"failed to connect", "Connection refused", "Socket closed", "Connection reset",
        "Broken pipe", "standby", "shutting down", "connections to all backends failing"}) {
    if (st.error_message().find(sign) != std::string::npos) return true;
  }
  return false;
}

// The lockstepd servers named by --server (or $LOCKSTEP_SERVER): one, or several separated by
// commas, of which one leads. Calls go to the current one; a standby's refusal names the
// leader, which becomes the current one at once, and a server that cannot be reached gives
// way to the next.
class Client {
 public:
  explicit Client(const Context& ctx) : ctx_(ctx) {
    servers_ = SplitServerList(ctx.server);
    if (servers_.empty()) servers_.push_back(ctx.server);
    Connect(servers_.front());
  }

  // One call, following standbys to the leader and, when the current server cannot be
  // reached, trying the next one. With several servers listed, a call that reached no leader
  // (none answered, or standbys that know none yet: a failover under way) is tried again for
  // up to kFailoverWait; such a call did nothing anywhere, so trying again is safe.
  template <typename Req, typename Resp, typename Fn>
  grpc::Status Call(Fn fn, const Req& req, Resp* resp) {
    const Clock& clock = *SystemClock::Get();
    const MonoTime give_up = clock.Monotonic() + kFailoverWait;
    auto pause = kFirstRetry;
    grpc::Status st;
    for (int attempt = 0; attempt < 100; ++attempt) {
      grpc::ClientContext c;
      c.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(15));
      Authorize(&c);
      st = ((*stub_).*fn)(&c, req, resp);
      if (st.error_code() != grpc::StatusCode::UNAVAILABLE) return st;
      const std::string& m = st.error_message();
      const bool named = !LeaderNamedIn(m).empty() && LeaderNamedIn(m) != current_;
      const bool unreached = m.find("failed to connect") != std::string::npos ||
                             m.find("Connection refused") != std::string::npos ||
                             m.find("standby") != std::string::npos;
      if (!named && !unreached) return st;
      if (!MoveOn(st)) return st;
      if (named) continue;  // straight to the leader a standby named
      // Each server once without waiting; then, if several are listed, again after a pause.
      if ((attempt + 1) % static_cast<int>(servers_.size()) != 0) continue;
      if (servers_.size() < 2 || clock.Monotonic() + pause >= give_up) return st;
      std::fprintf(stderr, "lockstep: no lockstepd leads yet (%s: %s); trying again\n",
                   current_.c_str(), m.c_str());
      clock.SleepFor(pause);
      pause = std::min(pause * 2, std::chrono::duration_cast<std::chrono::milliseconds>(kMaxRetry));
    }
    return st;
  }

  // After a call to the current server failed with `st`: points at the leader it named, or
  // else at the next server listed. False if there is nowhere else to go.
  bool MoveOn(const grpc::Status& st) {
    std::string leader = LeaderNamedIn(st.error_message());
    if (!leader.empty() && leader != current_) {
      Connect(leader);
      return true;
    }
    if (servers_.size() < 2) return false;
    next_ = (next_ + 1) % servers_.size();
    Connect(servers_[next_]);
    return true;
  }

  // Adds the token to a call.
  void Authorize(grpc::ClientContext* c) const {
    if (!ctx_.token.empty()) c->AddMetadata("authorization", "Bearer " + ctx_.token);
  }

  v1::ControlService::Stub& stub() { return *stub_; }
  const std::string& current() const { return current_; }

 private:
  void Connect(const std::string& server) {
    current_ = server;
    auto credentials = ChannelCredentialsFrom(ctx_.tls);  // checked in main
    // Back within a retry or two of lockstepd returning, not after gRPC's own reconnect
    // backoff, which grows to two minutes. (GRPC_ARG_MIN_RECONNECT_BACKOFF_MS stays at its
    // default: it is also how long one connection attempt may take, TLS handshake included.)
    grpc::ChannelArguments args;
    args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, static_cast<int>(kFirstRetry.count()));
    args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, static_cast<int>(kMaxRetry.count()));
    stub_ = v1::ControlService::NewStub(grpc::CreateCustomChannel(
        server, credentials.ok() ? *credentials : grpc::InsecureChannelCredentials(), args));
  }

  const Context& ctx_;
  std::vector<std::string> servers_;
  size_t next_ = 0;
  std::string current_;
  std::unique_ptr<v1::ControlService::Stub> stub_;
};

std::string Time(int64_t ms) { return ms > 0 ? FormatUnixMs(ms) : ""; }

// A line a hook printed, as it may be shown on a terminal: control characters (an escape
// sequence a hostile or careless hook printed) become '?'.
std::string SanitizeForTerminal(std::string line) {
  for (char& ch : line) {
    const auto u = static_cast<unsigned char>(ch);
    if ((u < 0x20 && ch != '\t') || u == 0x7f) ch = '?';
  }
  return line;
}

// One line summarising where a release stands: its state, current wave and per-region
// counts. Printed whenever it changes while waiting.
// `bars`: draw each region's progress as a bar (for a terminal) instead of plain counts.
std::string ProgressLine(const v1::Release& r, bool bars = false) {
  std::string line = "release " + std::to_string(r.id()) + " " + r.state() +
                     (r.paused() ? " (paused by " + r.paused_by() + ")" : "");
  if (r.state() != "queued" && r.current_wave() >= 0 && r.current_wave() < r.waves_size()) {
    const auto& w = r.waves(r.current_wave());
    line += "  wave " + std::to_string(w.index() + 1) + "/" + std::to_string(r.waves_size()) + " " +
            w.name() + " (" + w.state() + ")";
    for (const auto& rp : w.regions()) {
      line += "  " + rp.region() + " ";
      if (bars) {
        constexpr int kWidth = 10;
        int filled = rp.selected() > 0 ? kWidth * rp.done() / rp.selected() : 0;
        line += "[" + std::string(static_cast<size_t>(filled), '#') +
                std::string(static_cast<size_t>(kWidth - filled), '.') + "] ";
      }
      line += std::to_string(rp.done()) + "/" + std::to_string(rp.selected());
      if (rp.failed() > 0) line += " (" + std::to_string(rp.failed()) + " failed)";
    }
  } else if (!r.reason().empty()) {
    line += "  " + r.reason();
  }
  return line;
}

void PrintReleaseText(const v1::Release& r) {
  std::printf("release %lld  %s %s  %s%s\n", static_cast<long long>(r.id()), r.pipeline().c_str(),
              r.version().c_str(), r.state().c_str(),
              r.paused() ? ("  (paused by " + r.paused_by() + ")").c_str() : "");
  if (!r.reason().empty()) std::printf("  reason:   %s\n", r.reason().c_str());
  std::printf("  artifact: %s\n  sha256:   %s\n", r.artifact_url().c_str(), r.sha256().c_str());
  if (!r.commit().empty()) {
    std::printf("  commit:   %s %s\n", r.commit().c_str(), r.author().c_str());
  }
  if (!r.previous_version().empty()) {
    std::printf("  previous: %s\n", r.previous_version().c_str());
  }
  std::printf("  created:  %s\n", Time(r.created_at_ms()).c_str());
  if (r.finished_at_ms() > 0) std::printf("  finished: %s\n", Time(r.finished_at_ms()).c_str());
  for (const auto& w : r.waves()) {
    std::printf("  wave %d %-12s %-10s", w.index() + 1, w.name().c_str(), w.state().c_str());
    for (const auto& rp : w.regions()) {
      std::printf("  %s %d/%d", rp.region().c_str(), rp.done(), rp.selected());
    }
    std::printf("\n");
    // The latest verdict of each metric gate in each region: the evidence the wave was
    // judged on.
    for (const auto& g : r.gates()) {
      if (g.wave() != w.index()) continue;
      std::printf("    gate %s in %s: %s  %s  (%s)\n", g.gate().c_str(), g.region().c_str(),
                  g.verdict().c_str(), g.detail().c_str(), Time(g.at_ms()).c_str());
    }
  }
  for (const auto& b : r.bringup()) {
    std::printf("  bring-up %s  %s  wave %d %s%s%s\n", b.region().c_str(), b.state().c_str(),
                b.wave() + 1, b.wave_name().c_str(), b.reason().empty() ? "" : "  ",
                b.reason().c_str());
  }
  for (const auto& h : r.hosts()) {
    std::printf("    %-16s %-16s wave %d  %-10s %s\n", h.agent().c_str(), h.region().c_str(),
                h.wave() + 1, h.state().c_str(), h.detail().c_str());
    if (h.output_tail().empty()) continue;
    // The failed hook's own words: what a release manager needs to see why it failed.
    std::printf("        output:\n");
    std::istringstream lines(h.output_tail());
    for (std::string line; std::getline(lines, line);) {
      std::printf("        %s\n", SanitizeForTerminal(line).c_str());
    }
  }
}

// Cancels a streaming call that stayed silent for kSilenceLimit, or whose `deadline` passed:
// a blocking Read cannot time out by itself. Watches from its own thread, for the life of
// the call. REQUIRES: `call` outlives it.
class Watchdog {
 public:
  Watchdog(grpc::ClientContext* call, std::optional<MonoTime> deadline)
      : call_(call),
        deadline_(deadline),
        clock_(*SystemClock::Get()),
        alarm_(clock_.NewAlarm()),
        silent_until_(clock_.Monotonic() + kSilenceLimit),
        thread_([this] { Run(); }) {}
  ~Watchdog() {
    {
      std::lock_guard lock(mu_);
      stop_ = true;
    }
    alarm_->Wake();
    thread_.join();
  }
  Watchdog(const Watchdog&) = delete;
  Watchdog& operator=(const Watchdog&) = delete;

  // A message arrived: the silence counts from now.
  void Heard() {
    std::lock_guard lock(mu_);
    silent_until_ = clock_.Monotonic() + kSilenceLimit;
  }
  // Whether it cancelled the call because the deadline passed (not for silence).
  bool deadline_passed() const {
    std::lock_guard lock(mu_);
    return deadline_passed_;
  }

 private:
  void Run() {
    std::unique_lock lock(mu_);
    while (!stop_) {
      const MonoTime now = clock_.Monotonic();
      const bool past_deadline = deadline_.has_value() && now >= *deadline_;
      if (past_deadline || now >= silent_until_) {
        deadline_passed_ = past_deadline;
        call_->TryCancel();
        return;
      }
      const MonoTime wake = deadline_ ? std::min(*deadline_, silent_until_) : silent_until_;
      lock.unlock();
      alarm_->WaitUntil(wake);  // woken early by the destructor; Heard only moves it later
      lock.lock();
    }
  }

  grpc::ClientContext* const call_;
  const std::optional<MonoTime> deadline_;
  const Clock& clock_;
  const std::unique_ptr<Alarm> alarm_;
  mutable std::mutex mu_;
  MonoTime silent_until_;         // guarded by mu_
  bool stop_ = false;             // guarded by mu_
  bool deadline_passed_ = false;  // guarded by mu_
  std::thread thread_;            // last: starts once the rest is set
};

// How a command follows a live view: a watch, or, from a lockstepd that serves none (older
// than the watches, or with every watch taken), the one-shot read looked at again and again,
// as the CLI did before the watches.
template <typename Msg>
struct Following {
  // Opens the watch (WatchRelease, WatchStatus) on `call`.
  std::function<std::unique_ptr<grpc::ClientReader<Msg>>(grpc::ClientContext* call)> open;
  // The one-shot read (GetRelease, GetStatus), and how long to wait after view `last`.
  std::function<grpc::Status(Msg* out)> poll;
  std::function<std::chrono::milliseconds(const Msg& last)> poll_every;
  // Shows a view; true when it is the last one the command wants.
  std::function<bool(const Msg& view)> on_view;
  // Called once per outage, after "lost contact ..." was printed. Optional.
  std::function<void()> on_lost;
  // None: until on_view says so, or an error.
  std::optional<MonoTime> deadline;
};

struct Followed {
  bool done = false;       // on_view returned true
  bool timed_out = false;  // the deadline passed while lockstepd was answering
  grpc::Status error;      // otherwise: why following stopped
};

// What a restart, a failover or a network cut looks like from a call: a call in flight when
// lockstepd stops (SIGTERM, an upgrade) ends CANCELLED or UNAVAILABLE (lockstepd ends its
// watches so); later ones find nobody listening (UNAVAILABLE) until it is back; a silent
// watch is cancelled by its Watchdog.
bool LostContact(const grpc::Status& st) {
  return st.error_code() == grpc::StatusCode::UNAVAILABLE ||
         st.error_code() == grpc::StatusCode::CANCELLED ||
         st.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED;
}

// Follows a live view until `f.on_view` has had what it wants, the deadline passes, or an
// error that is not a lost contact. A lost contact prints "lost contact with lockstepd at
// SERVER; retrying" once per outage and is retried (kFirstRetry doubling to kMaxRetry): the
// state lives on in lockstepd's store, and the first view after reconnecting is current.
template <typename Msg>
Followed Follow(const Context& ctx, Client& client, const Following<Msg>& f) {
  const Clock& clock = *SystemClock::Get();
  Followed out;
  bool watch = true;  // false: this lockstepd serves no watch, look again and again
  bool lost = false;
  std::chrono::milliseconds retry = kFirstRetry;
  // What is reported if the deadline passes before lockstepd answers again.
  grpc::Status last_error(grpc::StatusCode::DEADLINE_EXCEEDED, "no answer before the --timeout");
  auto answered = [&] {
    lost = false;
    retry = kFirstRetry;
  };
  for (;;) {
    grpc::Status st;
    if (watch) {
      grpc::ClientContext call;
      client.Authorize(&call);
      Watchdog dog(&call, f.deadline);
      std::unique_ptr<grpc::ClientReader<Msg>> reader = f.open(&call);
      bool heard = false;
      Msg view;
      while (reader->Read(&view)) {
        dog.Heard();
        heard = true;
        answered();
        if (f.on_view(view)) {
          out.done = true;
          break;
        }
      }
      if (out.done) {
        call.TryCancel();  // what follows the last view wanted (the stream's end) does not matter
        (void)reader->Finish();
        return out;
      }
      st = reader->Finish();
      if (dog.deadline_passed()) {
        // Answering until the deadline: the wait timed out. Not answering: lockstepd is gone.
        if (heard) {
          out.timed_out = true;
        } else {
          out.error = last_error;
        }
        return out;
      }
      const bool no_watch = st.error_code() == grpc::StatusCode::UNIMPLEMENTED ||
                            st.error_code() == grpc::StatusCode::RESOURCE_EXHAUSTED;
      if (no_watch && !heard) {
        watch = false;
        continue;
      }
      // A watch that ends without the view the command waits for was cut short.
      if (st.ok()) st = grpc::Status(grpc::StatusCode::UNAVAILABLE, "the watch ended early");
    } else {
      Msg view;
      st = f.poll(&view);
      if (st.ok()) {
        answered();
        if (f.on_view(view)) {
          out.done = true;
          return out;
        }
        if (f.deadline && clock.Monotonic() >= *f.deadline) {
          out.timed_out = true;
          return out;
        }
        clock.SleepFor(f.poll_every(view));
        continue;
      }
    }
    if (!LostContact(st) || (f.deadline && clock.Monotonic() >= *f.deadline)) {
      out.error = st;
      return out;
    }
    last_error = st;
    // A failover: the next look goes to the leader a standby named, or the next server.
    const bool moved = client.MoveOn(st);
    if (moved && !LeaderNamedIn(st.error_message()).empty()) continue;
    if (!lost) {
      std::fprintf(stderr, "lost contact with lockstepd at %s; retrying\n", ctx.server.c_str());
      lost = true;
      if (f.on_lost) f.on_lost();
    }
    std::chrono::milliseconds pause = retry;
    if (f.deadline) {
      pause = std::min(
          pause, std::chrono::ceil<std::chrono::milliseconds>(*f.deadline - clock.Monotonic()));
    }
    if (pause.count() > 0) clock.SleepFor(pause);
    retry = std::min(retry * 2, kMaxRetry);
  }
}

}  // namespace

int Wait(const Context& ctx, int64_t id, std::chrono::milliseconds timeout) {
  Client client(ctx);
  const bool tty = ::isatty(STDERR_FILENO) != 0;
  std::string last_line;
  v1::Release r;
  v1::ReleaseRef ref;
  ref.set_id(id);
  v1::GetReleaseRequest get;
  get.set_id(id);
  // lockstepd sends each change as it is committed; a restart (or failover) is ridden out:
  // the release lives on in its store.
  Following<v1::Release> f;
  f.deadline = SystemClock::Get()->Monotonic() + timeout;
  f.open = [&](grpc::ClientContext* call) { return client.stub().WatchRelease(call, ref); };
  f.poll = [&](v1::Release* out) {
    return client.Call(&v1::ControlService::Stub::GetRelease, get, out);
  };
  // On-call waits for a rollback that takes about a second: look often, so the command
  // returns within a few tens of milliseconds of the last host confirming.
  f.poll_every = [](const v1::Release& last) {
    return std::chrono::milliseconds(last.kind() == "rollback" ? 40 : 250);
  };
  // After an outage the current line is shown again, changed or not.
  f.on_lost = [&] { last_line.clear(); };
  f.on_view = [&](const v1::Release& view) {
    r = view;
    std::string line = ProgressLine(r, tty);
    if (line != last_line) {
      // Progress goes to stderr so that --output json keeps stdout machine-readable. On a
      // terminal the line redraws in place, with bars; piped, each change is a new line.
      if (tty) {
        std::fprintf(stderr, "\r\033[K%s", line.c_str());
      } else {
        std::fprintf(stderr, "%s  %s\n", FormatUnixMs(SystemClock::Get()->Now()).c_str(),
                     line.c_str());
      }
      last_line = line;
    }
    // Final, or halted: a halted release waits for a human, not for time.
    if (r.final() || r.state() == "halted") {
      if (tty) std::fprintf(stderr, "\n");
      return true;
    }
    return false;
  };
  Followed followed = Follow(ctx, client, f);
  if (followed.timed_out) {
    return Error(kNotReached, "gave up waiting for release " + std::to_string(id) + " after " +
                                  FormatDuration(timeout) + "; it is " + r.state());
  }
  if (!followed.done) return RpcError(ctx, followed.error);
  if (ctx.json) {
    std::cout << ReleaseJson(r).dump(2) << "\n";
  } else {
    PrintReleaseText(r);
  }
  if (r.state() != "succeeded") {
    return Error(kNotReached, "release " + std::to_string(id) + " " + r.state() +
                                  (r.reason().empty() ? "" : ": " + r.reason()));
  }
  return kOk;
}

namespace {

StatusOr<int64_t> ParseId(const std::string& text) {
  char* end = nullptr;
  long long id = std::strtoll(text.c_str(), &end, 10);
  if (text.empty() || !end || *end != '\0' || id <= 0) {
    return InvalidArgument("release id must be a positive number, got \"" + text + "\"");
  }
  return static_cast<int64_t>(id);
}

}  // namespace

int ReleaseCreate(const Context& ctx, const Flags& flags) {
  for (const char* f : {"pipeline", "version", "artifact", "sha256"}) {
    if (flags.Get(f).empty()) return Error(kUsage, std::string("--") + f + " is required");
  }
  auto timeout = ParseDuration(flags.Get("timeout"));
  if (!timeout.ok()) return Error(kUsage, "--timeout: " + timeout.status().message());
  Client client(ctx);
  v1::CreateReleaseRequest req;
  req.set_pipeline(flags.Get("pipeline"));
  req.set_version(flags.Get("version"));
  req.set_artifact_url(flags.Get("artifact"));
  req.set_sha256(flags.Get("sha256"));
  req.set_commit(flags.Get("commit"));
  req.set_author(flags.Get("author"));
  // One id for every attempt: lockstepd makes one release however often the request arrives,
  // so it can be retried across a failover, to whichever lockstepd leads by then.
  req.set_request_id("cli-" + RandomHex(16));
  v1::Release r;
  grpc::Status st;
  const Clock& clock = *SystemClock::Get();
  const MonoTime give_up = clock.Monotonic() + kCreateRetryFor;
  for (auto retry = kFirstRetry;; retry = std::min(retry * 2, kMaxRetry)) {
    st = client.Call(&v1::ControlService::Stub::CreateRelease, req, &r);
    if (!FailingOver(st) || clock.Monotonic() + retry >= give_up) break;
    std::fprintf(stderr, "lockstepd at %s did not answer (%s); trying again\n",
                 client.current().c_str(), st.error_message().c_str());
    client.MoveOn(st);
    clock.SleepFor(retry);
  }
  if (!st.ok()) return RpcError(ctx, st);
  if (flags.GetBool("wait")) {
    std::fprintf(stderr, "release %lld queued: %s %s\n", static_cast<long long>(r.id()),
                 r.pipeline().c_str(), r.version().c_str());
    return Wait(ctx, r.id(), *timeout);
  }
  if (ctx.json) {
    std::cout << ReleaseJson(r).dump(2) << "\n";
  } else {
    std::printf("release %lld queued: %s %s\n", static_cast<long long>(r.id()),
                r.pipeline().c_str(), r.version().c_str());
  }
  return kOk;
}

int ReleaseList(const Context& ctx, const Flags& flags) {
  Client client(ctx);
  v1::ListReleasesRequest req;
  req.set_pipeline(flags.Get("pipeline"));
  req.set_limit(std::atoi(flags.Get("limit").c_str()));
  req.set_state(flags.Get("state"));
  req.set_kind(flags.Get("kind"));
  v1::ListReleasesResponse resp;
  grpc::Status st = client.Call(&v1::ControlService::Stub::ListReleases, req, &resp);
  if (!st.ok()) return RpcError(ctx, st);
  if (ctx.json) {
    json j = json::array();
    for (const auto& r : resp.releases()) j.push_back(ReleaseJson(r));
    std::cout << j.dump(2) << "\n";
    return kOk;
  }
  std::printf("%-6s %-14s %-8s %-20s %-20s %s\n", "ID", "PIPELINE", "KIND", "VERSION", "STATE",
              "CREATED");
  for (const auto& r : resp.releases()) {
    std::printf("%-6lld %-14s %-8s %-20s %-20s %s\n", static_cast<long long>(r.id()),
                r.pipeline().c_str(), r.kind().empty() ? "rollout" : r.kind().c_str(),
                r.version().c_str(), r.state().c_str(), Time(r.created_at_ms()).c_str());
  }
  return kOk;
}

int ReleaseShow(const Context& ctx, const std::vector<std::string>& args,
                const std::string& pipeline) {
  if (args.size() != 1) return Error(kUsage, "usage: lockstep release show ID|latest");
  Client client(ctx);
  StatusOr<int64_t> id = NotFound("");
  if (args[0] == "latest") {
    v1::ListReleasesRequest lreq;
    lreq.set_pipeline(pipeline);
    lreq.set_limit(1);
    v1::ListReleasesResponse lresp;
    grpc::Status lst = client.Call(&v1::ControlService::Stub::ListReleases, lreq, &lresp);
    if (!lst.ok()) return RpcError(ctx, lst);
    if (lresp.releases_size() == 0) {
      return Error(kServerError, "no release yet" + (pipeline.empty() ? "" : " of " + pipeline));
    }
    id = lresp.releases(0).id();
  } else {
    if (!pipeline.empty()) return Error(kUsage, "--pipeline goes with `release show latest`");
    id = ParseId(args[0]);
  }
  if (!id.ok()) return Error(kUsage, id.status().message());
  v1::GetReleaseRequest req;
  req.set_id(*id);
  v1::Release r;
  grpc::Status st = client.Call(&v1::ControlService::Stub::GetRelease, req, &r);
  if (!st.ok()) return RpcError(ctx, st);
  if (ctx.json) {
    std::cout << ReleaseJson(r).dump(2) << "\n";
  } else {
    PrintReleaseText(r);
  }
  return kOk;
}

namespace {

// `lockstep status` as text or JSON.
std::string RenderStatus(const Context& ctx, const v1::StatusResponse& resp) {
  if (ctx.json) {
    json out = json::array();
    for (const auto& p : resp.pipelines()) out.push_back(PipelineStatusJson(p));
    return out.dump(2) + "\n";
  }
  std::string out;
  auto line = [&out](const std::string& l) { out += l + "\n"; };
  for (const auto& p : resp.pipelines()) {
    line("pipeline " + p.pipeline() + "  desired " +
         (p.desired_version().empty() ? "(none yet)" : p.desired_version()) +
         (p.paused() ? "  PAUSED by " + p.paused_by() : "") +
         (p.frozen() ? "  FROZEN: " + p.freeze_reason() : ""));
    if (p.has_active()) line("  in flight: " + ProgressLine(p.active()));
    for (const auto& rs : p.regions()) {
      line("  " + rs.region() + ": " + std::to_string(rs.hosts_size()) + " host(s)" +
           (rs.stage() == "bringup" ? "  (bring-up: takes releases in waves of its own)" : "") +
           (rs.hook_output() == "none" ? "  (hook output stays in the region)" : ""));
      for (const auto& h : rs.hosts()) {
        // A host already on the release in flight is where it is meant to be by now.
        const bool on_active =
            p.has_active() && p.active().in_flight() && h.current_version() == p.active().version();
        const bool drift = !p.desired_version().empty() &&
                           h.current_version() != p.desired_version() && !on_active;
        char buf[512];
        std::snprintf(buf, sizeof buf, "    %-16s %-20s %s%s", h.name().c_str(),
                      h.current_version().empty() ? "-" : h.current_version().c_str(),
                      h.connected() ? "connected" : "disconnected", drift ? "  (differs)" : "");
        line(buf);
      }
    }
  }
  return out;
}

}  // namespace

int Status(const Context& ctx, const std::vector<std::string>& args, bool watch) {
  if (args.size() > 1) return Error(kUsage, "usage: lockstep status [PIPELINE] [--watch]");
  Client client(ctx);
  v1::StatusRequest req;
  if (!args.empty()) req.set_pipeline(args[0]);
  if (!watch) {
    v1::StatusResponse resp;
    grpc::Status st = client.Call(&v1::ControlService::Stub::GetStatus, req, &resp);
    if (!st.ok()) return RpcError(ctx, st);
    std::cout << RenderStatus(ctx, resp);
    return kOk;
  }
  // Watching follows lockstepd's changes as they are committed, and rides out a lockstepd
  // restart, as waiting for a release does.
  std::string last;
  Following<v1::StatusResponse> f;
  f.open = [&](grpc::ClientContext* call) { return client.stub().WatchStatus(call, req); };
  f.poll = [&](v1::StatusResponse* out) {
    return client.Call(&v1::ControlService::Stub::GetStatus, req, out);
  };
  f.poll_every = [](const v1::StatusResponse&) { return std::chrono::milliseconds(500); };
  f.on_view = [&](const v1::StatusResponse& resp) {
    std::string now = RenderStatus(ctx, resp);
    // Printed only when something changed, under the time it was seen.
    if (now != last) {
      std::cout << "--- " << FormatUnixMs(SystemClock::Get()->Now()) << "\n" << now << std::flush;
      last = std::move(now);
    }
    return false;  // until interrupted
  };
  return RpcError(ctx, Follow(ctx, client, f).error);
}

int Agents(const Context& ctx, const std::string& region) {
  Client client(ctx);
  v1::ListAgentsRequest req;
  req.set_region(region);
  v1::ListAgentsResponse resp;
  grpc::Status st = client.Call(&v1::ControlService::Stub::ListAgents, req, &resp);
  if (!st.ok()) return RpcError(ctx, st);
  if (ctx.json) {
    json j = json::array();
    for (const auto& a : resp.agents()) j.push_back(AgentJson(a));
    std::cout << j.dump(2) << "\n";
    return kOk;
  }
  std::printf("%-16s %-16s %-12s %-20s %-13s %s\n", "NAME", "REGION", "PIPELINE", "VERSION",
              "STATE", "AGENT");
  for (const auto& a : resp.agents()) {
    std::printf("%-16s %-16s %-12s %-20s %-13s %s\n", a.name().c_str(), a.region().c_str(),
                a.pipeline().c_str(),
                a.current_version().empty() ? "-" : a.current_version().c_str(),
                a.connected() ? "connected" : "disconnected",
                a.agent_version().empty() ? "-" : a.agent_version().c_str());
  }
  return kOk;
}

int ReleaseWatch(const Context& ctx, const std::vector<std::string>& args,
                 std::chrono::milliseconds timeout) {
  if (args.size() != 1) return Error(kUsage, "usage: lockstep release watch ID");
  auto id = ParseId(args[0]);
  if (!id.ok()) return Error(kUsage, id.status().message());
  return Wait(ctx, *id, timeout);
}

int ReleaseAction(const Context& ctx, const std::string& action,
                  const std::vector<std::string>& args, const std::string& comment) {
  if (args.size() != 1) return Error(kUsage, "usage: lockstep " + action + " ID");
  auto id = ParseId(args[0]);
  if (!id.ok()) return Error(kUsage, id.status().message());
  size_t characters = 0;
  for (unsigned char ch : comment) {
    if (ch < 0x20 || ch == 0x7f) return Error(kUsage, "--comment: must be one line of text");
    characters += (ch & 0xC0) != 0x80;
  }
  if (characters > 500) return Error(kUsage, "--comment: longer than 500 characters");
  Client client(ctx);
  v1::ReleaseRef req;
  req.set_id(*id);
  req.set_comment(comment);
  v1::Release r;
  grpc::Status st = action == "approve" ? client.Call(&v1::ControlService::Stub::Approve, req, &r)
                                        : client.Call(&v1::ControlService::Stub::Abort, req, &r);
  if (!st.ok()) return RpcError(ctx, st);
  if (ctx.json) {
    std::cout << ReleaseJson(r).dump(2) << "\n";
  } else {
    std::printf("release %lld: %s requested (%s)\n", static_cast<long long>(r.id()), action.c_str(),
                r.state().c_str());
  }
  return kOk;
}

int PipelineAction(const Context& ctx, const std::string& action,
                   const std::vector<std::string>& args, const std::string& reason) {
  if (args.size() != 1) return Error(kUsage, "usage: lockstep " + action + " PIPELINE");
  Client client(ctx);
  v1::PipelineRef req;
  req.set_pipeline(args[0]);
  req.set_reason(reason);
  v1::Empty out;
  grpc::Status st;
  if (action == "pause") st = client.Call(&v1::ControlService::Stub::Pause, req, &out);
  if (action == "resume") st = client.Call(&v1::ControlService::Stub::Resume, req, &out);
  if (action == "freeze") st = client.Call(&v1::ControlService::Stub::Freeze, req, &out);
  if (action == "unfreeze") st = client.Call(&v1::ControlService::Stub::Unfreeze, req, &out);
  if (!st.ok()) return RpcError(ctx, st);
  if (ctx.json) {
    std::cout << json({{"pipeline", args[0]}, {"action", action}, {"ok", true}}).dump(2) << "\n";
  } else {
    std::printf("%s: %s\n", args[0].c_str(),
                action == "pause"    ? "paused"
                : action == "resume" ? "resumed"
                : action == "freeze" ? "frozen"
                                     : "unfrozen");
  }
  return kOk;
}

int Rollback(const Context& ctx, const std::vector<std::string>& args, const std::string& to,
             bool wait, bool accept_offline, std::chrono::milliseconds timeout) {
  if (args.size() != 1) return Error(kUsage, "usage: lockstep rollback PIPELINE [--to V]");
  auto started = std::chrono::steady_clock::now();
  Client client(ctx);
  v1::RollbackRequest req;
  req.set_pipeline(args[0]);
  req.set_to_version(to);
  v1::Release r;
  grpc::Status st = client.Call(&v1::ControlService::Stub::Rollback, req, &r);
  if (!st.ok()) return RpcError(ctx, st);
  std::fprintf(stderr, "rollback %lld: every host of %s to %s\n", static_cast<long long>(r.id()),
               r.pipeline().c_str(), r.version().c_str());
  if (!wait) {
    if (ctx.json) std::cout << ReleaseJson(r).dump(2) << "\n";
    return kOk;
  }
  int rc = Wait(ctx, r.id(), timeout);
  if (rc != kOk) return rc;
  const double secs =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  // The rollback took every host that was up. Say exactly which registered hosts are not on
  // the target: those that were offline (they converge when they return).
  v1::StatusRequest sreq;
  sreq.set_pipeline(r.pipeline());
  v1::StatusResponse status;
  st = client.Call(&v1::ControlService::Stub::GetStatus, sreq, &status);
  if (!st.ok()) return RpcError(ctx, st);
  std::vector<std::string> behind;
  size_t hosts = 0;
  for (const auto& p : status.pipelines()) {
    for (const auto& region : p.regions()) {
      for (const auto& h : region.hosts()) {
        ++hosts;
        if (h.current_version() == r.version()) continue;
        behind.push_back(h.name() + " (" + (h.connected() ? "connected" : "offline") + ", on " +
                         (h.current_version().empty() ? "nothing" : h.current_version()) + ")");
      }
    }
  }
  // lockstepd holds (pauses) the pipeline after an on-call rollback; say what that means.
  for (const auto& p : status.pipelines()) {
    if (!p.paused()) continue;
    std::fprintf(stderr,
                 "%s is held (paused by %s): queued releases wait, and returning hosts "
                 "converge, only after `lockstep resume %s`\n",
                 r.pipeline().c_str(), p.paused_by().c_str(), r.pipeline().c_str());
  }
  if (behind.empty()) {
    std::fprintf(stderr, "every host of %s is on %s (%zu hosts, %.2fs)\n", r.pipeline().c_str(),
                 r.version().c_str(), hosts, secs);
    return kOk;
  }
  std::string names;
  for (const auto& b : behind) names += (names.empty() ? "" : ", ") + b;
  std::fprintf(stderr, "%zu of %zu hosts of %s are on %s (%.2fs); not on it: %s\n",
               hosts - behind.size(), hosts, r.pipeline().c_str(), r.version().c_str(), secs,
               names.c_str());
  if (accept_offline) {
    std::fprintf(stderr,
                 "accepted with --accept-offline: they converge to %s when they return and the "
                 "pipeline is resumed\n",
                 r.version().c_str());
    return kOk;
  }
  return Error(kNotReached,
               "not every host is on " + r.version() + " (" + std::to_string(behind.size()) +
                   " not); they converge when they return and the pipeline is resumed, or pass "
                   "--accept-offline");
}

int Audit(const Context& ctx, int limit) {
  Client client(ctx);
  v1::AuditRequest req;
  req.set_limit(limit);
  v1::AuditResponse resp;
  grpc::Status st = client.Call(&v1::ControlService::Stub::ListAudit, req, &resp);
  if (!st.ok()) return RpcError(ctx, st);
  if (ctx.json) {
    json j = json::array();
    for (const auto& e : resp.entries()) j.push_back(AuditJson(e));
    std::cout << j.dump(2) << "\n";
    return kOk;
  }
  for (const auto& e : resp.entries()) {
    std::printf("%s  %-18s %-24s %-14s %s %s\n", Time(e.at_ms()).c_str(), e.actor().c_str(),
                e.action().c_str(), e.target().c_str(), e.outcome().c_str(), e.detail().c_str());
  }
  return kOk;
}

int TokensCreate(const Context& ctx, const std::string& role, const std::string& name,
                 const std::string& region, int64_t expires_in_ms) {
  if (role.empty() || name.empty()) {
    return Error(kUsage, "usage: lockstep tokens create --role ROLE --name NAME [--region R]");
  }
  Client client(ctx);
  v1::CreateTokenRequest req;
  req.set_role(role);
  req.set_name(name);
  req.set_region(region);
  req.set_expires_in_ms(expires_in_ms);
  v1::CreateTokenResponse resp;
  grpc::Status st = client.Call(&v1::ControlService::Stub::CreateToken, req, &resp);
  if (!st.ok()) return RpcError(ctx, st);
  if (ctx.json) {
    std::cout
        << json({{"name", resp.name()}, {"role", resp.role()}, {"token", resp.token()}}).dump(2)
        << "\n";
  } else {
    std::printf("%s\n", resp.token().c_str());
    std::fprintf(stderr, "token \"%s\" (%s) created; it is shown only once\n", resp.name().c_str(),
                 resp.role().c_str());
  }
  return kOk;
}

int TokensList(const Context& ctx) {
  Client client(ctx);
  v1::Empty req;
  v1::ListTokensResponse resp;
  grpc::Status st = client.Call(&v1::ControlService::Stub::ListTokens, req, &resp);
  if (!st.ok()) return RpcError(ctx, st);
  if (ctx.json) {
    json j = json::array();
    for (const auto& t : resp.tokens()) j.push_back(TokenJson(t));
    std::cout << j.dump(2) << "\n";
    return kOk;
  }
  auto when = [](int64_t ms, const char* none) { return ms == 0 ? std::string(none) : Time(ms); };
  std::printf("%-24s %-16s %-16s %-20s %-20s %-20s %s\n", "NAME", "ROLE", "REGION", "CREATED",
              "LAST USED", "EXPIRES", "REVOKED");
  for (const auto& t : resp.tokens()) {
    std::printf("%-24s %-16s %-16s %-20s %-20s %-20s %s\n", t.name().c_str(), t.role().c_str(),
                t.region().empty() ? "-" : t.region().c_str(), Time(t.created_at_ms()).c_str(),
                when(t.last_used_at_ms(), "never").c_str(),
                when(t.expires_at_ms(), "never").c_str(), when(t.revoked_at_ms(), "-").c_str());
  }
  return kOk;
}

int TokensRevoke(const Context& ctx, const std::string& name) {
  Client client(ctx);
  v1::TokenRef req;
  req.set_name(name);
  v1::Empty resp;
  grpc::Status st = client.Call(&v1::ControlService::Stub::RevokeToken, req, &resp);
  if (!st.ok()) return RpcError(ctx, st);
  if (ctx.json) {
    std::cout << json({{"revoked", name}}).dump(2) << "\n";
  } else {
    std::fprintf(stderr, "token \"%s\" revoked\n", name.c_str());
  }
  return kOk;
}

int AgentsRemove(const Context& ctx, const std::string& name) {
  Client client(ctx);
  v1::AgentRef req;
  req.set_name(name);
  v1::Empty resp;
  grpc::Status st = client.Call(&v1::ControlService::Stub::RemoveAgent, req, &resp);
  if (!st.ok()) return RpcError(ctx, st);
  if (ctx.json) {
    std::cout << json({{"removed", name}}).dump(2) << "\n";
  } else {
    std::fprintf(stderr, "agent \"%s\" removed; it must enroll again to return\n", name.c_str());
  }
  return kOk;
}

}  // namespace lockstep::cli
