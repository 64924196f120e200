#pragma once
/// The server side of one HTTP/2 connection (RFC 9113), with no socket: bytes in (`feed`), bytes
/// out (`take_output`), requests assembled stream by stream into the same messages an HTTP/1.1
/// connection yields, and responses queued piece by piece under the client's flow control.
/// libnghttp2 does the framing, HPACK, flow control and the protocol's own flood guards; this
/// class holds the gateway's rules on top (sizes, stream counts, early refusals). The Asio shell
/// (net/h2_session) only moves its bytes.

#include "bgw/error.hpp"

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <boost/beast/http/message.hpp>
#include <boost/beast/http/string_body.hpp>

struct nghttp2_session;

namespace bgw::http {

/// The 24-byte HTTP/2 client connection preface (RFC 9113 §3.4): a connection that opens with
/// it speaks HTTP/2 with prior knowledge.
inline constexpr std::string_view h2_preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// The bounds one HTTP/2 connection holds a client to.
struct h2_limits {
    std::size_t max_concurrent_streams = 100;  ///< SETTINGS_MAX_CONCURRENT_STREAMS
    std::size_t max_header_bytes = 64 * 1024;  ///< names + values (+4 each, as HTTP/1.1 counts)
    std::size_t max_header_count = 100;
    std::size_t max_target_bytes = 8 * 1024;
    std::size_t max_body_bytes = 25'000'000;
    /// Streams a client may reset (RST_STREAM) in a burst, then per second (CVE-2023-44487,
    /// "rapid reset"): past it the connection gets GOAWAY(ENHANCE_YOUR_CALM).
    std::uint64_t reset_burst = 400;
    std::uint64_t reset_rate = 40;
};

/// One request as the stream delivered it: the same message type an HTTP/1.1 read makes
/// (method, target, a Host field from `:authority`, the fields, the body).
using h2_request = boost::beast::http::request<boost::beast::http::string_body>;

/// A response field; names are sent lowercase.
struct h2_field {
    std::string name;
    std::string value;
};

/// What the connection tells its owner. Called from inside `feed` (and, for
/// `on_drained`, from `take_output`); none may call back into the server except through the
/// queueing calls (`respond`, `send_data`, `reset`).
class h2_events {
public:
    virtual ~h2_events() = default;
    /// A request's head is complete: the owner may refuse it before any body byte is kept.
    virtual std::optional<error> check_head(std::int32_t stream, const h2_request& head) = 0;
    /// The gateway-wide bound on bodies held in memory: false refuses the stream (503).
    virtual bool reserve_body(std::size_t bytes) = 0;
    virtual void release_body(std::size_t bytes) = 0;
    /// A request complete (END_STREAM); `req` is the owner's to move from.
    virtual void on_request(std::int32_t stream, h2_request& req) = 0;
    /// A request refused while it arrived (its head, its size): the owner answers `why` on
    /// the stream; what else the client sends on it is dropped.
    virtual void on_refused(std::int32_t stream, const error& why, const h2_request& head) = 0;
    /// The stream ended: `completed` when its response went out whole, else reset (by the
    /// client or the gateway) or cut by the connection's end.
    virtual void on_closed(std::int32_t stream, bool completed, std::uint32_t code) = 0;
    /// Everything queued for the stream's body was handed to the connection (the writer may
    /// queue the next piece).
    virtual void on_drained(std::int32_t stream) = 0;
};

class h2_server {
public:
    using clock = std::chrono::steady_clock;
    /// `now` is the clock the rapid-reset guard reads (a test's hand-held one).
    h2_server(const h2_limits& limits, h2_events& events, clock::time_point (*now)() = clock::now);
    ~h2_server();
    h2_server(const h2_server&) = delete;
    h2_server& operator=(const h2_server&) = delete;

    /// Takes bytes from the client. False: the connection must end, once `take_output` has
    /// given what is still to send (a GOAWAY, typically); `failure()` says why.
    bool feed(std::string_view bytes);
    /// Appends bytes to send to `out`, up to about `max`; false when there were none.
    bool take_output(std::string& out, std::size_t max);
    /// Whether the connection still reads or writes; both false: it is over.
    bool want_read() const;
    bool want_write() const;

    /// Starts the response on `stream`: the status and fields; `has_body` false ends the stream
    /// with the head. False when the stream is gone.
    bool respond(std::int32_t stream,
                 unsigned status,
                 const std::vector<h2_field>& fields,
                 bool has_body);
    /// Queues body bytes for a response started with a body; `last` ends the stream after
    /// them. False when the stream is gone.
    bool send_data(std::int32_t stream, std::string_view bytes, bool last);
    /// Bytes queued for `stream` and not yet handed to the connection.
    std::size_t queued(std::int32_t stream) const;
    /// Resets one stream (RST_STREAM `code`).
    void reset(std::int32_t stream, std::uint32_t code);
    /// Ends the connection politely: GOAWAY(`code`) naming the last stream taken; the streams
    /// under way finish.
    void go_away(std::uint32_t code, std::string_view why);

    /// Streams open (a request arriving or its response going out).
    std::size_t open_streams() const { return streams_.size(); }
    /// Why the connection ended, when `feed` said it must.
    const std::string& failure() const { return failure_; }

    /// The nghttp2 callbacks' way in (not for the owner).
    struct stream_state;
    struct access;

private:
    h2_limits limits_;
    h2_events& events_;
    nghttp2_session* session_ = nullptr;
    std::map<std::int32_t, std::unique_ptr<stream_state>> streams_;
    std::string failure_;
    clock::time_point (*now_)();
    double reset_tokens_;         ///< the rapid-reset guard's bucket
    clock::time_point refilled_;  ///< when it was last refilled
    bool calm_down_ = false;      ///< the guard tripped: the connection ends

    /// A client RST_STREAM: one token. False when there was none left.
    bool take_reset_token();
    stream_state* find(std::int32_t stream) const;
};

}  // namespace bgw::http
