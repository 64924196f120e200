// The definitions behind bgw/net/relay.hpp (its comment says what they are for).

#include "bgw/net/relay.hpp"

#include "bgw/http/event_relay.hpp"
#include "bgw/http/headers.hpp"
#include "bgw/net/exchange.hpp"
#include "bgw/net/shared_state.hpp"
#include "bgw/pipeline/admit.hpp"
#include "bgw/policy/throttle.hpp"
#include "bgw/policy/traffic.hpp"

#include <algorithm>
#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <utility>

#include <boost/beast/http.hpp>

namespace bgw::net {
namespace {

namespace http = beast::http;
using clock = std::chrono::steady_clock;

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
    bool chunked;  ///< the body may end at any point (upstream gave no length)
    std::chrono::milliseconds read_timeout;
    std::chrono::milliseconds write_timeout;
    bgw::http::event_relay* events;  ///< set for an event stream
    std::string_view prefix;         ///< body bytes read already (an error body, to classify it)
    body_capture* capture;           ///< keeps what the usage is read from, when set
    const std::function<void()>& before_end;        ///< called before the last write
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
                                                              client_port& client,
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
        if (auto wec = co_await client.write(n.out, last, job.write_timeout))
            co_return std::pair{relay_end::client_failed, wec};
        if (events && !job.first_event && events->summary().events > 0)
            job.first_event = clock::now();
        if (n.ending) co_return std::pair{*n.ending, beast::error_code{}};
        if (last) co_return std::pair{relay_end::done, beast::error_code{}};
        n.out = {};
    }
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

}  // namespace

awaitable<bool> relay_answer(client_side& c, const relay_inputs& in) {
    auto& p = *in.leg.p;
    auto& conn = in.leg.conn;
    const auto& head = p.get();
    c.ctx.status = head.result_int();
    c.ctx.upstream_request_id = std::string(head["x-amzn-RequestId"]);
    in.walk.relayed(c.ctx.status);
    c.port.begin({.p = p, .ctx = c.ctx, .pause = in.walk.pause()}, c.keep_alive);
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
    if (events || (in.leg.error_body.empty() && conn->buffer.size() == 0 && !p.is_done())) {
        if (auto hec = co_await c.port.flush_head(in.cfg.limits.client_idle_timeout)) {
            c.ctx.error = "client went away: " + hec.message();
            c.ctx.held.settle(0, clock::now());
            co_return false;
        }
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
                        .chunked = chunked,
                        .read_timeout = events ? in.cfg.upstream.stream_idle_timeout
                                               : in.cfg.upstream.response_timeout,
                        .write_timeout = in.cfg.limits.client_idle_timeout,
                        .events = events ? &*events : nullptr,
                        .prefix = in.leg.error_body,
                        .capture = capture ? &*capture : nullptr,
                        .before_end = before_end,
                        .first_event = c.ctx.first_event};
    auto relay = [&](auto& stream) { return relay_body(stream, c.port, job); };
    const auto relayed = co_await with_stream(*conn, relay);
    if (events) {
        c.ctx.stream = events->summary();
        // A throttle inside a stream cannot change the status, but it does teach the policy.
        if (policy::is_throttling_code(c.ctx.stream->exception)) {
            in.walk.stream_throttled(clock::now());
            // The stream is relayed already: the fleet hears of it without anyone waiting.
            if (auto note = in.walk.take_rest_note(); note && in.g.fleet) {
                in.g.fleet->publish_rest_detached(c.port.executor(), note->region, note->model,
                                                  note->rest);
            }
        }
    }
    settle_usage();  // when the relay ended before its last piece
    const bool keep = after_relay(c, in.watch, relayed, chunked);
    // The client may have hung up just after the last byte, and its watcher closed this
    // connection before we got here: a closed connection must never reach the pool.
    if (relayed.first == relay_end::done && p.keep_alive() && !in.watch.client_gone)
        in.g.pool.give_back(std::move(conn));
    co_return keep;
}

}  // namespace bgw::net
