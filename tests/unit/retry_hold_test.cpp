// Issue 17 as tables with a hand-driven clock: what the client's headers ask for, the hold
// budget and the client's deadline, cool-down lengths (escalating, or upstream's own wait,
// capped), the retry decision, and all of them together with the retry budget in one policy.

#include "bgw/policy/hold.hpp"
#include "bgw/policy/traffic.hpp"

#include <gtest/gtest.h>

namespace {

using namespace bgw::policy;
using namespace std::chrono_literals;

const auto t0 = clock::time_point{} + 1h;

bgw::config::retry_config cfg_with(int attempts,
                                   milliseconds hold,
                                   milliseconds default_timeout = 0ms) {
    bgw::config::retry_config c;
    c.max_attempts = attempts;
    c.max_hold = hold;
    c.default_timeout = default_timeout;
    return c;
}

// --- what the request says ---------------------------------------------------------------------

client_headers hdrs(std::string_view max_attempts = "",
                    std::string_view timeout_ms = "",
                    std::string_view amz_sdk_request = "",
                    std::string_view stainless_retry_count = "",
                    std::string_view stainless_timeout = "") {
    return {max_attempts, timeout_ms, amz_sdk_request, stainless_retry_count, stainless_timeout};
}

struct terms_case {
    const char* name;
    client_headers headers;
    int config_attempts;
    milliseconds default_timeout;
    int attempts;  // expected; 0 = a 400
    std::string_view from;
    std::optional<milliseconds> timeout;
};

class terms_table : public ::testing::TestWithParam<terms_case> {};

TEST_P(terms_table, reads_attempts_and_patience) {
    const auto& c = GetParam();
    auto t = read_client_terms(c.headers, cfg_with(c.config_attempts, 1000ms, c.default_timeout));
    if (c.attempts == 0) {
        ASSERT_FALSE(t) << c.name;
        EXPECT_EQ(t.error().status, boost::beast::http::status::bad_request);
        EXPECT_EQ(t.error().type, "ValidationException");
        EXPECT_NE(t.error().message.find("X-Gateway-"), std::string::npos) << t.error().message;
        return;
    }
    ASSERT_TRUE(t) << c.name << ": " << t.error().message;
    EXPECT_EQ(t->max_attempts, c.attempts) << c.name;
    EXPECT_EQ(t->attempts_from, c.from) << c.name;
    EXPECT_EQ(t->timeout, c.timeout) << c.name;
}

INSTANTIATE_TEST_SUITE_P(
    table,
    terms_table,
    ::testing::Values(
        terms_case{"nothing said: the config", hdrs(), 3, 0ms, 3, "config", std::nullopt},
        terms_case{"AWS SDK at defaults retries itself", hdrs("", "", "attempt=1; max=3", "", ""),
                   3, 0ms, 1, "client_retries", std::nullopt},
        terms_case{"AWS SDK's last attempt: still one", hdrs("", "", "attempt=3;max=3", "", ""), 3,
                   0ms, 1, "client_retries", std::nullopt},
        terms_case{"SDK with maxAttempts 1 does not retry",
                   hdrs("", "", "attempt=1; max=1", "", ""), 3, 0ms, 3, "config", std::nullopt},
        terms_case{"legacy amz-sdk-request without max", hdrs("", "", "attempt=1", "", ""), 3, 0ms,
                   3, "config", std::nullopt},
        terms_case{"Stainless SDK retries itself, and says its timeout",
                   hdrs("", "", "", "0", "600"), 3, 0ms, 1, "client_retries", 600000ms},
        terms_case{"explicit header wins over the SDK's", hdrs("2", "", "attempt=1; max=3", "", ""),
                   3, 0ms, 2, "header", std::nullopt},
        terms_case{"explicit header bounded by retry.max_attempts", hdrs("9", "", "", "", ""), 3,
                   0ms, 3, "header", std::nullopt},
        terms_case{"explicit timeout", hdrs("", "2500", "", "", ""), 3, 0ms, 3, "config", 2500ms},
        terms_case{"shortest timeout wins", hdrs("", "9000", "", "", "10"), 3, 4000ms, 3, "config",
                   4000ms},
        terms_case{"gateway default alone", hdrs(), 3, 30000ms, 3, "config", 30000ms},
        terms_case{"unreadable Stainless timeout ignored", hdrs("", "", "", "1", "soon"), 3, 0ms, 1,
                   "client_retries", std::nullopt},
        terms_case{"attempts 0 refused", hdrs("0", "", "", "", ""), 3, 0ms, 0, "", std::nullopt},
        terms_case{"attempts 11 refused", hdrs("11", "", "", "", ""), 3, 0ms, 0, "", std::nullopt},
        terms_case{"attempts not a number", hdrs("two", "", "", "", ""), 3, 0ms, 0, "",
                   std::nullopt},
        terms_case{"timeout 0 refused", hdrs("", "0", "", "", ""), 3, 0ms, 0, "", std::nullopt},
        terms_case{"timeout negative refused", hdrs("", "-5", "", "", ""), 3, 0ms, 0, "",
                   std::nullopt},
        terms_case{"timeout over a day refused", hdrs("", "86400001", "", "", ""), 3, 0ms, 0, "",
                   std::nullopt}));

// --- the hold budget and the deadline ----------------------------------------------------------

struct hold_case {
    const char* name;
    milliseconds max_hold;
    std::optional<milliseconds> timeout;
    milliseconds waited;   // already held, from t0 on
    milliseconds at;       // now - t0
    milliseconds left;     // expected
    milliseconds attempt;  // expected attempt_bound(60 s)
    bool expired;
};

class hold_table : public ::testing::TestWithParam<hold_case> {};

TEST_P(hold_table, bounds_every_wait) {
    const auto& c = GetParam();
    hold_budget h(t0, c.max_hold, c.timeout);
    h.waited(t0, t0 + c.waited);
    EXPECT_EQ(h.left(t0 + c.at), c.left) << c.name;
    EXPECT_EQ(h.attempt_bound(60s, t0 + c.at), c.attempt) << c.name;
    EXPECT_EQ(h.expired(t0 + c.at), c.expired) << c.name;
}

INSTANTIATE_TEST_SUITE_P(
    table,
    hold_table,
    ::testing::Values(
        hold_case{"fresh", 1000ms, std::nullopt, 0ms, 0ms, 1000ms, 60s, false},
        hold_case{"part spent", 1000ms, std::nullopt, 400ms, 400ms, 600ms, 60s, false},
        hold_case{"all spent", 1000ms, std::nullopt, 1000ms, 5000ms, 0ms, 60s, false},
        hold_case{"0 = never wait", 0ms, std::nullopt, 0ms, 0ms, 0ms, 60s, false},
        // 10 s timeout: the deadline is at 9.5 s (margin 500 ms), the hold is not the limit.
        hold_case{"deadline nearer than the hold", 5000ms, 10000ms, 0ms, 9000ms, 500ms, 500ms,
                  false},
        // 1 s timeout: margin 200 ms, so the deadline is at 800 ms.
        hold_case{"short deadline", 5000ms, 1000ms, 0ms, 300ms, 500ms, 500ms, false},
        hold_case{"deadline passed", 5000ms, 1000ms, 0ms, 950ms, 0ms, 1ms, true},
        hold_case{"hold nearer than the deadline", 1000ms, 60000ms, 200ms, 200ms, 800ms, 59300ms,
                  false}));

// --- cool-down lengths -------------------------------------------------------------------------

struct cooldown_case {
    int streak;
    std::optional<milliseconds> hint;
    milliseconds expected;
};

class cooldown_table_test : public ::testing::TestWithParam<cooldown_case> {};

TEST_P(cooldown_table_test, escalates_or_follows_upstream_within_the_cap) {
    bgw::config::retry_config c;  // base 100 ms, max_cooldown 10 s
    EXPECT_EQ(cooldown_length(GetParam().streak, GetParam().hint, c), GetParam().expected);
}

INSTANTIATE_TEST_SUITE_P(table,
                         cooldown_table_test,
                         ::testing::Values(cooldown_case{1, std::nullopt, 100ms},
                                           cooldown_case{2, std::nullopt, 200ms},
                                           cooldown_case{4, std::nullopt, 800ms},
                                           cooldown_case{8, std::nullopt, 10000ms},  // capped
                                           cooldown_case{50, std::nullopt, 10000ms},
                                           cooldown_case{1, 2500ms, 2500ms},  // upstream's
                                           cooldown_case{7, 300ms, 300ms},    // not escalated
                                           cooldown_case{1, 0ms, 1ms},
                                           cooldown_case{1, 3600s, 10000ms}));  // capped

struct hint_case {
    std::string_view ms, amz, seconds;
    std::optional<milliseconds> expected;
};

class hint_table : public ::testing::TestWithParam<hint_case> {};

TEST_P(hint_table, reads_upstreams_wait) {
    const auto& c = GetParam();
    EXPECT_EQ(upstream_retry_after(c.ms, c.amz, c.seconds), c.expected);
}

INSTANTIATE_TEST_SUITE_P(table,
                         hint_table,
                         ::testing::Values(hint_case{"", "", "", std::nullopt},
                                           hint_case{"", "", "3", 3000ms},
                                           hint_case{"", "1500", "2", 1500ms},
                                           hint_case{"250", "1500", "2", 250ms},
                                           hint_case{"x", "", " 4 ", 4000ms},
                                           hint_case{"", "", "Wed, 21 Oct 2015 07:28:00 GMT",
                                                     std::nullopt},
                                           hint_case{"", "-1", "", std::nullopt},
                                           hint_case{"", "", "99999999999", std::nullopt}));

// --- the decision --------------------------------------------------------------------------------

struct decide_case {
    const char* name;
    int attempt, max_attempts;
    milliseconds rest, jitter, hold_left;
    bool deadline_passed;
    stop_reason stop;
    milliseconds wait;
};

class decide_table : public ::testing::TestWithParam<decide_case> {};

TEST_P(decide_table, retries_only_within_attempts_and_hold) {
    const auto& c = GetParam();
    auto d =
        decide_retry(c.attempt, c.max_attempts, c.rest, c.jitter, c.hold_left, c.deadline_passed);
    EXPECT_EQ(d.stop, c.stop) << c.name;
    EXPECT_EQ(d.wait, c.wait) << c.name;
}

INSTANTIATE_TEST_SUITE_P(
    table,
    decide_table,
    ::testing::Values(
        decide_case{"transient, backoff", 1, 3, 0ms, 70ms, 1000ms, false, stop_reason::none, 70ms},
        decide_case{"throttle absorbed: rest within hold", 1, 3, 100ms, 30ms, 1000ms, false,
                    stop_reason::none, 100ms},
        decide_case{"rest beyond hold: answer now", 2, 3, 1600ms, 30ms, 900ms, false,
                    stop_reason::hold, 0ms},
        decide_case{"jitter beyond hold is trimmed, not a refusal", 1, 3, 0ms, 800ms, 500ms, false,
                    stop_reason::none, 500ms},
        decide_case{"never wait: throttle answered", 1, 3, 100ms, 0ms, 0ms, false,
                    stop_reason::hold, 0ms},
        decide_case{"never wait: transient retried at once", 1, 3, 0ms, 50ms, 0ms, false,
                    stop_reason::none, 0ms},
        decide_case{"last attempt", 3, 3, 0ms, 10ms, 1000ms, false, stop_reason::attempts, 0ms},
        decide_case{"deadline passed: no attempt could be answered", 1, 3, 0ms, 10ms, 0ms, true,
                    stop_reason::deadline, 0ms},
        decide_case{"client retries: one attempt", 1, 1, 100ms, 10ms, 1000ms, false,
                    stop_reason::attempts, 0ms}));

// --- together: cool-down, hold budget, deadline and retry budget in one policy --------------

struct combined_case {
    const char* name;
    int quota;              // the retry budget's capacity
    int earlier_throttles;  // upstream throttles of the model, each after a full rest
    std::optional<milliseconds> hint;
    int attempt;
    std::optional<int> max_attempts;
    milliseconds max_hold;
    std::optional<milliseconds> timeout;
    milliseconds held;  // waited inside the gateway before this failure
    milliseconds at;    // when the attempt failed, after t0 (the request's start)
    bool retry;
    milliseconds wait;        // when retrying
    std::string_view why;     // when not
    milliseconds final_wait;  // the 429's wait when not retrying
};

class combined_table : public ::testing::TestWithParam<combined_case> {};

TEST_P(combined_table, decides_and_advertises_the_truth) {
    const auto& c = GetParam();
    bgw::config::retry_config cfg;  // base 100 ms, max_delay 20 s, max_cooldown 10 s
    cfg.max_attempts = 3;
    cfg.max_hold = c.max_hold;
    traffic_policy t(cfg, {}, c.quota);
    std::mt19937_64 rng(7);
    const std::string region = "us-east-1", model = "m";
    // Earlier throttles, each after the previous rest ended: the streak escalates.
    auto when = t0 - 1h;
    for (int i = 0; i < c.earlier_throttles; ++i) when += t.throttled(region, model, when);
    hold_budget hold(t0, c.max_hold, c.timeout);
    hold.waited(t0, t0 + c.held);
    const auto now = t0 + c.at;
    auto s = t.after_failure({c.attempt, outcome::throttled, false, region, model}, now, rng,
                             {c.max_attempts, hold.left(now), c.hint, hold.expired(now)});
    EXPECT_EQ(s.retry, c.retry) << c.name << ": " << s.why;
    if (c.retry) {
        EXPECT_EQ(s.wait, c.wait) << c.name;
        return;
    }
    EXPECT_NE(s.why.find(c.why), std::string::npos) << c.name << ": " << s.why;
    auto answer = t.final_throttle(c.attempt, region, model, now);
    EXPECT_EQ(answer.wait, c.final_wait) << c.name;
    // The advertised wait is the truth: a client back after exactly it is admitted.
    EXPECT_FALSE(t.admit(region, model, 1, now + answer.wait)) << c.name;
    EXPECT_TRUE(t.admit(region, model, 1, now + answer.wait - 1ms)) << c.name;
}

INSTANTIATE_TEST_SUITE_P(
    table,
    combined_table,
    ::testing::Values(
        combined_case{"first throttle absorbed within the hold", 500, 0, std::nullopt, 1,
                      std::nullopt, 1000ms, std::nullopt, 0ms, 5ms, true, 100ms, "", 0ms},
        combined_case{"escalated rest beyond the hold: 429 at once with it", 500, 4, std::nullopt,
                      1, std::nullopt, 1000ms, std::nullopt, 0ms, 5ms, false, 0ms, "hold budget",
                      1600ms},
        combined_case{"hold spent by earlier waits", 500, 0, std::nullopt, 2, std::nullopt, 1000ms,
                      std::nullopt, 950ms, 960ms, false, 0ms, "hold budget", 100ms},
        combined_case{"deadline nearer than the rest", 500, 0, std::nullopt, 1, std::nullopt,
                      1000ms, 100ms, 0ms, 20ms, false, 0ms, "hold budget", 100ms},
        combined_case{"deadline passed during the attempt", 500, 0, std::nullopt, 1, std::nullopt,
                      1000ms, 100ms, 0ms, 200ms, false, 0ms, "deadline", 100ms},
        combined_case{"deadline far: absorbed", 500, 0, std::nullopt, 1, std::nullopt, 1000ms,
                      10000ms, 0ms, 20ms, true, 100ms, "", 0ms},
        combined_case{"upstream's Retry-After is the rest", 500, 0, 3000ms, 1, std::nullopt, 1000ms,
                      std::nullopt, 0ms, 5ms, false, 0ms, "hold budget", 3000ms},
        combined_case{"upstream's short Retry-After absorbed", 500, 0, 250ms, 1, std::nullopt,
                      1000ms, std::nullopt, 0ms, 5ms, true, 250ms, "", 0ms},
        combined_case{"client retries itself: one attempt, the rest advertised", 500, 0,
                      std::nullopt, 1, 1, 1000ms, std::nullopt, 0ms, 5ms, false, 0ms,
                      "attempts for this request", 100ms},
        combined_case{"retry budget spent", 4, 0, std::nullopt, 1, std::nullopt, 1000ms,
                      std::nullopt, 0ms, 5ms, false, 0ms, "retry budget", 100ms},
        combined_case{"never wait", 500, 0, std::nullopt, 1, std::nullopt, 0ms, std::nullopt, 0ms,
                      0ms, false, 0ms, "hold budget", 100ms}));

TEST(combined, a_budget_spent_by_the_hold_check_is_not_charged) {
    // Refusals for the hold or the attempts never take retry budget: only retries do.
    bgw::config::retry_config cfg;
    cfg.max_hold = 0ms;
    traffic_policy t(cfg, {}, 10);
    std::mt19937_64 rng(7);
    for (int i = 0; i < 20; ++i) {
        auto s = t.after_failure({1, outcome::throttled, false, "r", "m" + std::to_string(i)}, t0,
                                 rng, {std::nullopt, 0ms, std::nullopt, false});
        EXPECT_FALSE(s.retry);
    }
    EXPECT_EQ(t.retry_budget(), 10);
}

}  // namespace
