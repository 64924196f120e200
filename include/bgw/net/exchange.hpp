#pragma once
/// Moving bytes on an upstream connection whether it is plain or TLS: the one place the two
/// are told apart, and the one-shot exchange (a request, then its whole answer) that the
/// gateway's own calls (S3, the control plane, STS and the metadata endpoints) share.

#include "bgw/net/asio.hpp"
#include "bgw/net/upstream.hpp"

#include <variant>

#include <boost/beast/http/message.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/string_body.hpp>

namespace bgw::net {

/// `f(stream)` with the connection's stream, plain or TLS; `f` returns the same type for both
/// (an awaitable, typically, made by calling a coroutine template: keep `f` a named local, so
/// no temporary with a destructor sits inside a co_await, which GCC 12 mishandles).
template <class F>
decltype(auto) with_stream(upstream_connection& c, F& f) {
    if (auto* plain = std::get_if<beast::tcp_stream>(&c.stream)) return f(*plain);
    return f(std::get<tls_stream>(c.stream));
}

/// Writes `req` and reads one whole answer into `p`, bytes read past it staying in the
/// connection's buffer. The caller sets the deadline (`c.tcp().expires_after`) and `p`'s
/// body limit. An error code for a failed write or read; an HTTP error is an answer.
awaitable<beast::error_code> exchange_once(
    upstream_connection& c,
    beast::http::request<beast::http::string_body>& req,
    beast::http::response_parser<beast::http::string_body>& p);

}  // namespace bgw::net
