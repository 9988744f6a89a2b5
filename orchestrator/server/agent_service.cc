// The agent stream: one ServerBidiReactor per connected agent. At most one write is in
// flight, and Finish is called once, only when no write is outstanding.
//
// Before authentication the stream is on probation: exactly one message (the hello) is read,
// and nothing more until the Hub accepts it (StreamHandle::Accept); a stream that has not
// been accepted within the hello deadline is ended; and unauthenticated streams are capped
// per peer address and in total, so a client without a token cannot make lockstepd hold
// more than a bounded number of them, however many it opens. After acceptance, reads are
// always pending, so a vanished client surfaces as a failed read.

#include <grpcpp/alarm.h>
#include <grpcpp/grpcpp.h>
#include <spdlog/spdlog.h>

#include <atomic>
#include <chrono>
#include <deque>
#include <map>
#include <mutex>

#include "orchestrator/server/hub.h"
#include "orchestrator/server/services.h"
#include "proto/lockstep.grpc.pb.h"

namespace lockstep {
namespace {

using lockstep::v1::AgentMessage;
using lockstep::v1::ServerMessage;

class AgentReactor;

// Counts of streams that have not been accepted yet, by peer address and in total.
class PendingStreams {
 public:
  explicit PendingStreams(const AgentServiceLimits& limits) : limits_(limits) {}
  // Takes a slot for `peer`, or returns false if a cap is reached.
  bool Take(const std::string& peer) {
    std::lock_guard lock(mu_);
    int& mine = by_peer_[peer];
    if (total_ >= limits_.max_pending_streams || mine >= limits_.max_pending_streams_per_peer) {
      if (mine == 0) by_peer_.erase(peer);
      ++refused_;
      return false;
    }
    ++mine;
    ++total_;
    return true;
  }
  void Release(const std::string& peer) {
    std::lock_guard lock(mu_);
    auto it = by_peer_.find(peer);
    if (it == by_peer_.end()) return;
    if (--it->second == 0) by_peer_.erase(it);
    --total_;
  }
  uint64_t refused() const {
    std::lock_guard lock(mu_);
    return refused_;
  }
  const AgentServiceLimits& limits() const { return limits_; }

 private:
  const AgentServiceLimits limits_;
  mutable std::mutex mu_;
  std::map<std::string, int> by_peer_;  // guarded by mu_
  int total_ = 0;                       // guarded by mu_
  uint64_t refused_ = 0;                // guarded by mu_
};

// "ipv4:127.0.0.1:5000" -> "ipv4:127.0.0.1"; "ipv6:[::1]:5000" -> "ipv6:[::1]".
std::string PeerAddress(const std::string& peer) {
  auto colon = peer.rfind(':');
  auto bracket = peer.rfind(']');
  if (colon == std::string::npos || (bracket != std::string::npos && colon < bracket)) return peer;
  return peer.substr(0, colon);
}

// The handle the Hub holds. It outlives the reactor; after Detach its calls are no-ops.
class ReactorHandle final : public StreamHandle {
 public:
  explicit ReactorHandle(AgentReactor* r) : reactor_(r) {}
  void Deliver(const ServerMessage& msg) override;
  void Close(const std::string& reason) override;
  void Accept() override;
  void CloseUnlessAccepted();
  void Detach() {
    std::lock_guard lock(mu_);
    reactor_ = nullptr;
  }

 private:
  std::mutex mu_;
  AgentReactor* reactor_;  // guarded by mu_; null once the reactor is done
};

class AgentReactor final : public grpc::ServerBidiReactor<AgentMessage, ServerMessage> {
 public:
  AgentReactor(Hub* hub, PendingStreams* pending, std::string peer)
      : hub_(hub),
        pending_(pending),
        peer_(std::move(peer)),
        handle_(std::make_shared<ReactorHandle>(this)) {
    // The alarm holds the handle, not the reactor: it may fire after the reactor is gone.
    std::weak_ptr<ReactorHandle> weak = handle_;
    hello_alarm_.Set(std::chrono::system_clock::now() +
                         std::chrono::milliseconds(pending_->limits().hello_timeout_ms),
                     [weak](bool fired) {
                       if (!fired) return;
                       if (auto h = weak.lock()) h->CloseUnlessAccepted();
                     });
    StartRead(&in_);
  }

  // A stream refused before its first read: too many unauthenticated streams, or this
  // lockstepd is a standby.
  AgentReactor(Hub* hub, grpc::Status refusal) : hub_(hub), pending_(nullptr) {
    finish_requested_ = true;
    finished_ = true;
    refused_ = true;
    Finish(std::move(refusal));
  }

  // Engine thread (through the handle): the hello was accepted; read what follows.
  void Accept() {
    {
      std::lock_guard lock(mu_);
      if (accepted_ || finish_requested_) return;
      accepted_ = true;
    }
    ReleasePending();
    hello_alarm_.Cancel();
    StartRead(&in_);
  }

  void CloseUnlessAccepted() {
    {
      std::lock_guard lock(mu_);
      if (accepted_) return;
    }
    RequestFinish(grpc::Status(
        grpc::StatusCode::DEADLINE_EXCEEDED,
        "no accepted hello within " + std::to_string(pending_->limits().hello_timeout_ms) + " ms"));
  }

