#pragma once
/// An HTTP/1.1 connection as the client port of the request it is serving: responses as
/// HTTP/1.1 messages, a relayed body chunked unless upstream gave its length, the socket watched
/// for a client that hangs up.

#include "bgw/net/asio.hpp"
#include "bgw/net/client_port.hpp"
#include "bgw/net/upstream.hpp"

#include <string>

#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>

namespace bgw::net {

/// `Stream`: beast::tcp_stream, or tls_stream (the TLS listener's).
template <class Stream>
class http1_port final : public client_port {
public:
    http1_port(Stream& stream, beast::flat_buffer& buf) : stream_(stream), buf_(buf) {}

    asio::any_io_executor executor() override { return stream_.get_executor(); }
    awaitable<beast::error_code> send(beast::http::response<beast::http::string_body>& res,
                                      bool keep_alive,
                                      pipeline::request_ctx& ctx) override;
    void begin(const relayed_answer& a, bool keep_alive) override;
    awaitable<beast::error_code> flush_head(std::chrono::milliseconds timeout) override;
    awaitable<beast::error_code> write(std::string_view piece,
                                       bool last,
                                       std::chrono::milliseconds timeout) override;
    void watch(const std::shared_ptr<client_watch>& w, std::chrono::milliseconds delay) override;
    void unwatch(client_watch& w) override;
    void idle_buffers() override;

private:
    Stream& stream_;
    beast::flat_buffer& buf_;
    std::string head_;  ///< a relayed answer's head, as wire bytes, until it goes
    bool chunked_ = false;
    std::size_t* bytes_out_ = nullptr;
};

extern template class http1_port<beast::tcp_stream>;
extern template class http1_port<tls_stream>;

}  // namespace bgw::net
