#pragma once
/// The one place a request to AWS is signed: what SigV4 needs beside the request's own headers
/// (the date, the session token, S3's payload hash), then the Authorization header. The
/// gateway's upstream requests, its own AWS calls (batch, S3, control-plane reads), STS's
/// AssumeRole and the `sign` command all come through here; sigv4.hpp does the arithmetic.

#include "bgw/aws/sigv4.hpp"

#include <chrono>
#include <string_view>
#include <vector>

namespace bgw::aws {

class signing_key_cache;

/// A request as it will go on the wire, before it is signed.
struct request_to_sign {
    std::string_view method;        ///< "POST"
    std::string_view wire_path;     ///< path bytes exactly as sent (already percent-encoded)
    std::string_view query;         ///< raw query as sent, without '?'; may be empty
    std::string_view body;          ///< hashed for the signature (S3: unless its hash is declared)
    std::string_view region;        ///< "us-east-1"
    std::string_view service;       ///< signing name: "bedrock", "s3", "sts"; "s3" means S3's rules
    std::chrono::sys_seconds time;  ///< the signing instant, unless X-Amz-Date is already there
};

/// Signs `r` with `creds`. To `headers` (the request's own, Host among them) it appends what is
/// missing, in aws-c-auth's order: X-Amz-Security-Token (temporary credentials), X-Amz-Date,
/// x-amz-content-sha256 (S3 only; a declared one, such as UNSIGNED-PAYLOAD, is what S3 signs),
/// and last Authorization. Returns what it appended, Authorization last.
///
/// A header already present is signed as it is: an X-Amz-Date there sets the signing instant
/// (one that does not parse is replaced by one for `r.time`), a token there is the caller's to
/// have checked. S3 signs the path as sent; every other service normalises it and encodes it a
/// second time. `cache` (optional, thread-safe) keeps derived signing keys.
std::vector<header> sign_request(std::vector<header>& headers,
                                 const request_to_sign& r,
                                 const credentials& creds,
                                 signing_key_cache* cache = nullptr);

}  // namespace bgw::aws