  void Enqueue(const ServerMessage& msg) {
    std::lock_guard lock(mu_);
    if (finish_requested_) return;
    out_.push_back(msg);
    if (!writing_) {
      writing_ = true;
      StartWrite(&out_.front());
    }
  }

  void RequestFinish(grpc::Status status) {
    std::lock_guard lock(mu_);
    if (finish_requested_) return;
    finish_requested_ = true;
    finish_status_ = std::move(status);
    if (!writing_) FinishLocked();
  }

  void OnReadDone(bool ok) override {
    if (!ok) {
      RequestFinish(grpc::Status::OK);
      return;
    }
    bool accepted;
    {
      std::lock_guard lock(mu_);
      accepted = accepted_;
    }
    // `in_` is emptied before the hub sees the message: for a hello, the engine thread may
    // accept the stream, and so start the next read into `in_`, before this returns.
    AgentMessage msg = std::move(in_);
    in_.Clear();
    hub_->OnMessage(handle_, std::move(msg));
    // Before acceptance only the hello is read; Accept() starts the next read.
    if (accepted) StartRead(&in_);
  }

  void OnWriteDone(bool ok) override {
    std::lock_guard lock(mu_);
    out_.pop_front();
    if (!ok) {
      // The peer is gone; pending messages cannot be delivered.
      out_.clear();
      finish_requested_ = true;
    }
    if (!out_.empty()) {
      StartWrite(&out_.front());
      return;
    }
    writing_ = false;
    if (finish_requested_) FinishLocked();
  }

  // The client cancelled, or the connection broke or stopped answering keepalive pings.
  void OnCancel() override {
    cancelled_ = true;
    RequestFinish(grpc::Status::CANCELLED);
  }

  void OnDone() override {
    if (refused_) {
      delete this;
      return;
    }
    hello_alarm_.Cancel();
    ReleasePending();
    handle_->Detach();
    hub_->OnClosed(handle_, /*clean=*/!cancelled_.load());
    delete this;
  }

 private:
  void FinishLocked() {
    if (finished_) return;
    finished_ = true;
    Finish(finish_status_);
  }

  void ReleasePending() {
    if (pending_ && !released_.exchange(true)) pending_->Release(peer_);
  }

  Hub* const hub_;
  PendingStreams* const pending_;  // null for a refused stream
  const std::string peer_;
  const std::shared_ptr<ReactorHandle> handle_;
  grpc::Alarm hello_alarm_;
  AgentMessage in_;                     // only touched by the read chain, one read at a time
  std::atomic<bool> released_{false};   // the pending slot was given back
  std::atomic<bool> cancelled_{false};  // OnCancel ran: the stream did not end cleanly
  bool refused_ = false;                // set in the constructor only

  std::mutex mu_;
  std::deque<ServerMessage> out_;  // guarded by mu_; front() is in flight while writing_
  bool writing_ = false;           // guarded by mu_
  bool finish_requested_ = false;  // guarded by mu_
  bool finished_ = false;          // guarded by mu_
  bool accepted_ = false;          // guarded by mu_
  grpc::Status finish_status_;     // guarded by mu_
};

void ReactorHandle::Deliver(const ServerMessage& msg) {
  std::lock_guard lock(mu_);
  if (reactor_) reactor_->Enqueue(msg);
}

void ReactorHandle::Accept() {
  std::lock_guard lock(mu_);
  if (reactor_) reactor_->Accept();
}

void ReactorHandle::CloseUnlessAccepted() {
  std::lock_guard lock(mu_);
  if (reactor_) reactor_->CloseUnlessAccepted();
}

void ReactorHandle::Close(const std::string& reason) {
  std::lock_guard lock(mu_);
  if (!reactor_) return;
  ServerMessage reject;
  reject.mutable_reject()->set_reason(reason);
  reactor_->Enqueue(reject);
  reactor_->RequestFinish(grpc::Status(grpc::StatusCode::PERMISSION_DENIED, reason));
}

class AgentServiceImpl final : public lockstep::v1::AgentService::CallbackService {
 public:
  AgentServiceImpl(Hub* hub, const AgentServiceLimits& limits, std::function<std::string()> standby)
      : hub_(hub), pending_(limits), standby_(std::move(standby)) {}
  grpc::ServerBidiReactor<AgentMessage, ServerMessage>* Connect(
      grpc::CallbackServerContext* context) override {
    if (standby_) {
      if (std::string refusal = standby_(); !refusal.empty()) {
        return new AgentReactor(hub_, grpc::Status(grpc::StatusCode::UNAVAILABLE, refusal));
      }
    }
    std::string peer = PeerAddress(context->peer());
    if (!pending_.Take(peer)) {
      return new AgentReactor(
          hub_, grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED,
                             "too many unauthenticated agent streams; try again later"));
    }
    return new AgentReactor(hub_, &pending_, std::move(peer));
  }
  uint64_t refused() const { return pending_.refused(); }

 private:
  Hub* const hub_;
  PendingStreams pending_;
  const std::function<std::string()> standby_;
};

}  // namespace

std::unique_ptr<grpc::Service> MakeAgentService(Hub* hub, const AgentServiceLimits& limits,
                                                std::function<std::string()> standby) {
  return std::make_unique<AgentServiceImpl>(hub, limits, std::move(standby));
}

}  // namespace lockstep
