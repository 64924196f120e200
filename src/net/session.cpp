// One client connection: read a request, recognise the runtime operation, sign for the chosen
// region, forward it, and relay the response as it arrives (never buffering a whole response).

#include "bgw/http/error_response.hpp"
#include "bgw/http/event_relay.hpp"
#include "bgw/http/front_parser.hpp"
#include "bgw/http/h2_refusal.hpp"
#include "bgw/http/headers.hpp"
#include "bgw/http/retry_after.hpp"
#include "bgw/http/wire.hpp"
#include "bgw/net/exchange.hpp"
#include "bgw/net/gateway.hpp"
#include "bgw/net/write.hpp"
#include "bgw/obs/log.hpp"
#include "bgw/pipeline/admit.hpp"
#include "bgw/pipeline/request_ctx.hpp"
#include "bgw/pipeline/upstream_walk.hpp"
#include "bgw/policy/callers.hpp"
#include "bgw/policy/hold.hpp"
#include "bgw/policy/traffic.hpp"
#include "bgw/routing/control_plane.hpp"
#include "bgw/routing/router.hpp"
#include "bgw/routing/runtime_path.hpp"
#include "bgw/routing/upstream_request.hpp"
#include "bgw/util/json.hpp"

#include <algorithm>
#include <array>
#include <chrono>
#include <functional>
#include <random>

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/http.hpp>
#include <openssl/rand.h>
#include <rapidjson/document.h>
#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>

