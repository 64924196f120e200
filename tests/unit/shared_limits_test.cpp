// Fleet mode's shared limits (issue 20), the pure part: what a script call carries and how its
// answer reads, and each gateway's local share of a fleet budget. The scripts themselves run
// against a real Redis in shared_limits_redis_test.cpp.

#include "bgw/fleet/shared_limits.hpp"

#include <gtest/gtest.h>

namespace {

using namespace bgw;
using namespace std::chrono_literals;
using fleet::reply;

reply integer(long long v) {
    reply r;
    r.type = reply::kind::integer;
    r.integer = v;
    return r;
}

reply array(std::vector<reply> elements) {
    reply r;
    r.type = reply::kind::array;
    r.elements = std::move(elements);
    return r;
}

TEST(shared_limits, an_admission_carries_every_slot_in_a_fixed_place) {
    fleet::admission_ask a;
    a.caller = fleet::bucket_ask{"bgw:ck:app", 5, 500, 7};
    a.cooldown_key = "bgw:cd:us-east-1:m";
    a.target = fleet::bucket_ask{"bgw:rl:m", 60, 0, 9};
    auto call = fleet::admission_call(a);
    EXPECT_EQ(call.keys,
              (std::vector<std::string>{"bgw:ck:app", "bgw:cd:us-east-1:m", "bgw:rl:m"}));
    // The clock is the server's unless a test gives one.
    EXPECT_EQ(call.args, (std::vector<std::string>{"", "5", "500", "7", "1", "60", "0", "9"}));

    fleet::admission_ask bare;  // nothing to check but the caller-less, limit-less model
    bare.now_us = 1234;
    auto none = fleet::admission_call(bare);
    EXPECT_EQ(none.keys, (std::vector<std::string>{"-", "-", "-"}));
    EXPECT_EQ(none.args, (std::vector<std::string>{"1234", "0", "0", "0", "0", "0", "0", "0"}));
}

TEST(shared_limits, an_answer_reads_only_in_its_own_shape) {
    auto v = fleet::read_admission(array({integer(3), integer(1500), integer(1)}));
    ASSERT_TRUE(v);
    EXPECT_EQ(v->code, fleet::admission_code::target_over);
    EXPECT_EQ(v->wait, 1500ms);
    EXPECT_TRUE(v->caller_charged);

    EXPECT_FALSE(fleet::read_admission(integer(0)));
    EXPECT_FALSE(fleet::read_admission(array({integer(0), integer(0)})));
    EXPECT_FALSE(fleet::read_admission(array({integer(9), integer(0), integer(0)})));
    EXPECT_FALSE(fleet::read_admission(array({integer(1), integer(-5), integer(0)})));
    reply err;
    err.type = reply::kind::error;
    err.str = "NOSCRIPT No matching script";
    EXPECT_FALSE(fleet::read_admission(err));
    EXPECT_FALSE(fleet::read_cooldown(err));
    EXPECT_FALSE(fleet::read_heartbeat(integer(0)));
    EXPECT_EQ(fleet::read_heartbeat(integer(3)), 3u);
}

TEST(shared_limits, each_gateway_gets_its_share_of_the_fleet_budget_and_never_zero) {
    EXPECT_EQ(fleet::local_share(config::rate_limit{60, 90'000}, 3),
              (config::rate_limit{20, 30'000}));
    EXPECT_EQ(fleet::local_share(config::rate_limit{2, 0}, 50), (config::rate_limit{1, 0}));
    EXPECT_EQ(fleet::local_share(config::rate_limit{7, 7}, 0), (config::rate_limit{7, 7}));
    auto m = fleet::local_share({{"*", {100, 0}}, {"m", {0, 1000}}}, 4);
    EXPECT_EQ(m.at("*"), (config::rate_limit{25, 0}));
    EXPECT_EQ(m.at("m"), (config::rate_limit{0, 250}));
}

TEST(shared_limits, keys_live_under_the_prefix_and_cannot_collide) {
    EXPECT_EQ(fleet::target_key("bgw:", "m"), "bgw:rl:m");
    EXPECT_EQ(fleet::caller_key("bgw:", "m"), "bgw:ck:m");
    EXPECT_EQ(fleet::cooldown_key("p/", "eu-west-1", "a:b"), "p/cd:eu-west-1:a:b");
    EXPECT_EQ(fleet::fleet_key("x:"), "x:fleet");
    EXPECT_NE(fleet::admission_script().body, fleet::correction_script().body);
}

}  // namespace
