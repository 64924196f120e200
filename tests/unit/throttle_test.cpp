// Throttle/retry policy: classification tables (ours and botocore's _retry.json, read at test
// time), Retry-After rounding, the full-jitter schedule, the retry quota and cool-downs with a
// hand-driven clock.

#include "bgw/policy/throttle.hpp"

#include "bgw/http/retry_after.hpp"

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include <gtest/gtest.h>
#include <rapidjson/document.h>

namespace {

using namespace bgw::policy;
using namespace std::chrono_literals;

struct code_case {
    std::string header;
    std::string body;
    std::string expected;
};

class error_code_table : public testing::TestWithParam<code_case> {};

TEST_P(error_code_table, extracts) {
    const auto& c = GetParam();
    EXPECT_EQ(error_code(c.header, c.body), c.expected);
}

INSTANTIATE_TEST_SUITE_P(
    shapes,
    error_code_table,
    testing::Values(
        // x-amzn-ErrorType with the Coral suffix, as Bedrock sends it.
        code_case{"ThrottlingException:http://internal.amazon.com/coral/com.amazon.bedrock/",
                  R"({"message":"Too many requests"})", "ThrottlingException"},
        code_case{"ValidationException", "", "ValidationException"},
        // The header wins over the body.
        code_case{"AccessDeniedException:x", R"({"__type":"ThrottlingException"})",
                  "AccessDeniedException"},
        // No header: the body's __type after '#', or `code`.
        code_case{"", R"({"__type":"com.amazon.bedrock#ThrottlingException","message":"m"})",
                  "ThrottlingException"},
        code_case{"", R"({"__type":"ModelNotReadyException"})", "ModelNotReadyException"},
        code_case{"", R"({"code":"TooManyRequestsException"})", "TooManyRequestsException"},
        code_case{"", R"({"message":"no code"})", ""},
        code_case{"", "not json", ""},
        code_case{"", "", ""}));

struct class_case {
    unsigned status;
    std::string code;
    outcome expected;
};

class classify_table : public testing::TestWithParam<class_case> {};

TEST_P(classify_table, classifies) {
    const auto& c = GetParam();
    EXPECT_EQ(classify(c.status, c.code), c.expected) << c.status << " " << c.code;
}

INSTANTIATE_TEST_SUITE_P(
    bedrock,
    classify_table,
    testing::Values(class_case{200, "", outcome::success},
                    class_case{400, "ThrottlingException", outcome::throttled},
                    class_case{429, "ThrottlingException", outcome::throttled},
                    class_case{429, "", outcome::throttled},
                    class_case{429, "ServiceQuotaExceededException",
                               outcome::throttled},  // any 429
                    class_case{400, "Throttling", outcome::throttled},
                    class_case{400, "ThrottledException", outcome::throttled},
                    class_case{400, "TooManyRequestsException", outcome::throttled},
                    class_case{400, "RequestLimitExceeded", outcome::throttled},
                    class_case{400, "ProvisionedThroughputExceededException", outcome::throttled},
                    class_case{503, "ThrottlingException", outcome::throttled},
                    class_case{500, "InternalServerException", outcome::transient},
                    class_case{502, "", outcome::transient},
                    class_case{503, "ServiceUnavailableException", outcome::transient},
                    class_case{504, "", outcome::transient},
                    class_case{424, "ModelNotReadyException", outcome::transient},
                    class_case{429, "ModelNotReadyException", outcome::throttled},
                    class_case{400, "ValidationException", outcome::final},
                    class_case{403, "AccessDeniedException", outcome::final},
                    class_case{400, "ServiceQuotaExceededException", outcome::final},
                    class_case{404, "ResourceNotFoundException", outcome::final},
                    class_case{424, "ModelErrorException", outcome::final},
                    class_case{408, "ModelTimeoutException", outcome::final}));

// Every retryable case botocore's legacy retry handler knows is retried here too, as
// throttled or transient (tests/reference/botocore-models/misc/_retry.json).
TEST(classify, agrees_with_botocore_retry_definitions) {
    const auto path =
        std::filesystem::path(BGW_REFERENCE_DIR) / "botocore-models" / "misc" / "_retry.json";
    std::ifstream f(path);
    ASSERT_TRUE(f) << path;
    std::stringstream text;
    text << f.rdbuf();
    rapidjson::Document doc;
    doc.Parse(text.str().c_str());
    ASSERT_TRUE(doc.IsObject() && doc.HasMember("definitions"));
    int checked = 0;
    for (const auto& def : doc["definitions"].GetObject()) {
        const auto& when = def.value["applies_when"];
        if (!when.HasMember("response")) continue;  // socket errors: classify_no_response()
        const auto& r = when["response"];
        const unsigned status =
            r.HasMember("http_status_code") ? r["http_status_code"].GetUint() : 400;
        const std::string code =
            r.HasMember("service_error_code") ? r["service_error_code"].GetString() : "";
        const auto got = classify(status, code);
        EXPECT_TRUE(got == outcome::throttled || got == outcome::transient)
            << def.name.GetString() << ": " << status << " " << code;
        if (!code.empty()) {
            EXPECT_EQ(got, outcome::throttled) << def.name.GetString();
        }
        ++checked;
    }
    EXPECT_GE(checked, 10);
    EXPECT_EQ(classify_no_response(), outcome::transient);
}

TEST(retry_after, rounds_up_to_whole_seconds_at_least_one) {
    EXPECT_EQ(bgw::http::retry_after(0ms).seconds, 1u);
    EXPECT_EQ(bgw::http::retry_after(0ms).milliseconds, 1u);
    EXPECT_EQ(bgw::http::retry_after(1ms).seconds, 1u);
    EXPECT_EQ(bgw::http::retry_after(1000ms).seconds, 1u);
    EXPECT_EQ(bgw::http::retry_after(1001ms).seconds, 2u);
    EXPECT_EQ(bgw::http::retry_after(1001ms).milliseconds, 1001u);
    EXPECT_EQ(bgw::http::retry_after(59999ms).seconds, 60u);
    EXPECT_EQ(bgw::http::retry_after(-5ms).milliseconds, 1u);
}

TEST(backoff, cap_doubles_up_to_the_maximum) {
    EXPECT_EQ(backoff_cap(0, 100ms, 20000ms), 0ms);
    EXPECT_EQ(backoff_cap(1, 100ms, 20000ms), 100ms);
    EXPECT_EQ(backoff_cap(2, 100ms, 20000ms), 200ms);
    EXPECT_EQ(backoff_cap(5, 100ms, 20000ms), 1600ms);
    EXPECT_EQ(backoff_cap(9, 100ms, 20000ms), 20000ms);
    EXPECT_EQ(backoff_cap(1000, 100ms, 20000ms), 20000ms);  // no overflow
}

TEST(backoff, full_jitter_stays_within_the_cap_and_spreads) {
    std::mt19937_64 rng(42);
    std::int64_t lo = 1'000'000, hi = -1;
    for (int i = 0; i < 2000; ++i) {
        const auto d = full_jitter(3, 100ms, 20000ms, rng).count();
        ASSERT_GE(d, 0);
        ASSERT_LE(d, 400);
        lo = std::min(lo, d);
        hi = std::max(hi, d);
    }
    EXPECT_LT(lo, 40);  // not a constant delay: both ends of [0, 400] are reached
    EXPECT_GT(hi, 360);
}

TEST(retry_quota, a_storm_spends_the_budget_and_successes_refill_it) {
    retry_quota q;
    int granted = 0;
    while (q.try_acquire(false)) ++granted;
    EXPECT_EQ(granted, retry_quota::initial / retry_quota::retry_cost);  // 100 retries, then none
    EXPECT_FALSE(q.try_acquire(false));
    q.on_success(retry_quota::retry_cost);  // a retried request that succeeded
    EXPECT_EQ(q.available(), retry_quota::retry_cost);
    EXPECT_TRUE(q.try_acquire(false));
    EXPECT_FALSE(q.try_acquire(true));  // a timeout retry costs more
    for (int i = 0; i < 10'000; ++i) q.on_success(0);
    EXPECT_EQ(q.available(), retry_quota::initial);  // never above capacity
}

TEST(cooldown, rests_per_region_and_model_and_ends) {
    cooldown_table t;
    const auto t0 = clock::time_point{} + 1000s;
    EXPECT_EQ(t.remaining("us-east-1", "m", t0), 0ms);
    t.throttled("us-east-1", "m", t0, 2000ms);
    EXPECT_EQ(t.remaining("us-east-1", "m", t0), 2000ms);
    EXPECT_EQ(t.remaining("us-east-1", "m", t0 + 500ms), 1500ms);
    EXPECT_EQ(t.remaining("us-west-2", "m", t0), 0ms);  // another region is not resting
    EXPECT_EQ(t.remaining("us-east-1", "other", t0), 0ms);
    t.throttled("us-east-1", "m", t0 + 100ms, 500ms);  // never shortened
    EXPECT_EQ(t.remaining("us-east-1", "m", t0 + 1000ms), 1000ms);
    EXPECT_EQ(t.remaining("us-east-1", "m", t0 + 2000ms), 0ms);
    EXPECT_EQ(t.remaining("us-east-1", "m", t0 + 3000ms), 0ms);
}

TEST(rate_limiter, rpm_admits_the_quota_then_says_exactly_how_long_to_wait) {
    rate_limiter rl({{"m", {60, 0}}});  // one request a second, a minute's burst
    const auto t0 = clock::time_point{} + 1000s;
    for (int i = 0; i < 60; ++i) ASSERT_TRUE(rl.try_acquire("m", 0, t0).allowed) << i;
    auto d = rl.try_acquire("m", 0, t0);
    EXPECT_FALSE(d.allowed);
    EXPECT_EQ(d.wait, 1000ms);
    d = rl.try_acquire("m", 0, t0 + 250ms);
    EXPECT_FALSE(d.allowed);
    EXPECT_EQ(d.wait, 750ms);  // computed from the refill, not a constant
    EXPECT_TRUE(rl.try_acquire("m", 0, t0 + 1000ms).allowed);
    EXPECT_FALSE(rl.try_acquire("m", 0, t0 + 1000ms).allowed);  // refused requests took nothing
    EXPECT_TRUE(rl.try_acquire("unlimited-model", 0, t0).allowed);
}

TEST(rate_limiter, tpm_and_corrections_from_actual_usage) {
    rate_limiter rl({{"m", {0, 6000}}});  // 100 tokens a second
    const auto t0 = clock::time_point{} + 1000s;
    EXPECT_TRUE(rl.try_acquire("m", 5000, t0).allowed);
    auto d = rl.try_acquire("m", 2000, t0);
    EXPECT_FALSE(d.allowed);
    EXPECT_EQ(d.wait, 10000ms);       // 1000 left, 1000 more at 100/s
    rl.correct("m", 5000, 1000, t0);  // it only used 1000: 4000 come back
    EXPECT_TRUE(rl.try_acquire("m", 2000, t0).allowed);
    rl.correct("m", 2000, 5000, t0);  // it used 3000 more than estimated: 3000 -> 0 left
    d = rl.try_acquire("m", 100, t0);
    EXPECT_FALSE(d.allowed);
    EXPECT_EQ(d.wait, 1000ms);
    // A request above a whole minute's quota waits for a full bucket, never forever.
    rate_limiter big({{"m", {0, 600}}});
    EXPECT_TRUE(big.try_acquire("m", 10'000, t0).allowed);
}

TEST(rate_limiter, star_applies_to_each_model_separately) {
    rate_limiter rl({{"*", {1, 0}}, {"special", {2, 0}}});
    const auto t0 = clock::time_point{} + 1000s;
    EXPECT_TRUE(rl.try_acquire("a", 0, t0).allowed);
    EXPECT_FALSE(rl.try_acquire("a", 0, t0).allowed);
    EXPECT_TRUE(rl.try_acquire("b", 0, t0).allowed);  // its own bucket under "*"
    EXPECT_TRUE(rl.try_acquire("special", 0, t0).allowed);
    EXPECT_TRUE(rl.try_acquire("special", 0, t0).allowed);
    EXPECT_FALSE(rl.try_acquire("special", 0, t0).allowed);
    EXPECT_EQ(rl.try_acquire("a", 0, t0).wait, 60000ms);
}

}  // namespace
