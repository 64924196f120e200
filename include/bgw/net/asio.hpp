#pragma once
/// Asio/Beast aliases and the one completion token the I/O shell uses (Boost 1.81 has no default
/// token): every call reads `auto [ec, n] = co_await op(..., use_nothrow);`.

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core/error.hpp>

namespace bgw::net {

namespace asio = boost::asio;
namespace beast = boost::beast;

inline constexpr auto use_nothrow = asio::as_tuple(asio::use_awaitable);

template <class T>
using awaitable = asio::awaitable<T>;

/// Errors that only mean "the peer went away" and are not worth a warning.
bool is_benign(const beast::error_code& ec);

}  // namespace bgw::net
