#pragma once
/// One raw HTTP/1.1 request in the AWS SigV4 test-suite text format (`.req`), and the signed
/// form of it (`.sreq`). Pure functions: text in, values out; nothing throws.
/// Format: https://github.com/awslabs/aws-c-auth/tree/main/tests/aws-signing-test-suite and
/// botocore tests/unit/auth/aws4_testsuite (request line, `Name:value` lines, blank line, body).

#include "bgw/aws/sigv4.hpp"
#include "bgw/error.hpp"

#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace bgw::aws {

/// A parsed `.req`. Keeps both the logical header values (for signing) and the header lines
/// exactly as written (for re-emitting the request unchanged).
struct raw_request {
    std::string method;   ///< "GET"
    std::string target;   ///< request-target as on the wire: path plus optional "?query"
    std::string version;  ///< "HTTP/1.1"
    /// Header values in wire order, trimmed, repeated names kept. A folded field is unfolded:
    /// each continuation line (one starting with spaces or tabs), trimmed, is appended to the
    /// value after a single space, which is the test suite's convention
    /// (`get-header-value-multiline`: `value1` + folded `value2` signs as `value1 value2`).
    std::vector<header> headers;
    /// Each header field verbatim (without its line ending); a folded field keeps its
    /// continuation lines, joined by `eol`.
    std::vector<std::string> fields;
    std::string eol = "\n";              ///< the line ending the request line used
    bool has_header_terminator = false;  ///< an empty line ended the header section
    std::string body;                    ///< everything after the empty line, verbatim

    /// The path part of `target` (before '?').
    std::string_view path() const;
    /// The raw query of `target` (after '?', without it); empty when there is none.
    std::string_view query() const;
};

/// Parses one request. The request line is `METHOD SP target SP HTTP/x.y`; the target may
/// contain raw spaces (the suite's `get-space` case), so the method ends at the first space and
/// the version starts after the last one. Header lines are `Name:value` with optional
/// whitespace around the value; LF or CRLF line endings.
/// Errors (ValidationException): empty input, malformed request line, a target not starting
/// with '/', a header line without ':' or with an invalid name, a continuation line before any
/// header.
result<raw_request> parse_raw_request(std::string_view text);

/// Whether `h` is named `name` (ASCII case-insensitive).
bool header_named(const header& h, std::string_view name);

/// The first value of header `name` (ASCII case-insensitive), or nullopt.
std::optional<std::string_view> find_header(std::span<const header> headers, std::string_view name);

/// Formats the signed request (`.sreq`): the request line and header fields as given (minus any
/// existing Authorization field, which the new one replaces), then `added` as `Name:value`,
/// then `Authorization:<authorization>`. The empty line and the body follow when the input had
/// them (a request without a body and without a terminating empty line stays that way, as in
/// the suite's `.sreq` files).
std::string format_signed_request(const raw_request& req,
                                  std::span<const header> added,
                                  std::string_view authorization);

}  // namespace bgw::aws
