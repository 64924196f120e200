#pragma once
/// An HTTP/2 client connection (cleartext, prior knowledge: the client's first bytes are the
/// HTTP/2 preface): its streams' requests go through the same pipeline as HTTP/1.1 requests
/// (forward), each stream the client port of its own request. The protocol itself is
/// bgw::http::h2_server's; this only moves its bytes and runs its requests.

#include "bgw/net/asio.hpp"
#include "bgw/net/gateway.hpp"

#include <memory>

#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>

namespace bgw::net {

/// Serves the connection whose first bytes (on a plain one, the preface at least) are in `buf`,
/// until it ends. `Stream`: beast::tcp_stream, or tls_stream (ALPN chose h2).
template <class Stream>
awaitable<void> run_h2_session(Stream& client,
                               beast::flat_buffer& buf,
                               std::shared_ptr<gateway_context> g,
                               listener_role role);

}  // namespace bgw::net
