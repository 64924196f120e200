#pragma once
/// `/healthz`, `/readyz` and `/metrics`: served without a caller key, on the listener that
/// serves them.

#include "bgw/net/asio.hpp"
#include "bgw/net/client_side.hpp"
#include "bgw/net/gateway.hpp"

#include <string_view>

#include <boost/beast/http.hpp>

namespace bgw::net {

/// The admin endpoints, served without a caller key.
bool is_admin_path(std::string_view target);

/// `/healthz`, `/readyz` and `/metrics`, on the listener that serves them; on the other, 404.
awaitable<bool> serve_admin(client_side& c,
                            const beast::http::request<beast::http::string_body>& req,
                            gateway_context& g,
                            bool here);

}  // namespace bgw::net