namespace bgw::net {
namespace {

namespace http = beast::http;
using clock = std::chrono::steady_clock;

/// What happened to one request (the access log line, the metrics) and what it holds.
using pipeline::request_ctx;

/// The request's part of the metrics (issue 8); model labels are the model the client named.
/// Called before write_log: once a request's log line is out, its metrics are too (a test, or
/// an operator, that waits for the line and then scrapes /metrics must find it counted).
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
bool is_gateway_header(std::string_view name) {
    return bgw::http::iequals(name, "X-Gateway-Region") ||
           bgw::http::iequals(name, "X-Gateway-Tier") ||
           bgw::http::iequals(name, "X-Gateway-Attempts");
}

/// Lets add_gateway_headers write field lines straight into a head being built.
struct head_writer {
    std::string& out;
    void set(std::string_view name, std::string_view value) {
        bgw::http::append_field(out, name, value);
    }
};

/// Writes a whole gateway-made response; the log gets its status and size.
template <class Body>
awaitable<beast::error_code> send_response(beast::tcp_stream& client,
                                           beast::http::response<Body>& res,
                                           request_ctx& log) {
    log.status = res.result_int();
    auto [ec, n] = co_await beast::http::async_write(client, res, use_nothrow);
    log.bytes_out += n;
    co_return ec;
}

/// `pause`: the Retry-After a final failure after the gateway's own attempts carries (issue 17),
/// so an SDK's retry of it does not follow at once.
awaitable<beast::error_code> send_error(beast::tcp_stream& client,
                                        const error& e,
                                        request_ctx& log,
                                        bool keep_alive,
                                        std::optional<std::chrono::milliseconds> pause = {}) {
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
    co_return co_await send_response(client, res, log);
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

/// What goes upstream: the body is a view of the client's (or a target's rewrite of it), so
/// trying several targets never copies it.
struct upstream_request_message {
    std::string head;       ///< request line and fields, as on the wire (routing::wire_head)
    std::string_view body;  ///< the client's body, or a target's rewrite of it
};

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

/// Upstream read sizes (Beast reads from the socket at most the buffer's free room, and never
/// less than 512 bytes). The head is read with `head_read_bytes` of room (an event stream's
/// with `stream_read_bytes`), so a typical answer arrives whole in one read; a plain body is then
/// read in pieces of up to `body_read_bytes` (no more than what is left of it), an event stream in
/// pieces of `stream_read_bytes`, since a thousand streams may be open at once and their frames are
/// small.
constexpr std::size_t head_read_bytes = 16 * 1024;
constexpr std::size_t body_read_bytes = 64 * 1024;
constexpr std::size_t stream_read_bytes = 4 * 1024;

/// Feeds `parser` what `buf` already holds, without touching the socket, and consumes what it
/// used. An error only for bytes the parser refuses; needing more is not one.
template <class Parser>
beast::error_code parse_buffered(Parser& parser, beast::flat_buffer& buf) {
    beast::error_code ec;
    while (buf.size() > 0 && !parser.is_done()) {
        const std::size_t used = parser.put(buf.data(), ec);
        buf.consume(used);
        if (ec == http::error::need_more || ec == http::error::need_buffer) return {};
        if (ec || used == 0) break;
    }
    return ec;
}

/// A bounded copy of a relayed body, for reading usage out of it afterwards.
struct body_capture {
    std::size_t cap;
    std::string data;
    bool overflow = false;
    void add(std::string_view piece) {
        if (overflow || data.size() + piece.size() > cap) {
            overflow = true;
            data.clear();
            return;
        }
        data.append(piece);
    }
};

/// How a relayed body ended.
enum class relay_end {
    done,
    client_failed,
    upstream_failed,
    upstream_truncated,
    corrupt,      ///< ended with an error frame
    idle_timeout  ///< ended with an error frame
};

/// What relay_body needs beside the two streams: where the answer is read from, what is sent
/// with it, and what the request log keeps.
struct relay_job {
    beast::flat_buffer& upbuf;  ///< the upstream connection's read buffer
    http::response_parser<http::buffer_body>& p;
    std::string& head;  ///< the client's response head, written with the first piece
    bool chunked;       ///< to the client
    std::chrono::milliseconds read_timeout;
    std::chrono::milliseconds write_timeout;
    bgw::http::event_relay* events;  ///< set for an event stream
    std::string_view prefix;         ///< body bytes read already (an error body, to classify it)
    body_capture* capture;           ///< keeps what the usage is read from, when set
    const std::function<void()>& before_end;        ///< called before the last write
    std::size_t& bytes_out;                         ///< counts what reached the client
    std::optional<clock::time_point>& first_event;  ///< set when the first event goes out
};

/// Fills the parser's body buffer with the next bytes of the body: what `upbuf` already holds
/// first (read with the head, typically), then one socket read. Needing more is not an error.
template <class Stream>
awaitable<beast::error_code> read_piece(Stream& up,
                                        beast::flat_buffer& upbuf,
                                        http::response_parser<http::buffer_body>& p,
                                        std::size_t room,
                                        std::chrono::milliseconds read_timeout) {
    const std::size_t empty = p.get().body().size;
    beast::error_code ec = parse_buffered(p, upbuf);
    if (ec || p.get().body().size != empty || p.is_done()) co_return ec;
    // Room for the read (freed when the connection goes back to the pool); what was buffered
    // has been parsed, so this rarely moves bytes.
    if (upbuf.capacity() - upbuf.size() < room) upbuf.reserve(upbuf.size() + room);
    beast::get_lowest_layer(up).expires_after(read_timeout);
    auto [rec, n] = co_await http::async_read_some(up, upbuf, p, use_nothrow);
    co_return rec == http::error::need_buffer ? beast::error_code{} : rec;
}

/// What an event stream's new bytes make: whole frames to send (in `frames`), and whether the
/// relay ends after sending them (`ending`) or at once, sending nothing more (`stop`).
struct framed {
    std::optional<relay_end> ending;
    std::optional<relay_end> stop;
};
framed frame_events(bgw::http::event_relay& events,
                    std::string_view bytes,
                    bool chunked,
                    bool body_done,
                    std::string& frames) {
    frames.clear();
    if (!events.feed(bytes, frames)) {
        // Not a byte of the bad frame goes out. A chunked body can still end properly, with one
        // error frame; a fixed-length one can only be cut.
        if (!chunked) return {.ending = std::nullopt, .stop = relay_end::corrupt};
        frames += bgw::http::stream_failure_frame(
            "bedrock-gateway: the upstream event stream is corrupt (" + events.summary().corrupt +
            "); the stream was ended");
        return {.ending = relay_end::corrupt, .stop = std::nullopt};
    }
    if (body_done && events.pending() != 0)
        return {.ending = std::nullopt, .stop = relay_end::upstream_truncated};
    return {};
}

/// Writes one piece to the client in one write: the head if it has not gone yet (then cleared),
/// the piece (framed as a chunk for a chunked body), and the last chunk at the end. Empty
/// buffers write nothing.
awaitable<beast::error_code> write_piece(beast::tcp_stream& client,
                                         const relay_job& job,
                                         std::string_view out,
                                         bool last) {
    char size_line[20];
    std::array<asio::const_buffer, 5> wire{};
    wire[0] = asio::buffer(job.head);
    if (job.chunked && !out.empty()) {
        wire[1] = asio::buffer(size_line, bgw::http::chunk_size_line(out.size(), size_line));
        wire[3] = asio::buffer("\r\n", 2);
    }
    wire[2] = asio::buffer(out);
    if (job.chunked && last) wire[4] = asio::buffer(bgw::http::last_chunk);
    client.expires_after(job.write_timeout);
    auto [wec, wn] = co_await write_all(client, wire);
    job.bytes_out += wn;
    if (!wec) job.head.clear();
    co_return wec;
}

/// The next piece of the body to send, or how the relay ends.
struct next_piece {
    std::string_view out;             ///< bytes (or whole event frames) to send
    std::optional<relay_end> ending;  ///< the relay ends once `out` is sent
    std::optional<std::pair<relay_end, beast::error_code>> stop;  ///< ends now, sending nothing
};

/// Reads the next piece of the body into `piece` (`room` bytes); an event stream's bytes become
/// the whole frames they complete, in `frames`.
template <class Stream>
awaitable<next_piece> read_next_piece(
    Stream& up, const relay_job& job, char* piece, std::size_t room, std::string& frames) {
    http::response_parser<http::buffer_body>& p = job.p;
    bgw::http::event_relay* const events = job.events;
    p.get().body().data = piece;
    p.get().body().size = room;
    const beast::error_code ec = co_await read_piece(up, job.upbuf, p, room, job.read_timeout);
    const std::string_view got(piece, room - p.get().body().size);
    next_piece n;
    if (ec == beast::error::timeout && events && job.chunked && events->pending() == 0) {
        // A silent stream, cut between frames: say so in a frame of its own.
        frames = bgw::http::stream_failure_frame(
            "bedrock-gateway: no event from upstream for " +
            std::to_string(job.read_timeout.count()) +
            " ms (upstream.stream_idle_timeout_ms); the stream was ended");
        n.ending = relay_end::idle_timeout;
    } else if (ec) {
        n.stop = std::pair{relay_end::upstream_failed, ec};
    } else if (events) {
        const framed f = frame_events(*events, got, job.chunked, p.is_done(), frames);
        if (f.stop) n.stop = std::pair{*f.stop, beast::error_code{}};
        n.ending = f.ending;
    }
    n.out = events ? std::string_view(frames) : got;
    co_return n;
}

/// The relay's read size: `stream_read_bytes` for an event stream, else `body_read_bytes`, or
/// what is left of a body of known length when that is less (at least 1 KiB).
std::size_t relay_room(const relay_job& job) {
    if (job.events) return stream_read_bytes;
    if (auto left = job.p.content_length_remaining())
        return std::clamp<std::size_t>(static_cast<std::size_t>(*left), 1024, body_read_bytes);
    return body_read_bytes;
}

/// Relays the response body piece by piece: each piece read from upstream is written to the
/// client before the next read, so memory per stream is one fixed buffer (plus, for an event
/// stream, the one frame in progress) and a slow client slows the upstream read
/// (back-pressure). For an event stream (`events` set) whole frames go out as soon as their last
/// byte arrives, and a corrupt frame ends the client's stream with an error frame instead.
template <class Stream>
awaitable<std::pair<relay_end, beast::error_code>> relay_body(Stream& up,
                                                              beast::tcp_stream& client,
                                                              const relay_job& job) {
    http::response_parser<http::buffer_body>& p = job.p;
    bgw::http::event_relay* const events = job.events;
    const std::size_t room = relay_room(job);
    std::unique_ptr<char[]> storage(new char[room]);
    std::string frames;
    // Body bytes read already (an error body, to classify it) go first.
    next_piece n{.out = job.prefix, .ending = std::nullopt, .stop = std::nullopt};
    for (;;) {
        if (n.out.empty() && !p.is_done())
            n = co_await read_next_piece(up, job, storage.get(), room, frames);
        if (n.stop) co_return *n.stop;
        const bool last = p.is_done() || n.ending.has_value();
        if (n.out.empty() && !last) continue;
        if (job.capture) job.capture->add(n.out);
        // What the answer used is known now: settle it before the client can send its next
        // request (which may need the tokens this one gives back).
        if (last) job.before_end();
        if (auto wec = co_await write_piece(client, job, n.out, last))
            co_return std::pair{relay_end::client_failed, wec};
        if (events && !job.first_event && events->summary().events > 0)
            job.first_event = clock::now();
        if (n.ending) co_return std::pair{*n.ending, beast::error_code{}};
        if (last) co_return std::pair{relay_end::done, beast::error_code{}};
        n.out = {};
    }
}

/// Watches the client while its request is in flight: a client that closes (or resets) is
/// noticed at once, and the upstream connection is closed then rather than at the next write.
/// Bytes from the client (a pipelined request) end the watch without counting as gone.
struct client_watch {
    bool active = true;
    bool client_gone = false;
    bool armed = false;                       ///< the socket wait has started
    upstream_connection* upstream = nullptr;  ///< the connection in use, if any yet
    asio::steady_timer* sleeper = nullptr;    ///< the wait before a retry, while it runs
    std::optional<asio::steady_timer> soon;   ///< until the watch starts (watch_client_soon)
};

void watch_client(beast::tcp_stream& client, const std::shared_ptr<client_watch>& w) {
    w->armed = true;
    client.socket().async_wait(
        asio::socket_base::wait_read, [&client, w](const beast::error_code& ec) {
            if (!w->active || ec) return;  // inactive: the session (and `client`) may be gone
            char probe;
            beast::error_code pec;  // the socket is non-blocking (run_session)
            const auto n = client.socket().receive(asio::buffer(&probe, 1),
                                                   asio::socket_base::message_peek, pec);
            // Nothing there: a stale readiness event (bytes the session has read meanwhile without
            // the event loop; edge-triggered epoll still reports their arrival). Keep watching.
            if (pec == asio::error::would_block) return watch_client(client, w);
            if (!pec && n > 0) return;  // pipelined bytes: the client is still there
            w->client_gone = true;
            // Close rather than cancel: a cancel finds nothing to cancel when the relay is between
            // two reads (its next read would then wait on as if nothing happened); a closed socket
            // fails that read at once.
            if (w->upstream) w->upstream->tcp().close();
            if (w->sleeper) w->sleeper->cancel();
        });
}

/// Starts the watch after `delay`: a watch costs system calls (re-arming the socket in epoll,
/// a peek) that a request answered sooner does not need; the long requests it is for (a model
/// generating) take seconds. A client that left meanwhile is seen as soon as the watch starts.
void watch_client_soon(beast::tcp_stream& client,
                       const std::shared_ptr<client_watch>& w,
                       std::chrono::milliseconds delay) {
    w->soon.emplace(client.get_executor());
    w->soon->expires_after(delay);
    w->soon->async_wait([&client, w](const beast::error_code& ec) {
        if (ec || !w->active) return;  // stopped first: the session (and `client`) may be gone
        watch_client(client, w);
    });
}

/// Ends a watch: a pending wait completes (aborted) and finds it inactive.
void stop_watch(beast::tcp_stream& client, client_watch& w) {
    w.active = false;
    if (w.soon) w.soon->cancel();
    if (!w.armed) return;
    beast::error_code ignored;
    client.socket().cancel(ignored);
}

/// A deadline on a client read that cancels the read but leaves the socket open, so the
/// gateway can still answer 408 (tcp_stream's own expiry closes the socket). Both the timer's
/// handler and the session run on the connection's thread (its io_context); `armed` goes false
/// before the session moves on, so a late handler never touches the socket.
class read_deadline {
public:
    read_deadline(beast::tcp_stream& client, std::chrono::milliseconds after)
        : state_(std::make_shared<state>()), timer_(client.get_executor()) {
        client.expires_never();
        timer_.expires_after(after);
        timer_.async_wait([st = state_, &sock = client.socket()](const beast::error_code& ec) {
            if (ec || !st->armed) return;
            st->fired = true;
            beast::error_code ignored;
            sock.cancel(ignored);
        });
    }
    ~read_deadline() {
        state_->armed = false;
        timer_.cancel();
    }
    read_deadline(const read_deadline&) = delete;
    read_deadline& operator=(const read_deadline&) = delete;
    bool fired() const { return state_->fired; }

private:
    struct state {
        bool armed = true;
        bool fired = false;
    };
    std::shared_ptr<state> state_;
    asio::steady_timer timer_;
};

std::mt19937_64& jitter_rng() {
    thread_local std::mt19937_64 rng{std::random_device{}()};
    return rng;
}

awaitable<beast::error_code> send_throttle(beast::tcp_stream& client,
                                           const policy::throttle_answer& a,
                                           std::string_view request_id,
                                           request_ctx& log,
                                           bool keep_alive) {
    auto res = bgw::http::make_throttle_response(a.wait, a.message, request_id, 11, keep_alive);
    add_gateway_headers(res, log);
    log.throttle = a.source;
    log.error = a.message;
    co_return co_await send_response(client, res, log);
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

/// The upstream side of one request, reused by each of its attempts: the connection in use,
/// the parser of its answer, and an error answer's body (read to classify it).
struct upstream_leg {
    std::unique_ptr<upstream_connection> conn;
    std::optional<http::response_parser<http::buffer_body>> p;
    std::string error_body;
};

/// What every attempt of one request shares.
struct attempt_context {
    beast::tcp_stream& client;
    gateway_context& g;
    const config::config& cfg;
    client_watch& watch;
    request_ctx& log;
    const policy::hold_budget& hold;
    std::size_t head_room;  ///< the first read's room: an answer's head, or a stream's
};

/// One attempt's result: an answer to relay (or to judge), or no answer at all.
struct attempt_result {
    beast::error_code ec;  ///< no answer (connect, send or read failed)
    std::string_view during = "response";
    policy::outcome outcome = policy::outcome::success;
};

/// A connection to `ep` for the next attempt: a pooled one, or a fresh one (the connect error
/// if that fails). The client's watcher may close it from then on.
awaitable<beast::error_code> take_connection(const attempt_context& a,
                                             const config::region_endpoint& ep,
                                             upstream_leg& leg) {
    a.watch.upstream = nullptr;  // the watcher must never close a connection we dropped
    leg.conn = a.g.pool.take(pool_key(ep), a.client.get_executor().context());
    if (!leg.conn) {
        auto [cec, fresh] = co_await connect_upstream(
            a.client.get_executor(), a.g.tls, ep,
            a.hold.attempt_bound(a.cfg.upstream.connect_timeout, clock::now()));
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

/// Sends `out` once on a pooled or fresh connection to `ep` and reads the answer's head, and for
/// an error answer its (small) body, so the answer can be classified before anything goes to
/// the client. A pooled connection the upstream closed while idle fails before any response
/// byte; only then is the request sent once more at once, on a fresh connection.
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

/// How an attempt that will not be relayed ended, for the decision log.
std::string describe(const attempt_result& r,
                     const std::optional<http::response_parser<http::buffer_body>>& p) {
    if (r.ec) return std::string(r.during) + " failed: " + r.ec.message();
    std::string code(p->get()["x-amzn-ErrorType"]);
    code = code.substr(0, code.find(':'));
    return std::string(r.outcome == policy::outcome::throttled ? "throttled" : "failed") + " (" +
           std::to_string(p->get().result_int()) + (code.empty() ? "" : " " + code) + ")";
}

/// The client side of one request: its connection, and the answers the gateway makes itself.
/// Each `answer` returns whether the connection may carry another request.
struct client_side {
    beast::tcp_stream& stream;
    beast::flat_buffer& buf;
    request_ctx& ctx;
    bool keep_alive;

    awaitable<bool> answer(const error& e, std::optional<std::chrono::milliseconds> pause = {}) {
        co_return !co_await send_error(stream, e, ctx, keep_alive, pause) && keep_alive;
    }
    awaitable<bool> answer(const policy::throttle_answer& a, std::string_view request_id) {
        co_return !co_await send_throttle(stream, a, request_id, ctx, keep_alive) && keep_alive;
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
    template <class Body>
    awaitable<bool> respond(http::response<Body>& res) {
        res.keep_alive(keep_alive);
        co_return !co_await send_response(stream, res, ctx) && keep_alive;
    }
    /// The client hung up before its answer was complete.
    bool gone() {
        ctx.status = 499;  // nginx's "client closed request"
        ctx.error = "client went away before the response was complete";
        ctx.held.settle(0, clock::now());
        return false;
    }
};

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

/// An allowed control-plane read: the region by the runtime API's intent rules and the caller
/// key's regions, then the answer (cached, or one signed call).
awaitable<bool> serve_control_read(client_side& c,
                                   const http::request<http::string_body>& req,
                                   const routing::control_request& control,
                                   gateway_context& g,
                                   const config::config& cfg,
                                   const policy::caller& who) {
    c.ctx.op = control.operation;
    auto region =
        routing::choose_region({req["X-Gateway-Region"], {}, req[http::field::authorization], {}},
                               control.region_prefix, cfg);
    if (!region) co_return co_await c.answer(region.error());
    if (!policy::region_allowed(who, *region)) {
        const error elsewhere{
            http::status::forbidden, "AccessDeniedException",
            "caller key " + std::string(who.name) + " may not use region " + *region};
        co_return co_await c.answer(elsewhere);
    }
    c.ctx.region = *region;
    auto res = co_await answer_control_read(g, cfg, control, *region,
                                            std::string(req[http::field::user_agent]), c.ctx.id);
    co_return co_await c.respond(res);
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

/// A request for the batch tier: spooled durably, then answered 202 with where to collect it.
awaitable<bool> accept_batch(client_side& c,
                             const http::request<http::string_body>& req,
                             const routing::target& t,
                             const routing::runtime_request& rt,
                             gateway_context& g) {
    c.ctx.region = t.region;
    c.ctx.tier = config::tier_name(t.tier);
    // The record goes into a JSONL file: one compact JSON object, whatever the app's spacing.
    rapidjson::Document doc;
    bgw::util::parse_json(doc, std::string_view(req.body().data(), req.body().size()));
    if (doc.HasParseError() || !doc.IsObject()) {
        const error not_object =
            validation_error("a batch record's body must be a JSON object, nested at most " +
                             std::to_string(bgw::util::max_json_depth) + " levels deep");
        co_return co_await c.answer(not_object);
    }
    rapidjson::StringBuffer compact;
    rapidjson::Writer<rapidjson::StringBuffer> cw(compact);
    doc.Accept(cw);
    auto id = g.batch->accept(t.region, t.model_id,
                              rt.op == routing::operation::converse ? "Converse" : "InvokeModel",
                              std::string(compact.GetString(), compact.GetSize()), c.ctx.caller);
    if (!id) co_return co_await c.answer(id.error());
    rapidjson::StringBuffer body;
    rapidjson::Writer<rapidjson::StringBuffer> w(body);
    w.StartObject();
    w.Key("recordId");
    w.String(id->c_str());
    w.Key("status");
    w.String("queued");
    w.EndObject();
    http::response<http::string_body> res{http::status::accepted, 11};
    res.set(http::field::content_type, "application/json");
    res.set(http::field::location, "/gateway/batch/records/" + *id);
    res.set("x-amzn-RequestId", c.ctx.id);
    add_gateway_headers(res, c.ctx);
    res.body().assign(body.GetString(), body.GetSize());
    res.prepare_payload();
    c.ctx.batch_record = *id;
    co_return co_await c.respond(res);
}

/// The admin endpoints, served without a caller key.
bool is_admin_path(std::string_view target) {
    return target == "/healthz" || target == "/readyz" || target == "/metrics";
}

/// Waits `wait` inside the gateway (a backoff, a cool-down, a local limit's refill), charged to
/// the request's hold budget. A client that hangs up ends the wait at once: false then.
awaitable<bool> hold_on(asio::steady_timer& sleeper,
                        client_watch& watch,
                        policy::hold_budget& hold,
                        std::chrono::milliseconds wait) {
    const auto from = clock::now();
    // At least a millisecond, so a loop of waits always spends the budget.
    sleeper.expires_after(std::max(wait, std::chrono::milliseconds{1}));
    watch.sleeper = &sleeper;
    co_await sleeper.async_wait(use_nothrow);
    watch.sleeper = nullptr;
    hold.waited(from, clock::now());
    co_return !watch.client_gone;
}

/// The upstream answer's own "come back in", if it gave one.
std::optional<std::chrono::milliseconds> upstream_hint(
    const attempt_result& r, const std::optional<http::response_parser<http::buffer_body>>& p) {
    if (r.ec || !p) return std::nullopt;
    const auto& head = p->get();
    return policy::upstream_retry_after(head["retry-after-ms"], head["x-amz-retry-after"],
                                        head[http::field::retry_after]);
}

/// What the walk tells the metrics.
class metrics_observer final : public pipeline::walk_observer {
public:
    explicit metrics_observer(obs::metrics& m) : m_(m) {}
    void throttle(const std::string& region,
                  const std::string& model,
                  std::string_view source) override {
        m_.throttle(region, model, source);
    }
    void failover() override { m_.failover(); }
    void retry() override { m_.retry(); }

private:
    obs::metrics& m_;
};

/// What the walk needs to know about an attempt that ended.
pipeline::attempt_report report(const attempt_result& r, const upstream_leg& leg) {
    pipeline::attempt_report out;
    out.outcome = r.outcome;
    out.timed_out = r.ec == beast::error::timeout;
    if (r.ec) out.no_answer = upstream_failure(r.ec, r.during);
    out.upstream_hint = upstream_hint(r, leg.p);
    if (!r.ec && leg.p) out.upstream_request_id = std::string(leg.p->get()["x-amzn-RequestId"]);
    if (r.outcome != policy::outcome::success) out.description = describe(r, leg.p);
    return out;
}

/// Lets an attempt's connection go: back to the pool when its error answer was read to the end
/// and it may be kept, closed otherwise.
void release(gateway_context& g, client_watch& watch, upstream_leg& leg, const attempt_result& r) {
    watch.upstream = nullptr;
    if (!r.ec && leg.p && leg.p->is_done() && leg.p->keep_alive())
        g.pool.give_back(std::move(leg.conn));
    leg.conn.reset();
}

/// Builds attempt `s` of the walk: the target's shape of the request, signed afresh (a new
/// X-Amz-Date) for the target's region.
struct attempt_builder {
    const http::request<http::string_body>& req;
    const pipeline::admitted& a;
    std::string_view body;
    gateway_context& g;
    const config::config& cfg;
    std::optional<std::string> rewritten;
    pipeline::shaped_request shaped{};

    const config::region_endpoint& build(const pipeline::send& s, upstream_request_message& out) {
        static const aws::credentials no_credentials;
        const routing::target& t = a.plan.targets[s.target];
        if (s.attempt == 1) shaped = pipeline::shape_for_target(a.rt, t, body, rewritten);
        const config::region_endpoint& ep = cfg.regions.at(t.region);
        auto now = std::chrono::floor<std::chrono::seconds>(std::chrono::system_clock::now());
        auto prepared = routing::prepare_upstream_request(
            req.method(), shaped.rt, req, shaped.body,
            {.endpoint = ep, .region = t.region, .service_tier = shaped.tier_header},
            {.creds = a.signing ? a.signing->creds : no_credentials,
             .now = now,
             .cache = &g.keys,
             .bearer_token = g.bearer});
        out.head = routing::wire_head(prepared, shaped.body.size());
        out.body = shaped.body;
        return ep;
    }
};

/// The response head the client gets for a relayed answer, as wire bytes: the upstream's fields
/// that cross (in their order), the gateway's own, and the framing (chunked unless upstream gave
/// a length).
std::string relayed_head(const http::response_parser<http::buffer_body>& p,
                         const request_ctx& ctx,
                         std::optional<std::chrono::milliseconds> pause,
                         bool keep_alive) {
    const auto& head = p.get();
    std::string out;
    out.reserve(1024);
    bgw::http::append_status_line(out, head.result_int(), head.reason());
    for (const auto& f : head) {
        const auto name = f.name_string();
        if (bgw::http::forward_response_header(name) && !is_gateway_header(name))
            bgw::http::append_field(out, name, f.value());
    }
    head_writer fields{out};
    add_gateway_headers(fields, ctx);
    // Upstream's own wait, in any form, stands; otherwise the gateway's pause.
    if (pause && head.find(http::field::retry_after) == head.end() &&
        head.find("x-amz-retry-after") == head.end() && head.find("retry-after-ms") == head.end())
        bgw::http::set_retry_after(fields, *pause);
    if (const auto len = p.content_length()) {
        bgw::http::append_field(out, "Content-Length", std::to_string(*len));
    } else {
        bgw::http::append_field(out, "Transfer-Encoding", "chunked");
    }
    if (!keep_alive) bgw::http::append_field(out, "Connection", "close");
    out.append("\r\n");
    return out;
}

/// What the relayed answer says it used, for the log, the metrics and the local TPM limits,
/// which replace their estimates with it (once, as soon as it is known).
struct usage_settler {
    request_ctx& ctx;
    const http::response_parser<http::buffer_body>& p;
    const bgw::http::event_relay* events;
    const body_capture* capture;
    bool model_op;
    bool done = false;

    void operator()() {
        if (std::exchange(done, true)) return;
        std::optional<policy::usage> used;
        if (ctx.status >= 400) {
            used = policy::usage{};
        } else if (events && events->summary().input_tokens && events->summary().output_tokens) {
            used = policy::usage{*events->summary().input_tokens, *events->summary().output_tokens};
        } else if (capture && !capture->overflow) {
            used = policy::usage_from_converse_body(capture->data);
        }
        if (!used) {
            const auto& head = p.get();
            used = policy::usage_from_headers(head["X-Amzn-Bedrock-Input-Token-Count"],
                                              head["X-Amzn-Bedrock-Output-Token-Count"]);
        }
        if (used && ctx.status < 400 && model_op) ctx.tokens = used;
        if (used) ctx.held.settle(used->total(), clock::now());
    }
};

/// Whether the client connection may be kept after a relay that ended `how`, with what the log
/// says about it.
bool after_relay(client_side& c,
                 const client_watch& watch,
                 std::pair<relay_end, beast::error_code> how,
                 bool chunked) {
    switch (how.first) {
        case relay_end::done:
            return c.keep_alive;
        case relay_end::corrupt:
            // The upstream connection has lost its framing; the client's stream ended properly.
            c.ctx.error = "upstream event stream corrupt: " + c.ctx.stream->corrupt;
            return c.keep_alive && chunked;
        case relay_end::idle_timeout:
            c.ctx.error = "event stream idle for longer than upstream.stream_idle_timeout_ms";
            return c.keep_alive;
        case relay_end::upstream_truncated:
            c.ctx.error = "upstream ended the body inside an event-stream frame";
            return false;
        case relay_end::client_failed:
        case relay_end::upstream_failed:
            // The status line is out: the only honest signal left is to cut the client's stream.
            if (watch.client_gone) return c.gone();
            c.ctx.error =
                std::string(how.first == relay_end::client_failed ? "client" : "upstream") +
                " failed mid-body: " + how.second.message();
            return false;
    }
    return false;
}

/// What relaying an answer needs beside the client.
struct relay_inputs {
    gateway_context& g;
    const config::config& cfg;
    pipeline::upstream_walk& walk;
    upstream_leg& leg;
    client_watch& watch;
    routing::operation op;
};

/// Relays the answer the walk settled on: its head as soon as upstream sent it, its body piece
/// by piece (event streams frame by frame, read on the side for usage and exceptions).
awaitable<bool> relay_answer(client_side& c, const relay_inputs& in) {
    auto& p = *in.leg.p;
    auto& conn = in.leg.conn;
    const auto& head = p.get();
    c.ctx.status = head.result_int();
    c.ctx.upstream_request_id = std::string(head["x-amzn-RequestId"]);
    in.walk.relayed(c.ctx.status);
    std::string head_bytes = relayed_head(p, c.ctx, in.walk.pause(), c.keep_alive);
    const bool chunked = !p.content_length();
    std::optional<bgw::http::event_relay> events;
    const auto content_type = head[http::field::content_type];
    if (head.result() == http::status::ok &&
        bgw::http::iequals(content_type.substr(0, content_type.find(';')),
                           "application/vnd.amazon.eventstream"))
        events.emplace();
    // A stream's head goes out at once (its first event may be a while), as does any head whose
    // body has not started arriving; otherwise the head goes with the first piece of the body,
    // in one write.
    c.stream.expires_after(in.cfg.limits.client_idle_timeout);
    if (events || (in.leg.error_body.empty() && conn->buffer.size() == 0 && !p.is_done())) {
        auto [hec, hn] = co_await write_all(c.stream, asio::buffer(head_bytes));
        c.ctx.bytes_out += hn;
        if (hec) {
            c.ctx.error = "client went away: " + hec.message();
            c.ctx.held.settle(0, clock::now());
            co_return false;
        }
        head_bytes.clear();
    }
    // A Converse answer carries its usage in the body: keep a bounded copy to read it.
    std::optional<body_capture> capture;
    if (!events && c.ctx.status < 400 && in.op == routing::operation::converse)
        capture.emplace(body_capture{256 * 1024, {}});
    usage_settler settle_usage{c.ctx, p, events ? &*events : nullptr, capture ? &*capture : nullptr,
                               pipeline::runs_model(in.op)};
    // A named local, not a std::function made inside the co_await: GCC 12 mishandles
    // temporaries with destructors there.
    const std::function<void()> before_end = [&settle_usage] { settle_usage(); };
    const relay_job job{.upbuf = conn->buffer,
                        .p = p,
                        .head = head_bytes,
                        .chunked = chunked,
                        .read_timeout = events ? in.cfg.upstream.stream_idle_timeout
                                               : in.cfg.upstream.response_timeout,
                        .write_timeout = in.cfg.limits.client_idle_timeout,
                        .events = events ? &*events : nullptr,
                        .prefix = in.leg.error_body,
                        .capture = capture ? &*capture : nullptr,
                        .before_end = before_end,
                        .bytes_out = c.ctx.bytes_out,
                        .first_event = c.ctx.first_event};
    auto relay = [&](auto& stream) { return relay_body(stream, c.stream, job); };
    const auto relayed = co_await with_stream(*conn, relay);
    if (events) {
        c.ctx.stream = events->summary();
        // A throttle inside a stream cannot change the status, but it does teach the policy.
        if (policy::is_throttling_code(c.ctx.stream->exception))
            in.walk.stream_throttled(clock::now());
    }
    settle_usage();  // when the relay ended before its last piece
    const bool keep = after_relay(c, in.watch, relayed, chunked);
    // The client may have hung up just after the last byte, and its watcher closed this
    // connection before we got here: a closed connection must never reach the pool.
    if (relayed.first == relay_end::done && p.keep_alive() && !in.watch.client_gone)
        in.g.pool.give_back(std::move(conn));
    co_return keep;
}

/// Runs an admitted request upstream: the walk over its targets (each attempt signed afresh),
/// then the relay of the answer it settles on. From the first attempt until the answer is
/// relayed, a client that hangs up cancels the upstream.
awaitable<bool> run_upstream(client_side& c,
                             const http::request<http::string_body>& req,
                             std::string_view body,
                             const pipeline::admitted& a,
                             gateway_context& g,
                             const config::config& cfg) {
    policy::hold_budget hold(c.ctx.start, cfg.retry.max_hold, a.terms.timeout);
    metrics_observer seen{g.metrics};
    pipeline::upstream_walk walk({.rt = a.rt,
                                  .plan = a.plan,
                                  .body = body,
                                  .traffic = g.traffic,
                                  .hold = hold,
                                  .retry = cfg.retry,
                                  .max_attempts = a.terms.max_attempts,
                                  .rng = jitter_rng(),
                                  .observer = seen},
                                 c.ctx);
    auto watch = std::make_shared<client_watch>();
    watch_client_soon(c.stream, watch, near_timer_period);
    struct watch_guard {
        beast::tcp_stream& client;
        client_watch& w;
        ~watch_guard() { stop_watch(client, w); }
    } guard{c.stream, *watch};
    upstream_leg leg;
    upstream_request_message out;
    attempt_builder attempts{req, a, body, g, cfg, {}, {}};
    asio::steady_timer sleeper(c.stream.get_executor());
    const attempt_context each_attempt{
        .client = c.stream,
        .g = g,
        .cfg = cfg,
        .watch = *watch,
        .log = c.ctx,
        .hold = hold,
        .head_room = routing::is_streaming(a.rt.op) ? stream_read_bytes : head_read_bytes};
    for (auto s = walk.next(clock::now());; s = walk.next(clock::now())) {
        if (const auto* w = std::get_if<pipeline::wait>(&s)) {
            if (!co_await hold_on(sleeper, *watch, hold, w->ms)) co_return c.gone();
            continue;
        }
        if (const auto* done = std::get_if<pipeline::answer>(&s))
            co_return co_await c.answer(*done);
        const auto& ep = attempts.build(std::get<pipeline::send>(s), out);
        auto r = co_await attempt_once(each_attempt, ep, out, leg);
        if (watch->client_gone) co_return c.gone();
        if (walk.record(report(r, leg), clock::now()) == pipeline::verdict::relay) break;
        release(g, *watch, leg, r);
    }
    const relay_inputs relaying{g, cfg, walk, leg, *watch, a.rt.op};
    co_return co_await relay_answer(c, relaying);
}

/// A runtime API request, after its caller key: admitted (or refused), then queued for the batch
/// tier or run upstream.
awaitable<bool> forward_runtime(client_side& c,
                                http::request<http::string_body>& req,
                                const policy::caller& who,
                                gateway_context& g,
                                const config::config& cfg) {
    const bool bearer = !g.bearer.empty();
    const auto signing = bearer ? result<std::shared_ptr<const aws::timed_credentials>>{nullptr}
                                : g.sigv4_credentials();
    pipeline::admission_state state{.cfg = cfg,
                                    .streams = g.streams,
                                    .caller_limits = g.caller_limits.load(),
                                    .signing = &signing,
                                    .bearer = bearer};
    auto admission = pipeline::admit(req, who, state, c.ctx);
    if (const auto* no = std::get_if<pipeline::refusal>(&admission))
        co_return co_await c.answer(*no);
    const auto& a = std::get<pipeline::admitted>(admission);
    if (a.plan.targets.front().tier == config::tier::batch)
        co_return co_await accept_batch(c, req, a.plan.targets.front(), a.rt, g);
    // The request is all parsed: a connection that holds a long stream holds no read buffer
    // (a short answer keeps it for the connection's next request).
    if (routing::is_streaming(a.rt.op) && c.buf.size() == 0) c.buf.shrink_to_fit();
    const std::string body = std::move(req.body());
    co_return co_await run_upstream(c, req, body, a, g, cfg);
}

/// `/healthz`, `/readyz` and `/metrics`, on the listener that serves them; on the other, 404.
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

/// Forwards one accepted request; returns whether the client connection may be kept.
awaitable<bool> forward(client_side& c,
                        http::request<http::string_body>& req,
                        gateway_context& g,
                        const config::config& cfg,
                        listener_role role) {
    c.ctx.bytes_in = req.body().size();
    const bool admin_path = is_admin_path(req.target());
    if (admin_path || role == listener_role::admin) {
        const bool here = admin_path && (role == listener_role::admin || !cfg.admin_listen);
        co_return co_await serve_admin(c, req, g, here);
    }
    // Caller keys (when configured) guard everything below: the runtime API and batch results.
    auto who = policy::authenticate(cfg, req["x-api-key"], req[http::field::authorization]);
    if (!who) co_return co_await c.answer(who.error());
    c.ctx.caller = who->name;
    if (req.target().starts_with("/gateway/batch/")) {
        c.ctx.op = "GatewayBatch";
        if (!g.batch) {
            const error off{http::status::not_implemented, "NotImplementedException",
                            "the batch tier is not configured on this gateway (no batch section)"};
            co_return co_await c.answer(off);
        }
        auto res = g.batch->answer(req.method(), req.target(), who->name, c.ctx.id);
        co_return co_await c.respond(res);
    }
    // The read-only control plane (ListInferenceProfiles, ...); any other control-plane call is
    // refused here and never signed.
    auto control = routing::parse_control_target(req.method(), req.target());
    if (!control) co_return co_await c.answer(control.error());
    if (*control) co_return co_await serve_control_read(c, req, **control, g, cfg, *who);
    co_return co_await forward_runtime(c, req, *who, g, cfg);
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

}  // namespace bgw::net

namespace bgw::net {

namespace {

/// Full: one 503 that says so, then close, before reading anything.
awaitable<void> refuse_connection(beast::tcp_stream& client, gateway_context& g) {
    request_ctx log;
    log.id = new_request_id();
    const error full{http::status::service_unavailable, "ServiceUnavailableException",
                     "the gateway already holds limits.max_connections (" +
                         std::to_string(g.snapshot()->limits.max_connections) +
                         ") client connections; retry shortly"};
    co_await send_error(client, full, log, false);
    write_log(log);
    beast::error_code ignored;
    client.socket().shutdown(asio::ip::tcp::socket::shutdown_send, ignored);
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
awaitable<beast::error_code> read_body(beast::tcp_stream& client,
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
                client.socket(), asio::buffer(body.data() + have, room), use_nothrow);
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

/// What `forward` would refuse from the head alone (a caller key that is missing or wrong, a
/// path that names no operation or a model the key may not use), checked before any body byte is
/// read: such a request costs the gateway no body.
std::optional<error> refuse_head(const http::request<http::string_body>& req,
                                 const config::config& cfg,
                                 listener_role role,
                                 request_ctx& log) {
    if (is_admin_path(req.target()) || role == listener_role::admin) return std::nullopt;
    auto who = policy::authenticate(cfg, req["x-api-key"], req[http::field::authorization]);
    if (!who) return who.error();
    if (req.target().starts_with("/gateway/batch/")) return std::nullopt;
    auto control = routing::parse_control_target(req.method(), req.target());
    if (!control) return control.error();
    if (*control) return std::nullopt;  // a read-only control-plane call: no body, no model
    auto rt = routing::parse_runtime_target(req.method(), req.target());
    if (!rt) return rt.error();
    log.op = routing::operation_name(rt->op);
    log.model = rt->model_id;
    if (auto allowed = policy::authorize_model(*who, rt->model_id); !allowed)
        return allowed.error();
    return std::nullopt;
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

/// A client that opened with the HTTP/2 preface (h2c) gets HTTP/2's own refusal, which its
/// library understands, rather than an HTTP/1.1 answer it cannot read.
awaitable<void> refuse_h2(beast::tcp_stream& client, request_ctx& log) {
    const std::string refusal = bgw::http::h2_http11_required(
        "bedrock-gateway speaks HTTP/1.1; with the AWS SDK for JavaScript pass "
        "requestHandler: new NodeHttpHandler()");
    co_await asio::async_write(client, asio::buffer(refusal), use_nothrow);
    log.status = 505;
    log.error = "client opened with HTTP/2 (h2c); refused with HTTP_1_1_REQUIRED";
    write_log(log);
}

/// Reads one request whose first bytes are in `buf`, answers it, and says whether the connection
/// may carry another. Its state lives in its own coroutine frame, allocated for the request only:
/// an idle connection holds none of it.
awaitable<bool> serve_request(beast::tcp_stream& client,
                              beast::flat_buffer& buf,
                              const std::shared_ptr<gateway_context>& g,
                              listener_role role,
                              request_ctx& log) {
    std::shared_ptr<const config::config> cfg = g->snapshot();
    const auto& limits = cfg->limits;
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
        read_deadline head_deadline(client, limits.header_timeout);
        std::tie(ec, n) = co_await http::async_read_header(client, buf, parser, use_nothrow);
        read_timed_out = head_deadline.fired();
    }
    if (ec == http::error::end_of_stream) co_return false;
    std::optional<error> refused = parser.refusal();
    if (!ec && !refused) refused = refuse_head(parser.get(), *cfg, role, log);
    if (refused) {
        // The body (if any) is unread: the connection cannot carry another request.
        client.expires_after(limits.client_idle_timeout);
        co_await send_error(client, *refused, log, false);
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
        read_deadline body_deadline(client, limits.client_idle_timeout);
        ec = co_await read_body(client, buf, parser, budget, budget_spent);
        read_timed_out = body_deadline.fired();
    }
    // Whatever is written next (an error, a health answer, a forwarded head) has the
    // keep-alive time to go out: a client that stops reading cannot hold the session.
    client.expires_after(cfg->limits.client_idle_timeout);
    if (ec || budget_spent) {
        // Nothing after a framing error can be trusted: answer once, then close.
        auto e = read_failure({ec, parser, budget_spent, read_timed_out}, limits);
        if (!e) co_return false;
        std::string_view received(static_cast<const char*>(buf.data().data()), buf.data().size());
        if (bgw::http::looks_like_h2_preface(received)) {
            co_await refuse_h2(client, log);
            co_return false;
        }
        co_await send_error(client, *e, log, false);
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
    client_side c{client, buf, log, req.keep_alive() && !g->draining};
    bool keep = co_await forward(c, req, *g, *cfg, role);
    record_metrics(*g, *cfg, log);
    write_log(log);
    // Draining: this connection's last answer has gone; no new request starts on it.
    co_return keep && !g->draining;
}

/// One request, guarded: an exception from anywhere in it (a library that throws, a bug) is
/// logged once as `session_failed` with the request's id and ends this connection only.
awaitable<bool> serve_guarded(beast::tcp_stream& client,
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

awaitable<void> run_session(asio::ip::tcp::socket socket,
                            std::shared_ptr<gateway_context> g,
                            listener_role role) {
    beast::tcp_stream client(std::move(socket));
    beast::error_code nb;
    client.socket().non_blocking(true, nb);  // for next_request_bytes' first try and the watch
    if (nb) co_return;
    beast::flat_buffer buf;
    struct connection_slot {
        gateway_context& g;
        ~connection_slot() { --g.connections; }
    } slot{*g};
    if (++g->connections > g->snapshot()->limits.max_connections) {
        co_await refuse_connection(client, *g);
        co_return;
    }
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
    client.socket().shutdown(asio::ip::tcp::socket::shutdown_send, ignored);
    if (answered) co_await linger(client, buf);
}

}  // namespace bgw::net
