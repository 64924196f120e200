// One client connection: wait for a request's first bytes, read its head and body within their
// bounds and deadlines (refusing what the head alone gives away before any body byte is read),
// hand it to forward(), and close cleanly. The request itself is forward.cpp's.

#include "bgw/http/front_parser.hpp"
#include "bgw/http/h2_server.hpp"
#include "bgw/http/headers.hpp"
#include "bgw/net/admin_endpoints.hpp"
#include "bgw/net/client_side.hpp"
#include "bgw/net/client_watch.hpp"
#include "bgw/net/forward.hpp"
#include "bgw/net/gateway.hpp"
#include "bgw/net/h2_session.hpp"
#include "bgw/net/http1_port.hpp"
#include "bgw/net/relay.hpp"
#include "bgw/obs/log.hpp"
#include "bgw/policy/callers.hpp"
#include "bgw/routing/control_plane.hpp"
#include "bgw/routing/runtime_path.hpp"

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <random>
#include <string>
#include <type_traits>

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/http.hpp>
#include <openssl/rand.h>
#include <openssl/ssl.h>

namespace bgw::net {
namespace {

namespace http = beast::http;
using clock = std::chrono::steady_clock;

/// A connection's TCP layer (the stream itself, or what a TLS stream runs on): its deadlines,
/// its socket.
template <class Stream>
beast::tcp_stream& tcp_of(Stream& s) {
    return beast::get_lowest_layer(s);
}

template <class Stream>
constexpr bool is_plain = std::is_same_v<Stream, beast::tcp_stream>;

/// Where body bytes are read from: a plain connection's socket (past the stream's timer), or
/// the TLS stream.
template <class Stream>
auto& body_source(Stream& s) {
    if constexpr (is_plain<Stream>) {
        return s.socket();
    } else {
        return s;
    }
}

/// Waits for the first bytes of a connection's next request and puts them in `buf`. An idle
/// connection holds no read buffer while it waits (ten thousand idle keep-alive connections
/// would otherwise hold ten thousand buffers): a read is tried at once (under load the request
/// is usually there already), and only if nothing is there is the buffer let go and the socket
/// waited on. False: closed, failed, or idle for `idle_timeout`.
awaitable<bool> next_request_bytes(beast::tcp_stream& client,
                                   beast::flat_buffer& buf,
                                   std::chrono::milliseconds idle_timeout) {
    auto& sock = client.socket();
    const auto deadline = clock::now() + idle_timeout;
    for (;;) {
        beast::error_code ec;
        const std::size_t n = sock.read_some(buf.prepare(4096), ec);  // the socket is non-blocking
        if (!ec) {
            buf.commit(n);
            co_return true;
        }
        if (ec != asio::error::would_block && ec != asio::error::try_again) co_return false;
        buf.shrink_to_fit();
        if (clock::now() >= deadline) co_return false;
        bool timed_out = false;
        {
            read_deadline idle(client, std::chrono::duration_cast<std::chrono::milliseconds>(
                                           deadline - clock::now()));
            auto [wec] = co_await sock.async_wait(asio::socket_base::wait_read, use_nothrow);
            timed_out = idle.fired();
            if (wec && !timed_out) co_return false;
        }
        if (timed_out) co_return false;
    }
}

/// The same over TLS: OpenSSL may hold decrypted bytes the socket no longer shows, so the wait
/// is a read (its buffer held meanwhile).
awaitable<bool> next_request_bytes(tls_stream& client,
                                   beast::flat_buffer& buf,
                                   std::chrono::milliseconds idle_timeout) {
    read_deadline idle(tcp_of(client), idle_timeout);
    auto [ec, n] = co_await client.async_read_some(buf.prepare(4096), use_nothrow);
    if (ec) co_return false;
    buf.commit(n);
    co_return true;
}

/// What a connection's first bytes say it speaks.
enum class opening { http1, h2, gone };

/// Whether the connection opens with the HTTP/2 client preface. While the bytes that have come
/// are the start of it, the rest is read (within `timeout`); the first byte that differs makes
/// it HTTP/1.1, with what was read left in `buf` for its parser. A client that closes (or stalls)
/// inside what could still be the preface is `gone`: there is no request to answer. (Its end of
/// stream is seen once: edge-triggered readiness does not report it to a second read.)
awaitable<opening> first_bytes(beast::tcp_stream& client,
                               beast::flat_buffer& buf,
                               std::chrono::milliseconds timeout) {
    const auto preface = bgw::http::h2_preface;
    auto received = [&buf] {
        return std::string_view(static_cast<const char*>(buf.data().data()), buf.size());
    };
    read_deadline deadline(client, timeout);
    while (buf.size() < preface.size()) {
        if (!preface.starts_with(received())) co_return opening::http1;
        auto [ec, n] = co_await client.socket().async_read_some(
            buf.prepare(preface.size() - buf.size()), use_nothrow);
        if (ec) co_return opening::gone;
        buf.commit(n);
    }
    co_return received().starts_with(preface) ? opening::h2 : opening::http1;
}

}  // namespace

std::string new_request_id() {
    // A CSPRNG: a batch record's id is all that guards its result when caller keys are off, so
    // one id must not tell anything about the next (mt19937_64 output can be predicted).
    std::array<unsigned char, 16> r{};
    if (RAND_bytes(r.data(), static_cast<int>(r.size())) != 1) {
        std::random_device dev;  // getrandom(2) on Linux, as RAND_bytes itself uses
        for (auto& b : r) b = static_cast<unsigned char>(dev());
    }
    r[6] = static_cast<unsigned char>((r[6] & 0x0f) | 0x40);  // version 4
    r[8] = static_cast<unsigned char>((r[8] & 0x3f) | 0x80);  // RFC 4122 variant
    static constexpr char hex[] = "0123456789abcdef";
    std::string out;
    out.reserve(36);
    for (std::size_t i = 0; i < r.size(); ++i) {
        if (i == 4 || i == 6 || i == 8 || i == 10) out += '-';
        out += hex[r[i] >> 4];
        out += hex[r[i] & 0x0f];
    }
    return out;
}

namespace {

/// Full: one 503 that says so, then close, before reading anything.
template <class Stream>
awaitable<void> refuse_connection(Stream& client, beast::flat_buffer& buf, gateway_context& g) {
    request_ctx log;
    log.id = new_request_id();
    http1_port<Stream> port(client, buf);
    const error full{http::status::service_unavailable, "ServiceUnavailableException",
                     "the gateway already holds limits.max_connections (" +
                         std::to_string(g.snapshot()->limits.max_connections) +
                         ") client connections; retry shortly"};
    co_await send_error(port, full, log, false);
    write_log(log);
    beast::error_code ignored;
    tcp_of(client).socket().shutdown(asio::ip::tcp::socket::shutdown_send, ignored);
}

/// The request's share of `limits.max_inflight_body_bytes`, the gateway-wide bound on request
/// bodies held in memory: taken before each read by the room that read may fill, given back when
/// the request is done.
class body_budget {
public:
    body_budget(std::atomic<std::size_t>& total, std::size_t cap) : total_(total), cap_(cap) {}
    ~body_budget() { total_ -= held_; }
    body_budget(const body_budget&) = delete;
    body_budget& operator=(const body_budget&) = delete;

