// Fleet mode's scripts (issue 20) run in a real Redis (Debian's redis-server, started by the
// test) against the local limiter they must agree with: the same requests at the same
// instants get the same decisions and the same exact waits. The clock is the test's (the
// scripts take one instead of the server's TIME when given), so the runs are exact.

#include "bgw/fleet/shared_limits.hpp"
#include "bgw/net/redis_link.hpp"
#include "bgw/policy/throttle.hpp"

#include <optional>
#include <random>
#include <stdexcept>

#include "support/redis_server.hpp"
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <gtest/gtest.h>

namespace {

using namespace bgw;
using namespace std::chrono_literals;
namespace asio = boost::asio;

struct quiet_events final : net::redis_events {
    void link_up() override {}
    void link_down(std::string_view) override {}
    void link_error(std::string_view) override {}
};

class shared_limits_redis : public ::testing::Test {
protected:
    void SetUp() override {
        net::redis_settings s;
        s.url.host = "127.0.0.1";
        s.url.port = server_.port();
        s.timeout = 2000ms;  // a sanitizer build may be slow; nothing here tests the bound
        link_.emplace(ioc_, s, events_);
        link_->start();
        run_until([&] { return link_->up(); });
    }
    void TearDown() override {
        link_->stop();
        ioc_.restart();
        ioc_.run_for(100ms);
    }

    template <class Predicate>
    void run_until(Predicate done) {
        const auto deadline = std::chrono::steady_clock::now() + 20s;
        ioc_.restart();
        while (!done()) {
            if (std::chrono::steady_clock::now() > deadline)
                throw std::runtime_error("Redis did not answer within 20 s");
            ioc_.run_one_for(50ms);
        }
    }

    fleet::reply eval(const fleet::lua_script& s, const fleet::script_args& a) {
        std::optional<std::optional<fleet::reply>> out;
        asio::co_spawn(
            ioc_, [&]() -> net::awaitable<void> { out = co_await link_->eval(s, a.keys, a.args); },
            asio::detached);
        run_until([&] { return out.has_value(); });
        if (!*out) throw std::runtime_error("no reply from Redis");
        return **out;
    }

    fleet::admission_verdict admit(const fleet::admission_ask& a) {
        auto r = eval(fleet::admission_script(), fleet::admission_call(a));
        auto v = fleet::read_admission(r);
        if (!v) throw std::runtime_error("the admission script answered " + r.str);
        return *v;
    }

