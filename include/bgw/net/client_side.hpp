#pragma once
/// The client side of one request: the answers the gateway makes itself (errors, 429s, its own
/// responses), the gateway's response headers, and the request's log line and metrics.

#include "bgw/error.hpp"
#include "bgw/http/headers.hpp"
#include "bgw/http/retry_after.hpp"
#include "bgw/http/wire.hpp"
#include "bgw/net/asio.hpp"
#include "bgw/net/client_port.hpp"
#include "bgw/net/gateway.hpp"
#include "bgw/pipeline/admit.hpp"
#include "bgw/pipeline/request_ctx.hpp"
#include "bgw/pipeline/upstream_walk.hpp"
#include "bgw/policy/traffic.hpp"

#include <chrono>
#include <optional>
#include <string>
#include <string_view>

#include <boost/beast/http.hpp>

namespace bgw::net {

/// What happened to one request (the access log line, the metrics) and what it holds.
using pipeline::request_ctx;

/// The request's part of the metrics (issue 8); model labels are the model the client named.
/// Called before write_log: once a request's log line is out, its metrics are too (a test, or
/// an operator, that waits for the line and then scrapes /metrics must find it counted).
void record_metrics(gateway_context& g, const config::config& cfg, const request_ctx& l);

void write_log(const request_ctx& l);

/// `X-Gateway-Region`, `X-Gateway-Tier`, `X-Gateway-Attempts`: where the request ran, once the
/// router has chosen.
template <class Fields>
void add_gateway_headers(Fields& res, const request_ctx& log) {
    if (log.tier.empty()) return;
    res.set("X-Gateway-Region", log.region);
    res.set("X-Gateway-Tier", log.tier);
    res.set("X-Gateway-Attempts", std::to_string(log.attempts));
}

/// True for the fields add_gateway_headers sets (an upstream's own are dropped, as `set` would).
bool is_gateway_header(std::string_view name);

/// Lets add_gateway_headers write field lines straight into a head being built.
struct head_writer {
    std::string& out;
    void set(std::string_view name, std::string_view value) {
        bgw::http::append_field(out, name, value);
    }
};

/// `pause`: the Retry-After a final failure after the gateway's own attempts carries (issue 17),
/// so an SDK's retry of it does not follow at once.
awaitable<beast::error_code> send_error(client_port& client,
                                        const error& e,
                                        request_ctx& log,
                                        bool keep_alive,
                                        std::optional<std::chrono::milliseconds> pause = {});

awaitable<beast::error_code> send_throttle(client_port& client,
                                           const policy::throttle_answer& a,
                                           std::string_view request_id,
                                           request_ctx& log,
                                           bool keep_alive);

/// The fields of a relayed answer's head, to `sink.set(name, value)`: upstream's that cross (in
/// their order), the gateway's own, and the gateway's pause as Retry-After unless upstream gave
/// its own wait in any form. Framing fields are the port's.
template <class Sink>
void relayed_fields(const relayed_answer& a, Sink& sink) {
    const auto& head = a.p.get();
    for (const auto& f : head) {
        const auto name = f.name_string();
        if (bgw::http::forward_response_header(name) && !is_gateway_header(name))
            sink.set(name, f.value());
    }
    add_gateway_headers(sink, a.ctx);
    namespace http = beast::http;
    if (a.pause && head.find(http::field::retry_after) == head.end() &&
        head.find("x-amz-retry-after") == head.end() && head.find("retry-after-ms") == head.end())
        bgw::http::set_retry_after(sink, *a.pause);
}

/// The client side of one request: where its answer goes, and the answers the gateway makes
/// itself. Each `answer` returns whether the connection may carry another request.
struct client_side {
    client_port& port;
    request_ctx& ctx;
    bool keep_alive;

    awaitable<bool> answer(const error& e, std::optional<std::chrono::milliseconds> pause = {}) {
        co_return !co_await send_error(port, e, ctx, keep_alive, pause) && keep_alive;
    }
    awaitable<bool> answer(const policy::throttle_answer& a, std::string_view request_id) {
        co_return !co_await send_throttle(port, a, request_id, ctx, keep_alive) && keep_alive;
    }
    awaitable<bool> answer(const pipeline::refusal& r) {
        if (const auto* e = std::get_if<error>(&r)) co_return co_await answer(*e);
        co_return co_await answer(std::get<policy::throttle_answer>(r), ctx.id);
    }
    /// The walk's last word: a 429, or a 502/504 with its Retry-After.
    awaitable<bool> answer(const pipeline::answer& a) {
        if (!a.throttle) co_return co_await answer(*a.failure, a.pause);
        const std::string_view id = a.request_id.empty() ? ctx.id : a.request_id;
        const bool keep = co_await answer(*a.throttle, id);
        ctx.error += a.note;
        co_return keep;
    }
    awaitable<bool> respond(beast::http::response<beast::http::string_body>& res) {
        co_return !co_await port.send(res, keep_alive, ctx) && keep_alive;
    }
    /// The client hung up before its answer was complete.
    bool gone() {
        ctx.status = 499;  // nginx's "client closed request"
        ctx.error = "client went away before the response was complete";
        ctx.held.settle(0, std::chrono::steady_clock::now());
        return false;
    }
};

}  // namespace bgw::net
