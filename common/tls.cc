#include "common/tls.h"

#include <grpcpp/grpcpp.h>
#include <grpcpp/security/credentials.h>
#include <grpcpp/security/server_credentials.h>

#include <fstream>
#include <sstream>

namespace lockstep {
namespace {

StatusOr<std::string> ReadPem(const std::string& path, const std::string& what) {
  std::ifstream in(path);
  if (!in) return NotFound("cannot read " + what + " file " + path);
  std::stringstream buf;
  buf << in.rdbuf();
  if (buf.str().find("-----BEGIN") == std::string::npos) {
    return InvalidArgument(what + " file " + path + " is not PEM");
  }
  return buf.str();
}

}  // namespace

StatusOr<std::shared_ptr<grpc::ServerCredentials>> ServerCredentialsFrom(const TlsFiles& f) {
  if (!f.enabled()) return grpc::InsecureServerCredentials();
  if (f.cert.empty() || f.key.empty()) {
    return InvalidArgument("TLS needs both --tls-cert and --tls-key");
  }
  auto cert = ReadPem(f.cert, "TLS certificate");
  if (!cert.ok()) return cert.status();
  auto key = ReadPem(f.key, "TLS key");
  if (!key.ok()) return key.status();
  grpc::SslServerCredentialsOptions opts(GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE);
  if (!f.ca.empty()) {
    auto ca = ReadPem(f.ca, "TLS client CA");
    if (!ca.ok()) return ca.status();
    opts.pem_root_certs = *ca;
    opts.client_certificate_request = GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY;
  }
  opts.pem_key_cert_pairs.push_back({*key, *cert});
  return grpc::SslServerCredentials(opts);
}

StatusOr<std::shared_ptr<grpc::ChannelCredentials>> ChannelCredentialsFrom(const TlsFiles& f) {
  if (!f.enabled()) return grpc::InsecureChannelCredentials();
  if (f.ca.empty()) return InvalidArgument("TLS needs --tls-ca (the server's CA)");
  if (f.cert.empty() != f.key.empty()) {
    return InvalidArgument("a client certificate needs both --tls-cert and --tls-key");
  }
  grpc::SslCredentialsOptions opts;
  auto ca = ReadPem(f.ca, "TLS CA");
  if (!ca.ok()) return ca.status();
  opts.pem_root_certs = *ca;
  if (!f.cert.empty()) {
    auto cert = ReadPem(f.cert, "TLS certificate");
    if (!cert.ok()) return cert.status();
    auto key = ReadPem(f.key, "TLS key");
    if (!key.ok()) return key.status();
    opts.pem_cert_chain = *cert;
    opts.pem_private_key = *key;
  }
  return grpc::SslCredentials(opts);
}

}  // namespace lockstep
