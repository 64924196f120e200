// The real session code in-process (issue 16): run_session on a loopback connection, in front of
// a recording upstream, fed a corpus of requests whole, one byte at a time and split in two at
// every byte boundary. However the bytes arrive, the upstream must receive the same requests and
// the client the same answers (request ids aside).

#include "bgw/config/config.hpp"
#include "bgw/net/gateway.hpp"
#include "bgw/obs/log.hpp"

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cstdio>
#include <memory>
#include <regex>
#include <sstream>
#include <string>
#include <vector>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http.hpp>
#include <gtest/gtest.h>

namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;
using bgw::net::awaitable;
using bgw::net::use_nothrow;

/// What one exchange came to: the requests upstream saw and the answers the client read.
struct exchange {
    std::vector<std::string> upstream;  ///< method, target, fields (sorted) and body of each
    std::string answers;                ///< the client's bytes, request ids blanked
    bool operator==(const exchange&) const = default;
};

/// An upstream that records each request and answers `{}`.
awaitable<void> upstream_connection(tcp::socket s, std::vector<std::string>& seen) {
    beast::flat_buffer buf;
    for (;;) {
        http::request<http::string_body> req;
        auto [ec, n] = co_await http::async_read(s, buf, req, use_nothrow);
        if (ec) co_return;
        std::vector<std::string> fields;
        for (const auto& f : req) {
            std::string name(f.name_string());
            for (auto& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
            if (name != "x-amz-date") fields.push_back(name + ": " + std::string(f.value()));
        }
        std::sort(fields.begin(), fields.end());
        std::string record = std::string(req.method_string()) + " " + std::string(req.target());
        for (const auto& f : fields) record += "\n" + f;
        seen.push_back(record + "\n\n" + req.body());
        static constexpr std::string_view answer =
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}";
        auto [wec, wn] = co_await asio::async_write(s, asio::buffer(answer), use_nothrow);
        if (wec) co_return;
    }
}

awaitable<void> upstream_server(tcp::acceptor& a, std::vector<std::string>& seen) {
    for (;;) {
        auto [ec, s] = co_await a.async_accept(use_nothrow);
        if (ec) co_return;
        asio::co_spawn(a.get_executor(), upstream_connection(std::move(s), seen), asio::detached);
    }
}

/// An upstream whose answer carries a header field Beast's fields cannot hold (Beast throws
/// std::length_error inside the gateway's read of it).
awaitable<void> poison_server(tcp::acceptor& a) {
    for (;;) {
        auto [ec, s] = co_await a.async_accept(use_nothrow);
        if (ec) co_return;
        beast::flat_buffer buf;
        http::request<http::string_body> req;
        auto [rec, rn] = co_await http::async_read(s, buf, req, use_nothrow);
        if (rec) continue;
        const std::string answer = "HTTP/1.1 200 OK\r\nX-Poison: " + std::string(70000, 'p') +
                                   "\r\nContent-Length: 2\r\n\r\n{}";
        co_await asio::async_write(s, asio::buffer(answer), use_nothrow);
        beast::error_code ignored;
        s.shutdown(tcp::socket::shutdown_send, ignored);
    }
}

/// Sends `wire` in the pieces `cuts` marks, then reads `answers` responses (or to the close).
awaitable<void> send_and_read(tcp::endpoint gw,
                              std::string wire,
                              std::vector<std::size_t> cuts,
                              int answers,
                              std::string& out) {
    tcp::socket s(co_await asio::this_coro::executor);
    auto [cec] = co_await s.async_connect(gw, use_nothrow);
    if (cec) co_return;
    s.set_option(tcp::no_delay(true));
    std::size_t from = 0;
    cuts.push_back(wire.size());
    for (std::size_t end : cuts) {
        auto [wec, wn] = co_await asio::async_write(s, asio::buffer(wire.data() + from, end - from),
                                                    use_nothrow);
        if (wec) break;
        from = end;
    }
    beast::flat_buffer buf;
    for (int i = 0; i < answers; ++i) {
        http::response<http::string_body> res;
        auto [rec, rn] = co_await http::async_read(s, buf, res, use_nothrow);
        if (rec) {
            out += "<closed>";
            co_return;
        }
        std::ostringstream text;
        text << res;
        out += text.str();
    }
}

