#pragma once
/// One accepted request, forwarded: the admin endpoints, batch results and control-plane reads
/// answered here; a runtime request admitted (pipeline::admit), then queued for the batch tier or
/// walked over its targets (pipeline::upstream_walk) and relayed.

#include "bgw/config/config.hpp"
#include "bgw/net/asio.hpp"
#include "bgw/net/client_side.hpp"
#include "bgw/net/gateway.hpp"

#include <optional>

#include <boost/beast/http.hpp>

namespace bgw::net {

/// What `forward` would refuse from the head alone (a caller key that is missing or wrong, a
/// path that names no operation or a model the key may not use), checked before any body byte is
/// read: such a request costs the gateway no body. Sets the log's operation and model.
std::optional<error> refuse_head(const beast::http::request<beast::http::string_body>& req,
                                 const config::config& cfg,
                                 listener_role role,
                                 request_ctx& log);

/// Forwards one accepted request; returns whether the client connection may be kept.
awaitable<bool> forward(client_side& c,
                        beast::http::request<beast::http::string_body>& req,
                        gateway_context& g,
                        const config::config& cfg,
                        listener_role role);

}  // namespace bgw::net
