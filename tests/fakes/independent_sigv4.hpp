// A second SigV4 implementation, for the fake upstream to check what the gateway sends.
//
// It shares no code with the product's signer (src/aws/): if the gateway canonicalised a path,
// a query or a header wrongly, a fake that checked it with the gateway's own code would agree
// with the mistake. This one is written from the SigV4 documentation and botocore's rules,
// with OpenSSL for the hashes, and is itself checked against the official AWS test suite
// (tests/unit/independent_sigv4_test.cpp). Only what a server needs: recompute the signature of
// a received request from its Authorization header, never sign.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace bgw::test::independent_sigv4 {

struct received {
    std::string method;
    std::string wire_path;  ///< as sent, before '?'
    std::string query;      ///< after '?', as sent
    /// Every header as received (names in any case, repeats kept in order); only those the
    /// Authorization header names are used.
    std::vector<std::pair<std::string, std::string>> headers;
    std::string payload_sha256;  ///< lowercase hex of the body as received
    std::string authorization;   ///< the Authorization header's value
    /// S3's rules: the path is neither normalised nor encoded a second time.
    bool s3 = false;
};

struct computed {
    std::string canonical_request;
    std::string string_to_sign;
    std::string signature;  ///< lowercase hex: what a correct client put in Authorization
    std::string claimed;    ///< the signature the Authorization header carries
};

/// The signature the request should carry, given the secret key of the access key it names;
/// nullopt when the Authorization header is not AWS4-HMAC-SHA256 with Credential,
/// SignedHeaders and Signature, or a signed header (or X-Amz-Date) is missing.
std::optional<computed> recompute(const received& r, std::string_view secret_key);

/// Lowercase hex SHA-256.
std::string sha256_hex(std::string_view data);

}  // namespace bgw::test::independent_sigv4
