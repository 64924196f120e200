// The per-request throttling policy (issue 4) with a hand-driven clock: admission (cool-down,
// local RPM/TPM), retry decisions (attempts, budget, jitter bounded below by the cool-down),
// escalating cool-downs, the final 429's wait, token estimates and usage parsing, and the
// uniform 429 response itself.

#include "bgw/policy/traffic.hpp"

#include "bgw/http/error_response.hpp"

#include <algorithm>
#include <vector>

#include <gtest/gtest.h>
#include <rapidjson/document.h>

namespace {

using namespace bgw::policy;
using namespace std::chrono_literals;
using limits_map = std::map<std::string, bgw::config::rate_limit, std::less<>>;

const std::string region = "us-east-1";
const std::string claude = "anthropic.claude-3-5-sonnet-20240620-v1:0";

bgw::config::retry_config retry(int attempts, std::int64_t base_ms, std::int64_t max_ms) {
    return {attempts, milliseconds{base_ms}, milliseconds{max_ms}};
}

TEST(traffic_policy, admits_everything_without_limits_or_cool_downs) {
    traffic_policy t(retry(3, 100, 20000), {});
    const auto now = clock::time_point{} + 1h;
    EXPECT_FALSE(t.limits(claude));
    for (int i = 0; i < 1000; ++i) EXPECT_FALSE(t.admit(region, claude, 1, now));
}

TEST(traffic_policy, rpm_limit_refuses_the_excess_with_the_exact_wait) {
    traffic_policy t(retry(3, 100, 20000), limits_map{{claude, {2, 0}}});
    const auto now = clock::time_point{} + 1h;
    EXPECT_TRUE(t.limits(claude));
    EXPECT_FALSE(t.limits("other.model"));  // no "*": others are unlimited
    EXPECT_FALSE(t.admit(region, claude, 10, now));
    EXPECT_FALSE(t.admit(region, claude, 10, now));
    auto no = t.admit(region, claude, 10, now);
    ASSERT_TRUE(no);
    EXPECT_EQ(no->wait, 30000ms);  // 2 per minute: the next slot frees in 30 s
    EXPECT_EQ(no->source, "local_limit");
    EXPECT_NE(no->message.find("local rate limit"), std::string::npos) << no->message;
    EXPECT_NE(no->message.find(claude), std::string::npos) << no->message;
    // A refusal takes nothing: exactly when the slot is free, one request fits again.
    EXPECT_TRUE(t.admit(region, claude, 10, now + 29999ms));
    EXPECT_FALSE(t.admit(region, claude, 10, now + 30000ms));
}

TEST(traffic_policy, star_limit_applies_to_each_model_separately) {
    traffic_policy t(retry(3, 100, 20000), limits_map{{"*", {1, 0}}});
    const auto now = clock::time_point{} + 1h;
    EXPECT_FALSE(t.admit(region, "a", 1, now));
    EXPECT_FALSE(t.admit(region, "b", 1, now));
    EXPECT_TRUE(t.admit(region, "a", 1, now));
}

TEST(traffic_policy, tpm_estimates_are_settled_against_actual_usage) {
    traffic_policy t(retry(3, 100, 20000), limits_map{{claude, {0, 1000}}});
    const auto now = clock::time_point{} + 1h;
    EXPECT_FALSE(t.admit(region, claude, 800, now));
    auto no = t.admit(region, claude, 800, now);
    ASSERT_TRUE(no);
    EXPECT_EQ(no->wait, 36000ms);  // 600 tokens missing at 1000/min
    // The first request used only 100 tokens: 700 come back, and the second fits at once.
    t.settle(claude, 800, 100, now);
    EXPECT_FALSE(t.admit(region, claude, 800, now));
}

TEST(traffic_policy, retries_until_max_attempts_counting_the_first_try) {
    traffic_policy t(retry(3, 100, 20000), {});
    std::mt19937_64 rng(7);
    const auto now = clock::time_point{} + 1h;
    auto s1 = t.after_failure({1, outcome::transient, false, region, claude}, now, rng);
    EXPECT_TRUE(s1.retry);
    EXPECT_LE(s1.wait, 100ms);
    EXPECT_EQ(s1.cost, retry_quota::retry_cost);
    auto s2 = t.after_failure({2, outcome::transient, true, region, claude}, now, rng);
    EXPECT_TRUE(s2.retry);
    EXPECT_LE(s2.wait, 200ms);
    EXPECT_EQ(s2.cost, retry_quota::timeout_cost);
    auto s3 = t.after_failure({3, outcome::transient, false, region, claude}, now, rng);
    EXPECT_FALSE(s3.retry);
    EXPECT_NE(s3.why.find("max_attempts"), std::string::npos) << s3.why;

    traffic_policy once(retry(1, 100, 20000), {});
    EXPECT_FALSE(
        once.after_failure({1, outcome::throttled, false, region, claude}, now, rng).retry);
}

TEST(traffic_policy, transient_failures_do_not_cool_a_model_down) {
    traffic_policy t(retry(3, 100, 20000), {});
    std::mt19937_64 rng(7);
    const auto now = clock::time_point{} + 1h;
    t.after_failure({1, outcome::transient, false, region, claude}, now, rng);
    EXPECT_FALSE(t.admit(region, claude, 1, now));
}

TEST(traffic_policy, throttles_cool_the_model_down_escalating_until_a_success) {
    auto cfg = retry(5, 100, 1000);
    cfg.max_cooldown = 1000ms;
    traffic_policy t(cfg, {});
    std::mt19937_64 rng(7);
    const auto now = clock::time_point{} + 1h;
    auto s = t.after_failure({1, outcome::throttled, false, region, claude}, now, rng);
    ASSERT_TRUE(s.retry);
    EXPECT_EQ(s.wait, 100ms);  // never sooner than the rest it just started
    auto no = t.admit(region, claude, 1, now + 40ms);
    ASSERT_TRUE(no);
    EXPECT_EQ(no->wait, 60ms);
    EXPECT_EQ(no->source, "cooldown");
    // Only this (region, model) rests.
    EXPECT_FALSE(t.admit("eu-west-1", claude, 1, now));
    EXPECT_FALSE(t.admit(region, "other.model", 1, now));

    // Consecutive throttles double the rest (100, 200, 400, ...) up to max_cooldown_ms.
    auto t2 = now + 100ms;
    EXPECT_EQ(t.after_failure({2, outcome::throttled, false, region, claude}, t2, rng).wait, 200ms);
    auto t3 = t2 + 200ms;
    EXPECT_EQ(t.after_failure({3, outcome::throttled, false, region, claude}, t3, rng).wait, 400ms);
    auto t4 = t3 + 400ms;
    t.after_failure({4, outcome::throttled, false, region, claude}, t4, rng);  // 800 ms
    auto t5 = t4 + 800ms;
    t.after_failure({1, outcome::throttled, false, region, claude}, t5, rng);
    EXPECT_EQ(t.admit(region, claude, 1, t5)->wait, 1000ms);  // capped

    // A success ends the streak: the next throttle rests only base_delay again.
    t.succeeded(region, claude, 0);
    auto t6 = t5 + 1000ms;
    EXPECT_EQ(t.after_failure({1, outcome::throttled, false, region, claude}, t6, rng).wait, 100ms);
}

TEST(traffic_policy, final_throttle_is_exactly_the_rest_and_a_burst_does_not_escalate_it) {
    traffic_policy t(retry(3, 100, 20000), {});
    std::mt19937_64 rng(7);
    const auto now = clock::time_point{} + 1h;
    // Three requests throttled at once (all sent before the rest began): one rest of 100 ms,
    // not 400 ms; the 429 the first of them advertised stays true.
    for (int i = 0; i < 3; ++i)
        t.after_failure({1, outcome::throttled, false, region, claude}, now + 10ms * i, rng);
    auto a = t.final_throttle(1, region, claude, now + 50ms);
    EXPECT_EQ(a.wait, 50ms);  // what remains of the rest, whatever the backoff cap
    EXPECT_EQ(a.source, "upstream");
    EXPECT_NE(a.message.find("upstream"), std::string::npos) << a.message;
    // A client back after exactly that wait is admitted: sent upstream, not held or refused.
    EXPECT_FALSE(t.admit(region, claude, 1, now + 50ms + a.wait));
    // Without a rest (an operation without a model) the next backoff cap is the wait.
    EXPECT_EQ(t.final_throttle(3, region, "ApplyGuardrail", now).wait, 400ms);
}

TEST(traffic_policy, retry_budget_stops_a_storm_and_successes_refill_it) {
    traffic_policy t(retry(3, 1, 1), {}, 20);  // room for four retries
    std::mt19937_64 rng(7);
    const auto now = clock::time_point{} + 1h;
    int retries = 0;
    for (int request = 0; request < 10; ++request) {
        const std::string model = "m" + std::to_string(request);
        for (int attempt = 1;; ++attempt) {
            auto s = t.after_failure({attempt, outcome::transient, false, region, model}, now, rng);
            if (!s.retry) {
                if (attempt < 3) {
                    EXPECT_NE(s.why.find("budget"), std::string::npos) << s.why;
                }
                break;
            }
            ++retries;
        }
    }
    EXPECT_EQ(retries, 4);  // not 20: the storm is not multiplied
    EXPECT_EQ(t.retry_budget(), 0);
    t.succeeded(region, "m0", retry_quota::retry_cost);
    EXPECT_EQ(t.retry_budget(), retry_quota::retry_cost);
    t.succeeded(region, "m0", 0);
    EXPECT_EQ(t.retry_budget(), retry_quota::retry_cost + retry_quota::no_retry_increment);
}

TEST(traffic_policy, a_throttle_inside_a_stream_counts_toward_the_cool_down) {
    traffic_policy t(retry(3, 100, 20000), {});
    const auto now = clock::time_point{} + 1h;
    EXPECT_EQ(t.throttled(region, claude, now), 100ms);
    auto no = t.admit(region, claude, 1, now);
    ASSERT_TRUE(no);
    EXPECT_EQ(no->wait, 100ms);
}

struct estimate_case {
    std::string body;
    std::uint64_t expected;
};

class estimate_table : public testing::TestWithParam<estimate_case> {};

TEST_P(estimate_table, output_cap_plus_a_quarter_of_the_body) {
    EXPECT_EQ(estimate_tokens(GetParam().body), GetParam().expected) << GetParam().body;
}

INSTANTIATE_TEST_SUITE_P(
    bodies,
    estimate_table,
    testing::Values(
        // Anthropic messages: 39 bytes -> 10 (rounded up), plus max_tokens.
        estimate_case{R"({"max_tokens":512,"messages":[ ]      })", 512 + 10},
        // Converse: inferenceConfig.maxTokens.
        estimate_case{R"({"inferenceConfig":{"maxTokens":300}})", 300 + 10},
        estimate_case{R"({"max_tokens_to_sample":64,"prompt":"x"})", 64 + 10},
        estimate_case{R"({"max_gen_len":128,"prompt":"hi"})", 128 + 9},
        estimate_case{R"({"textGenerationConfig":{"maxTokenCount":50}})", 50 + 12},
        // No cap, or not JSON: the body estimate alone, rounded up, never zero.
        estimate_case{R"({"prompt":"abc"})", 4},
        estimate_case{"not json at all", 4},
        estimate_case{"", 1},
        // A cap of the wrong type is ignored rather than trusted.
        estimate_case{R"({"max_tokens":"9999"})", 6}));

TEST(usage, from_token_count_headers) {
    auto u = usage_from_headers("42", "7");
    ASSERT_TRUE(u);
    EXPECT_EQ(u->input, 42u);
    EXPECT_EQ(u->output, 7u);
    EXPECT_EQ(u->total(), 49u);
    EXPECT_FALSE(usage_from_headers("", "7"));
    EXPECT_FALSE(usage_from_headers("42", "7x"));
    EXPECT_FALSE(usage_from_headers("-1", "7"));
}

TEST(usage, from_a_converse_body) {
    auto u = usage_from_converse_body(
        R"({"output":{"message":{"role":"assistant","content":[{"text":"hi"}]}},)"
        R"("stopReason":"end_turn","usage":{"inputTokens":12,"outputTokens":3,"totalTokens":15}})");
    ASSERT_TRUE(u);
    EXPECT_EQ(u->total(), 15u);
    EXPECT_FALSE(usage_from_converse_body(R"({"usage":{"inputTokens":12}})"));
    EXPECT_FALSE(usage_from_converse_body("{"));
}

TEST(throttle_response, has_every_header_sdks_read_and_a_body_that_says_how_long) {
    auto res = bgw::http::make_throttle_response(1500ms, "local rate limit \"x\"", "req-1");
    EXPECT_EQ(res.result_int(), 429u);
    EXPECT_EQ(res["Retry-After"], "2");  // whole seconds, rounded up
    EXPECT_EQ(res["x-amz-retry-after"], "1500");
    EXPECT_EQ(res["retry-after-ms"], "1500");  // the Anthropic and OpenAI SDKs read this one
    // The precise form first: the AWS SDK for JavaScript v3 reads whichever comes first.
    std::vector<std::string> order;
    for (const auto& f : res) order.emplace_back(f.name_string());
    auto at = [&](std::string_view n) { return std::find(order.begin(), order.end(), n); };
    EXPECT_LT(at("x-amz-retry-after"), at("Retry-After"));
    EXPECT_EQ(res["x-amzn-ErrorType"], "ThrottlingException");
    EXPECT_EQ(res["x-amzn-RequestId"], "req-1");
    EXPECT_EQ(res["Content-Type"], "application/json");
    rapidjson::Document doc;
    doc.Parse(res.body().c_str());
    ASSERT_FALSE(doc.HasParseError()) << res.body();
    EXPECT_STREQ(doc["message"].GetString(), "local rate limit \"x\"");
    EXPECT_EQ(doc["retryAfterSeconds"].GetUint64(), 2u);
    EXPECT_EQ(res["Content-Length"], std::to_string(res.body().size()));

    auto tiny = bgw::http::make_throttle_response(1ms, "m", "r");
    EXPECT_EQ(tiny["Retry-After"], "1");  // never 0: "retry now" would restart the storm
    EXPECT_EQ(tiny["x-amz-retry-after"], "1");
}

}  // namespace

