// The read-only control-plane reads: cache, then one signed call, answer passed through.

#include "bgw/net/control_plane.hpp"

#include "bgw/http/error_response.hpp"
#include "bgw/net/aws_call.hpp"
#include "bgw/net/gateway.hpp"
#include "bgw/policy/throttle.hpp"

#include <algorithm>

#include <boost/beast/http/field.hpp>

namespace bgw::net {

namespace http = beast::http;

std::optional<control_plane_cache::answer> control_plane_cache::get(const std::string& key,
                                                                    clock::time_point now) const {
    std::lock_guard lock(mutex_);
    auto it = entries_.find(key);
    if (it == entries_.end() || it->second.expires <= now) return std::nullopt;
    return it->second.value;
}

void control_plane_cache::put(const std::string& key,
                              answer a,
                              clock::time_point now,
                              std::chrono::seconds ttl) {
    if (ttl.count() <= 0 || max_entries_ == 0) return;
    std::lock_guard lock(mutex_);
    std::erase_if(entries_, [&](const auto& e) { return e.second.expires <= now; });
    if (entries_.size() >= max_entries_ && !entries_.contains(key)) {
        auto soonest = std::min_element(
            entries_.begin(), entries_.end(),
            [](const auto& x, const auto& y) { return x.second.expires < y.second.expires; });
        entries_.erase(soonest);
    }
    entries_[key] = entry{std::move(a), now + ttl};
}

std::string upstream_user_agent(std::string_view app_user_agent) {
    std::string own = "bedrock-gateway/" BGW_VERSION;  // not const: returned by move
    if (app_user_agent.empty()) return own;
    return std::string(app_user_agent) + " " + own;
}

namespace {

http::response<http::string_body> ok_answer(const control_plane_cache::answer& a,
                                            std::string_view request_id,
                                            std::string_view cache) {
    http::response<http::string_body> res{http::status::ok, 11};
    res.set(http::field::content_type,
            a.content_type.empty() ? std::string_view("application/json") : a.content_type);
    res.set("x-amzn-RequestId", request_id);
    res.set("X-Gateway-Cache", cache);
    res.body() = a.body;
    res.prepare_payload();
    return res;
}

}  // namespace

awaitable<http::response<http::string_body>> answer_control_read(
    gateway_context& g,
    const config::config& cfg,
    const routing::control_request& req,
    std::string region,
    std::string app_user_agent,
    std::string request_id) {
    const std::string key = region + " " + req.wire_path + "?" + req.query;
    if (auto hit = g.control_cache.get(key, control_plane_cache::clock::now()))
        co_return ok_answer(*hit, request_id, "hit");

    const std::string user_agent = upstream_user_agent(app_user_agent);
    aws_request read{.endpoint = cfg.control_endpoints.at(region),
                     .region = std::string(region),
                     .service = "bedrock",
                     .method = http::verb::get,
                     .path = req.wire_path};
    auto got = co_await aws_call(
        g, std::move(read),
        {.query = req.query, .user_agent = user_agent, .body_limit = 16 * 1024 * 1024});
    if (got.ec == asio::error::no_permission) {
        co_return bgw::http::make_error_response(
            {http::status::service_unavailable, "ServiceUnavailableException",
             "control-plane reads need SigV4 credentials; a Bedrock API key covers the runtime "
             "only"},
            request_id);
    }
    if (got.ec) {
        const bool late = got.ec == beast::error::timeout;
        co_return bgw::http::make_error_response(
            {late ? http::status::gateway_timeout : http::status::bad_gateway,
             late ? "GatewayTimeoutException" : "BadGatewayException",
             "the Bedrock control plane did not answer (" + got.ec.message() + ")"},
            request_id);
    }
    if (got.status == 200) {
        control_plane_cache::answer a{std::move(got.body),
                                      std::string(got.headers[http::field::content_type])};
        g.control_cache.put(key, a, control_plane_cache::clock::now(), cfg.control_plane_cache);
        co_return ok_answer(a, request_id, "miss");
    }
    if (policy::classify(got.status, got.code) == policy::outcome::throttled) {
        co_return bgw::http::make_throttle_response(
            std::chrono::seconds(1), "the Bedrock control plane throttled this read", request_id);
    }
    // Any other answer goes back as it came (a 404 for an unknown profile, a 403, ...).
    http::response<http::string_body> res{static_cast<http::status>(got.status), 11};
    for (auto field : {http::field::content_type}) {
        if (auto v = got.headers[field]; !v.empty()) res.set(field, v);
    }
    if (auto t = got.headers["x-amzn-ErrorType"]; !t.empty()) res.set("x-amzn-ErrorType", t);
    res.set("x-amzn-RequestId", request_id);
    res.set("X-Gateway-Cache", "miss");
    res.body() = std::move(got.body);
    res.prepare_payload();
    co_return res;
}

}  // namespace bgw::net
