// The definitions behind bgw/net/client_side.hpp (its comment says what they are for).

#include "bgw/net/client_side.hpp"

#include "bgw/http/error_response.hpp"
#include "bgw/http/headers.hpp"
#include "bgw/http/retry_after.hpp"
#include "bgw/obs/log.hpp"

#include <chrono>
#include <string>

#include <boost/beast/http.hpp>

namespace bgw::net {
namespace {

namespace http = beast::http;
using clock = std::chrono::steady_clock;

}  // namespace

void record_metrics(gateway_context& g, const config::config& cfg, const request_ctx& l) {
    g.metrics.request(l.op, l.region, l.tier, l.model, l.status);
    if (l.first_event) {
        g.metrics.first_event(l.region, l.op,
                              std::chrono::duration<double>(*l.first_event - l.start).count());
    }
    if (!l.tokens) return;
    config::tier t = config::tier::on_demand;
    config::parse_tier(l.tier, t);
    g.count_usage(cfg, l.region, t, l.model, l.target_model, *l.tokens);
}

void write_log(const request_ctx& l) {
    if (!obs::enabled(obs::level::info)) return;
    obs::event e("request");
    e.str("id", l.id).str("operation", l.op).str("model", l.model).str("region", l.region);
    e.unum("status", l.status).num("attempts", l.attempts);
    e.real("latency_ms", std::chrono::duration<double, std::milli>(clock::now() - l.start).count());
    e.unum("bytes_in", l.bytes_in).unum("bytes_out", l.bytes_out);
    if (!l.upstream_request_id.empty()) e.str("upstream_request_id", l.upstream_request_id);
    if (l.upstream_throttles) e.num("upstream_throttles", l.upstream_throttles);
    if (!l.throttle.empty()) e.str("throttle", l.throttle);
    if (!l.caller.empty()) e.str("caller", l.caller);
    if (!l.route.empty()) e.str("route", l.route);
    if (!l.batch_record.empty()) e.str("batch_record", l.batch_record);
    if (!l.tier.empty()) e.str("tier", l.tier);
    if (!l.tried.empty()) e.list("tried", l.tried);
    if (!l.error.empty()) e.str("error", l.error);
    if (l.tokens) e.unum("input_tokens", l.tokens->input).unum("output_tokens", l.tokens->output);
    if (l.stream) {
        e.unum("stream_events", l.stream->events);
        // The exception's type only: its message may quote the prompt.
        if (!l.stream->exception.empty()) e.str("stream_exception", l.stream->exception);
        if (!l.stream->corrupt.empty()) e.str("stream_corrupt", l.stream->corrupt);
    }
    e.info();
}

bool is_gateway_header(std::string_view name) {
    return bgw::http::iequals(name, "X-Gateway-Region") ||
           bgw::http::iequals(name, "X-Gateway-Tier") ||
           bgw::http::iequals(name, "X-Gateway-Attempts");
}

awaitable<beast::error_code> send_error(client_port& client,
                                        const error& e,
                                        request_ctx& log,
                                        bool keep_alive,
                                        std::optional<std::chrono::milliseconds> pause) {
    auto res = bgw::http::make_error_response(e, log.id, 11, keep_alive);
    add_gateway_headers(res, log);
    // A full gateway is a passing state: say when to come back, as a throttle does.
    if (pause) {
        bgw::http::set_retry_after(res, *pause);
    } else if (e.status == http::status::service_unavailable) {
        res.set(http::field::retry_after, "1");
    }
    if (e.status == http::status::unauthorized)
        res.set(http::field::www_authenticate, "Bearer realm=\"bedrock-gateway\"");
    log.error = e.message;
    co_return co_await client.send(res, keep_alive, log);
}

awaitable<beast::error_code> send_throttle(client_port& client,
                                           const policy::throttle_answer& a,
                                           std::string_view request_id,
                                           request_ctx& log,
                                           bool keep_alive) {
    auto res = bgw::http::make_throttle_response(a.wait, a.message, request_id, 11, keep_alive);
    add_gateway_headers(res, log);
    log.throttle = a.source;
    log.error = a.message;
    co_return co_await client.send(res, keep_alive, log);
}

}  // namespace bgw::net
