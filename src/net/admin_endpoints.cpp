// The definitions behind bgw/net/admin_endpoints.hpp (its comment says what they are for).

#include "bgw/net/admin_endpoints.hpp"

#include "bgw/http/error_response.hpp"

#include <string>
#include <vector>

#include <boost/beast/http.hpp>
#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>

namespace bgw::net {
namespace {

namespace http = beast::http;
using clock = std::chrono::steady_clock;

/// `/healthz`: the process serves. `/readyz`: it should get traffic: not draining, and able to
/// authorise upstream calls (a Bedrock API key, or SigV4 credentials that have not expired).
http::response<http::string_body> health_response(http::verb method,
                                                  std::string_view target,
                                                  gateway_context& g,
                                                  std::string_view request_id) {
    if (method != http::verb::get && method != http::verb::head) {
        return bgw::http::make_error_response(
            {http::status::method_not_allowed, "ValidationException", "use GET"}, request_id);
    }
    std::vector<std::string> reasons;
    if (target == "/readyz") {
        if (g.draining) reasons.push_back("draining: the gateway is shutting down");
        if (g.bearer.empty()) {
            if (auto usable = g.sigv4_credentials(); !usable)
                reasons.push_back("credentials: " + usable.error().message);
        }
    }
    rapidjson::StringBuffer b;
    rapidjson::Writer<rapidjson::StringBuffer> w(b);
    w.StartObject();
    w.Key("status");
    w.String(reasons.empty() ? "ok" : "unavailable");
    if (!reasons.empty()) {
        w.Key("reasons");
        w.StartArray();
        for (const auto& r : reasons) w.String(r.c_str());
        w.EndArray();
    }
    w.EndObject();
    http::response<http::string_body> res{
        reasons.empty() ? http::status::ok : http::status::service_unavailable, 11};
    res.set(http::field::content_type, "application/json");
    res.set("x-amzn-RequestId", request_id);
    res.body().assign(b.GetString(), b.GetSize());
    res.prepare_payload();
    return res;
}

/// `/metrics`: the Prometheus text exposition, format 0.0.4.
http::response<http::string_body> metrics_response(http::verb method,
                                                   gateway_context& g,
                                                   std::string_view request_id) {
    if (method != http::verb::get && method != http::verb::head) {
        return bgw::http::make_error_response(
            {http::status::method_not_allowed, "ValidationException", "use GET"}, request_id);
    }
    http::response<http::string_body> res{http::status::ok, 11};
    res.set(http::field::content_type, "text/plain; version=0.0.4; charset=utf-8");
    res.set("x-amzn-RequestId", request_id);
    res.body() = g.metrics.render(g.gauges());
    res.prepare_payload();
    return res;
}

}  // namespace

bool is_admin_path(std::string_view target) {
    return target == "/healthz" || target == "/readyz" || target == "/metrics";
}

awaitable<bool> serve_admin(client_side& c,
                            const http::request<http::string_body>& req,
                            gateway_context& g,
                            bool here) {
    if (!here) {
        // A named local, not a temporary inside the co_await: GCC 12 mishandles the latter.
        const error wrong_listener{http::status::not_found, "UnknownOperationException",
                                   is_admin_path(req.target())
                                       ? "/healthz, /readyz and /metrics are served on admin_listen"
                                       : "the admin listener serves only /healthz, /readyz and "
                                         "/metrics"};
        co_return co_await c.answer(wrong_listener);
    }
    auto res = req.target() == "/metrics"
                   ? metrics_response(req.method(), g, c.ctx.id)
                   : health_response(req.method(), req.target(), g, c.ctx.id);
    c.ctx.op = req.target() == "/metrics"   ? "Metrics"
               : req.target() == "/healthz" ? "Health"
                                            : "Ready";
    co_return co_await c.respond(res);
}

}  // namespace bgw::net