TEST(traffic_policy, reconfigure_changes_retries_and_limits_and_keeps_cool_downs) {
    traffic_policy t(retry(3, 100, 20000), limits_map{{claude, {2, 0}}});
    std::mt19937_64 rng(7);
    const auto now = clock::time_point{} + 1h;
    EXPECT_FALSE(t.admit(region, claude, 10, now));
    t.after_failure({1, outcome::throttled, false, region, claude}, now, rng);  // cools it down

    // Same limits, fewer attempts: the bucket keeps its one request and the cool-down stays.
    t.reconfigure(retry(1, 100, 20000), limits_map{{claude, {2, 0}}});
    EXPECT_FALSE(t.after_failure({1, outcome::transient, false, region, "x"}, now, rng).retry);
    auto cooling = t.admit(region, claude, 10, now + 50ms);
    ASSERT_TRUE(cooling);
    EXPECT_EQ(cooling->source, "cooldown");
    EXPECT_FALSE(t.admit(region, claude, 10, now + 1s));  // the second of 2 per minute
    EXPECT_TRUE(t.admit(region, claude, 10, now + 1s));   // the bucket carried over

    // New limits: fresh buckets at the new rate; a model without a limit is free again.
    t.reconfigure(retry(3, 100, 20000), limits_map{{claude, {1, 0}}});
    EXPECT_FALSE(t.admit(region, claude, 10, now + 2s));
    auto no = t.admit(region, claude, 10, now + 2s);
    ASSERT_TRUE(no);
    EXPECT_EQ(no->wait, 60000ms);
    t.reconfigure(retry(3, 100, 20000), {});
    EXPECT_FALSE(t.limits(claude));
    EXPECT_FALSE(t.admit(region, claude, 10, now + 2s));
}

