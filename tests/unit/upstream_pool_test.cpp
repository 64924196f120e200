// The upstream keep-alive pool: what goes in, what comes out.

#include "bgw/net/upstream.hpp"

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <gtest/gtest.h>

namespace {

using bgw::net::upstream_connection;
using bgw::net::upstream_pool;

std::unique_ptr<upstream_connection> open_connection(boost::asio::io_context& ioc,
                                                     const std::string& key) {
    auto conn = std::make_unique<upstream_connection>();
    conn->key = key;
    auto& tcp = conn->stream.emplace<boost::beast::tcp_stream>(ioc);
    tcp.socket().open(boost::asio::ip::tcp::v4());
    return conn;
}

TEST(upstream_pool, gives_back_what_was_returned_newest_first_and_marks_it_reused) {
    boost::asio::io_context ioc;
    upstream_pool pool(4, std::chrono::seconds(50));
    auto a = open_connection(ioc, "http://h:1");
    auto b = open_connection(ioc, "http://h:1");
    auto* b_raw = b.get();
    pool.give_back(std::move(a));
    pool.give_back(std::move(b));
    EXPECT_EQ(pool.idle_count(), 2u);
    auto got = pool.take("http://h:1", ioc);
    ASSERT_NE(got, nullptr);
    EXPECT_EQ(got.get(), b_raw);
    EXPECT_TRUE(got->reused);
    EXPECT_EQ(pool.take("http://other:1", ioc), nullptr);
}

TEST(upstream_pool, refuses_a_connection_that_was_closed_before_it_came_back) {
    // The client-hang-up watcher may close the upstream just as the relay ends; such a
    // connection must not be handed to the next request (it would fail with EBADF: a 502).
    boost::asio::io_context ioc;
    upstream_pool pool(4, std::chrono::seconds(50));
    auto conn = open_connection(ioc, "http://h:1");
    conn->tcp().close();
    pool.give_back(std::move(conn));
    EXPECT_EQ(pool.idle_count(), 0u);
    EXPECT_EQ(pool.take("http://h:1", ioc), nullptr);
}

TEST(upstream_pool, never_hands_out_a_connection_closed_while_idle) {
    boost::asio::io_context ioc;
    upstream_pool pool(4, std::chrono::seconds(50));
    auto conn = open_connection(ioc, "http://h:1");
    auto* raw = conn.get();
    pool.give_back(std::move(conn));
    raw->tcp().close();
    EXPECT_EQ(pool.take("http://h:1", ioc), nullptr);
    EXPECT_EQ(pool.idle_count(), 0u);
}

TEST(upstream_pool, keeps_at_most_max_idle_per_host_dropping_the_oldest) {
    boost::asio::io_context ioc;
    upstream_pool pool(2, std::chrono::seconds(50));
    auto first = open_connection(ioc, "http://h:1");
    auto* first_raw = first.get();
    pool.give_back(std::move(first));
    pool.give_back(open_connection(ioc, "http://h:1"));
    pool.give_back(open_connection(ioc, "http://h:1"));
    EXPECT_EQ(pool.idle_count(), 2u);
    auto x = pool.take("http://h:1", ioc);
    auto y = pool.take("http://h:1", ioc);
    EXPECT_NE(x.get(), first_raw);
    EXPECT_NE(y.get(), first_raw);
}

TEST(upstream_pool, hands_a_connection_only_to_the_io_context_it_belongs_to) {
    // Each thread runs its own io_context: a socket registered with one must never be used
    // from another thread's sessions.
    boost::asio::io_context ioc, other;
    upstream_pool pool(4, std::chrono::seconds(50));
    auto conn = open_connection(ioc, "http://h:1");
    auto* raw = conn.get();
    pool.give_back(std::move(conn));
    EXPECT_EQ(pool.take("http://h:1", other), nullptr);
    EXPECT_EQ(pool.take("http://h:1", ioc).get(), raw);
}

TEST(upstream_pool, clear_drops_every_idle_connection) {
    boost::asio::io_context ioc;
    upstream_pool pool(4, std::chrono::seconds(50));
    pool.give_back(open_connection(ioc, "http://h:1"));
    pool.give_back(open_connection(ioc, "http://h:2"));
    pool.clear();
    EXPECT_EQ(pool.idle_count(), 0u);
    EXPECT_EQ(pool.take("http://h:1", ioc), nullptr);
}

}  // namespace

namespace {

TEST(upstream_pool, with_pooling_off_keeps_nothing_and_never_crashes) {
    // upstream.max_idle_per_host 0 is a valid config: every connection closes after its answer.
    boost::asio::io_context ioc;
    upstream_pool pool(0, std::chrono::seconds(50));
    pool.give_back(open_connection(ioc, "http://h:1"));
    pool.give_back(open_connection(ioc, "http://h:1"));
    EXPECT_EQ(pool.idle_count(), 0u);
    EXPECT_EQ(pool.take("http://h:1", ioc), nullptr);
}

}  // namespace