    test::redis_server server_;
    asio::io_context ioc_;
    quiet_events events_;
    std::optional<net::redis_link> link_;
};

struct limit_case {
    std::uint64_t rpm;
    std::uint64_t tpm;
};

/// A few thousand requests at random instants with random sizes, and random corrections of
/// what they used, through both: every decision and every wait must match.
TEST_F(shared_limits_redis, the_script_decides_exactly_as_the_local_limiter_does) {
    const limit_case cases[] = {{60, 0}, {0, 1000}, {10, 5000}, {1, 1}, {1000, 1'000'000}};
    std::mt19937_64 rng(20);
    int compared = 0;
    int refused = 0;
    for (const auto& lim : cases) {
        const std::string model = "m-" + std::to_string(lim.rpm) + "-" + std::to_string(lim.tpm);
        policy::rate_limiter local(std::map<std::string, policy::model_limit>{
            {model, policy::model_limit{lim.rpm, lim.tpm}}});
        const std::int64_t origin = 1'700'000'000'000'000;  // the script's clock, microseconds
        std::int64_t t = 0;
        for (int i = 0; i < 600; ++i) {
            t += static_cast<std::int64_t>(rng() % 3'000'000);  // up to 3 s apart
            const auto at = policy::clock::time_point{} + std::chrono::microseconds(t);
            const std::uint64_t tokens = 1 + rng() % (lim.tpm ? lim.tpm / 3 + 2 : 50);
            fleet::admission_ask ask;
            ask.target =
                fleet::bucket_ask{fleet::target_key("eq:", model), lim.rpm, lim.tpm, tokens};
            ask.now_us = origin + t;
            auto shared = admit(ask);
            auto mine = local.try_acquire(model, tokens, at);
            ASSERT_EQ(shared.code == fleet::admission_code::admitted, mine.allowed)
                << model << " request " << i;
            ASSERT_EQ(shared.wait, mine.wait) << model << " request " << i;
            ++compared;
            if (!mine.allowed) ++refused;
            if (mine.allowed && lim.tpm && rng() % 2) {
                const std::uint64_t used = rng() % (2 * tokens + 1);
                eval(fleet::correction_script(),
                     fleet::correction_call(fleet::target_key("eq:", model), lim.tpm, tokens, used,
                                            origin + t));
                local.correct(model, tokens, used, at);
            }
        }
    }
    // Both outcomes were exercised, not only one.
    EXPECT_GT(refused, 100);
    EXPECT_LT(refused, compared - 100);
}

TEST_F(shared_limits_redis, the_caller_is_checked_first_and_charged_even_when_the_target_refuses) {
    fleet::admission_ask ask;
    ask.caller = fleet::bucket_ask{fleet::caller_key("c:", "app"), 2, 0, 0};
    ask.target = fleet::bucket_ask{fleet::target_key("c:", "m"), 1, 0, 0};
    ask.now_us = 5'000'000;
    auto first = admit(ask);
    EXPECT_EQ(first.code, fleet::admission_code::admitted);
    EXPECT_TRUE(first.caller_charged);
    auto second = admit(ask);  // the model's one request a minute is gone; the caller had two
    EXPECT_EQ(second.code, fleet::admission_code::target_over);
    EXPECT_TRUE(second.caller_charged);
    EXPECT_EQ(second.wait, 60000ms);
    auto third = admit(ask);  // now the caller's budget is spent too: refused before the target
    EXPECT_EQ(third.code, fleet::admission_code::caller_over);
    EXPECT_FALSE(third.caller_charged);
    EXPECT_EQ(third.wait, 30000ms);  // two a minute: the next in 30 s
}

TEST_F(shared_limits_redis, a_rest_published_by_one_gateway_refuses_the_model_fleet_wide) {
    const auto key = fleet::cooldown_key("r:", "us-east-1", "m");
    auto set =
        fleet::read_cooldown(eval(fleet::cooldown_script(), fleet::cooldown_call(key, 1500ms)));
    EXPECT_EQ(set, 1500ms);
    // A shorter rest published later does not cut the longer one short.
    auto kept =
        fleet::read_cooldown(eval(fleet::cooldown_script(), fleet::cooldown_call(key, 10ms)));
    ASSERT_TRUE(kept);
    EXPECT_GT(*kept, 1000ms);
    fleet::admission_ask ask;
    ask.cooldown_key = key;
    ask.target = fleet::bucket_ask{fleet::target_key("r:", "m"), 5, 0, 0};
    auto v = admit(ask);
    EXPECT_EQ(v.code, fleet::admission_code::cooling);
    EXPECT_GT(v.wait, 1000ms);
    EXPECT_LE(v.wait, 1500ms);
    // Nothing was charged while it rests: five requests still fit once it ends.
    ask.cooldown_key = fleet::cooldown_key("r:", "eu-west-1", "m");
    for (int i = 0; i < 5; ++i) EXPECT_EQ(admit(ask).code, fleet::admission_code::admitted) << i;
    EXPECT_EQ(admit(ask).code, fleet::admission_code::target_over);
}

TEST_F(shared_limits_redis, every_key_written_expires) {
    fleet::admission_ask ask;
    ask.caller = fleet::bucket_ask{fleet::caller_key("x:", "app"), 10, 100, 5};
    ask.target = fleet::bucket_ask{fleet::target_key("x:", "m"), 10, 100, 5};
    admit(ask);
    eval(fleet::heartbeat_script(), fleet::heartbeat_call(fleet::fleet_key("x:"), "g1", 10s));
    for (const auto& key :
         {fleet::caller_key("x:", "app"), fleet::target_key("x:", "m"), fleet::fleet_key("x:")}) {
        std::optional<std::optional<fleet::reply>> out;
        // Built outside the coroutine: GCC 12 cannot take a braced list inside one.
        std::vector<std::string> pttl{"PTTL", key};
        asio::co_spawn(
            ioc_, [&]() -> net::awaitable<void> { out = co_await link_->call(pttl); },
            asio::detached);
        run_until([&] { return out.has_value(); });
        ASSERT_TRUE(*out);
        EXPECT_GT((*out)->integer, 0) << key << " has no expiry";
        EXPECT_LE((*out)->integer, 61'000) << key;
    }
}

TEST_F(shared_limits_redis, the_heartbeat_counts_the_gateways_alive) {
    const auto key = fleet::fleet_key("h:");
    eval(fleet::heartbeat_script(), fleet::heartbeat_call(key, "gw-a", 10s));
    eval(fleet::heartbeat_script(), fleet::heartbeat_call(key, "gw-b", 10s));
    auto n = fleet::read_heartbeat(
        eval(fleet::heartbeat_script(), fleet::heartbeat_call(key, "gw-a", 10s)));
    EXPECT_EQ(n, 2u);
}

}  // namespace
