#pragma once
/// Where one request's answer goes: an HTTP/1.1 connection (session.cpp) or one HTTP/2 stream
/// (h2_session.cpp). The pipeline's I/O shell (forward, relay) writes through this and never
/// knows which: the same admission, walk and relay serve both.

#include "bgw/net/asio.hpp"
#include "bgw/pipeline/request_ctx.hpp"

#include <chrono>
#include <memory>
#include <optional>
#include <string_view>

#include <boost/asio/any_io_executor.hpp>
#include <boost/beast/http.hpp>

namespace bgw::net {

struct client_watch;

/// The head of a relayed answer: upstream's head (its fields that cross are chosen by the
/// port, with relayed_fields), and what the gateway adds.
struct relayed_answer {
    const beast::http::response_parser<beast::http::buffer_body>& p;
    pipeline::request_ctx& ctx;  ///< its `bytes_out` counts what goes on the wire
    std::optional<std::chrono::milliseconds> pause;  ///< a Retry-After, unless upstream gave one
};

class client_port {
public:
    virtual ~client_port() = default;

    /// Where the request's timers and upstream connections live.
    virtual asio::any_io_executor executor() = 0;

    /// Writes a whole gateway-made response (the log gets its status and size). `keep_alive`
    /// is the connection's (HTTP/1.1); a stream ignores it.
    virtual awaitable<beast::error_code> send(beast::http::response<beast::http::string_body>& res,
                                              bool keep_alive,
                                              pipeline::request_ctx& ctx) = 0;

    /// Starts a relayed answer: its head is held until `flush_head` or the first `write`.
    virtual void begin(const relayed_answer& a, bool keep_alive) = 0;
    /// Sends the held head now (an event stream's, whose first event may be a while).
    virtual awaitable<beast::error_code> flush_head(std::chrono::milliseconds timeout) = 0;
    /// Sends the next piece of the relayed body (with the head, if it has not gone), and the
    /// body's end when `last`. Returns once the piece is on its way, so a slow client slows the
    /// relay (back-pressure); an error when the client is gone or has not taken it within
    /// `timeout`.
    virtual awaitable<beast::error_code> write(std::string_view piece,
                                               bool last,
                                               std::chrono::milliseconds timeout) = 0;
    /// Watches the client while the request is in flight (after `delay`): a client that goes
    /// away sets `client_gone` and closes the upstream connection in use.
    virtual void watch(const std::shared_ptr<client_watch>& w, std::chrono::milliseconds delay) = 0;
    virtual void unwatch(client_watch& w) = 0;

    /// The request is read whole: buffers kept for the next one may go (a long stream holds
    /// none).
    virtual void idle_buffers() {}
};

}  // namespace bgw::net
