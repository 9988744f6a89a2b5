// How GitHub signs a webhook delivery (X-Hub-Signature-256), for tests that send one: HMAC-SHA256
// (RFC 2104) built from the project's SHA-256, independent of the verifier under test.
#pragma once

#include <string>

#include "common/sha256.h"

namespace lockstep::testing {

inline std::string HexToBytes(const std::string& hex) {
  std::string out;
  for (size_t i = 0; i + 1 < hex.size(); i += 2) {
    out.push_back(static_cast<char>(std::stoi(hex.substr(i, 2), nullptr, 16)));
  }
  return out;
}

// "sha256=<hex>" of `body` under `secret`.
inline std::string GithubSignature(const std::string& secret, const std::string& body) {
  std::string key = secret.size() > 64 ? HexToBytes(Sha256Hex(secret)) : secret;
  key.resize(64, '\0');
  std::string ipad = key, opad = key;
  for (auto& c : ipad) c = static_cast<char>(c ^ 0x36);
  for (auto& c : opad) c = static_cast<char>(c ^ 0x5c);
  std::string inner = HexToBytes(Sha256Hex(ipad + body));
  return "sha256=" + Sha256Hex(opad + inner);
}

}  // namespace lockstep::testing
