// The Redis link against a real redis-server (tests/support/redis_server): pipelining in
// order, error replies, timeouts (a paused server) and their streak, outages (a stopped and
// restarted server) reported once each, the NOSCRIPT fallback, AUTH, TLS, fire-and-forget
// commands and the in-flight bound. Every wait runs the io_context until a condition holds,
// within a deadline.

#include "bgw/net/redis_link.hpp"

#include <array>
#include <chrono>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "fakes/test_pki.hpp"
#include "support/redis_server.hpp"
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/write.hpp>
#include <gtest/gtest.h>

namespace {

using namespace bgw;
using namespace std::chrono_literals;
namespace asio = boost::asio;
using fleet::reply;
using maybe_reply = std::optional<reply>;
using steady = std::chrono::steady_clock;
using net::awaitable;

/// What the link reported.
struct recorder final : net::redis_events {
    int ups = 0;
    int downs = 0;
    std::vector<std::string> reasons;
    std::map<std::string, int, std::less<>> errors;

    void link_up() override { ++ups; }
    void link_down(std::string_view reason) override {
        ++downs;
        reasons.emplace_back(reason);
    }
    void link_error(std::string_view kind) override { ++errors[std::string(kind)]; }
    int count(std::string_view kind) const {
        auto it = errors.find(kind);
        return it == errors.end() ? 0 : it->second;
    }
};

/// Runs `ioc` until `done()` holds or `limit` passes; whether it holds.
template <class Pred>
bool run_until(asio::io_context& ioc, Pred done, std::chrono::milliseconds limit = 10s) {
    const auto deadline = steady::now() + limit;
    while (!done()) {
        if (steady::now() >= deadline) return false;
        if (ioc.stopped()) ioc.restart();
        ioc.run_one_for(10ms);
    }
    return true;
}

/// One awaited call, observed from outside.
struct outcome {
    bool started = false;  ///< the call is queued (its coroutine has suspended in it)
    bool done = false;
    maybe_reply r;
};

awaitable<void> record(awaitable<maybe_reply> op, std::shared_ptr<outcome> out) {
    out->started = true;
    out->r = co_await std::move(op);
    out->done = true;
}

std::shared_ptr<outcome> spawn(asio::io_context& ioc, awaitable<maybe_reply> op) {
    auto out = std::make_shared<outcome>();
    asio::co_spawn(ioc, record(std::move(op), out), asio::detached);
    return out;
}

/// Runs one call to completion (failing the test if it does not complete).
maybe_reply await_call(asio::io_context& ioc, awaitable<maybe_reply> op) {
    auto out = spawn(ioc, std::move(op));
    EXPECT_TRUE(run_until(ioc, [&] { return out->done; })) << "the call never completed";
    return out->r;
}

class RedisLink : public ::testing::Test {
protected:
    static net::redis_settings settings_for(const test::redis_server& server,
                                            std::chrono::milliseconds timeout = 2000ms) {
        net::redis_settings s;
        s.url.host = "127.0.0.1";
        s.url.port = server.port();
        s.timeout = timeout;
        return s;
    }

    /// Starts `link` and waits until it is up.
    void bring_up(net::redis_link& link) {
        link.start();
        ASSERT_TRUE(run_until(ioc, [&] { return link.up(); }))
            << (ev.reasons.empty() ? "" : ev.reasons.back());
    }