/// Sends `wire` and goes away (closes) without reading anything.
awaitable<void> send_and_leave(tcp::endpoint gw, std::string wire, bool& done) {
    tcp::socket s(co_await asio::this_coro::executor);
    auto [cec] = co_await s.async_connect(gw, use_nothrow);
    if (!cec) co_await asio::async_write(s, asio::buffer(wire), use_nothrow);
    done = true;
}

/// The client, then a flag the test's loop waits on.
awaitable<void> client(tcp::endpoint gw,
                       std::string wire,
                       std::vector<std::size_t> cuts,
                       int answers,
                       std::string& out,
                       bool& done) {
    co_await send_and_read(gw, std::move(wire), std::move(cuts), answers, out);
    done = true;
}

std::string hex(std::size_t n) {
    char out[20];
    std::snprintf(out, sizeof out, "%zx", n);
    return out;
}

class session_in_process : public ::testing::Test {
protected:
    void SetUp() override {
        bgw::obs::init_logging("warn");  // a line per request, thousands of runs: not here
        upstream_.open(tcp::v4());
        upstream_.bind({asio::ip::make_address("127.0.0.1"), 0});
        upstream_.listen();
        front_.open(tcp::v4());
        front_.bind({asio::ip::make_address("127.0.0.1"), 0});
        front_.listen();
        poison_.open(tcp::v4());
        poison_.bind({asio::ip::make_address("127.0.0.1"), 0});
        poison_.listen();
        auto cfg = bgw::config::parse_config(
            R"({"listen": "127.0.0.1:0", "default_region": "us-east-1",
                "regions": {"us-east-1": {"endpoint": "http://127.0.0.1:)" +
            std::to_string(upstream_.local_endpoint().port()) +
            R"("}, "eu-west-1": {"endpoint": "http://127.0.0.1:)" +
            std::to_string(poison_.local_endpoint().port()) +
            R"("}}, "routes": {"poison": {"targets": [
                {"region": "eu-west-1", "tier": "on-demand", "model_id": "m"}]}},
                "upstream": {"max_response_header_bytes": 1048576},
                "limits": {"max_header_bytes": 16384, "max_body_bytes": 100000}})");
        ASSERT_TRUE(cfg) << cfg.error().message;
        g_ = std::make_shared<bgw::net::gateway_context>(
            std::make_shared<const bgw::config::config>(std::move(*cfg)), nullptr, "test-key");
        asio::co_spawn(ioc_, upstream_server(upstream_, seen_), asio::detached);
        asio::co_spawn(ioc_, poison_server(poison_), asio::detached);
    }

    void TearDown() override {
        // Idle upstream connections go before the io_context they belong to (as in run_server);
        // sessions still open are destroyed with it.
        front_.close();
        upstream_.close();
        poison_.close();
        g_->pool.clear();
        ioc_.poll();
    }

    /// One connection: accept it into run_session, send `wire` cut at `cuts`, read the answers.
    exchange run(const std::string& wire, std::vector<std::size_t> cuts, int answers) {
        seen_.clear();
        std::string out;
        bool done = false;
        asio::co_spawn(ioc_,
                       client(front_.local_endpoint(), wire, std::move(cuts), answers, out, done),
                       asio::detached);
        front_.async_accept([this](beast::error_code ec, tcp::socket s) {
            if (!ec) asio::co_spawn(ioc_, bgw::net::run_session(std::move(s), g_), asio::detached);
        });
        while (!done) ioc_.run_one();
        ioc_.poll();  // the upstream's last record is in before the client read its answer
        static const std::regex id("[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}");
        return {seen_, std::regex_replace(out, id, "<id>")};
    }

    /// A client that sends `wire` and leaves; returns once its session has ended (false if it
    /// did not within 5 s).
    bool cut_off(const std::string& wire) {
        bool done = false;
        asio::co_spawn(ioc_, send_and_leave(front_.local_endpoint(), wire, done), asio::detached);
        front_.async_accept([this](beast::error_code ec, tcp::socket s) {
            if (!ec) asio::co_spawn(ioc_, bgw::net::run_session(std::move(s), g_), asio::detached);
        });
        const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
        while (!done || g_->connections.load() != 0) {
            if (std::chrono::steady_clock::now() > deadline) return false;
            ioc_.run_one_for(std::chrono::milliseconds(50));
        }
        return true;
    }

    /// The same outcome whole, one byte at a time, and split in two anywhere; returns it.
    exchange same_every_way(const std::string& wire, int answers) {
        const exchange whole = run(wire, {}, answers);
        std::vector<std::size_t> bytes;
        for (std::size_t i = 1; i < wire.size(); ++i) bytes.push_back(i);
        EXPECT_EQ(run(wire, bytes, answers), whole) << "one byte at a time";
        for (std::size_t i = 1; i < wire.size(); ++i)
            EXPECT_EQ(run(wire, {i}, answers), whole) << "split at " << i;
        return whole;
    }

    asio::io_context ioc_{1};
    tcp::acceptor upstream_{ioc_};
    tcp::acceptor front_{ioc_};
    tcp::acceptor poison_{ioc_};
    std::vector<std::string> seen_;
    std::shared_ptr<bgw::net::gateway_context> g_;
};

