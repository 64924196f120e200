// One client connection: read a request, recognise the runtime operation, sign for the chosen
// region, forward it, and relay the response as it arrives (never buffering a whole response).

#include "bgw/http/error_response.hpp"
#include "bgw/http/h2_refusal.hpp"
#include "bgw/http/headers.hpp"
#include "bgw/net/gateway.hpp"
#include "bgw/routing/runtime_path.hpp"
#include "bgw/routing/upstream_request.hpp"

#include <chrono>
#include <random>

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/http.hpp>
#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>
#include <spdlog/spdlog.h>

namespace bgw::net {
namespace {

namespace http = beast::http;
using clock = std::chrono::steady_clock;

/// What happened to one request, for the access log line.
struct request_log {
    std::string id;
    std::string_view op = "-";
    std::string model;
    std::string region;
    unsigned status = 0;
    int attempts = 0;
    std::size_t bytes_in = 0;
    std::size_t bytes_out = 0;
    std::string upstream_request_id;
    std::string error;
    clock::time_point start = clock::now();
};

void write_log(const request_log& l) {
    rapidjson::StringBuffer buf;
    rapidjson::Writer<rapidjson::StringBuffer> w(buf);
    auto str = [&](const char* key, std::string_view v) {
        w.Key(key);
        w.String(v.data(), static_cast<rapidjson::SizeType>(v.size()));
    };
    w.StartObject();
    str("event", "request");
    str("id", l.id);
    str("operation", l.op);
    str("model", l.model);
    str("region", l.region);
    w.Key("status");
    w.Uint(l.status);
    w.Key("attempts");
    w.Int(l.attempts);
    w.Key("latency_ms");
    w.Double(std::chrono::duration<double, std::milli>(clock::now() - l.start).count());
    w.Key("bytes_in");
    w.Uint64(l.bytes_in);
    w.Key("bytes_out");
    w.Uint64(l.bytes_out);
    if (!l.upstream_request_id.empty()) str("upstream_request_id", l.upstream_request_id);
    if (!l.error.empty()) str("error", l.error);
    w.EndObject();
    spdlog::info("{}", std::string_view(buf.GetString(), buf.GetSize()));
}

awaitable<beast::error_code> send_error(beast::tcp_stream& client,
                                        const error& e,
                                        request_log& log,
                                        bool keep_alive) {
    auto res = bgw::http::make_error_response(e, log.id, 11, keep_alive);
    log.status = static_cast<unsigned>(e.status);
    log.error = e.message;
    auto [ec, n] = co_await beast::http::async_write(client, res, use_nothrow);
    log.bytes_out += n;
    co_return ec;
}

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
                                                  http::request<http::string_body>& req,
                                                  http::response_parser<http::buffer_body>& p) {
    auto [wec, wn] = co_await http::async_write(up, req, use_nothrow);
    if (wec) co_return wec;
    auto [rec, rn] = co_await http::async_read_header(up, buf, p, use_nothrow);
    co_return rec;
}

/// Relays the response body piece by piece: each piece read from upstream is written to the
/// client before the next read, so memory per stream is one fixed buffer and a slow client
/// slows the upstream read (back-pressure). Returns the first error and whether it was the
/// client's side.
template <class Stream>
awaitable<std::pair<beast::error_code, bool>> relay_body(
    Stream& up,
    beast::flat_buffer& upbuf,
    http::response_parser<http::buffer_body>& p,
    beast::tcp_stream& client,
    http::response_serializer<http::buffer_body>& sr,
    http::response<http::buffer_body>& res,
    std::chrono::milliseconds read_timeout,
    std::chrono::milliseconds write_timeout,
    std::size_t& bytes_out) {
    char piece[16 * 1024];
    for (;;) {
        if (!p.is_done()) {
            p.get().body().data = piece;
            p.get().body().size = sizeof piece;
            beast::get_lowest_layer(up).expires_after(read_timeout);
            auto [ec, n] = co_await http::async_read_some(up, upbuf, p, use_nothrow);
            if (ec == http::error::need_buffer) ec = {};
            if (ec) co_return std::pair{ec, false};
            res.body().data = piece;
            res.body().size = sizeof piece - p.get().body().size;
            res.body().more = !p.is_done();
        } else {
            res.body().data = nullptr;
            res.body().size = 0;
            res.body().more = false;
        }
        // An empty piece with more to come would make the serializer end the chunked body.
        if (res.body().size == 0 && res.body().more) continue;
        client.expires_after(write_timeout);
        auto [wec, wn] = co_await http::async_write(client, sr, use_nothrow);
        bytes_out += wn;
        if (wec == http::error::need_buffer) wec = {};
        if (wec) co_return std::pair{wec, true};
        if (sr.is_done()) co_return std::pair{beast::error_code{}, false};
    }
}

/// Forwards one accepted request; returns whether the client connection may be kept.
awaitable<bool> forward(beast::tcp_stream& client,
                        http::request<http::string_body> req,
                        gateway_context& g,
                        const config::config& cfg,
                        request_log& log) {
    const bool keep_alive = req.keep_alive();
    log.bytes_in = req.body().size();
    auto rt = routing::parse_runtime_target(req.method(), req.target());
    if (!rt) co_return !co_await send_error(client, rt.error(), log, keep_alive) && keep_alive;
    log.op = routing::operation_name(rt->op);
    log.model = rt->model_id;
    if (!g.creds) {
        error e{http::status::service_unavailable, "ServiceUnavailableException",
                "the gateway has no AWS credentials: set AWS_ACCESS_KEY_ID and "
                "AWS_SECRET_ACCESS_KEY, or a profile in the shared credentials file"};
        co_return !co_await send_error(client, e, log, keep_alive) && keep_alive;
    }
    log.region = routing::choose_region(req[http::field::authorization], cfg);
    const config::region_endpoint& ep = cfg.regions.at(log.region);

    auto now = std::chrono::floor<std::chrono::seconds>(std::chrono::system_clock::now());
    auto prepared = routing::prepare_upstream_request(req.method(), *rt, req, ep, log.region,
                                                      req.body(), *g.creds, now, &g.keys);
    http::request<http::string_body> out{prepared.method, prepared.target, 11};
    for (auto& h : prepared.headers) out.insert(h.name, h.value);
    out.body() = std::move(req.body());
    out.keep_alive(true);
    out.prepare_payload();

    // Send; a pooled connection the upstream closed while idle fails before any response byte,
    // and only then is the request sent once more, on a fresh connection.
    std::unique_ptr<upstream_connection> conn;
    std::optional<http::response_parser<http::buffer_body>> p;
    beast::error_code ec;
    for (;;) {
        ++log.attempts;
        conn = g.pool.take(pool_key(ep));
        if (!conn) {
            auto [cec, fresh] = co_await connect_upstream(client.get_executor(), g.tls, ep,
                                                          cfg.upstream.connect_timeout);
            if (cec) {
                co_return !co_await send_error(client, upstream_failure(cec, "connect"), log,
                                               keep_alive) &&
                    keep_alive;
            }
            conn = std::move(fresh);
        }
        p.emplace();
        p->header_limit(64 * 1024);
        p->body_limit(boost::none);  // streams run for minutes; nothing is buffered
        conn->tcp().expires_after(cfg.upstream.response_timeout);
        if (auto* plain = std::get_if<beast::tcp_stream>(&conn->stream)) {
            ec = co_await send_and_read_header(*plain, conn->buffer, out, *p);
        } else {
            ec = co_await send_and_read_header(std::get<tls_stream>(conn->stream), conn->buffer,
                                               out, *p);
        }
        if (ec && conn->reused && log.attempts == 1 && is_benign(ec) && !p->got_some()) continue;
        break;
    }
    if (ec) {
        co_return !co_await send_error(client, upstream_failure(ec, "response"), log, keep_alive) &&
            keep_alive;
    }
    auto& head = p->get();
    log.status = head.result_int();
    log.upstream_request_id = std::string(head["x-amzn-RequestId"]);

    // The status line and headers go out as soon as upstream sent them; the body follows piece
    // by piece (chunked unless upstream gave a length).
    http::response<http::buffer_body> res{head.result(), 11};
    for (const auto& f : head) {
        if (bgw::http::forward_response_header(f.name_string()))
            res.insert(f.name_string(), f.value());
    }
    if (auto len = p->content_length()) {
        res.content_length(*len);
    } else {
        res.chunked(true);
    }
    res.keep_alive(keep_alive);
    http::response_serializer<http::buffer_body> sr{res};
    client.expires_after(cfg.limits.client_idle_timeout);
    auto [hec, hn] = co_await http::async_write_header(client, sr, use_nothrow);
    log.bytes_out += hn;
    if (hec) {
        log.error = "client went away: " + hec.message();
        co_return false;
    }
    std::pair<beast::error_code, bool> relayed;
    if (auto* plain = std::get_if<beast::tcp_stream>(&conn->stream)) {
        relayed = co_await relay_body(*plain, conn->buffer, *p, client, sr, res,
                                      cfg.upstream.response_timeout, cfg.limits.client_idle_timeout,
                                      log.bytes_out);
    } else {
        relayed = co_await relay_body(std::get<tls_stream>(conn->stream), conn->buffer, *p, client,
                                      sr, res, cfg.upstream.response_timeout,
                                      cfg.limits.client_idle_timeout, log.bytes_out);
    }
    if (relayed.first) {
        // The status line is out: the only honest signal left is to cut the client's stream.
        log.error = std::string(relayed.second ? "client" : "upstream") +
                    " failed mid-body: " + relayed.first.message();
        co_return false;
    }
    if (p->keep_alive()) g.pool.give_back(std::move(conn));
    co_return keep_alive;
}

}  // namespace

