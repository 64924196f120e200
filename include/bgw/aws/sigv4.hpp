#pragma once
/// AWS Signature Version 4, as a pure library: fixed bytes in, fixed bytes out. No I/O, no clock.
/// Spec: https://docs.aws.amazon.com/IAM/latest/UserGuide/create-signed-request.html
/// Validated against the AWS SigV4 test suite (both formats) and botocore-generated Bedrock
/// vectors in tests/reference (tests/unit/sigv4_vectors_test.cpp).

#include <array>
#include <chrono>
#include <cstdint>
#include <initializer_list>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace bgw::aws {

/// One HTTP header as sent on the wire (any case; repeated names allowed).
struct header {
    std::string name;
    std::string value;
};

/// AWS credentials. Never logged, never printed.
struct credentials {
    std::string access_key_id;
    std::string secret_access_key;
    std::string session_token;  ///< empty when the credentials are long-term
};

/// Everything the signature covers.
struct signing_input {
    std::string_view method;          ///< "POST"
    std::string_view wire_path;       ///< path bytes exactly as sent (already percent-encoded)
    std::string_view query;           ///< raw query as sent, without '?'; may be empty
    std::span<const header> headers;  ///< headers as sent; the signer skips the unsignable ones
    std::string_view payload_sha256;  ///< lowercase hex SHA-256 of the body
    std::string_view region;          ///< "us-east-1"
    std::string_view service;         ///< signing name: "bedrock", "s3", "sts", ...
    std::chrono::sys_seconds time;    ///< the X-Amz-Date instant
    /// Non-S3 services: remove dot segments and duplicate slashes, then percent-encode the
    /// (already encoded) wire path again, so `%3A` becomes `%253A`. S3: both false.
    bool normalize_path = true;
    bool double_encode_path = true;
};

/// Headers that are never signed (hop-by-hop and botocore's SIGNED_HEADERS_BLACKLIST).
bool is_unsigned_header(std::string_view lower_case_name);

/// Stage 1: the canonical request.
std::string canonical_request(const signing_input& in);
/// The canonical URI alone (normalised and re-encoded as `in` says).
std::string canonical_uri(const signing_input& in);
/// The canonical query string alone.
std::string canonical_query(std::string_view raw_query);
/// "host;x-amz-date": the sorted, lower-cased, de-duplicated names of the signed headers.
std::string signed_header_names(std::span<const header> headers);

/// Stage 2: the string to sign.
std::string string_to_sign(std::string_view canonical_request, const signing_input& in);

/// `20150830T123600Z`
std::string format_amz_date(std::chrono::sys_seconds t);
/// Parses `20150830T123600Z`; nullopt when malformed.
std::optional<std::chrono::sys_seconds> parse_amz_date(std::string_view s);

/// A SHA-256 digest (also the size of a derived signing key and of an HMAC-SHA256).
using sha256_digest = std::array<std::uint8_t, 32>;

/// SHA-256 of `data`, in one pass. The digest is fetched from OpenSSL once per process and each
/// thread reuses its own context, so a call allocates nothing. Out of memory aborts (as
/// everywhere in the gateway).
sha256_digest sha256(std::string_view data);
/// SHA-256 of the concatenation of `parts`, in one pass, without joining them first.
sha256_digest sha256(std::initializer_list<std::string_view> parts);

/// Lowercase hex SHA-256 (SigV4's `HexEncode(Hash(...))`).
std::string sha256_hex(std::string_view data);

class signing_key_cache;

/// Stage 3 and 4: the signature and the Authorization header value.
struct signature {
    std::string signed_headers;  ///< "host;x-amz-date"
    std::string signature_hex;   ///< 64 lowercase hex chars
    std::string
        authorization;  ///< "AWS4-HMAC-SHA256 Credential=..., SignedHeaders=..., Signature=..."
};

/// Signs `in`. The caller has already put `X-Amz-Date` (and `X-Amz-Security-Token` when the
/// credentials have a session token) into `in.headers`; the signer adds nothing itself.
/// `cache` (optional, thread-safe) keeps derived signing keys per (date, region, service).
signature sign_v4(const signing_input& in,
                  const credentials& creds,
                  signing_key_cache* cache = nullptr);

/// The parts of an incoming `Authorization: AWS4-HMAC-SHA256 ...` header.
struct parsed_authorization {
    std::string access_key_id;
    std::string date;     ///< YYYYMMDD
    std::string region;   ///< from the credential scope
    std::string service;  ///< from the credential scope
    std::vector<std::string> signed_headers;
    std::string signature_hex;
};

/// Parses a SigV4 Authorization value; nullopt for anything else (Bearer, malformed).
std::optional<parsed_authorization> parse_authorization(std::string_view value);

}  // namespace bgw::aws
