// TLS for Lockstep's gRPC connections, from PEM files. grpcpp stays out of this header.
//
// Server: a certificate and key, and optionally a client CA: with it, clients must present
// a certificate signed by that CA (mutual TLS). Clients: the CA that signed the server's
// certificate, and optionally their own certificate and key for mutual TLS.
#pragma once

#include <memory>
#include <string>

#include "common/status.h"

namespace grpc {
class ChannelCredentials;
class ServerCredentials;
}  // namespace grpc

namespace lockstep {

struct TlsFiles {
  std::string ca;    // PEM: the CA to trust (client: server's CA; server: clients' CA)
  std::string cert;  // PEM: our certificate
  std::string key;   // PEM: our private key
  bool enabled() const { return !ca.empty() || !cert.empty() || !key.empty(); }
};

// Reads and parses each file given: a certificate, the private key that must match it, and
// a CA certificate. The error names the flag, the file and the problem (unreadable, not PEM,
// no certificate, a key that does not match the certificate). No file given: ok.
Status CheckTlsFiles(const TlsFiles& files, const std::string& cert_flag,
                     const std::string& ca_flag);

// Insecure credentials when no file is given. Errors name the unreadable file, or say
// which flag is missing (a cert needs its key).
StatusOr<std::shared_ptr<grpc::ServerCredentials>> ServerCredentialsFrom(const TlsFiles& files);
StatusOr<std::shared_ptr<grpc::ChannelCredentials>> ChannelCredentialsFrom(const TlsFiles& files);

}  // namespace lockstep
