// HostCredential: the credential lockstepd issued this host when it first enrolled, kept
// under the agent's root so that it survives restarts. With it the host proves it is itself;
// the enrollment token alone can no longer claim the host's name.
//
// The file holds one line. It is written to a fresh temporary file (O_CREAT|O_EXCL|
// O_NOFOLLOW, mode 0600), fsynced and renamed into place, so a crash leaves the old or the
// new credential, never a torn one; and it is read with O_NOFOLLOW, so a symbolic link
// planted in the root is never followed.
//
// Thread safety: the functions are independent; callers serialise writes to one path.
#pragma once

#include <string>

#include "common/status.h"

namespace lockstep::agent {

// The credential at `path`; "" if there is none yet. An unreadable or malformed file is an
// error (kUnavailable / kDataLoss) naming it.
StatusOr<std::string> LoadHostCredential(const std::string& path);
Status SaveHostCredential(const std::string& path, const std::string& credential);

}  // namespace lockstep::agent
