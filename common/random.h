// Unguessable identifiers from OpenSSL's CSPRNG: credentials, gate check ids.
//
// Thread-safe. Aborts the process if the CSPRNG fails: handing out a guessable secret is
// worse than not running.
#pragma once

#include <cstddef>
#include <string>

namespace lockstep {

// `bytes` random bytes as 2*bytes lower-case hex digits.
std::string RandomHex(size_t bytes);

}  // namespace lockstep