std::string new_request_id() {
    thread_local std::mt19937_64 rng{std::random_device{}()};
    std::uint64_t a = rng(), b = rng();
    char out[37];
    std::snprintf(out, sizeof out, "%08x-%04x-4%03x-%04x-%012llx", static_cast<unsigned>(a >> 32),
                  static_cast<unsigned>((a >> 16) & 0xffff), static_cast<unsigned>(a & 0x0fff),
                  static_cast<unsigned>(((b >> 48) & 0x3fff) | 0x8000),
                  static_cast<unsigned long long>(b & 0xffffffffffffULL));
    return out;
}

}  // namespace bgw::net

namespace bgw::net {

gateway_context::gateway_context(std::shared_ptr<const config::config> c,
                                 std::optional<aws::credentials> cr)
    : cfg(std::move(c)),
      creds(std::move(cr)),
      tls(make_tls_context(cfg->upstream.ca_file)),
      pool(cfg->upstream.max_idle_per_host, std::chrono::seconds(50)) {}

awaitable<void> run_session(asio::ip::tcp::socket socket, std::shared_ptr<gateway_context> g) {
    beast::tcp_stream client(std::move(socket));
    beast::flat_buffer buf;
    for (;;) {
        std::shared_ptr<const config::config> cfg = g->cfg;
        request_log log;
        log.id = new_request_id();
        http::request_parser<http::string_body> parser;
        parser.header_limit(static_cast<std::uint32_t>(cfg->limits.max_header_bytes));
        parser.body_limit(cfg->limits.max_body_bytes);

        client.expires_after(cfg->limits.client_idle_timeout);
        auto [ec, n] = co_await http::async_read_header(client, buf, parser, use_nothrow);
        if (ec == http::error::end_of_stream || (ec && buf.size() == 0 && !parser.got_some())) {
            break;  // closed or idle between requests: nothing to answer
        }
        if (!ec && bgw::http::iequals(parser.get()[http::field::expect], "100-continue")) {
            http::response<http::empty_body> cont{http::status::continue_, 11};
            auto [cec, cn] = co_await http::async_write(client, cont, use_nothrow);
            if (cec) break;
        }
        if (!ec) std::tie(ec, n) = co_await http::async_read(client, buf, parser, use_nothrow);
        if (ec) {
            // Nothing after a framing error can be trusted: answer once, then close.
            error e = validation_error("malformed HTTP request: " + ec.message());
            if (ec == http::error::body_limit) {
                e = {http::status::payload_too_large, "ValidationException",
                     "request body exceeds limits.max_body_bytes (" +
                         std::to_string(cfg->limits.max_body_bytes) + " bytes)"};
            } else if (ec == http::error::header_limit) {
                e = {http::status::request_header_fields_too_large, "ValidationException",
                     "request headers exceed limits.max_header_bytes (" +
                         std::to_string(cfg->limits.max_header_bytes) + " bytes)"};
            } else if (ec == beast::error::timeout) {
                e = {http::status::request_timeout, "RequestTimeoutException",
                     "request not received within limits.client_idle_timeout_ms"};
            } else if (is_benign(ec)) {
                break;
            }
            std::string_view received(static_cast<const char*>(buf.data().data()),
                                      buf.data().size());
            if (bgw::http::looks_like_h2_preface(received)) {
                std::string refusal = bgw::http::h2_http11_required(
                    "bedrock-gateway speaks HTTP/1.1; with the AWS SDK for JavaScript pass "
                    "requestHandler: new NodeHttpHandler()");
                co_await asio::async_write(client, asio::buffer(refusal), use_nothrow);
                log.status = 505;
                log.error = "client opened with HTTP/2 (h2c); refused with HTTP_1_1_REQUIRED";
                write_log(log);
                break;
            }
            co_await send_error(client, e, log, false);
            write_log(log);
            break;
        }
        bool keep = co_await forward(client, parser.release(), *g, *cfg, log);
        write_log(log);
        if (!keep) break;
    }
    beast::error_code ignored;
    client.socket().shutdown(asio::ip::tcp::socket::shutdown_send, ignored);
}

}  // namespace bgw::net