    asio::io_context ioc;  // declared first: outlives every link a test makes
    recorder ev;
};

awaitable<void> incr_into(net::redis_link* link,
                          std::shared_ptr<std::vector<long long>> out,
                          std::size_t i,
                          std::shared_ptr<std::size_t> finished) {
    // A named vector: GCC 12 miscompiles a braced list inside a co_await expression.
    std::vector<std::string> incr = {"INCR", "counter"};
    auto r = co_await link->call(std::move(incr));
    if (r && r->type == reply::kind::integer) (*out)[i] = r->integer;
    ++*finished;
}

TEST_F(RedisLink, PipelinedCallsAreAnsweredInOrder) {
    test::redis_server server;
    net::redis_link link(ioc, settings_for(server), ev);
    bring_up(link);
    EXPECT_EQ(ev.ups, 1);
    EXPECT_EQ(ev.downs, 0);

    // All 1000 coroutines queue their INCR before the first write goes out (the flush is
    // posted behind them): one connection, 1000 in flight, each reply to its own caller.
    constexpr std::size_t n = 1000;
    auto results = std::make_shared<std::vector<long long>>(n, -1);
    auto finished = std::make_shared<std::size_t>(0);
    for (std::size_t i = 0; i < n; ++i) {
        asio::co_spawn(ioc, incr_into(&link, results, i, finished), asio::detached);
    }
    ASSERT_TRUE(run_until(ioc, [&] { return *finished == n; }));
    for (std::size_t i = 0; i < n; ++i) EXPECT_EQ((*results)[i], static_cast<long long>(i + 1));
    EXPECT_EQ(ev.count("timeout"), 0);
}

TEST_F(RedisLink, AnErrorReplyIsAReply) {
    test::redis_server server;
    net::redis_link link(ioc, settings_for(server), ev);
    bring_up(link);

    auto r = await_call(ioc, link.call({"INCR"}));
    ASSERT_TRUE(r);
    EXPECT_TRUE(r->is_error());
    EXPECT_NE(r->str.find("wrong number of arguments"), std::string::npos) << r->str;
    EXPECT_EQ(ev.count("reply"), 1);

    // Binary-safe both ways, and the link carries on after an error.
    const std::string value("a\0b\r\n*1\r\n", 9);
    r = await_call(ioc, link.call({"SET", "bin", value}));
    ASSERT_TRUE(r);
    EXPECT_EQ(r->type, reply::kind::status);
    r = await_call(ioc, link.call({"GET", "bin"}));
    ASSERT_TRUE(r);
    EXPECT_EQ(r->type, reply::kind::string);
    EXPECT_EQ(r->str, value);
    r = await_call(ioc, link.call({"HGET", "bin", "f"}));
    ASSERT_TRUE(r);
    EXPECT_TRUE(r->is_error());
    EXPECT_EQ(r->str.rfind("WRONGTYPE", 0), 0u) << r->str;
    r = await_call(ioc, link.call({"GET", "missing"}));
    ASSERT_TRUE(r);
    EXPECT_EQ(r->type, reply::kind::nil);
    EXPECT_TRUE(link.up());
    EXPECT_EQ(ev.count("reply"), 2);
}

TEST_F(RedisLink, APausedServerTimesOutThenTheLinkIsGivenUp) {
    test::redis_server server;
    net::redis_link link(ioc, settings_for(server, 50ms), ev);
    bring_up(link);

    server.pause();
    auto t0 = steady::now();
    auto r = await_call(ioc, link.call({"SET", "k", "late"}));
    auto waited = steady::now() - t0;
    EXPECT_FALSE(r);
    EXPECT_EQ(ev.count("timeout"), 1);
    EXPECT_GE(waited, 50ms);
    EXPECT_LT(waited, 1s);

    // The late reply (+OK) is read and dropped: the next call gets its own reply.
    server.resume();
    r = await_call(ioc, link.call({"ECHO", "mine"}));
    ASSERT_TRUE(r);
    EXPECT_EQ(r->str, "mine");
    EXPECT_TRUE(link.up());
    EXPECT_EQ(ev.downs, 0);

    // Three timeouts in a row: the connection is given up, reported down once.
    server.pause();
    for (int i = 0; i < 3; ++i) EXPECT_FALSE(await_call(ioc, link.call({"PING"})));
    ASSERT_TRUE(run_until(ioc, [&] { return ev.downs == 1; }));
    EXPECT_FALSE(link.up());
    EXPECT_NE(ev.reasons[0].find("no reply within 50 ms, 3 times in a row"), std::string::npos)
        << ev.reasons[0];
    EXPECT_EQ(ev.count("timeout"), 4);

    // Down: answered at once, not by the deadline timer.
    t0 = steady::now();
    EXPECT_FALSE(await_call(ioc, link.call({"PING"})));
    EXPECT_LT(steady::now() - t0, 200ms);
    EXPECT_EQ(ev.count("timeout"), 4);

    server.resume();
    ASSERT_TRUE(run_until(
        ioc, [&] { return ev.ups == 2; }, 20s));
    r = await_call(ioc, link.call({"GET", "k"}));
    ASSERT_TRUE(r);
    EXPECT_EQ(r->str, "late");
    EXPECT_EQ(ev.downs, 1);
}

TEST_F(RedisLink, AStoppedServerIsOneOutageAndTheLinkComesBack) {
    test::redis_server server;
    net::redis_link link(ioc, settings_for(server), ev);
    bring_up(link);
    ASSERT_TRUE(await_call(ioc, link.call({"SET", "k", "1"})));

    server.stop();
    ASSERT_TRUE(run_until(ioc, [&] { return ev.downs == 1; }));
    EXPECT_FALSE(link.up());
    EXPECT_NE(ev.reasons[0].find("127.0.0.1:" + std::to_string(server.port())), std::string::npos)
        << ev.reasons[0];

    // Unavailable at once (the timeout is 2 s), for calls and sends alike.
    auto t0 = steady::now();
    EXPECT_FALSE(await_call(ioc, link.call({"GET", "k"})));
    EXPECT_LT(steady::now() - t0, 200ms);
    link.send({"SET", "k", "dropped"});

    // Reconnect attempts fail (each counted), the outage is still reported once.
    ASSERT_TRUE(run_until(ioc, [&] { return ev.count("connection") >= 4; }));
    EXPECT_EQ(ev.downs, 1);
    EXPECT_EQ(ev.ups, 1);

    server.restart();
    ASSERT_TRUE(run_until(
        ioc, [&] { return ev.ups == 2; }, 20s));
    EXPECT_TRUE(link.up());
    auto r = await_call(ioc, link.call({"INCR", "k"}));
    ASSERT_TRUE(r);
    EXPECT_EQ(r->type, reply::kind::integer);  // a fresh server (no persistence): k was gone
    EXPECT_EQ(r->integer, 1);

    // A second outage is a second episode.
    server.stop();
    ASSERT_TRUE(run_until(ioc, [&] { return ev.downs == 2; }));
}

TEST_F(RedisLink, StopAnswersPendingCallsAndEndsTheEvents) {
    test::redis_server server;
    net::redis_link link(ioc, settings_for(server, 10s), ev);
    bring_up(link);
    server.pause();
    auto pending = spawn(ioc, link.call({"PING"}));
    ASSERT_TRUE(run_until(ioc, [&] { return pending->started; }));
    link.stop();
    EXPECT_FALSE(link.up());
    ASSERT_TRUE(run_until(
        ioc, [&] { return pending->done; }, 1s));
    EXPECT_FALSE(pending->r);
    EXPECT_FALSE(await_call(ioc, link.call({"PING"})));
    EXPECT_EQ(ev.downs, 0);
    EXPECT_EQ(ev.count("timeout"), 0);
}

// Redis's counter of executed calls of `command`, from INFO commandstats.
long long calls_of(asio::io_context& ioc, net::redis_link& link, const std::string& command) {
    auto r = await_call(ioc, link.call({"INFO", "commandstats"}));
    if (!r) return -1;
    const std::string key = "cmdstat_" + command + ":calls=";
    auto at = r->str.find(key);
    return at == std::string::npos ? 0 : std::stoll(r->str.substr(at + key.size()));
}

TEST_F(RedisLink, EvalFallsBackToTheBodyOnNoscript) {
    test::redis_server server;
    net::redis_link link(ioc, settings_for(server), ev);
    bring_up(link);
    const fleet::lua_script s("return redis.call('INCRBY', KEYS[1], ARGV[1])");

    // A fresh server knows no script: EVALSHA says NOSCRIPT, EVAL runs it (and loads it).
    auto r = await_call(ioc, link.eval(s, {"n"}, {"5"}));
    ASSERT_TRUE(r);
    EXPECT_EQ(r->integer, 5);
    r = await_call(ioc, link.eval(s, {"n"}, {"2"}));  // EVALSHA alone now
    ASSERT_TRUE(r);
    EXPECT_EQ(r->integer, 7);
    r = await_call(ioc, link.call({"SCRIPT", "LOAD", s.body}));
    ASSERT_TRUE(r);
    EXPECT_EQ(r->str, s.sha1);  // our digest is Redis's

    r = await_call(ioc, link.call({"SCRIPT", "FLUSH"}));
    ASSERT_TRUE(r);
    EXPECT_EQ(r->str, "OK");
    r = await_call(ioc, link.eval(s, {"n"}, {"3"}));
    ASSERT_TRUE(r);
    EXPECT_EQ(r->integer, 10);
    EXPECT_EQ(calls_of(ioc, link, "eval"), 2);  // the two NOSCRIPTs, not every call
    EXPECT_EQ(ev.count("reply"), 0);            // a NOSCRIPT recovered from is no error

    // Detached: EVALSHA, NOSCRIPT, EVAL resent. The resend is queued as soon as the
    // NOSCRIPT is read, so a GET issued after the first GET's reply comes after it.
    r = await_call(ioc, link.call({"SCRIPT", "FLUSH"}));
    ASSERT_TRUE(r);
    link.eval_detached(s, {"n"}, {"100"});
    ASSERT_TRUE(await_call(ioc, link.call({"GET", "n"})));
    r = await_call(ioc, link.call({"GET", "n"}));
    ASSERT_TRUE(r);
    EXPECT_EQ(r->str, "110");
    EXPECT_EQ(calls_of(ioc, link, "eval"), 3);
    EXPECT_EQ(ev.count("reply"), 0);

    // A script's own error is a reply (and counted).
    const fleet::lua_script bad("return redis.error_reply('BGW nope')");
    r = await_call(ioc, link.eval(bad, {}, {}));
    ASSERT_TRUE(r);
    EXPECT_TRUE(r->is_error());
    EXPECT_NE(r->str.find("BGW nope"), std::string::npos) << r->str;
}

TEST_F(RedisLink, FireAndForgetIsApplied) {
    test::redis_server server;
    net::redis_link link(ioc, settings_for(server), ev);
    bring_up(link);
    link.send({"SET", "ff", "1"});
    link.send({"INCRBY", "ff", "41"});
    link.send({"INCR"});  // an error reply: read, dropped, counted
    auto r = await_call(ioc, link.call({"GET", "ff"}));
    ASSERT_TRUE(r);
    EXPECT_EQ(r->str, "42");
    EXPECT_EQ(ev.count("reply"), 1);
}

TEST_F(RedisLink, InFlightIsBounded) {
    test::redis_server server;
    net::redis_link link(ioc, settings_for(server, 10s), ev);
    bring_up(link);
    for (std::size_t i = 0; i < net::redis_link::max_in_flight; ++i) link.send({"INCR", "q"});
    link.send({"INCR", "q"});  // one too many: dropped
    auto t0 = steady::now();
    EXPECT_FALSE(await_call(ioc, link.call({"PING"})));  // full: unavailable at once
    EXPECT_LT(steady::now() - t0, 1s);

    // Once the replies are read there is room again, and exactly the bound was applied.
    maybe_reply r;
    ASSERT_TRUE(run_until(ioc, [&] {
        r = await_call(ioc, link.call({"GET", "q"}));
        return r.has_value();
    }));
    EXPECT_EQ(r->str, std::to_string(net::redis_link::max_in_flight));
    EXPECT_TRUE(link.up());
}

TEST_F(RedisLink, SelectsTheUrlsDatabase) {
    test::redis_server server;
    auto s = settings_for(server);
    s.url.db = 5;
    net::redis_link link(ioc, s, ev);
    bring_up(link);
    ASSERT_TRUE(await_call(ioc, link.call({"SET", "where", "db5"})));
    auto r = await_call(ioc, link.call({"CLIENT", "INFO"}));
    ASSERT_TRUE(r);
    EXPECT_NE(r->str.find(" db=5 "), std::string::npos) << r->str;
}

TEST_F(RedisLink, AuthenticatesWithThePassword) {
    test::redis_server server({.password = "s3cret-pass"});
    {
        auto s = settings_for(server);
        s.password = "s3cret-pass";
        net::redis_link link(ioc, s, ev);
        bring_up(link);
        auto r = await_call(ioc, link.call({"PING"}));
        ASSERT_TRUE(r);
        EXPECT_EQ(r->str, "PONG");
    }
    {
        auto s = settings_for(server);  // AUTH user pass: the ACL form
        s.url.username = "default";
        s.password = "s3cret-pass";
        net::redis_link link(ioc, s, ev);
        bring_up(link);
        EXPECT_TRUE(await_call(ioc, link.call({"PING"})));
    }
    EXPECT_EQ(ev.downs, 0);
}

TEST_F(RedisLink, AWrongPasswordIsAnOutageWhoseReasonHidesIt) {
    test::redis_server server({.password = "s3cret-pass"});
    auto s = settings_for(server);
    s.password = "wrong-pass-123";
    net::redis_link link(ioc, s, ev);
    link.start();
    ASSERT_TRUE(run_until(ioc, [&] { return ev.count("connection") >= 2; }));
    EXPECT_EQ(ev.downs, 1);
    EXPECT_EQ(ev.ups, 0);
    EXPECT_FALSE(link.up());
    EXPECT_NE(ev.reasons[0].find("AUTH refused"), std::string::npos) << ev.reasons[0];
    EXPECT_EQ(ev.reasons[0].find("wrong-pass-123"), std::string::npos) << ev.reasons[0];
    EXPECT_FALSE(await_call(ioc, link.call({"PING"})));

    recorder ev2;  // and no password at all: PING says NOAUTH
    net::redis_link bare(ioc, settings_for(server), ev2);
    bare.start();
    ASSERT_TRUE(run_until(ioc, [&] { return ev2.downs == 1; }));
    EXPECT_NE(ev2.reasons[0].find("NOAUTH"), std::string::npos) << ev2.reasons[0];
}

using tcp = asio::ip::tcp;

/// One connection to the fake Redis: answers the set-up PING, then answers the first command
/// with `reply_bytes` (whatever they are), then holds the connection until the client closes.
awaitable<void> fake_session(tcp::socket s, std::string reply_bytes) {
    std::array<char, 4096> buf{};
    auto [ec, n] = co_await s.async_read_some(asio::buffer(buf), net::use_nothrow);
    if (ec) co_return;
    const std::string pong = "+PONG\r\n";
    std::tie(ec, n) = co_await asio::async_write(s, asio::buffer(pong), net::use_nothrow);
    std::tie(ec, n) = co_await s.async_read_some(asio::buffer(buf), net::use_nothrow);
    if (ec) co_return;
    std::tie(ec, n) = co_await asio::async_write(s, asio::buffer(reply_bytes), net::use_nothrow);
    while (!ec) std::tie(ec, n) = co_await s.async_read_some(asio::buffer(buf), net::use_nothrow);
}

/// A fake Redis that says what no real one would: each connection a fake_session.
awaitable<void> fake_redis(tcp::acceptor* acceptor, std::string reply_bytes, int* connections) {
    for (;;) {
        auto [ec, s] = co_await acceptor->async_accept(net::use_nothrow);
        if (ec) co_return;
        ++*connections;
        asio::co_spawn(acceptor->get_executor(), fake_session(std::move(s), reply_bytes),
                       asio::detached);
    }
}

// Bytes that are not RESP, and a reply nobody asked for: either way the connection is out of
// step, so it is given up (the call in flight unavailable), and a new one is made.
TEST_F(RedisLink, AProtocolErrorGivesTheConnectionUp) {
    struct case_ {
        const char* reply_bytes;
        const char* reason;
    };
    const case_ cases[] = {{"!bogus\r\n", "protocol error"},
                           {"$1\r\nv\r\n+SURPRISE\r\n", "a reply to no command"}};
    for (const auto& c : cases) {
        SCOPED_TRACE(c.reply_bytes);
        recorder rec;
        tcp::acceptor acceptor(ioc, {asio::ip::make_address("127.0.0.1"), 0});
        int connections = 0;
        asio::co_spawn(ioc, fake_redis(&acceptor, c.reply_bytes, &connections), asio::detached);
        net::redis_settings s;
        s.url.host = "127.0.0.1";
        s.url.port = acceptor.local_endpoint().port();
        s.timeout = 2s;
        net::redis_link link(ioc, s, rec);
        link.start();
        ASSERT_TRUE(run_until(ioc, [&] { return link.up(); }));

        auto r = await_call(ioc, link.call({"GET", "k"}));
        ASSERT_TRUE(run_until(ioc, [&] { return rec.downs == 1; }));
        EXPECT_NE(rec.reasons[0].find(c.reason), std::string::npos) << rec.reasons[0];
        EXPECT_EQ(rec.count("reply"), 1);
        ASSERT_TRUE(run_until(ioc, [&] { return rec.ups == 2; }));  // a new connection
        EXPECT_EQ(connections, 2);
        if (std::string_view(c.reason) == "protocol error") {
            EXPECT_FALSE(r);  // failed with the connection
        } else {
            ASSERT_TRUE(r);  // answered before the stray reply came
            EXPECT_EQ(r->str, "v");
        }
    }
}

std::shared_ptr<asio::ssl::context> trusting(const std::string& ca_pem) {
    auto ctx = std::make_shared<asio::ssl::context>(asio::ssl::context::tls_client);
    ctx->add_certificate_authority(asio::buffer(ca_pem));
    return ctx;
}

TEST_F(RedisLink, TlsWithTheRightCaWorks) {
    test::redis_server server({.password = "", .tls = true});
    auto s = settings_for(server);
    s.url.tls = true;
    s.url.host = "localhost";  // the name on the server's certificate
    s.tls = trusting(server.ca_pem());
    net::redis_link link(ioc, s, ev);
    bring_up(link);
    ASSERT_TRUE(await_call(ioc, link.call({"SET", "t", "over tls"})));
    auto r = await_call(ioc, link.call({"GET", "t"}));
    ASSERT_TRUE(r);
    EXPECT_EQ(r->str, "over tls");
}

TEST_F(RedisLink, TlsRefusesAnUnknownCaAndAWrongName) {
    test::redis_server server({.password = "", .tls = true});
    {
        auto s = settings_for(server);
        s.url.tls = true;
        s.url.host = "localhost";
        s.tls = trusting(test::make_test_pki("localhost").ca_pem);  // another CA
        net::redis_link link(ioc, s, ev);
        link.start();
        ASSERT_TRUE(run_until(ioc, [&] { return ev.downs == 1; }));
        EXPECT_EQ(ev.ups, 0);
        EXPECT_NE(ev.reasons[0].find("TLS handshake"), std::string::npos) << ev.reasons[0];
    }
    {
        recorder ev2;
        auto s = settings_for(server);  // the right CA, but 127.0.0.1 is not on the certificate
        s.url.tls = true;
        s.tls = trusting(server.ca_pem());
        net::redis_link link(ioc, s, ev2);
        link.start();
        ASSERT_TRUE(run_until(ioc, [&] { return ev2.downs == 1; }));
        EXPECT_EQ(ev2.ups, 0);
        EXPECT_NE(ev2.reasons[0].find("TLS handshake"), std::string::npos) << ev2.reasons[0];
    }
}

}  // namespace
