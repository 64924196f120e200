// write_all: every byte of a gather list arrives, over plain and TLS streams, however few bytes
// each write takes. The TLS case is the one asio::async_write of {head, body} got wrong: over
// beast::ssl_stream a body above 16 KiB after the head was never sent.

#include "bgw/net/write.hpp"

#include <string>
#include <vector>

#include "fakes/test_pki.hpp"
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/asio/ssl/host_name_verification.hpp>
#include <boost/beast/_experimental/test/stream.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/http/write.hpp>
#include <boost/beast/ssl/ssl_stream.hpp>
#include <gtest/gtest.h>

namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using bgw::net::awaitable;
using bgw::net::use_nothrow;
using bgw::net::write_all;

// The sizes that matter for TLS: around one 16 KiB record, several records, many.
const std::vector<std::size_t> body_sizes{
    0, 1, 16 * 1024 - 1, 16 * 1024, 16 * 1024 + 1, 64 * 1024, 1024 * 1024};

std::string pattern(std::size_t n, char seed) {
    std::string s(n, '\0');
    for (std::size_t i = 0; i < n; ++i) s[i] = static_cast<char>(seed + static_cast<char>(i % 61));
    return s;
}

const bgw::test::test_pki& pki() {
    static const auto p = bgw::test::make_test_pki("localhost");
    return p;
}

asio::ssl::context server_context() {
    asio::ssl::context ctx(asio::ssl::context::tls_server);
    ctx.use_certificate_chain(asio::buffer(pki().cert_pem));
    ctx.use_private_key(asio::buffer(pki().key_pem), asio::ssl::context::pem);
    return ctx;
}

asio::ssl::context client_context() {
    asio::ssl::context ctx(asio::ssl::context::tls_client);
    ctx.add_certificate_authority(asio::buffer(pki().ca_pem));
    ctx.set_verify_mode(asio::ssl::verify_peer);
    return ctx;
}

using tls = beast::ssl_stream<beast::test::stream>;

/// A TLS client and server over an in-memory pair; the client's socket takes at most
/// `write_size` bytes a write (a slow peer's small window).
struct tls_pair {
    asio::io_context ioc;
    asio::ssl::context cctx = client_context();
    asio::ssl::context sctx = server_context();
    tls client;
    tls server;

    explicit tls_pair(std::size_t write_size)
        : client(beast::test::stream(ioc), cctx), server(beast::test::stream(ioc), sctx) {
        client.next_layer().connect(server.next_layer());
        client.next_layer().write_size(write_size);
        client.set_verify_callback(asio::ssl::host_name_verification("localhost"));
    }

    /// Handshakes both ends, then runs `send` on the client and `receive` on the server.
    template <class Send, class Receive>
    void run(Send send, Receive receive) {
        asio::co_spawn(ioc, handshake_then(client, asio::ssl::stream_base::client, send),
                       asio::detached);
        asio::co_spawn(ioc, handshake_then(server, asio::ssl::stream_base::server, receive),
                       asio::detached);
        ioc.run();
    }

    template <class Body>
    static awaitable<void> handshake_then(tls& s,
                                          asio::ssl::stream_base::handshake_type t,
                                          Body body) {
        auto [ec] = co_await s.async_handshake(t, use_nothrow);
        EXPECT_FALSE(ec) << ec.message();
        if (!ec) co_await body(s);
    }
};

TEST(write_all, sends_head_and_body_whole_over_tls_for_every_size) {
    for (std::size_t write_size : {std::size_t{1} << 30, std::size_t{1000}}) {
        for (std::size_t size : body_sizes) {
            SCOPED_TRACE("body " + std::to_string(size) + ", writes of at most " +
                         std::to_string(write_size));
            const std::string head = "POST /model/m/invoke HTTP/1.1\r\nhost: x\r\n\r\n";
            const std::string body = pattern(size, 'a');
            std::string got;
            std::size_t written = 0;
            beast::error_code wrote;
            tls_pair pair(write_size);
            pair.run(
                [&](tls& s) -> awaitable<void> {
                    std::tie(wrote, written) =
                        co_await write_all(s, std::array{asio::buffer(head), asio::buffer(body)});
                },
                [&](tls& s) -> awaitable<void> {
                    got.resize(head.size() + body.size());
                    co_await asio::async_read(s, asio::buffer(got), use_nothrow);
                });
            EXPECT_FALSE(wrote) << wrote.message();
            EXPECT_EQ(written, head.size() + body.size());
            EXPECT_TRUE(got == head + body);
        }
    }
}

