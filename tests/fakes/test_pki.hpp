#pragma once
/// A throw-away certificate authority for tests: a CA and a server certificate it signed, made
/// in memory with OpenSSL (EC P-256), so TLS tests need no key material in the repository.

#include <string>
#include <string_view>

namespace bgw::test {

struct test_pki {
    std::string ca_pem;    ///< the CA certificate: what a client trusts (upstream.ca_file)
    std::string cert_pem;  ///< the server certificate, subjectAltName DNS:<name>
    std::string key_pem;   ///< the server's private key (PKCS#8)
};

/// A new CA and a server certificate for `dns_name`, valid from an hour ago for two days.
/// Throws std::runtime_error if OpenSSL fails (test set-up).
test_pki make_test_pki(std::string_view dns_name = "localhost");

}  // namespace bgw::test
