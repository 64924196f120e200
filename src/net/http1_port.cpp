// The definitions behind bgw/net/http1_port.hpp (its comment says what they are for).

#include "bgw/net/http1_port.hpp"

#include "bgw/http/wire.hpp"
#include "bgw/net/client_side.hpp"
#include "bgw/net/client_watch.hpp"
#include "bgw/net/write.hpp"

#include <array>
#include <sstream>
#include <string>
#include <type_traits>

#include <boost/beast/http.hpp>

namespace bgw::net {
namespace {

namespace http = beast::http;

/// The response head the client gets for a relayed answer, as wire bytes: the fields that
/// cross, and the framing (chunked unless upstream gave a length).
std::string relayed_head(const relayed_answer& a, bool keep_alive) {
    const auto& head = a.p.get();
    std::string out;
    out.reserve(1024);
    bgw::http::append_status_line(out, head.result_int(), head.reason());
    head_writer fields{out};
    relayed_fields(a, fields);
    if (const auto len = a.p.content_length()) {
        bgw::http::append_field(out, "Content-Length", std::to_string(*len));
    } else {
        bgw::http::append_field(out, "Transfer-Encoding", "chunked");
    }
    if (!keep_alive) bgw::http::append_field(out, "Connection", "close");
    out.append("\r\n");
    return out;
}

}  // namespace

template <class Stream>
awaitable<beast::error_code> http1_port<Stream>::send(http::response<http::string_body>& res,
                                                      bool keep_alive,
                                                      pipeline::request_ctx& ctx) {
    res.keep_alive(keep_alive);
    ctx.status = res.result_int();
    if constexpr (std::is_same_v<Stream, beast::tcp_stream>) {
        auto [ec, n] = co_await http::async_write(stream_, res, use_nothrow);
        ctx.bytes_out += n;
        co_return ec;
    } else {
        // Over TLS every write goes through write_all (a gather write can lose bytes past a
        // TLS record there), so the message is serialized first.
        std::ostringstream wire;
        wire << res;
        const std::string bytes = std::move(wire).str();
        auto [ec, n] = co_await write_all(stream_, asio::buffer(bytes));
        ctx.bytes_out += n;
        co_return ec;
    }
}

template <class Stream>
void http1_port<Stream>::begin(const relayed_answer& a, bool keep_alive) {
    head_ = relayed_head(a, keep_alive);
    chunked_ = !a.p.content_length();
    bytes_out_ = &a.ctx.bytes_out;
}

template <class Stream>
awaitable<beast::error_code> http1_port<Stream>::flush_head(std::chrono::milliseconds timeout) {
    beast::get_lowest_layer(stream_).expires_after(timeout);
    auto [ec, n] = co_await write_all(stream_, asio::buffer(head_));
    *bytes_out_ += n;
    if (!ec) head_.clear();
    co_return ec;
}

// One write per piece: the head if it has not gone yet, the piece (framed as a chunk for a
// chunked body), and the last chunk at the end. Empty buffers write nothing.
template <class Stream>
awaitable<beast::error_code> http1_port<Stream>::write(std::string_view piece,
                                                       bool last,
                                                       std::chrono::milliseconds timeout) {
    char size_line[20];
    std::array<asio::const_buffer, 5> wire{};
    wire[0] = asio::buffer(head_);
    if (chunked_ && !piece.empty()) {
        wire[1] = asio::buffer(size_line, bgw::http::chunk_size_line(piece.size(), size_line));
        wire[3] = asio::buffer("\r\n", 2);
    }
    wire[2] = asio::buffer(piece);
    if (chunked_ && last) wire[4] = asio::buffer(bgw::http::last_chunk);
    beast::get_lowest_layer(stream_).expires_after(timeout);
    auto [ec, n] = co_await write_all(stream_, wire);
    *bytes_out_ += n;
    if (!ec) head_.clear();
    co_return ec;
}

template <class Stream>
void http1_port<Stream>::watch(const std::shared_ptr<client_watch>& w,
                               std::chrono::milliseconds delay) {
    watch_client_soon(beast::get_lowest_layer(stream_), w, delay);
}

template <class Stream>
void http1_port<Stream>::unwatch(client_watch& w) {
    stop_watch(beast::get_lowest_layer(stream_), w);
}

template <class Stream>
void http1_port<Stream>::idle_buffers() {
    if (buf_.size() == 0) buf_.shrink_to_fit();
}

template class http1_port<beast::tcp_stream>;
template class http1_port<tls_stream>;

}  // namespace bgw::net