TEST(write_all, skips_empty_buffers_anywhere_in_the_list) {
    const std::string a = pattern(20000, 'A'), c = pattern(40000, 'c');
    std::string got;
    tls_pair pair(1u << 30);
    pair.run(
        [&](tls& s) -> awaitable<void> {
            co_await write_all(
                s, std::array{asio::const_buffer(), asio::buffer(a), asio::const_buffer(),
                              asio::buffer(c), asio::const_buffer()});
        },
        [&](tls& s) -> awaitable<void> {
            got.resize(a.size() + c.size());
            co_await asio::async_read(s, asio::buffer(got), use_nothrow);
        });
    EXPECT_TRUE(got == a + c);
}

TEST(write_all, resumes_mid_buffer_on_a_plain_stream_taking_a_few_bytes_a_write) {
    asio::io_context ioc;
    beast::test::stream client(ioc), server(ioc);
    client.connect(server);
    client.write_size(7);  // every boundary is crossed part-way through some write
    const std::string head = pattern(33, 'h'), body = pattern(5000, 'b'), tail = "\r\n";
    std::size_t written = 0;
    asio::co_spawn(
        ioc,
        [&]() -> awaitable<void> {
            auto [ec, n] = co_await write_all(
                client, std::array{asio::buffer(head), asio::buffer(body), asio::buffer(tail)});
            EXPECT_FALSE(ec);
            written = n;
        },
        asio::detached);
    ioc.run();
    EXPECT_EQ(written, head.size() + body.size() + tail.size());
    EXPECT_TRUE(server.str() == head + body + tail);
}

TEST(write_all, reports_a_write_that_fails) {
    asio::io_context ioc;
    beast::test::fail_count fc(2);  // the second write fails
    beast::test::stream client(ioc, fc), server(ioc);
    client.connect(server);
    client.write_size(10);
    const std::string body = pattern(100, 'x');
    beast::error_code got;
    std::size_t written = 0;
    asio::co_spawn(
        ioc,
        [&]() -> awaitable<void> {
            std::tie(got, written) = co_await write_all(client, asio::buffer(body));
        },
        asio::detached);
    ioc.run();
    EXPECT_EQ(got, beast::test::error::test_failure);
    EXPECT_EQ(written, 10u);
}

// The gateway's one-shot AWS calls (batch S3 uploads, control plane, credentials) write whole
// requests with Beast's serializer: it must not have the same hole over TLS.
TEST(write_all, beast_serializer_sends_whole_requests_over_tls) {
    for (std::size_t size : body_sizes) {
        SCOPED_TRACE("body " + std::to_string(size));
        http::request<http::string_body> req{http::verb::put, "/bucket/key", 11};
        req.set(http::field::host, "localhost");
        req.body() = pattern(size, '0');
        req.prepare_payload();
        std::string got_body;
        tls_pair pair(1000);
        pair.run(
            [&](tls& s) -> awaitable<void> {
                auto [ec, n] = co_await http::async_write(s, req, use_nothrow);
                EXPECT_FALSE(ec) << ec.message();
            },
            [&](tls& s) -> awaitable<void> {
                beast::flat_buffer buf;
                http::request_parser<http::string_body> p;
                p.body_limit(4 * 1024 * 1024);
                auto [ec, n] = co_await http::async_read(s, buf, p, use_nothrow);
                EXPECT_FALSE(ec) << ec.message();
                got_body = p.get().body();
            });
        EXPECT_EQ(got_body.size(), size);
        EXPECT_TRUE(got_body == req.body());
    }
}

}  // namespace