const std::string body = R"({"messages":[{"role":"user","content":[{"text":"hi"}]}]})";

std::string converse_model(std::string_view model, const std::string& b) {
    return "POST /model/" + std::string(model) +
           "/converse HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\nContent-Length: " +
           std::to_string(b.size()) + "\r\n\r\n" + b;
}

std::string converse(std::string_view extra, const std::string& b) {
    return "POST /model/m/converse HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\n" +
           std::string(extra) + "Content-Length: " + std::to_string(b.size()) + "\r\n\r\n" + b;
}

TEST_F(session_in_process, content_length_body) {
    auto e = same_every_way(converse("", body), 1);
    ASSERT_EQ(e.upstream.size(), 1u);
    EXPECT_TRUE(e.upstream[0].ends_with("\n\n" + body)) << e.upstream[0];
    EXPECT_TRUE(e.answers.starts_with("HTTP/1.1 200 OK")) << e.answers;
}

TEST_F(session_in_process, chunked_body_with_extension_and_trailer) {
    const std::string wire =
        "POST /model/m/converse HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\n"
        "Transfer-Encoding: chunked\r\n\r\n10;ext=1\r\n" +
        body.substr(0, 16) + "\r\n" + hex(body.size() - 16) + "\r\n" + body.substr(16) +
        "\r\n0\r\nX-Trailer: t\r\n\r\n";
    auto e = same_every_way(wire, 1);
    ASSERT_EQ(e.upstream.size(), 1u);
    EXPECT_TRUE(e.upstream[0].ends_with("\n\n" + body)) << e.upstream[0];
    EXPECT_EQ(e.upstream[0].find("trailer"), std::string::npos) << e.upstream[0];
}

TEST_F(session_in_process, pipelined_requests_after_a_head_longer_than_a_read) {
    const std::string second = R"({"messages":[{"role":"user","content":[{"text":"two"}]}]})";
    const std::string wire =
        converse("X-Pad: " + std::string(5000, 'p') + "\r\n", body) + converse("", second);
    // Every boundary of a 5 KiB head is many runs: one byte at a time and a sample of splits.
    const exchange whole = run(wire, {}, 2);
    ASSERT_EQ(whole.upstream.size(), 2u) << whole.answers;
    EXPECT_TRUE(whole.upstream[0].ends_with("\n\n" + body));
    EXPECT_TRUE(whole.upstream[1].ends_with("\n\n" + second));
    std::vector<std::size_t> bytes;
    for (std::size_t i = 1; i < wire.size(); ++i) bytes.push_back(i);
    EXPECT_EQ(run(wire, bytes, 2), whole) << "one byte at a time";
    for (std::size_t i = 1; i < wire.size(); i += 97) EXPECT_EQ(run(wire, {i}, 2), whole) << i;
}

