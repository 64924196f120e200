#pragma once
/// Every gateway-made error, in Bedrock's shape so SDKs parse it like a service error:
/// JSON `{"message": "..."}`, `x-amzn-ErrorType`, `x-amzn-RequestId`.

#include "bgw/error.hpp"

#include <chrono>
#include <string>
#include <string_view>

#include <boost/beast/http/message.hpp>
#include <boost/beast/http/string_body.hpp>

namespace bgw::http {

/// `{"message":"..."}` with proper JSON escaping.
std::string error_body(std::string_view message);

/// The full response for `e`. `version` and `keep_alive` come from the request (11, true when
/// unknown).
boost::beast::http::response<boost::beast::http::string_body> make_error_response(
    const error& e, std::string_view request_id, unsigned version = 11, bool keep_alive = true);

/// The uniform 429 (issue 4) every final throttling outcome becomes: `Retry-After` in whole
/// seconds (at least 1, rounded up), `x-amz-retry-after` in milliseconds, `x-amzn-ErrorType:
/// ThrottlingException`, `x-amzn-RequestId` (upstream's when there was one), and
/// `{"message": ..., "retryAfterSeconds": N}`.
boost::beast::http::response<boost::beast::http::string_body> make_throttle_response(
    std::chrono::milliseconds wait,
    std::string_view message,
    std::string_view request_id,
    unsigned version = 11,
    bool keep_alive = true);

}  // namespace bgw::http
