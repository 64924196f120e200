// The definitions behind bgw/net/attempt.hpp (its comment says what they are for).

#include "bgw/net/attempt.hpp"

#include "bgw/net/exchange.hpp"
#include "bgw/net/write.hpp"
#include "bgw/policy/hold.hpp"

#include <chrono>
#include <cstdint>
#include <string>

#include <boost/beast/http.hpp>

namespace bgw::net {
namespace {

namespace http = beast::http;
using clock = std::chrono::steady_clock;

/// 504 for timeouts, 502 for everything else that kept the upstream from answering.
error upstream_failure(const beast::error_code& ec, std::string_view during) {
    if (ec == beast::error::timeout) {
        return {http::status::gateway_timeout, "GatewayTimeoutException",
                "upstream did not answer in time (" + std::string(during) + ")"};
    }
    return {http::status::bad_gateway, "BadGatewayException",
            "upstream unreachable (" + std::string(during) + "): " + ec.message()};
}

template <class Stream>
awaitable<beast::error_code> send_and_read_header(Stream& up,
                                                  beast::flat_buffer& buf,
                                                  upstream_request_message& req,
                                                  http::response_parser<http::buffer_body>& p) {
    // One gather write: the head, then the body as it is (write_all: never asio::async_write,
    // which loses a body over 16 KiB after the head on a TLS stream).
    auto [wec, wn] = co_await write_all(up, asio::buffer(req.head), asio::buffer(req.body));
    if (wec) co_return wec;
    auto [rec, rn] = co_await http::async_read_header(up, buf, p, use_nothrow);
    co_return rec;
}

/// Reads an error answer's body (into `into`, at most `cap` bytes) so it can be classified
/// before anything goes to the client. Bedrock's error bodies are a few hundred bytes; a longer
/// one is left for the relay to finish.
template <class Stream>
awaitable<beast::error_code> read_error_body(Stream& up,
                                             beast::flat_buffer& buf,
                                             http::response_parser<http::buffer_body>& p,
                                             std::string& into,
                                             std::size_t cap) {
    into.resize(cap);
    std::size_t have = 0;
    beast::error_code ec;
    while (!p.is_done() && have < cap) {
        p.get().body().data = into.data() + have;
        p.get().body().size = cap - have;
        auto [rec, n] = co_await http::async_read_some(up, buf, p, use_nothrow);
        have = cap - p.get().body().size;
        if (rec && rec != http::error::need_buffer) {
            ec = rec;
            break;
        }
    }
    into.resize(have);
    co_return ec;
}

/// A connection to `ep` for the next attempt: a pooled one, or a fresh one (the connect error
/// if that fails). The client's watcher may close it from then on.
awaitable<beast::error_code> take_connection(const attempt_context& a,
                                             const config::region_endpoint& ep,
                                             upstream_leg& leg) {
    a.watch.upstream = nullptr;  // the watcher must never close a connection we dropped
    leg.conn = a.g.pool.take(pool_key(ep), a.ex.context());
    if (!leg.conn) {
        auto [cec, fresh] = co_await connect_upstream(
            a.ex, a.g.tls, ep, a.hold.attempt_bound(a.cfg.upstream.connect_timeout, clock::now()));
        if (cec) co_return cec;
        leg.conn = std::move(fresh);
    }
    a.watch.upstream = leg.conn.get();
    co_return beast::error_code{};
}

/// A new parser for the answer, room in the connection's buffer for its head, and the deadline.
void prepare_read(const attempt_context& a, upstream_leg& leg) {
    auto& p = leg.p.emplace();
    p.header_limit(static_cast<std::uint32_t>(a.cfg.upstream.max_response_header_bytes));
    p.body_limit(boost::none);  // streams run for minutes; nothing is buffered
    // Room for the head and (usually) the whole of a small answer in one read. A pooled
    // connection keeps its room between requests, except into a stream, which may hold it for
    // minutes: that gets its own, smaller room.
    auto& buffer = leg.conn->buffer;
    if (buffer.capacity() > a.head_room && a.head_room < head_read_bytes && buffer.size() == 0)
        buffer.shrink_to_fit();
    if (buffer.capacity() < a.head_room) buffer.reserve(a.head_room);
    // No wait outlives the client's deadline, this one included (issue 17).
    leg.conn->tcp().expires_after(
        a.hold.attempt_bound(a.cfg.upstream.response_timeout, clock::now()));
}

/// Reads an error answer's (small) body and classifies the answer: a throttle or a transient
/// failure sets `r.outcome`; anything else stays a success to relay. The read's error, if any.
awaitable<beast::error_code> judge_error_answer(upstream_leg& leg, attempt_result& r) {
    constexpr std::size_t error_body_cap = 64 * 1024;
    auto read = [&](auto& stream) {
        return read_error_body(stream, leg.conn->buffer, *leg.p, leg.error_body, error_body_cap);
    };
    const beast::error_code ec = co_await with_stream(*leg.conn, read);
    if (ec) co_return ec;
    const auto& head = leg.p->get();
    auto code = policy::error_code(head["x-amzn-ErrorType"],
                                   leg.p->is_done() ? leg.error_body : std::string_view{});
    auto o = policy::classify(head.result_int(), code);
    if (o == policy::outcome::throttled || o == policy::outcome::transient) r.outcome = o;
    co_return ec;
}

}  // namespace

awaitable<attempt_result> attempt_once(const attempt_context& a,
                                       const config::region_endpoint& ep,
                                       upstream_request_message& out,
                                       upstream_leg& leg) {
    attempt_result r;
    leg.error_body.clear();
    for (bool stale_retry = false;;) {
        if (auto cec = co_await take_connection(a, ep, leg)) {
            r.ec = cec;
            r.during = "connect";
            r.outcome = policy::classify_no_response();
            co_return r;
        }
        if (a.watch.client_gone) co_return r;  // it left while we connected
        prepare_read(a, leg);
        const auto sent = clock::now();
        auto send = [&](auto& stream) {
            return send_and_read_header(stream, leg.conn->buffer, out, *leg.p);
        };
        r.ec = co_await with_stream(*leg.conn, send);
        // A pooled connection found closed is resent for free: the same attempt, not another.
        if (r.ec && leg.conn->reused && !stale_retry && is_benign(r.ec) && !leg.p->got_some() &&
            !a.watch.client_gone) {
            stale_retry = true;
            continue;
        }
        if (!r.ec) {
            a.g.metrics.upstream_latency(
                a.log.region, a.log.op, std::chrono::duration<double>(clock::now() - sent).count());
        }
        break;
    }
    if (a.watch.client_gone) co_return r;
    if (!r.ec && leg.p->get().result_int() >= 400) r.ec = co_await judge_error_answer(leg, r);
    if (r.ec) r.outcome = policy::classify_no_response();
    co_return r;
}

namespace {

/// How an attempt that will not be relayed ended, for the decision log.
std::string describe(const attempt_result& r,
                     const std::optional<http::response_parser<http::buffer_body>>& p) {
    if (r.ec) return std::string(r.during) + " failed: " + r.ec.message();
    std::string code(p->get()["x-amzn-ErrorType"]);
    code = code.substr(0, code.find(':'));
    return std::string(r.outcome == policy::outcome::throttled ? "throttled" : "failed") + " (" +
           std::to_string(p->get().result_int()) + (code.empty() ? "" : " " + code) + ")";
}

/// The upstream answer's own "come back in", if it gave one.
std::optional<std::chrono::milliseconds> upstream_hint(
    const attempt_result& r, const std::optional<http::response_parser<http::buffer_body>>& p) {
    if (r.ec || !p) return std::nullopt;
    const auto& head = p->get();
    return policy::upstream_retry_after(head["retry-after-ms"], head["x-amz-retry-after"],
                                        head[http::field::retry_after]);
}

}  // namespace

pipeline::attempt_report report(const attempt_result& r, const upstream_leg& leg) {
    pipeline::attempt_report out;
    out.outcome = r.outcome;
    // An answer to relay needs nothing more (the relay reads its head itself): the common case
    // costs no header lookups here.
    if (r.outcome == policy::outcome::success) return out;
    out.timed_out = r.ec == beast::error::timeout;
    if (r.ec) out.no_answer = upstream_failure(r.ec, r.during);
    out.upstream_hint = upstream_hint(r, leg.p);
    if (!r.ec && leg.p) out.upstream_request_id = std::string(leg.p->get()["x-amzn-RequestId"]);
    out.description = describe(r, leg.p);
    return out;
}

void release(gateway_context& g, client_watch& watch, upstream_leg& leg, const attempt_result& r) {
    watch.upstream = nullptr;
    if (!r.ec && leg.p && leg.p->is_done() && leg.p->keep_alive())
        g.pool.give_back(std::move(leg.conn));
    leg.conn.reset();
}

}  // namespace bgw::net
