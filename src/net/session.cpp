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
    int upstream_throttles = 0;      ///< attempts upstream answered with a throttle
    std::string_view throttle;       ///< when the gateway answered 429: which limit
    std::string route;               ///< the route the model id named, if any
    std::string_view tier;           ///< the tier of the target in use (set once routed)
    std::vector<std::string> tried;  ///< targets left behind, and why
    std::string batch_record;        ///< the record a batch-tier request became
    std::string error;
    clock::time_point start = clock::now();
    std::optional<bgw::http::stream_summary> stream;  ///< set for event-stream responses
    std::optional<policy::usage> tokens;              ///< what the answer says it used
    std::string target_model;  ///< the model id sent upstream (a provisioned ARN...), for prices
    std::optional<clock::time_point> first_event;  ///< when a stream's first event went out
    std::string_view caller;  ///< the caller key's name (never the key), when keys are on
};

/// The request's part of the metrics (issue 8); model labels are the model the client named.
/// Called before write_log: once a request's log line is out, its metrics are too (a test, or
/// an operator, that waits for the line and then scrapes /metrics must find it counted).
void record_metrics(gateway_context& g, const config::config& cfg, const request_log& l) {
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

void write_log(const request_log& l) {
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
void add_gateway_headers(Fields& res, const request_log& log) {
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
                                           request_log& log) {
    log.status = res.result_int();
    auto [ec, n] = co_await beast::http::async_write(client, res, use_nothrow);
    log.bytes_out += n;
    co_return ec;
}

/// `pause`: the Retry-After a final failure after the gateway's own attempts carries (issue 17),
/// so an SDK's retry of it does not follow at once.
awaitable<beast::error_code> send_error(beast::tcp_stream& client,
                                        const error& e,
                                        request_log& log,
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

/// Relays the response body piece by piece: each piece read from upstream is written to the
/// client before the next read, so memory per stream is one fixed buffer (plus, for an event
/// stream, the one frame in progress) and a slow client slows the upstream read
/// (back-pressure). For an event stream (`events` set) whole frames go out as soon as their last
/// byte arrives, and a corrupt frame ends the client's stream with an error frame instead.
template <class Stream>
awaitable<std::pair<relay_end, beast::error_code>> relay_body(Stream& up,
                                                              beast::tcp_stream& client,
                                                              const relay_job& job) {
    // Named references, not a structured binding: GCC 12 coroutines and bindings do not mix.
    beast::flat_buffer& upbuf = job.upbuf;
    http::response_parser<http::buffer_body>& p = job.p;
    std::string& head = job.head;
    const bool chunked = job.chunked;
    const auto read_timeout = job.read_timeout;
    bgw::http::event_relay* const events = job.events;
    std::string_view prefix = job.prefix;
    std::size_t room = stream_read_bytes;
    if (!events) {
        room = body_read_bytes;
        if (auto left = p.content_length_remaining())
            room = std::clamp<std::size_t>(static_cast<std::size_t>(*left), 1024, room);
    }
    std::unique_ptr<char[]> storage(new char[room]);
    char* const piece = storage.get();
    const std::size_t piece_size = room;
    std::string frames;
    for (;;) {
        std::string_view out;
        // Set when the gateway ends an event stream itself, with one error frame that says why.
        std::optional<relay_end> ending;
        if (!prefix.empty()) {
            out = std::exchange(prefix, {});  // already read (an error body, to classify it)
        } else if (!p.is_done()) {
            p.get().body().data = piece;
            p.get().body().size = piece_size;
            // Bytes already read (with the head, typically) are parsed without a socket read.
            beast::error_code ec = parse_buffered(p, upbuf);
            if (!ec && p.get().body().size == piece_size && !p.is_done()) {
                // Room for the read (freed when the connection goes back to the pool); what
                // was buffered has been parsed, so this rarely moves bytes.
                if (upbuf.capacity() - upbuf.size() < room) upbuf.reserve(upbuf.size() + room);
                beast::get_lowest_layer(up).expires_after(read_timeout);
                std::size_t n = 0;
                std::tie(ec, n) = co_await http::async_read_some(up, upbuf, p, use_nothrow);
                if (ec == http::error::need_buffer) ec = {};
            }
            if (ec == beast::error::timeout && events && chunked && events->pending() == 0) {
                // A silent stream, cut between frames: say so in a frame of its own.
                frames = bgw::http::stream_failure_frame(
                    "bedrock-gateway: no event from upstream for " +
                    std::to_string(read_timeout.count()) +
                    " ms (upstream.stream_idle_timeout_ms); the stream was ended");
                ending = relay_end::idle_timeout;
            } else if (ec) {
                co_return std::pair{relay_end::upstream_failed, ec};
            } else if (events) {
                frames.clear();
                if (!events->feed({piece, piece_size - p.get().body().size}, frames)) {
                    // Not a byte of the bad frame goes out. A chunked body can still end
                    // properly, with one error frame; a fixed-length one can only be cut.
                    if (!chunked) co_return std::pair{relay_end::corrupt, beast::error_code{}};
                    frames += bgw::http::stream_failure_frame(
                        "bedrock-gateway: the upstream event stream is corrupt (" +
                        events->summary().corrupt + "); the stream was ended");
                    ending = relay_end::corrupt;
                } else if (p.is_done() && events->pending() != 0) {
                    co_return std::pair{relay_end::upstream_truncated, beast::error_code{}};
                }
            }
            out = events ? std::string_view(frames)
                         : std::string_view(piece, piece_size - p.get().body().size);
        }
        const bool last = p.is_done() || ending.has_value();
        if (out.empty() && !last) continue;
        if (job.capture) job.capture->add(out);
        // What the answer used is known now: settle it before the client can send its next
        // request (which may need the tokens this one gives back).
        if (last) job.before_end();
        // One write: the head if it has not gone yet, the piece (framed as a chunk for a chunked
        // body), and the last chunk at the end. Empty buffers write nothing.
        char size_line[20];
        std::array<asio::const_buffer, 5> wire{};
        wire[0] = asio::buffer(head);
        if (chunked && !out.empty()) {
            wire[1] = asio::buffer(size_line, bgw::http::chunk_size_line(out.size(), size_line));
            wire[3] = asio::buffer("\r\n", 2);
        }
        wire[2] = asio::buffer(out);
        if (chunked && last) wire[4] = asio::buffer(bgw::http::last_chunk);
        client.expires_after(job.write_timeout);
        auto [wec, wn] = co_await write_all(client, wire);
        job.bytes_out += wn;
        if (wec) co_return std::pair{relay_end::client_failed, wec};
        head.clear();
        if (events && !job.first_event && events->summary().events > 0)
            job.first_event = clock::now();
        if (ending) co_return std::pair{*ending, beast::error_code{}};
        if (last) co_return std::pair{relay_end::done, beast::error_code{}};
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

/// The operations that run a model: the ones local quotas and cool-downs apply to.
bool runs_model(routing::operation op) {
    using routing::operation;
    return op == operation::invoke_model || op == operation::invoke_model_with_response_stream ||
           op == operation::converse || op == operation::converse_stream;
}

std::mt19937_64& jitter_rng() {
    thread_local std::mt19937_64 rng{std::random_device{}()};
    return rng;
}

awaitable<beast::error_code> send_throttle(beast::tcp_stream& client,
                                           const policy::throttle_answer& a,
                                           std::string_view request_id,
                                           request_log& log,
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
    request_log& log;
    const policy::hold_budget& hold;
    std::size_t head_room;  ///< the first read's room: an answer's head, or a stream's
};

/// One attempt's result: an answer to relay (or to judge), or no answer at all.
struct attempt_result {
    beast::error_code ec;  ///< no answer (connect, send or read failed)
    std::string_view during = "response";
    policy::outcome outcome = policy::outcome::success;
};

/// Sends `out` once on a pooled or fresh connection to `ep` and reads the answer's head, and for
/// an error answer its (small) body, so the answer can be classified before anything goes to
/// the client. A pooled connection the upstream closed while idle fails before any response
/// byte; only then is the request sent once more at once, on a fresh connection.
awaitable<attempt_result> attempt_once(const attempt_context& a,
                                       const config::region_endpoint& ep,
                                       upstream_request_message& out,
                                       upstream_leg& leg) {
    client_watch& watch = a.watch;
    std::unique_ptr<upstream_connection>& conn = leg.conn;
    std::optional<http::response_parser<http::buffer_body>>& p = leg.p;
    std::string& error_body = leg.error_body;
    attempt_result r;
    error_body.clear();
    for (bool stale_retry = false;;) {
        // A pooled connection found closed is resent for free: the same attempt, not another.
        if (!stale_retry) ++a.log.attempts;
        watch.upstream = nullptr;  // the watcher must never close a connection we dropped
        conn = a.g.pool.take(pool_key(ep), a.client.get_executor().context());
        if (!conn) {
            auto [cec, fresh] = co_await connect_upstream(
                a.client.get_executor(), a.g.tls, ep,
                a.hold.attempt_bound(a.cfg.upstream.connect_timeout, clock::now()));
            if (cec) {
                r.ec = cec;
                r.during = "connect";
                r.outcome = policy::classify_no_response();
                co_return r;
            }
            conn = std::move(fresh);
        }
        watch.upstream = conn.get();
        if (watch.client_gone) co_return r;  // it left while we connected
        p.emplace();
        p->header_limit(static_cast<std::uint32_t>(a.cfg.upstream.max_response_header_bytes));
        p->body_limit(boost::none);  // streams run for minutes; nothing is buffered
        // Room for the head and (usually) the whole of a small answer in one read. A pooled
        // connection keeps its room between requests, except into a stream, which may hold
        // it for minutes: that gets its own, smaller room.
        if (conn->buffer.capacity() > a.head_room && a.head_room < head_read_bytes &&
            conn->buffer.size() == 0)
            conn->buffer.shrink_to_fit();
        if (conn->buffer.capacity() < a.head_room) conn->buffer.reserve(a.head_room);
        // No wait outlives the client's deadline, this one included (issue 17).
        conn->tcp().expires_after(
            a.hold.attempt_bound(a.cfg.upstream.response_timeout, clock::now()));
        const auto sent = clock::now();
        auto send = [&](auto& stream) {
            return send_and_read_header(stream, conn->buffer, out, *p);
        };
        r.ec = co_await with_stream(*conn, send);
        if (r.ec && conn->reused && !stale_retry && is_benign(r.ec) && !p->got_some() &&
            !watch.client_gone) {
            stale_retry = true;
            continue;
        }
        if (!r.ec) {
            a.g.metrics.upstream_latency(
                a.log.region, a.log.op, std::chrono::duration<double>(clock::now() - sent).count());
        }
        break;
    }
    if (watch.client_gone) co_return r;
    if (!r.ec && p->get().result_int() >= 400) {
        constexpr std::size_t error_body_cap = 64 * 1024;
        auto read = [&](auto& stream) {
            return read_error_body(stream, conn->buffer, *p, error_body, error_body_cap);
        };
        r.ec = co_await with_stream(*conn, read);
        if (!r.ec) {
            const auto& head = p->get();
            auto code = policy::error_code(head["x-amzn-ErrorType"],
                                           p->is_done() ? error_body : std::string_view{});
            auto o = policy::classify(head.result_int(), code);
            if (o == policy::outcome::throttled || o == policy::outcome::transient) r.outcome = o;
        }
    }
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
awaitable<bool> serve_control_read(beast::tcp_stream& client,
                                   const http::request<http::string_body>& req,
                                   const routing::control_request& control,
                                   gateway_context& g,
                                   const config::config& cfg,
                                   const policy::caller& who,
                                   request_log& log) {
    const bool keep_alive = req.keep_alive() && !g.draining;
    log.op = control.operation;
    auto region =
        routing::choose_region({req["X-Gateway-Region"], {}, req[http::field::authorization], {}},
                               control.region_prefix, cfg);
    if (!region)
        co_return !co_await send_error(client, region.error(), log, keep_alive) && keep_alive;
    if (!policy::region_allowed(who, *region)) {
        const error elsewhere{
            http::status::forbidden, "AccessDeniedException",
            "caller key " + std::string(who.name) + " may not use region " + *region};
        co_return !co_await send_error(client, elsewhere, log, keep_alive) && keep_alive;
    }
    log.region = *region;
    auto res = co_await answer_control_read(g, cfg, control, *region,
                                            std::string(req[http::field::user_agent]), log.id);
    res.keep_alive(keep_alive);
    co_return !co_await send_response(client, res, log) && keep_alive;
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
awaitable<bool> accept_batch(beast::tcp_stream& client,
                             http::request<http::string_body>& req,
                             const routing::target& t,
                             const routing::runtime_request& rt,
                             gateway_context& g,
                             request_log& log) {
    const bool keep_alive = req.keep_alive();
    log.region = t.region;
    log.tier = config::tier_name(t.tier);
    // The record goes into a JSONL file: one compact JSON object, whatever the app's spacing.
    rapidjson::Document doc;
    bgw::util::parse_json(doc, std::string_view(req.body().data(), req.body().size()));
    if (doc.HasParseError() || !doc.IsObject()) {
        co_return !co_await send_error(
            client,
            validation_error("a batch record's body must be a JSON object, nested at most " +
                             std::to_string(bgw::util::max_json_depth) + " levels deep"),
            log, keep_alive) &&
            keep_alive;
    }
    rapidjson::StringBuffer compact;
    rapidjson::Writer<rapidjson::StringBuffer> cw(compact);
    doc.Accept(cw);
    auto id = g.batch->accept(t.region, t.model_id,
                              rt.op == routing::operation::converse ? "Converse" : "InvokeModel",
                              std::string(compact.GetString(), compact.GetSize()), log.caller);
    if (!id) co_return !co_await send_error(client, id.error(), log, keep_alive) && keep_alive;
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
    res.set("x-amzn-RequestId", log.id);
    add_gateway_headers(res, log);
    res.body().assign(body.GetString(), body.GetSize());
    res.keep_alive(keep_alive);
    res.prepare_payload();
    log.batch_record = *id;
    co_return !co_await send_response(client, res, log) && keep_alive;
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

/// Forwards one accepted request; returns whether the client connection may be kept.
awaitable<bool> forward(beast::tcp_stream& client,
                        beast::flat_buffer& client_buf,
                        http::request<http::string_body> req,
                        gateway_context& g,
                        const config::config& cfg,
                        listener_role role,
                        request_log& log) {
    const bool keep_alive = req.keep_alive() && !g.draining;
    log.bytes_in = req.body().size();
    const bool admin_path = is_admin_path(req.target());
    if (admin_path && (role == listener_role::admin || !cfg.admin_listen)) {
        auto res = req.target() == "/metrics"
                       ? metrics_response(req.method(), g, log.id)
                       : health_response(req.method(), req.target(), g, log.id);
        log.op = req.target() == "/metrics"   ? "Metrics"
                 : req.target() == "/healthz" ? "Health"
                                              : "Ready";
        res.keep_alive(keep_alive);
        co_return !co_await send_response(client, res, log) && keep_alive;
    }
    if (admin_path || role == listener_role::admin) {
        // A named local, not a temporary inside the co_await: GCC 12 mishandles the latter.
        const error wrong_listener{
            http::status::not_found, "UnknownOperationException",
            role == listener_role::admin
                ? "the admin listener serves only /healthz, /readyz and /metrics"
                : "/healthz, /readyz and /metrics are served on admin_listen"};
        co_return !co_await send_error(client, wrong_listener, log, keep_alive) && keep_alive;
    }
    // Caller keys (when configured) guard everything below: the runtime API and batch results.
    auto who = policy::authenticate(cfg, req["x-api-key"], req[http::field::authorization]);
    if (!who) co_return !co_await send_error(client, who.error(), log, keep_alive) && keep_alive;
    log.caller = who->name;
    if (req.target().starts_with("/gateway/batch/")) {
        log.op = "GatewayBatch";
        if (!g.batch) {
            co_return !co_await send_error(
                client,
                {http::status::not_implemented, "NotImplementedException",
                 "the batch tier is not configured on this gateway (no batch section)"},
                log, keep_alive) &&
                keep_alive;
        }
        auto res = g.batch->answer(req.method(), req.target(), who->name, log.id);
        res.keep_alive(keep_alive);
        co_return !co_await send_response(client, res, log) && keep_alive;
    }
    // The read-only control plane (ListInferenceProfiles, ...); any other control-plane call is
    // refused here and never signed.
    auto control = routing::parse_control_target(req.method(), req.target());
    if (!control)
        co_return !co_await send_error(client, control.error(), log, keep_alive) && keep_alive;
    if (*control) co_return co_await serve_control_read(client, req, **control, g, cfg, *who, log);
    auto rt = routing::parse_runtime_target(req.method(), req.target());
    if (!rt) co_return !co_await send_error(client, rt.error(), log, keep_alive) && keep_alive;
    log.op = routing::operation_name(rt->op);
    log.model = rt->model_id;
    if (auto allowed = policy::authorize_model(*who, rt->model_id); !allowed)
        co_return !co_await send_error(client, allowed.error(), log, keep_alive) && keep_alive;
    // Event streams hold a connection upstream for minutes: their number is bounded.
    struct stream_slot {
        std::atomic<std::size_t>* count = nullptr;
        ~stream_slot() {
            if (count) --*count;
        }
    } slot;
    if (rt->op == routing::operation::converse_stream ||
        rt->op == routing::operation::invoke_model_with_response_stream) {
        if (++g.streams > cfg.limits.max_streams) {
            --g.streams;
            const error full{http::status::service_unavailable, "ServiceUnavailableException",
                             "the gateway already relays limits.max_streams (" +
                                 std::to_string(cfg.limits.max_streams) +
                                 ") event streams; retry shortly"};
            co_return !co_await send_error(client, full, log, keep_alive) && keep_alive;
        }
        slot.count = &g.streams;
    }
    // A snapshot: a background refresh never changes the keys under a request in flight.
    std::shared_ptr<const aws::timed_credentials> signing;
    if (g.bearer.empty()) {
        auto usable = g.sigv4_credentials();
        if (!usable)
            co_return !co_await send_error(client, usable.error(), log, keep_alive) && keep_alive;
        signing = std::move(*usable);
    }
    static const aws::credentials no_credentials;
    // Where and how: an ordered list of targets, or a refusal that never reaches upstream.
    auto plan = routing::route(*rt,
                               {req["X-Gateway-Region"], rt->region_prefix,
                                req[http::field::authorization], req["X-Gateway-Tier"]},
                               cfg);
    if (!plan) co_return !co_await send_error(client, plan.error(), log, keep_alive) && keep_alive;
    log.route = plan->route;
    // A key bound to some regions only ever runs there; the route's other targets drop out.
    std::erase_if(plan->targets, [&](const routing::target& t) {
        return !policy::region_allowed(*who, t.region);
    });
    if (plan->targets.empty()) {
        const error elsewhere{http::status::forbidden, "AccessDeniedException",
                              "caller key " + std::string(who->name) +
                                  " may not run requests in the regions this one would use"};
        co_return !co_await send_error(client, elsewhere, log, keep_alive) && keep_alive;
    }
    // The client's own retries and patience (issue 17): the gateway's attempts for it, and
    // the deadline no wait inside the gateway outlives.
    auto terms = policy::read_client_terms(
        {req["X-Gateway-Max-Attempts"], req["X-Gateway-Timeout-Ms"], req["amz-sdk-request"],
         req["X-Stainless-Retry-Count"], req["X-Stainless-Timeout"]},
        cfg.retry);
    if (!terms)
        co_return !co_await send_error(client, terms.error(), log, keep_alive) && keep_alive;
    policy::hold_budget hold(log.start, cfg.retry.max_hold, terms->timeout);
    // The key's own requests and tokens per minute, before any target is tried.
    auto caller_limits = g.caller_limits.load();
    std::uint64_t caller_estimate = 0;
    if (who->key && (who->key->limit.rpm || who->key->limit.tpm)) {
        if (who->key->limit.tpm && runs_model(rt->op))
            caller_estimate = policy::estimate_tokens(req.body());
        auto d = caller_limits->try_acquire(std::string(who->name), caller_estimate, clock::now());
        if (!d.allowed) {
            const policy::throttle_answer over{
                d.wait,
                "caller key " + std::string(who->name) +
                    " is over its own rpm/tpm (caller_keys); not sent upstream",
                "caller_limit"};
            co_return !co_await send_throttle(client, over, log.id, log, keep_alive) && keep_alive;
        }
    }
    // Replaces the key's token estimate with what the answer used (once).
    auto settle_caller = [&, settled = false](std::uint64_t actual) mutable {
        if (settled || !caller_estimate) return;
        settled = true;
        caller_limits->correct(std::string(who->name), caller_estimate, actual, clock::now());
    };
    if (plan->targets.front().tier == config::tier::batch) {
        co_return co_await accept_batch(client, req, plan->targets.front(), *rt, g, log);
    }
    const bool model_op = runs_model(rt->op);
    // The request is all parsed: a connection that holds a long stream holds no read buffer
    // (a short answer keeps it for the connection's next request).
    if (routing::is_streaming(rt->op) && client_buf.size() == 0) client_buf.shrink_to_fit();
    const std::string body = std::move(req.body());
    // Token estimates, charged per target at admission and settled against usage afterwards.
    std::uint64_t estimate = 0;
    if (model_op && std::any_of(plan->targets.begin(), plan->targets.end(),
                                [&](const auto& t) { return g.traffic.limits(t.model_id); }))
        estimate = policy::estimate_tokens(body);
    std::string charged_model;  // the target that holds a charge, if any
    auto settle = [&](std::uint64_t actual) {
        if (!charged_model.empty()) g.traffic.settle(charged_model, estimate, actual, clock::now());
        charged_model.clear();
        settle_caller(actual);
    };

    // From here until the response is relayed, a client that hangs up cancels the upstream.
    auto watch = std::make_shared<client_watch>();
    watch_client_soon(client, watch, near_timer_period);
    struct watch_guard {
        beast::tcp_stream& client;
        client_watch& w;
        ~watch_guard() { stop_watch(client, w); }
    } guard{client, *watch};
    auto client_gone = [&] {
        log.status = 499;  // nginx's "client closed request"
        log.error = "client went away before the response was complete";
        settle(0);
        return false;
    };

    // Walk the targets: a throttle, a transient failure or no answer moves on at once to the
    // next one; only the last is retried, with backoff, as the policy allows. Targets cooling
    // down or over their local limits are skipped; if none could be tried, the shortest of
    // their waits is the answer.
    upstream_leg leg;
    auto& conn = leg.conn;
    auto& p = leg.p;
    auto& error_body = leg.error_body;  // a failed answer's body, read to classify it
    std::optional<std::string> tiered_body;
    upstream_request_message out;
    asio::steady_timer sleeper(client.get_executor());
    const attempt_context each_attempt{
        .client = client,
        .g = g,
        .cfg = cfg,
        .watch = *watch,
        .log = log,
        .hold = hold,
        .head_room = routing::is_streaming(rt->op) ? stream_read_bytes : head_read_bytes};
    std::optional<policy::throttle_answer> held;
    const routing::target* answered = nullptr;
    int last_retry_cost = 0;
    std::optional<std::chrono::milliseconds> pause;  // a relayed 5xx's Retry-After
    auto release = [&](const attempt_result& r) {
        // An error answer read to its end leaves the connection fit for the next request.
        watch->upstream = nullptr;
        if (!r.ec && p && p->is_done() && p->keep_alive()) g.pool.give_back(std::move(conn));
        conn.reset();
    };
    for (std::size_t i = 0; i < plan->targets.size() && !answered; ++i) {
        const routing::target& t = plan->targets[i];
        const bool last = i + 1 == plan->targets.size();
        const std::string key = t.model_id.empty() ? std::string(log.op) : t.model_id;
        log.region = t.region;
        log.target_model = t.model_id;
        log.tier = config::tier_name(t.tier);
        if (model_op) {
            const std::uint64_t charge = g.traffic.limits(t.model_id) ? estimate : 0;
            auto no = g.traffic.admit(t.region, key, charge, clock::now());
            // The last target's rest (or refill) is waited out when the hold budget allows:
            // the request goes upstream as it ends. Earlier targets are skipped at once.
            while (no && last && no->wait <= hold.left(clock::now())) {
                if (!co_await hold_on(sleeper, *watch, hold, no->wait)) co_return client_gone();
                no = g.traffic.admit(t.region, key, charge, clock::now());
            }
            if (no) {
                log.tried.push_back(t.region + " " + std::string(log.tier) + " " + key +
                                    ": skipped (" + std::string(no->source) + ")");
                g.metrics.throttle(t.region, log.model, "local");
                if (!held || no->wait < held->wait) held = std::move(no);
                continue;
            }
            if (charge) charged_model = t.model_id;
        }
        // The request as this target takes it: its model id in the path, its service tier.
        routing::runtime_request target_rt = *rt;
        if (model_op && t.model_id != rt->model_id)
            target_rt.wire_path = routing::model_wire_path(rt->op, t.model_id);
        std::string_view target_body = body;
        std::string_view tier_header;
        if (!t.service_tier.empty()) {
            if (rt->op == routing::operation::converse ||
                rt->op == routing::operation::converse_stream) {
                tiered_body = routing::with_converse_service_tier(body, t.service_tier);
                if (tiered_body) target_body = *tiered_body;
            } else if (model_op) {
                tier_header = t.service_tier;
            }
        }
        const config::region_endpoint& ep = cfg.regions.at(t.region);
        for (int attempt = 1;; ++attempt) {
            // Every attempt is signed afresh (a new X-Amz-Date) for its target's region.
            auto now = std::chrono::floor<std::chrono::seconds>(std::chrono::system_clock::now());
            auto prepared = routing::prepare_upstream_request(
                req.method(), target_rt, req, target_body,
                {.endpoint = ep, .region = t.region, .service_tier = tier_header},
                {.creds = signing ? signing->creds : no_credentials,
                 .now = now,
                 .cache = &g.keys,
                 .bearer_token = g.bearer});
            out.head = routing::wire_head(prepared, target_body.size());
            out.body = target_body;

            auto r = co_await attempt_once(each_attempt, ep, out, leg);
            if (watch->client_gone) co_return client_gone();
            if (r.outcome == policy::outcome::success) {
                answered = &t;  // relay this answer, whatever it says
                break;
            }
            const bool throttled = r.outcome == policy::outcome::throttled;
            if (throttled) {
                ++log.upstream_throttles;
                g.metrics.throttle(t.region, log.model, "upstream");
            }
            if (!last) {
                if (throttled) {
                    // If nothing after it can be tried, its rest is a candidate answer.
                    auto rest =
                        g.traffic.throttled(t.region, key, clock::now(), upstream_hint(r, p));
                    if (!held || rest < held->wait)
                        held = policy::throttle_answer{
                            rest, "upstream (Bedrock) throttled " + key + " in " + t.region,
                            "upstream"};
                }
                log.tried.push_back(t.region + " " + std::string(log.tier) + " " + key + ": " +
                                    describe(r, p));
                settle(0);
                release(r);
                g.metrics.failover();
                break;  // on to the next target, at once
            }
            const auto now_failed = clock::now();
            auto step = g.traffic.after_failure(attempt, r.outcome, r.ec == beast::error::timeout,
                                                t.region, key, now_failed, jitter_rng(),
                                                {terms->max_attempts, hold.left(now_failed),
                                                 upstream_hint(r, p), hold.expired(now_failed)});
            if (!step.retry) {
                log.tried.push_back(t.region + " " + std::string(log.tier) + " " + key + ": " +
                                    describe(r, p));
                settle(0);
                if (throttled) {
                    auto answer = g.traffic.final_throttle(attempt, t.region, key, clock::now());
                    // Another target may be free sooner.
                    if (held && held->wait < answer.wait) answer.wait = held->wait;
                    std::string upstream_id(p->get()["x-amzn-RequestId"]);
                    log.upstream_request_id = upstream_id;
                    auto wec = co_await send_throttle(client, answer,
                                                      upstream_id.empty() ? log.id : upstream_id,
                                                      log, keep_alive);
                    log.error += " (" + step.why + ")";
                    co_return !wec && keep_alive;
                }
                // Out of attempts here: the client's own retry should not follow at once.
                pause = policy::transient_pause(attempt, cfg.retry);
                if (r.ec) {
                    auto failure = upstream_failure(r.ec, r.during);
                    if (r.ec == beast::error::timeout && hold.expired(clock::now())) {
                        failure.message =
                            "upstream did not answer within the client's deadline "
                            "(X-Gateway-Timeout-Ms, X-Stainless-Timeout or "
                            "retry.default_timeout_ms)";
                    }
                    co_return !co_await send_error(client, failure, log, keep_alive, pause) &&
                        keep_alive;
                }
                answered = &t;  // a transient error answer, out of retries: relayed as it came
                break;
            }
            last_retry_cost = step.cost;
            release(r);
            g.metrics.retry();
            if (!co_await hold_on(sleeper, *watch, hold, step.wait)) co_return client_gone();
        }
    }
    if (!answered) {
        // Every target left was cooling down or over its local limits (the last one always is:
        // any other way out of the last target answers or returns above).
        if (!held)
            held =
                policy::throttle_answer{std::chrono::seconds{1}, "no target available", "cooldown"};
        co_return !co_await send_throttle(client, *held, log.id, log, keep_alive) && keep_alive;
    }
    const std::string key = answered->model_id.empty() ? std::string(log.op) : answered->model_id;
    auto& head = p->get();
    log.status = head.result_int();
    log.upstream_request_id = std::string(head["x-amzn-RequestId"]);
    if (log.status < 400) g.traffic.succeeded(log.region, key, last_retry_cost);

    // The status line and headers go out as soon as upstream sent them; the body follows piece
    // by piece (chunked unless upstream gave a length).
    // The head is written straight into its bytes: the upstream's fields that cross (in their
    // order), the gateway's own, and the framing.
    const auto len = p->content_length();
    const bool chunked = !len;
    std::string head_bytes;
    head_bytes.reserve(1024);
    bgw::http::append_status_line(head_bytes, head.result_int(), head.reason());
    for (const auto& f : head) {
        const auto name = f.name_string();
        if (bgw::http::forward_response_header(name) && !is_gateway_header(name))
            bgw::http::append_field(head_bytes, name, f.value());
    }
    head_writer fields{head_bytes};
    add_gateway_headers(fields, log);
    // Upstream's own wait, in any form, stands; otherwise the gateway's pause.
    if (pause && head.find(http::field::retry_after) == head.end() &&
        head.find("x-amz-retry-after") == head.end() && head.find("retry-after-ms") == head.end())
        bgw::http::set_retry_after(fields, *pause);
    if (len) {
        bgw::http::append_field(head_bytes, "Content-Length", std::to_string(*len));
    } else {
        bgw::http::append_field(head_bytes, "Transfer-Encoding", "chunked");
    }
    if (!keep_alive) bgw::http::append_field(head_bytes, "Connection", "close");
    head_bytes.append("\r\n");
    // Event streams are relayed frame by frame and read on the side (usage, exceptions).
    std::optional<bgw::http::event_relay> events;
    const auto content_type = head[http::field::content_type];
    if (head.result() == http::status::ok &&
        bgw::http::iequals(content_type.substr(0, content_type.find(';')),
                           "application/vnd.amazon.eventstream"))
        events.emplace();
    // A stream's head goes out at once (its first event may be a while), as does any head whose
    // body has not started arriving; otherwise the head goes with the first piece of the body,
    // in one write.
    client.expires_after(cfg.limits.client_idle_timeout);
    if (events || (error_body.empty() && conn->buffer.size() == 0 && !p->is_done())) {
        auto [hec, hn] = co_await write_all(client, asio::buffer(head_bytes));
        log.bytes_out += hn;
        if (hec) {
            log.error = "client went away: " + hec.message();
            settle(0);
            co_return false;
        }
        head_bytes.clear();
    }
    // A Converse answer carries its usage in the body: keep a bounded copy to read it.
    std::optional<body_capture> capture;
    if (!events && log.status < 400 && rt->op == routing::operation::converse)
        capture.emplace(body_capture{256 * 1024, {}});
    // What the answer says it used, for the log, the metrics and the local TPM limit, which
    // replaces its estimate with it (once, as soon as it is known).
    bool usage_read = false;
    auto settle_usage = [&] {
        if (usage_read) return;
        usage_read = true;
        std::optional<policy::usage> used;
        if (log.status >= 400) {
            used = policy::usage{};
        } else if (events && events->summary().input_tokens && events->summary().output_tokens) {
            used = policy::usage{*events->summary().input_tokens, *events->summary().output_tokens};
        } else if (capture && !capture->overflow) {
            used = policy::usage_from_converse_body(capture->data);
        }
        if (!used) {
            used = policy::usage_from_headers(head["X-Amzn-Bedrock-Input-Token-Count"],
                                              head["X-Amzn-Bedrock-Output-Token-Count"]);
        }
        if (used && log.status < 400 && model_op) log.tokens = used;
        if (used) settle(used->total());
    };
    const auto read_timeout =
        events ? cfg.upstream.stream_idle_timeout : cfg.upstream.response_timeout;
    std::pair<relay_end, beast::error_code> relayed;
    bgw::http::event_relay* ev = events ? &*events : nullptr;
    body_capture* cap = capture ? &*capture : nullptr;
    // A named local, not a std::function made from the lambda inside the co_await: GCC 12
    // mishandles temporaries with destructors there.
    const std::function<void()> before_end = settle_usage;
    const relay_job job{.upbuf = conn->buffer,
                        .p = *p,
                        .head = head_bytes,
                        .chunked = chunked,
                        .read_timeout = read_timeout,
                        .write_timeout = cfg.limits.client_idle_timeout,
                        .events = ev,
                        .prefix = error_body,
                        .capture = cap,
                        .before_end = before_end,
                        .bytes_out = log.bytes_out,
                        .first_event = log.first_event};
    auto relay = [&](auto& stream) { return relay_body(stream, client, job); };
    relayed = co_await with_stream(*conn, relay);
    if (events) {
        log.stream = events->summary();
        // A throttle inside a stream cannot change the status, but it does teach the policy.
        if (policy::is_throttling_code(log.stream->exception))
            g.traffic.throttled(log.region, key, clock::now());
    }
    settle_usage();  // when the relay ended before its last piece
    switch (relayed.first) {
        case relay_end::done:
            break;
        case relay_end::corrupt:
            // The upstream connection has lost its framing; the client's stream ended properly.
            log.error = "upstream event stream corrupt: " + events->summary().corrupt;
            co_return keep_alive&& chunked;
        case relay_end::idle_timeout:
            log.error = "event stream idle for longer than upstream.stream_idle_timeout_ms";
            co_return keep_alive;
        case relay_end::upstream_truncated:
            log.error = "upstream ended the body inside an event-stream frame";
            co_return false;
        case relay_end::client_failed:
        case relay_end::upstream_failed:
            // The status line is out: the only honest signal left is to cut the client's stream.
            if (watch->client_gone) co_return client_gone();
            log.error =
                std::string(relayed.first == relay_end::client_failed ? "client" : "upstream") +
                " failed mid-body: " + relayed.second.message();
            co_return false;
    }
    // The client may have hung up just after the last byte, and its watcher closed this
    // connection before we got here: a closed connection must never reach the pool.
    if (p->keep_alive() && !watch->client_gone) g.pool.give_back(std::move(conn));
    co_return keep_alive;
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
    request_log log;
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
                                 request_log& log) {
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

/// Reads one request whose first bytes are in `buf`, answers it, and says whether the connection
/// may carry another. Its state lives in its own coroutine frame, allocated for the request only:
/// an idle connection holds none of it.
awaitable<bool> serve_request(beast::tcp_stream& client,
                              beast::flat_buffer& buf,
                              const std::shared_ptr<gateway_context>& g,
                              listener_role role,
                              request_log& log) {
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
        error e = validation_error("malformed HTTP request: " + ec.message());
        if (parser.refusal()) {
            e = *parser.refusal();  // a rule of the gateway's own (front_parser)
        } else if (budget_spent) {
            e = {http::status::service_unavailable, "ServiceUnavailableException",
                 "the gateway already holds limits.max_inflight_body_bytes (" +
                     std::to_string(limits.max_inflight_body_bytes) +
                     " bytes) of request bodies; retry shortly"};
        } else if (ec == http::error::buffer_overflow) {
            e = {http::status::request_header_fields_too_large, "ValidationException",
                 "chunk extensions and trailers exceed limits.max_header_bytes (" +
                     std::to_string(limits.max_header_bytes) + " bytes)"};
        } else if (ec == http::error::body_limit) {
            e = {http::status::payload_too_large, "ValidationException",
                 "request body exceeds limits.max_body_bytes (" +
                     std::to_string(cfg->limits.max_body_bytes) + " bytes)"};
        } else if (ec == http::error::header_limit) {
            e = {http::status::request_header_fields_too_large, "ValidationException",
                 "request headers exceed limits.max_header_bytes (" +
                     std::to_string(cfg->limits.max_header_bytes) + " bytes)"};
        } else if (read_timed_out) {
            e = {http::status::request_timeout, "RequestTimeoutException",
                 parser.is_header_done()
                     ? "request body not received within limits.client_idle_timeout_ms"
                     : "request head not received within limits.header_timeout_ms"};
        } else if (is_benign(ec)) {
            co_return false;
        }
        std::string_view received(static_cast<const char*>(buf.data().data()), buf.data().size());
        if (bgw::http::looks_like_h2_preface(received)) {
            std::string refusal = bgw::http::h2_http11_required(
                "bedrock-gateway speaks HTTP/1.1; with the AWS SDK for JavaScript pass "
                "requestHandler: new NodeHttpHandler()");
            co_await asio::async_write(client, asio::buffer(refusal), use_nothrow);
            log.status = 505;
            log.error = "client opened with HTTP/2 (h2c); refused with HTTP_1_1_REQUIRED";
            write_log(log);
            co_return false;
        }
        co_await send_error(client, e, log, false);
        record_metrics(*g, *cfg, log);
        write_log(log);
        co_return false;
    }
    ++g->inflight;
    struct inflight_slot {
        std::atomic<int>& n;
        ~inflight_slot() { --n; }
    } slot{g->inflight};
    bool keep = co_await forward(client, buf, parser.release(), *g, *cfg, role, log);
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
    request_log log;
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
