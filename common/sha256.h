// SHA-256 through OpenSSL's EVP API, incremental so that artifacts are hashed while they
// stream to disk.
#pragma once

#include <memory>
#include <string>
#include <string_view>

#include "common/status.h"

namespace lockstep {

class Sha256 {
 public:
  Sha256();
  ~Sha256();
  Sha256(const Sha256&) = delete;
  Sha256& operator=(const Sha256&) = delete;

  void Update(const void* data, size_t len);
  // Lower-case hex of the digest. The object must not be updated afterwards.
  std::string FinishHex();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

std::string Sha256Hex(std::string_view data);
StatusOr<std::string> Sha256File(const std::string& path);

// True if `hex` is 64 hex digits (either case).
bool IsSha256Hex(std::string_view hex);

// Compares two strings in time independent of where they differ.
bool ConstantTimeEquals(std::string_view a, std::string_view b);

}  // namespace lockstep
