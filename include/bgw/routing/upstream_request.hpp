#pragma once
/// Turns an accepted client request into the exact request sent upstream: the
/// headers that cross, Host, X-Amz-Date, X-Amz-Security-Token and the SigV4 Authorization.
/// Pure: time and credentials are passed in.

#include "bgw/aws/sigv4.hpp"
#include "bgw/config/config.hpp"
#include "bgw/routing/runtime_path.hpp"

#include <chrono>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <boost/beast/http/fields.hpp>
#include <boost/beast/http/verb.hpp>

namespace bgw::routing {

/// The request line and headers to send (Authorization last). Content-Length is left to the
/// transport, which sets it from the body.
struct upstream_request {
    boost::beast::http::verb method;
    std::string target;  ///< wire path plus "?query" when present
    std::vector<aws::header> headers;
};

/// The request's head as it goes on the wire: request line, the fields in order, a
/// `Content-Length` (for a body, and for any POST, PUT or PATCH), and the blank line. HTTP/1.1
/// keeps the connection alive without saying so. Field values never hold CR or LF here: the
/// client's were parsed by Beast and filtered by http::is_safe_header_value.
std::string wire_head(const upstream_request& r, std::size_t body_size);

/// Where the request goes.
struct upstream_target {
    const config::region_endpoint& endpoint;
    std::string_view region;
    /// Non-empty: replaces the client's `X-Amzn-Bedrock-Service-Tier`.
    std::string_view service_tier = {};
};

/// How it is signed: SigV4 with `creds` at `now` (service `bedrock`; `cache`, optional, keeps
/// derived keys), or, with a `bearer_token` (a Bedrock API key), `Authorization: Bearer`
/// instead, as botocore sends it for signing name `bedrock`.
struct upstream_signer {
    const aws::credentials& creds;
    std::chrono::sys_seconds now;
    aws::signing_key_cache* cache = nullptr;
    std::string_view bearer_token = {};
};

/// Builds and signs the upstream request. `incoming` is the client's header set (only the
/// forwardable ones are kept, see http::forward_request_header).
upstream_request prepare_upstream_request(boost::beast::http::verb method,
                                          const runtime_request& req,
                                          const boost::beast::http::fields& incoming,
                                          std::string_view body,
                                          const upstream_target& to,
                                          const upstream_signer& signer);

/// `body` (a Converse request) with its `serviceTier` set to `{"type": tier}`; nullopt when the
/// body is not a JSON object (it then goes as it is, and Bedrock judges it).
std::optional<std::string> with_converse_service_tier(std::string_view body, std::string_view tier);

}  // namespace bgw::routing