TEST_F(session_in_process, health_and_refusals) {
    auto health = same_every_way("GET /healthz HTTP/1.1\r\nHost: gw\r\n\r\n", 1);
    EXPECT_TRUE(health.answers.starts_with("HTTP/1.1 200 OK")) << health.answers;
    auto te = same_every_way(
        "POST /model/m/converse HTTP/1.1\r\nHost: gw\r\nTransfer-Encoding: gzip, chunked, "
        "chunked\r\n\r\n0\r\n\r\n",
        1);
    EXPECT_TRUE(te.upstream.empty());
    EXPECT_TRUE(te.answers.starts_with("HTTP/1.1 400 Bad Request")) << te.answers;
    auto host = same_every_way("GET /healthz HTTP/1.1\r\n\r\n", 1);
    EXPECT_TRUE(host.answers.starts_with("HTTP/1.1 400 Bad Request")) << host.answers;
}

TEST_F(session_in_process, a_client_that_leaves_at_any_byte_leaves_nothing_behind) {
    const std::string chunked =
        "POST /model/m/converse HTTP/1.1\r\nHost: gw\r\nTransfer-Encoding: chunked\r\n\r\n" +
        hex(body.size()) + ";e=1\r\n" + body + "\r\n0\r\nX-T: t\r\n\r\n";
    for (const std::string& wire :
         {converse("X-Pad: " + std::string(300, 'p') + "\r\n", body), chunked}) {
        for (std::size_t k = 0; k < wire.size(); ++k) {
            seen_.clear();
            ASSERT_TRUE(cut_off(wire.substr(0, k))) << "the session outlived its client, at " << k;
            EXPECT_TRUE(seen_.empty()) << "a request cut at " << k << " went upstream";
            EXPECT_EQ(g_->inflight_body_bytes.load(), 0u) << k;
            EXPECT_EQ(g_->inflight.load(), 0) << k;
        }
    }
}

/// A poisoned exchange, then a good one, each on its own connection; the loop is stopped after.
awaitable<void> poisoned_then_good(tcp::endpoint gw,
                                   std::string poisoned,
                                   std::string good,
                                   std::string& first,
                                   std::string& second,
                                   asio::io_context& ioc) {
    co_await send_and_read(gw, std::move(poisoned), {}, 1, first);
    co_await send_and_read(gw, std::move(good), {}, 1, second);
    ioc.stop();
}

awaitable<void> accept_sessions(tcp::acceptor& a, std::shared_ptr<bgw::net::gateway_context> g) {
    for (;;) {
        auto [ec, s] = co_await a.async_accept(use_nothrow);
        if (ec) co_return;
        asio::co_spawn(a.get_executor(), bgw::net::run_session(std::move(s), g), asio::detached);
    }
}

TEST_F(session_in_process, a_handler_that_throws_ends_only_its_own_connection) {
    std::string first, second;
    asio::co_spawn(ioc_, accept_sessions(front_, g_), asio::detached);
    asio::co_spawn(ioc_,
                   poisoned_then_good(front_.local_endpoint(), converse_model("poison", body),
                                      converse_model("m", body), first, second, ioc_),
                   asio::detached);
    bgw::net::run_guarded(ioc_, *g_);  // returns when the client stops it
    ioc_.restart();
    EXPECT_EQ(first, "<closed>");
    EXPECT_TRUE(second.starts_with("HTTP/1.1 200 OK")) << second;
    const auto text = g_->metrics.render(g_->gauges());
    EXPECT_NE(text.find("bedrock_gateway_session_failures_total 1"), std::string::npos) << text;
}

}  // namespace
