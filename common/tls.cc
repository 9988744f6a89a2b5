#include "common/tls.h"

#include <grpcpp/grpcpp.h>
#include <grpcpp/security/credentials.h>
#include <grpcpp/security/server_credentials.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include <fstream>
#include <memory>
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

std::string OpensslError() {
  unsigned long e = ERR_get_error();
  ERR_clear_error();
  if (e == 0) return "no PEM data of that kind";
  char buf[256];
  ERR_error_string_n(e, buf, sizeof buf);
  return buf;
}

using Bio = std::unique_ptr<BIO, decltype(&BIO_free)>;
using X509Ptr = std::unique_ptr<X509, decltype(&X509_free)>;
using KeyPtr = std::unique_ptr<EVP_PKEY, decltype(&EVP_PKEY_free)>;

StatusOr<X509Ptr> ParseCert(const std::string& pem, const std::string& what,
                            const std::string& path) {
  Bio bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())), &BIO_free);
  X509Ptr cert(PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr), &X509_free);
  if (!cert) {
    return InvalidArgument(what + " file " + path + " holds no certificate: " + OpensslError());
  }
  return cert;
}

}  // namespace

Status CheckTlsFiles(const TlsFiles& f, const std::string& cert_flag, const std::string& ca_flag) {
  if (!f.cert.empty()) {
    LOCKSTEP_ASSIGN_OR_RETURN(auto cert_pem,
                              ReadPem(f.cert, "TLS certificate (" + cert_flag + ")"));
    LOCKSTEP_ASSIGN_OR_RETURN(auto cert,
                              ParseCert(cert_pem, "TLS certificate (" + cert_flag + ")", f.cert));
    if (f.key.empty()) return InvalidArgument(cert_flag + " needs its key (--tls-key)");
    LOCKSTEP_ASSIGN_OR_RETURN(auto key_pem, ReadPem(f.key, "TLS key (--tls-key)"));
    Bio bio(BIO_new_mem_buf(key_pem.data(), static_cast<int>(key_pem.size())), &BIO_free);
    KeyPtr key(PEM_read_bio_PrivateKey(bio.get(), nullptr, nullptr, nullptr), &EVP_PKEY_free);
    if (!key) {
      return InvalidArgument("TLS key file " + f.key + " holds no private key: " + OpensslError());
    }
    if (X509_check_private_key(cert.get(), key.get()) != 1) {
      ERR_clear_error();
      return InvalidArgument("TLS key file " + f.key + " does not match the certificate in " +
                             f.cert);
    }
  }
  if (!f.ca.empty()) {
    LOCKSTEP_ASSIGN_OR_RETURN(auto ca_pem, ReadPem(f.ca, "TLS CA (" + ca_flag + ")"));
    LOCKSTEP_ASSIGN_OR_RETURN(auto ca, ParseCert(ca_pem, "TLS CA (" + ca_flag + ")", f.ca));
  }
  return Status::Ok();
}

StatusOr<std::shared_ptr<grpc::ServerCredentials>> ServerCredentialsFrom(const TlsFiles& f) {
  if (!f.enabled()) return grpc::InsecureServerCredentials();
  if (f.cert.empty() || f.key.empty()) {
    return InvalidArgument("TLS needs both --tls-cert and --tls-key");
  }
  LOCKSTEP_RETURN_IF_ERROR(CheckTlsFiles(f, "--tls-cert", "--tls-client-ca"));
  LOCKSTEP_ASSIGN_OR_RETURN(auto cert, ReadPem(f.cert, "TLS certificate"));
  LOCKSTEP_ASSIGN_OR_RETURN(auto key, ReadPem(f.key, "TLS key"));
  grpc::SslServerCredentialsOptions opts(GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE);
  if (!f.ca.empty()) {
    LOCKSTEP_ASSIGN_OR_RETURN(auto ca, ReadPem(f.ca, "TLS client CA"));
    opts.pem_root_certs = ca;
    opts.client_certificate_request = GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY;
  }
  opts.pem_key_cert_pairs.push_back({key, cert});
  return grpc::SslServerCredentials(opts);
}

StatusOr<std::shared_ptr<grpc::ChannelCredentials>> ChannelCredentialsFrom(const TlsFiles& f) {
  if (!f.enabled()) return grpc::InsecureChannelCredentials();
  if (f.ca.empty()) return InvalidArgument("TLS needs --tls-ca (the server's CA)");
  if (f.cert.empty() != f.key.empty()) {
    return InvalidArgument("a client certificate needs both --tls-cert and --tls-key");
  }
  LOCKSTEP_RETURN_IF_ERROR(CheckTlsFiles(f, "--tls-cert", "--tls-ca"));
  grpc::SslCredentialsOptions opts;
  LOCKSTEP_ASSIGN_OR_RETURN(auto ca, ReadPem(f.ca, "TLS CA"));
  opts.pem_root_certs = ca;
  if (!f.cert.empty()) {
    LOCKSTEP_ASSIGN_OR_RETURN(auto cert, ReadPem(f.cert, "TLS certificate"));
    LOCKSTEP_ASSIGN_OR_RETURN(auto key, ReadPem(f.key, "TLS key"));
    opts.pem_cert_chain = cert;
    opts.pem_private_key = key;
  }
  return grpc::SslCredentials(opts);
}

}  // namespace lockstep