    /// Holds `bytes` in all; false (holding what it held) when that would pass the cap.
    bool grow_to(std::size_t bytes) {
        if (bytes <= held_) return true;
        const std::size_t more = bytes - held_;
        if (total_.fetch_add(more) + more > cap_) {
            total_ -= more;
            return false;
        }
        held_ = bytes;
        return true;
    }

private:
    std::atomic<std::size_t>& total_;
    std::size_t cap_;
    std::size_t held_ = 0;
};

/// The most a body read asks for at once: memory follows the bytes that arrive, never a length
/// the client only declared.
constexpr std::size_t body_piece_bytes = 64 * 1024;

/// Reads the rest of a request's body: the bytes already buffered (they came with the head)
/// first, then the socket. A body of known length grows by at most what it already holds per
/// read (so at most twice what arrived), straight from the socket into its place; a chunked body
/// goes through the parser a buffer at a time. `full` is set when the gateway-wide budget is
/// spent.
template <class Stream>
awaitable<beast::error_code> read_body(Stream& client,
                                       beast::flat_buffer& buf,
                                       bgw::http::front_parser& parser,
                                       body_budget& budget,
                                       bool& full) {
    auto& body = parser.get().body();
    parser.eager(true);  // async_read_header turned it off: body bytes stayed in `buf`
    beast::error_code ec = parse_buffered(parser, buf);
    if (!ec && !budget.grow_to(body.size())) full = true;
    if (ec || full || parser.is_done()) co_return ec;
    const auto length = parser.content_length();
    if (length && !parser.chunked()) {
        const auto total = static_cast<std::size_t>(*length);  // within body_limit
        while (body.size() < total) {
            const std::size_t have = body.size();
            const std::size_t room = std::min(total - have, std::max(have, body_piece_bytes));
            if (!budget.grow_to(have + room)) {
                full = true;
                co_return ec;
            }
            body.resize(have + room);
            auto [rec, n] = co_await asio::async_read(
                body_source(client), asio::buffer(body.data() + have, room), use_nothrow);
            body.resize(have + n);
            if (rec == asio::error::eof) co_return http::error::partial_message;  // as Beast
            if (rec) co_return rec;
        }
        co_return ec;
    }
    while (!parser.is_done()) {
        if (!budget.grow_to(body.size() + body_piece_bytes)) {
            full = true;
            co_return ec;
        }
        auto [rec, n] = co_await http::async_read_some(client, buf, parser, use_nothrow);
        if (rec) co_return rec;
    }
    co_return ec;
}

/// How reading a request failed.
struct read_outcome {
    beast::error_code ec;
    const bgw::http::front_parser& parser;
    bool budget_spent;  ///< limits.max_inflight_body_bytes was reached
    bool timed_out;     ///< a read deadline fired
};

/// The answer to a request that could not be read whole; nullopt for a client that simply went
/// away (nothing to answer).
std::optional<error> read_failure(const read_outcome& r, const config::limits_config& limits) {
    if (r.parser.refusal()) return *r.parser.refusal();  // a rule of the gateway's own
    if (r.budget_spent) {
        return error{http::status::service_unavailable, "ServiceUnavailableException",
                     "the gateway already holds limits.max_inflight_body_bytes (" +
                         std::to_string(limits.max_inflight_body_bytes) +
                         " bytes) of request bodies; retry shortly"};
    }
    if (r.ec == http::error::buffer_overflow) {
        return error{http::status::request_header_fields_too_large, "ValidationException",
                     "chunk extensions and trailers exceed limits.max_header_bytes (" +
                         std::to_string(limits.max_header_bytes) + " bytes)"};
    }
    if (r.ec == http::error::body_limit) {
        return error{http::status::payload_too_large, "ValidationException",
                     "request body exceeds limits.max_body_bytes (" +
                         std::to_string(limits.max_body_bytes) + " bytes)"};
    }
    if (r.ec == http::error::header_limit) {
        return error{http::status::request_header_fields_too_large, "ValidationException",
                     "request headers exceed limits.max_header_bytes (" +
                         std::to_string(limits.max_header_bytes) + " bytes)"};
    }
    if (r.timed_out) {
        return error{http::status::request_timeout, "RequestTimeoutException",
                     r.parser.is_header_done()
                         ? "request body not received within limits.client_idle_timeout_ms"
                         : "request head not received within limits.header_timeout_ms"};
    }
    if (is_benign(r.ec)) return std::nullopt;
    return validation_error("malformed HTTP request: " + r.ec.message());
}

/// Reads one request whose first bytes are in `buf`, answers it, and says whether the connection
/// may carry another. Its state lives in its own coroutine frame, allocated for the request only:
/// an idle connection holds none of it.
template <class Stream>
awaitable<bool> serve_request(Stream& client,
                              beast::flat_buffer& buf,
                              const std::shared_ptr<gateway_context>& g,
                              listener_role role,
                              request_ctx& log) {
    std::shared_ptr<const config::config> cfg = g->snapshot();
    const auto& limits = cfg->limits;
    http1_port<Stream> port(client, buf);
    bgw::http::front_parser parser({limits.max_header_bytes, limits.max_header_count,
                                    limits.max_target_bytes, limits.max_body_bytes});
    // The connection's buffer holds at most a head (and the start of what follows): a chunk-size
    // line or a trailer section that goes on and on ends at this bound, not in memory.
    buf.max_size(std::max(limits.max_header_bytes + body_piece_bytes, buf.size()));

    // Once a request's first byte is in, the whole head must follow within header_timeout,
    // however slowly it trickles (Beast's header read is one operation until the head is
    // complete: one deadline).
    beast::error_code ec;
    std::size_t n = 0;
    bool read_timed_out = false;
    // What has arrived is parsed at once (a small request usually arrives whole); the socket
    // is read only for the rest.
    parser.eager(true);
    ec = parse_buffered(parser, buf);
    if (!ec && !parser.is_header_done()) {
        read_deadline head_deadline(tcp_of(client), limits.header_timeout);
        std::tie(ec, n) = co_await http::async_read_header(client, buf, parser, use_nothrow);
        read_timed_out = head_deadline.fired();
    }
    if (ec == http::error::end_of_stream) co_return false;
    std::optional<error> refused = parser.refusal();
    if (!ec && !refused) refused = refuse_head(parser.get(), *cfg, role, log);
    if (refused) {
        // The body (if any) is unread: the connection cannot carry another request.
        tcp_of(client).expires_after(limits.client_idle_timeout);
        co_await send_error(port, *refused, log, false);
        record_metrics(*g, *cfg, log);
        write_log(log);
        co_return false;
    }
    if (!ec && bgw::http::iequals(parser.get()[http::field::expect], "100-continue")) {
        http::response<http::empty_body> cont{http::status::continue_, 11};
        auto [cec, cn] = co_await http::async_write(client, cont, use_nothrow);
        if (cec) co_return false;
    }
    body_budget budget(g->inflight_body_bytes, limits.max_inflight_body_bytes);
    bool budget_spent = false;
    if (!ec && !parser.is_done()) {
        read_deadline body_deadline(tcp_of(client), limits.client_idle_timeout);
        ec = co_await read_body(client, buf, parser, budget, budget_spent);
        read_timed_out = body_deadline.fired();
    }
    // Whatever is written next (an error, a health answer, a forwarded head) has the
    // keep-alive time to go out: a client that stops reading cannot hold the session.
    tcp_of(client).expires_after(cfg->limits.client_idle_timeout);
    if (ec || budget_spent) {
        // Nothing after a framing error can be trusted: answer once, then close.
        auto e = read_failure({ec, parser, budget_spent, read_timed_out}, limits);
        if (!e) co_return false;
        co_await send_error(port, *e, log, false);
        record_metrics(*g, *cfg, log);
        write_log(log);
        co_return false;
    }
    ++g->inflight;
    struct inflight_slot {
        std::atomic<int>& n;
        ~inflight_slot() { --n; }
    } slot{g->inflight};
    auto req = parser.release();
    client_side c{port, log, req.keep_alive() && !g->draining};
    bool keep = co_await forward(c, req, *g, *cfg, role);
    record_metrics(*g, *cfg, log);
    write_log(log);
    // Draining: this connection's last answer has gone; no new request starts on it.
    co_return keep && !g->draining;
}

/// One request, guarded: an exception from anywhere in it (a library that throws, a bug) is
/// logged once as `session_failed` with the request's id and ends this connection only.
template <class Stream>
awaitable<bool> serve_guarded(Stream& client,
                              beast::flat_buffer& buf,
                              const std::shared_ptr<gateway_context>& g,
                              listener_role role) {
    request_ctx log;
    log.id = new_request_id();
    std::string failure;
    try {
        co_return co_await serve_request(client, buf, g, role, log);
    } catch (const std::exception& e) {
        failure = e.what();
    } catch (...) {
        failure = "unknown exception";
    }
    obs::event("session_failed").str("id", log.id).str("error", failure).error();
    g->metrics.session_failed();
    co_return false;
}

}  // namespace

/// After an answer that closes the connection (a refusal, often of a body left unread): the
/// client may still be sending. Closing a socket with unread bytes resets the connection, and a
/// reset can destroy the answer before the client reads it; so what still comes is read and
/// dropped, for a moment and up to a bound (nginx's lingering close), until the client closes.
awaitable<void> linger(beast::tcp_stream& client, beast::flat_buffer& buf) {
    constexpr std::chrono::milliseconds linger_time{2000};
    constexpr std::size_t linger_bytes = 4 * 1024 * 1024;
    buf.clear();
    read_deadline deadline(client, linger_time);
    for (std::size_t dropped = 0; dropped < linger_bytes;) {
        auto [ec, n] = co_await client.socket().async_read_some(buf.prepare(4096), use_nothrow);
        if (ec) break;  // the client's close (or the deadline)
        dropped += n;
    }
}

namespace {

/// HTTP/1.1 requests on `client` (whose first bytes may be in `buf`), one after another, until
/// the connection closes, idles out or must end after an answer.
template <class Stream>
awaitable<void> serve_http1(Stream& client,
                            beast::flat_buffer& buf,
                            const std::shared_ptr<gateway_context>& g,
                            listener_role role) {
    bool answered = false;  // the session ends after an answer, not between requests
    for (;;) {
        // The next request may take the keep-alive time to start.
        const auto idle_timeout = g->snapshot()->limits.client_idle_timeout;
        if (buf.size() == 0 && !co_await next_request_bytes(client, buf, idle_timeout))
            break;  // closed or idle between requests: nothing to answer
        if (!co_await serve_guarded(client, buf, g, role)) {
            answered = true;
            break;
        }
    }
    beast::error_code ignored;
    tcp_of(client).socket().shutdown(asio::ip::tcp::socket::shutdown_send, ignored);
    if (answered) co_await linger(tcp_of(client), buf);
}

/// Holds a place in `limits.max_connections` for as long as the connection is open.
struct connection_slot {
    gateway_context& g;
    ~connection_slot() { --g.connections; }
};

}  // namespace

awaitable<void> run_session(asio::ip::tcp::socket socket,
                            std::shared_ptr<gateway_context> g,
                            listener_role role) {
    beast::tcp_stream client(std::move(socket));
    beast::error_code nb;
    client.socket().non_blocking(true, nb);  // for next_request_bytes' first try and the watch
    if (nb) co_return;
    beast::flat_buffer buf;
    ++g->connections;
    connection_slot slot{*g};
    if (g->connections > g->snapshot()->limits.max_connections) {
        co_await refuse_connection(client, buf, *g);
        co_return;
    }
    // HTTP/2 with prior knowledge opens with its preface; anything else is HTTP/1.1.
    const auto first_timeout = g->snapshot()->limits.client_idle_timeout;
    if (!co_await next_request_bytes(client, buf, first_timeout)) co_return;
    switch (co_await first_bytes(client, buf, g->snapshot()->limits.header_timeout)) {
        case opening::gone:
            co_return;
        case opening::h2:
            co_await run_h2_session(client, buf, g, role);
            co_return;
        case opening::http1:
            break;
    }
    co_await serve_http1(client, buf, g, role);
}

awaitable<void> run_tls_session(asio::ip::tcp::socket socket,
                                std::shared_ptr<gateway_context> g,
                                listener_role role) {
    // The certificate in use when the connection came: a reload changes the next ones only.
    const std::shared_ptr<asio::ssl::context> tls = g->front_tls.load();
    if (!tls) co_return;
    tls_stream client(beast::tcp_stream(std::move(socket)), *tls);
    beast::error_code nb;
    tcp_of(client).socket().non_blocking(true, nb);  // for the client watch's peek
    if (nb) co_return;
    beast::flat_buffer buf;
    ++g->connections;  // a handshake under way holds its place too
    connection_slot slot{*g};
    const auto limits = g->snapshot()->limits;
    // A client that is not speaking TLS, or too slowly, is closed: there is no way to answer it.
    tcp_of(client).expires_after(limits.header_timeout);
    auto [hec] = co_await client.async_handshake(asio::ssl::stream_base::server, use_nothrow);
    tcp_of(client).expires_never();
    if (hec) {
        obs::event("tls_handshake_failed").str("error", hec.message()).debug();
        co_return;
    }
    if (g->connections > limits.max_connections) {
        co_await refuse_connection(client, buf, *g);
        co_return;
    }
    // Over TLS, ALPN alone says HTTP/2.
    const unsigned char* proto = nullptr;
    unsigned int proto_len = 0;
    SSL_get0_alpn_selected(client.native_handle(), &proto, &proto_len);
    if (std::string_view(reinterpret_cast<const char*>(proto), proto_len) == "h2") {
        co_await run_h2_session(client, buf, g, role);
        co_return;
    }
    co_await serve_http1(client, buf, g, role);
}

}  // namespace bgw::net
