#pragma once
/// Relaying the answer the walk settled on: its head as soon as upstream sent it, its body piece
/// by piece (event streams frame by frame, read on the side for usage and exceptions), and what
/// the answer used settled against the request's estimates.

#include "bgw/config/config.hpp"
#include "bgw/net/asio.hpp"
#include "bgw/net/attempt.hpp"
#include "bgw/net/client_side.hpp"
#include "bgw/net/client_watch.hpp"
#include "bgw/net/gateway.hpp"
#include "bgw/pipeline/upstream_walk.hpp"
#include "bgw/routing/runtime_path.hpp"

#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http.hpp>

namespace bgw::net {

/// Feeds `parser` what `buf` already holds, without touching the socket, and consumes what it
/// used. An error only for bytes the parser refuses; needing more is not one.
template <class Parser>
beast::error_code parse_buffered(Parser& parser, beast::flat_buffer& buf) {
    beast::error_code ec;
    while (buf.size() > 0 && !parser.is_done()) {
        const std::size_t used = parser.put(buf.data(), ec);
        buf.consume(used);
        if (ec == beast::http::error::need_more || ec == beast::http::error::need_buffer) return {};
        if (ec || used == 0) break;
    }
    return ec;
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
awaitable<bool> relay_answer(client_side& c, const relay_inputs& in);

}  // namespace bgw::net
