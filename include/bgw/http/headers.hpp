#pragma once
/// Which headers cross the gateway, in each direction.

#include <string_view>

namespace bgw::http {

/// Hop-by-hop headers (RFC 9110 §7.6.1 plus the legacy ones), never forwarded either way.
bool is_hop_by_hop(std::string_view name);

/// True for an incoming request header the gateway forwards upstream. An allow-list:
/// Content-Type, Content-Encoding, Accept, every X-Amzn-Bedrock-*, and the SDK's correlation
/// headers (amz-sdk-invocation-id, amz-sdk-request, X-Amzn-Trace-Id). Everything else is dropped,
/// in particular Authorization, X-Amz-Date, X-Amz-Security-Token, X-Amz-Content-Sha256 (the
/// app's signature is for the gateway's host and must be replaced), Host, Cookie and hop-by-hop.
bool forward_request_header(std::string_view name);

/// True for an upstream response header relayed to the client (all but hop-by-hop ones and
/// Content-Length/Transfer-Encoding, which the gateway's own framing sets).
bool forward_response_header(std::string_view name);

/// Case-insensitive ASCII equality and prefix test.
bool iequals(std::string_view a, std::string_view b);
bool istarts_with(std::string_view s, std::string_view prefix);

/// True when `value` is safe to put in a header (no CR, LF or NUL).
bool is_safe_header_value(std::string_view value);

}  // namespace bgw::http
