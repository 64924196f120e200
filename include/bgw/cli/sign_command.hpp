#pragma once
/// `bedrock-gateway sign`: signs one raw request read from stdin, for checking the gateway's
/// signer against any SigV4 implementation by hand (and against the AWS test suites in CI).
///
///   bedrock-gateway sign --region R --service S [--time YYYYMMDDTHHMMSSZ]
///                        [--access-key K --secret-key S [--session-token T]]
///
/// Input: one request in the AWS test-suite `.req` format. Output: the `.sreq` format, i.e. the
/// request as given plus X-Amz-Date (from --time, default now, when the request has none),
/// X-Amz-Security-Token (when the credentials have a session token) and Authorization.
/// Path normalisation and double encoding are on, as for every non-S3 service (Bedrock);
/// `--service s3` turns both off and uses an X-Amz-Content-Sha256 header as the payload hash.

#include "bgw/aws/sigv4.hpp"

#include <iosfwd>
#include <optional>
#include <span>
#include <string_view>

namespace bgw::cli {

/// Runs the command. `args` are the words after `sign`. Without --access-key/--secret-key the
/// `gateway_credentials` are used. The secret key is never written to `out` or `err`.
/// Returns the exit status: 0 on success (or --help), 2 for usage errors and missing
/// credentials, 1 when the request text cannot be parsed or signed.
int run_sign_command(std::span<const std::string_view> args,
                     std::istream& in,
                     std::ostream& out,
                     std::ostream& err,
                     const std::optional<bgw::aws::credentials>& gateway_credentials);

}  // namespace bgw::cli
