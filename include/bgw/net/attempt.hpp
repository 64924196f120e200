#pragma once
/// One attempt upstream: a pooled or fresh connection, the signed request sent in one write, the
/// answer's head read (and an error answer's small body, to classify it), and what the walk is
/// told about it.

#include "bgw/config/config.hpp"
#include "bgw/net/asio.hpp"
#include "bgw/net/client_side.hpp"
#include "bgw/net/client_watch.hpp"
#include "bgw/net/gateway.hpp"
#include "bgw/net/upstream.hpp"
#include "bgw/pipeline/request_ctx.hpp"
#include "bgw/pipeline/upstream_walk.hpp"
#include "bgw/policy/hold.hpp"
#include "bgw/policy/throttle.hpp"

#include <cstddef>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http.hpp>

namespace bgw::net {

/// What goes upstream: the body is a view of the client's (or a target's rewrite of it), so
/// trying several targets never copies it.
struct upstream_request_message {
    std::string head;       ///< request line and fields, as on the wire (routing::wire_head)
    std::string_view body;  ///< the client's body, or a target's rewrite of it
};

/// Upstream read sizes (Beast reads from the socket at most the buffer's free room, and never
/// less than 512 bytes). The head is read with `head_read_bytes` of room (an event stream's
/// with `stream_read_bytes`), so a typical answer arrives whole in one read; a plain body is then
/// read in pieces of up to `body_read_bytes` (no more than what is left of it), an event stream in
/// pieces of `stream_read_bytes`, since a thousand streams may be open at once and their frames are
/// small.
constexpr std::size_t head_read_bytes = 16 * 1024;
constexpr std::size_t body_read_bytes = 64 * 1024;
constexpr std::size_t stream_read_bytes = 4 * 1024;

/// The upstream side of one request, reused by each of its attempts: the connection in use,
/// the parser of its answer, and an error answer's body (read to classify it).
struct upstream_leg {
    std::unique_ptr<upstream_connection> conn;
    std::optional<beast::http::response_parser<beast::http::buffer_body>> p;
    std::string error_body;
};

/// What every attempt of one request shares.
struct attempt_context {
    asio::any_io_executor ex;  ///< the client's: upstream connections are made on its thread
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

/// Sends `out` once on a pooled or fresh connection to `ep` and reads the answer's head, and for
/// an error answer its (small) body, so the answer can be classified before anything goes to
/// the client. A pooled connection the upstream closed while idle fails before any response
/// byte; only then is the request sent once more at once, on a fresh connection.
awaitable<attempt_result> attempt_once(const attempt_context& a,
                                       const config::region_endpoint& ep,
                                       upstream_request_message& out,
                                       upstream_leg& leg);

/// What the walk needs to know about an attempt that ended.
pipeline::attempt_report report(const attempt_result& r, const upstream_leg& leg);

/// Lets an attempt's connection go: back to the pool when its error answer was read to the end
/// and it may be kept, closed otherwise.
void release(gateway_context& g, client_watch& watch, upstream_leg& leg, const attempt_result& r);

}  // namespace bgw::net