TEST(usage, from_model_output_of_each_family) {
    auto converse = usage_from_model_output(
        R"({"output":{},"usage":{"inputTokens":12,"outputTokens":3,"totalTokens":15}})");
    ASSERT_TRUE(converse);
    EXPECT_EQ(converse->input, 12u);
    EXPECT_EQ(converse->output, 3u);
    auto anthropic = usage_from_model_output(
        R"({"type":"message","usage":{"input_tokens":20,"output_tokens":7}})");
    ASSERT_TRUE(anthropic);
    EXPECT_EQ(anthropic->total(), 27u);
    auto llama = usage_from_model_output(
        R"({"generation":"x","prompt_token_count":5,"generation_token_count":9})");
    ASSERT_TRUE(llama);
    EXPECT_EQ(llama->output, 9u);
    auto titan = usage_from_model_output(
        R"({"inputTextTokenCount":4,"results":[{"tokenCount":6,"outputText":"x"}]})");
    ASSERT_TRUE(titan);
    EXPECT_EQ(titan->input, 4u);
    EXPECT_EQ(titan->output, 6u);
    EXPECT_FALSE(usage_from_model_output(R"({"fakeBatch":true})"));
    EXPECT_FALSE(usage_from_model_output("not json"));
    EXPECT_FALSE(usage_from_model_output(R"({"usage":{"inputTokens":-1,"outputTokens":2}})"));
}
