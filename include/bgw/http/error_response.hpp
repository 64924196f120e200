#pragma once
/// Every gateway-made error, in Bedrock's shape so SDKs parse it like a service error:
/// JSON `{"message": "..."}`, `x-amzn-ErrorType`, `x-amzn-RequestId`.

#include "bgw/error.hpp"

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

}  // namespace bgw::http
