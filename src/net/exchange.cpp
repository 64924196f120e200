#include "bgw/net/exchange.hpp"

#include <boost/beast/http/read.hpp>
#include <boost/beast/http/write.hpp>

namespace bgw::net {

namespace {

namespace http = beast::http;

template <class Stream>
awaitable<beast::error_code> write_then_read(Stream& stream,
                                             beast::flat_buffer& buffer,
                                             http::request<http::string_body>& req,
                                             http::response_parser<http::string_body>& p) {
    auto [wec, wn] = co_await http::async_write(stream, req, use_nothrow);
    if (wec) co_return wec;
    auto [rec, rn] = co_await http::async_read(stream, buffer, p, use_nothrow);
    co_return rec;
}

}  // namespace

awaitable<beast::error_code> exchange_once(upstream_connection& c,
                                           http::request<http::string_body>& req,
                                           http::response_parser<http::string_body>& p) {
    auto once = [&](auto& stream) { return write_then_read(stream, c.buffer, req, p); };
    co_return co_await with_stream(c, once);
}

}  // namespace bgw::net
