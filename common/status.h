// Status: the outcome of an operation that can fail for a reason a user can act on.
//
// Errors cross module boundaries as Status values, never as exceptions: adapters around
// libraries that throw (yaml-cpp, SQLite wrappers, Boost) catch and convert. A Status carries
// a code (what kind of failure, so callers can branch) and a one-line message (what went
// wrong, naming the thing that was wrong).
#pragma once

#include <optional>
#include <string>
#include <utility>
#include <variant>

namespace lockstep {

enum class StatusCode {
  kOk = 0,
  kInvalidArgument,  // bad input: malformed, out of range, unknown name
  kNotFound,
  kAlreadyExists,
  kFailedPrecondition,  // the request is valid but the current state forbids it
  kPermissionDenied,
  kUnauthenticated,
  kUnavailable,  // transient: network, peer gone; retrying may help
  kDeadlineExceeded,
  kResourceExhausted,  // a limit was reached (streams, connections); later may succeed
  kDataLoss,           // a digest mismatch, a truncated body
  kInternal,           // storage failure, invariant broken
};

const char* StatusCodeName(StatusCode code);

// The HTTP status that answers a request that ended with `code`: 200, 400, 401, 403, 404,
// 409 (precondition, already exists), 429 (resource exhausted), 503 (unavailable), 504
// (deadline exceeded), 500 otherwise.
int HttpStatusOf(StatusCode code);

class [[nodiscard]] Status {
 public:
  Status() = default;
  Status(StatusCode code, std::string message) : code_(code), message_(std::move(message)) {}

  static Status Ok() { return {}; }
  bool ok() const { return code_ == StatusCode::kOk; }
  StatusCode code() const { return code_; }
  const std::string& message() const { return message_; }
  // "invalid argument: <message>"; "ok" for success.
  std::string ToString() const;

  // Returns a copy whose message is prefixed with `context: `.
  Status WithContext(const std::string& context) const;

 private:
  StatusCode code_ = StatusCode::kOk;
  std::string message_;
};

inline Status InvalidArgument(std::string m) {
  return {StatusCode::kInvalidArgument, std::move(m)};
}
inline Status NotFound(std::string m) { return {StatusCode::kNotFound, std::move(m)}; }
inline Status FailedPrecondition(std::string m) {
  return {StatusCode::kFailedPrecondition, std::move(m)};
}
inline Status Unavailable(std::string m) { return {StatusCode::kUnavailable, std::move(m)}; }
inline Status Internal(std::string m) { return {StatusCode::kInternal, std::move(m)}; }
inline Status PermissionDenied(std::string m) {
  return {StatusCode::kPermissionDenied, std::move(m)};
}
inline Status Unauthenticated(std::string m) {
  return {StatusCode::kUnauthenticated, std::move(m)};
}
inline Status ResourceExhausted(std::string m) {
  return {StatusCode::kResourceExhausted, std::move(m)};
}
inline Status DataLoss(std::string m) { return {StatusCode::kDataLoss, std::move(m)}; }
inline Status DeadlineExceeded(std::string m) {
  return {StatusCode::kDeadlineExceeded, std::move(m)};
}

// The error a StatusOr holds when it was built from an OK status, which would otherwise be
// neither a value nor an error. Defined out of line so the message lives in one place.
Status OkStatusWithoutValue();

// StatusOr<T>: a value or the Status explaining why there is none. It is never both and never
// neither: built from an OK Status (a bug: there is no value to hold), it holds the kInternal
// error OkStatusWithoutValue() instead, so the mistake surfaces as an error a caller reports
// rather than as a "success" whose value() is empty.
template <typename T>
class [[nodiscard]] StatusOr {
 public:
  StatusOr(T value) : value_(std::move(value)) {}  // NOLINT: implicit by design
  StatusOr(Status status)                          // NOLINT: implicit by design
      : status_(status.ok() ? OkStatusWithoutValue() : std::move(status)) {}

  bool ok() const { return value_.has_value(); }
  const Status& status() const { return status_; }
  // REQUIRES: ok().
  T& value() & { return *value_; }
  const T& value() const& { return *value_; }
  // By value, so that `Fn().value()[0]` does not dangle.
  T value() && { return std::move(*value_); }
  T* operator->() { return &*value_; }
  const T* operator->() const { return &*value_; }
  T& operator*() { return *value_; }
  const T& operator*() const { return *value_; }

 private:
  std::optional<T> value_;
  Status status_;
};

}  // namespace lockstep

#define LOCKSTEP_RETURN_IF_ERROR(expr) \
  do {                                 \
    ::lockstep::Status _st = (expr);   \
    if (!_st.ok()) return _st;         \
  } while (0)

// LOCKSTEP_ASSIGN_OR_RETURN(decl, expr): evaluates `expr` (a StatusOr); on error returns its
// Status from the enclosing function, otherwise moves the value into `decl`, e.g.
//   LOCKSTEP_ASSIGN_OR_RETURN(auto release, store->GetRelease(id));
// `decl` may also name an existing variable. Uses one hidden local per line.
#define LOCKSTEP_STATUS_CONCAT_INNER(a, b) a##b
#define LOCKSTEP_STATUS_CONCAT(a, b) LOCKSTEP_STATUS_CONCAT_INNER(a, b)
#define LOCKSTEP_ASSIGN_OR_RETURN(decl, expr) \
  LOCKSTEP_ASSIGN_OR_RETURN_IMPL(LOCKSTEP_STATUS_CONCAT(_status_or_, __LINE__), decl, expr)
#define LOCKSTEP_ASSIGN_OR_RETURN_IMPL(tmp, decl, expr) \
  auto tmp = (expr);                                    \
  if (!tmp.ok()) return tmp.status();                   \
  decl = std::move(tmp).value()
