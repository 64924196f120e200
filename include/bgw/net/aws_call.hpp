#pragma once
/// One signed call to an AWS endpoint (S3, the Bedrock control plane) on a fresh connection,
/// with the upstream bounds: the batch tier's jobs and the read-only control-plane reads.

#include "bgw/config/config.hpp"
#include "bgw/net/asio.hpp"

#include <cstddef>
#include <string>
#include <string_view>

#include <boost/beast/http/fields.hpp>
#include <boost/beast/http/verb.hpp>

namespace bgw::net {

struct gateway_context;

// Beast's fields move-assign is noexcept with std::allocator (it propagates); the check follows
// the branch for allocators that do not, which copies.
// NOLINTNEXTLINE(bugprone-exception-escape)
struct aws_reply {
    beast::error_code ec;  ///< set when there was no answer at all (or no credentials)
    unsigned status = 0;
    std::string body;
    std::string code;  ///< the error code, for logs and classification
    beast::http::fields headers;
};

struct aws_call_options {
    std::string_view query;       ///< raw query string (without '?'), signed canonically
    std::string_view user_agent;  ///< sent as is when not empty
    std::size_t body_limit = 256 * 1024 * 1024;  ///< a batch job's output file
};

/// One request to AWS. It owns its strings, so a call may be made from temporaries.
struct aws_request {
    const config::region_endpoint& endpoint;  ///< from the config, which outlives the call
    std::string region;                       ///< signing region
    std::string_view service;                 ///< signing name: "bedrock", "s3" (S3's rules)
    beast::http::verb method;
    std::string path;  ///< wire path, percent-encoded
    std::string body = {};
    std::string_view content_type = {};  ///< sent when not empty
};

/// Signs (SigV4, the gateway's credentials) and sends `req` on a fresh connection, and reads
/// the whole answer. Errors: `ec` for no credentials (no_permission), connect/TLS/read failures
/// and timeouts; an HTTP error answer is a reply with its status.
awaitable<aws_reply> aws_call(gateway_context& g, aws_request req, aws_call_options opts = {});

}  // namespace bgw::net
