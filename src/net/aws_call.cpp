// One signed call to an AWS endpoint on a fresh connection (the batch tier, the read-only
// control plane).

#include "bgw/net/aws_call.hpp"

#include "bgw/aws/sign_request.hpp"
#include "bgw/net/exchange.hpp"
#include "bgw/net/gateway.hpp"
#include "bgw/obs/log.hpp"
#include "bgw/policy/throttle.hpp"

#include <boost/asio/this_coro.hpp>
#include <boost/beast/http.hpp>

namespace bgw::net {

namespace http = beast::http;

/// One signed call to an AWS endpoint on a fresh connection, with the upstream bounds.
awaitable<aws_reply> aws_call(gateway_context& g, aws_request req, aws_call_options opts) {
    const config::region_endpoint& ep = req.endpoint;
    const std::string& path = req.path;
    aws_reply reply;
    // S3 and the control plane take SigV4 only: a Bedrock API key does not reach them.
    auto usable = g.creds ? g.creds->usable()
                          : result<std::shared_ptr<const aws::timed_credentials>>(error{
                                http::status::service_unavailable, "ServiceUnavailableException",
                                "calls to S3 and the Bedrock control plane need SigV4 "
                                "credentials; a Bedrock API key covers the runtime only"});
    if (!usable) {
        obs::event("aws_call_no_credentials").str("error", usable.error().message).warn();
        reply.ec = asio::error::no_permission;
        co_return reply;
    }
    const aws::credentials& creds = (*usable)->creds;
    auto ex = co_await asio::this_coro::executor;
    auto [cec, conn] =
        co_await connect_upstream(ex, g.tls, ep, g.snapshot()->upstream.connect_timeout);
    if (cec) {
        reply.ec = cec;
        co_return reply;
    }
    std::vector<aws::header> headers{{"Host", ep.host_header}};
    if (!req.content_type.empty())
        headers.push_back({"Content-Type", std::string(req.content_type)});
    if (!opts.user_agent.empty()) headers.push_back({"User-Agent", std::string(opts.user_agent)});
    aws::sign_request(
        headers,
        {.method = http::to_string(req.method),
         .wire_path = path,
         .query = opts.query,
         .body = req.body,
         .region = req.region,
         .service = req.service,
         .time = std::chrono::floor<std::chrono::seconds>(std::chrono::system_clock::now())},
        creds, &g.keys);
    http::request<http::string_body> message{
        req.method, opts.query.empty() ? path : path + "?" + std::string(opts.query), 11};
    for (const auto& h : headers) message.insert(h.name, h.value);
    message.body() = std::move(req.body);
    message.keep_alive(false);
    message.prepare_payload();

    http::response_parser<http::string_body> p;
    p.body_limit(opts.body_limit);
    conn->tcp().expires_after(g.snapshot()->upstream.response_timeout);
    reply.ec = co_await exchange_once(*conn, message, p);
    if (reply.ec) co_return reply;
    auto res = p.release();
    reply.status = res.result_int();
    reply.body = std::move(res.body());
    reply.headers = std::move(res.base());
    if (reply.status >= 300) {
        reply.code = policy::error_code(res["x-amzn-ErrorType"], reply.body);
        if (auto at = reply.body.find("<Code>"); reply.code.empty() && at != std::string::npos)
            reply.code = reply.body.substr(at + 6, reply.body.find("</Code>") - at - 6);
    }
    co_return reply;
}

}  // namespace bgw::net
