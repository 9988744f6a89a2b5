// The agent stream: one ServerBidiReactor per connected agent. Reads are always pending (so
// a vanished client surfaces as a failed read), at most one write is in flight, and Finish is
// called once, only when no write is outstanding.

#include <grpcpp/grpcpp.h>
#include <spdlog/spdlog.h>

#include <deque>
#include <mutex>

#include "orchestrator/server/hub.h"
#include "orchestrator/server/services.h"
#include "proto/lockstep.grpc.pb.h"

namespace lockstep {
namespace {

using lockstep::v1::AgentMessage;
using lockstep::v1::ServerMessage;

class AgentReactor;

// The handle the Hub holds. It outlives the reactor; after Detach its calls are no-ops.
class ReactorHandle final : public StreamHandle {
 public:
  explicit ReactorHandle(AgentReactor* r) : reactor_(r) {}
  void Deliver(const ServerMessage& msg) override;
  void Close(const std::string& reason) override;
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
  explicit AgentReactor(Hub* hub) : hub_(hub), handle_(std::make_shared<ReactorHandle>(this)) {
    StartRead(&in_);
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
    hub_->OnMessage(handle_, std::move(in_));
    in_.Clear();
    StartRead(&in_);
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

  void OnCancel() override { RequestFinish(grpc::Status::CANCELLED); }

  void OnDone() override {
    handle_->Detach();
    hub_->OnClosed(handle_);
    delete this;
  }

 private:
  void FinishLocked() {
    if (finished_) return;
    finished_ = true;
    Finish(finish_status_);
  }

  Hub* const hub_;
  const std::shared_ptr<ReactorHandle> handle_;
  AgentMessage in_;  // only touched by the read chain, one read at a time

  std::mutex mu_;
  std::deque<ServerMessage> out_;  // guarded by mu_; front() is in flight while writing_
  bool writing_ = false;           // guarded by mu_
  bool finish_requested_ = false;  // guarded by mu_
  bool finished_ = false;          // guarded by mu_
  grpc::Status finish_status_;     // guarded by mu_
};

void ReactorHandle::Deliver(const ServerMessage& msg) {
  std::lock_guard lock(mu_);
  if (reactor_) reactor_->Enqueue(msg);
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
  explicit AgentServiceImpl(Hub* hub) : hub_(hub) {}
  grpc::ServerBidiReactor<AgentMessage, ServerMessage>* Connect(
      grpc::CallbackServerContext* /*context*/) override {
    return new AgentReactor(hub_);
  }

 private:
  Hub* const hub_;
};

}  // namespace

std::unique_ptr<grpc::Service> MakeAgentService(Hub* hub) {
  return std::make_unique<AgentServiceImpl>(hub);
}

}  // namespace lockstep
