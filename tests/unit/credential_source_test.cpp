// Credential refresh (issue 7) with a hand-driven clock: the schedule, signing with the current
// keys while a refresh runs, failures retried with backoff, and a 503 only once credentials have
// really expired.

#include "bgw/net/credential_source.hpp"

#include <gtest/gtest.h>

namespace {

using namespace std::chrono_literals;
using bgw::net::credential_source;
using bgw::net::sys_seconds;

const sys_seconds t0{std::chrono::seconds{1'800'000'000}};

bgw::aws::timed_credentials keys(std::string id, sys_seconds expires) {
    return {{std::move(id), "secret-" + std::to_string(expires.time_since_epoch().count()), "tok"},
            expires,
            "container"};
}

TEST(refresh_time, five_minutes_and_jitter_before_or_a_quarter_of_a_short_life) {
    EXPECT_EQ(bgw::net::refresh_time(t0, t0 + 1h, 0.0), t0 + 55min);
    EXPECT_EQ(bgw::net::refresh_time(t0, t0 + 1h, 0.999), t0 + 55min - 59s);
    EXPECT_EQ(bgw::net::refresh_time(t0, t0 + 8min, 0.5), t0 + 6min);
}

TEST(credential_source, refreshes_before_expiry_and_new_signatures_use_new_keys) {
    sys_seconds now = t0;
    int calls = 0;
    std::shared_ptr<const bgw::aws::timed_credentials> seen_during_refresh;
    credential_source* self = nullptr;
    credential_source src(
        [&]() -> bgw::result<bgw::aws::timed_credentials> {
            ++calls;
            // While resolving, requests still get the current (old) keys.
            if (calls == 2) seen_during_refresh = *self->usable();
            return keys("AKID" + std::to_string(calls), now + 1h);
        },
        [&] { return now; });
    self = &src;
    ASSERT_TRUE(src.load());
    auto first = src.usable();
    ASSERT_TRUE(first);
    EXPECT_EQ((*first)->creds.access_key_id, "AKID1");
    ASSERT_TRUE(src.next_attempt());
    EXPECT_GT(*src.next_attempt(), t0 + 54min);

    now = t0 + 30min;
    src.tick();  // not due yet
    EXPECT_EQ(calls, 1);
    now = t0 + 56min;
    src.tick();
    EXPECT_EQ(calls, 2);
    ASSERT_TRUE(seen_during_refresh);
    EXPECT_EQ(seen_during_refresh->creds.access_key_id, "AKID1");
    EXPECT_EQ((*src.usable())->creds.access_key_id, "AKID2");
    // A request that took a snapshot before keeps it whole.
    EXPECT_EQ((*first)->creds.access_key_id, "AKID1");
}

TEST(credential_source, a_failed_refresh_is_retried_with_backoff_and_503_only_after_expiry) {
    sys_seconds now = t0;
    bool failing = false;
    int calls = 0;
    credential_source src(
        [&]() -> bgw::result<bgw::aws::timed_credentials> {
            ++calls;
            if (failing)
                return bgw::error{boost::beast::http::status::service_unavailable,
                                  "ServiceUnavailableException", "container endpoint said 500"};
            return keys("AKID", now + 1h);
        },
        [&] { return now; });
    ASSERT_TRUE(src.load());
    failing = true;
    now = t0 + 58min;
    src.tick();
    EXPECT_EQ(calls, 2);
    EXPECT_EQ(src.last_error(), "container endpoint said 500");
    EXPECT_EQ(src.next_attempt(), now + 1s);
    EXPECT_TRUE(src.usable());  // still valid: traffic goes on
    now += 1s;
    src.tick();
    EXPECT_EQ(src.next_attempt(), now + 2s);  // backoff
    now = t0 + 1h;                            // expired
    auto refused = src.usable();
    ASSERT_FALSE(refused);
    EXPECT_EQ(refused.error().status, boost::beast::http::status::service_unavailable);
    EXPECT_NE(refused.error().message.find("expired"), std::string::npos);
    EXPECT_NE(refused.error().message.find("container endpoint said 500"), std::string::npos);
    // Recovery.
    failing = false;
    src.tick();
    auto back = src.usable();
    ASSERT_TRUE(back);
    EXPECT_EQ((*back)->expiration, now + 1h);
    EXPECT_EQ(src.last_error(), "");
}

TEST(credential_source, no_credentials_at_start_is_a_503_that_says_why_and_is_retried) {
    sys_seconds now = t0;
    credential_source src(
        [&]() -> bgw::result<bgw::aws::timed_credentials> {
            return bgw::error{boost::beast::http::status::service_unavailable,
                              "ServiceUnavailableException", "no AWS credentials found"};
        },
        [&] { return now; });
    EXPECT_FALSE(src.load());
    auto refused = src.usable();
    ASSERT_FALSE(refused);
    EXPECT_NE(refused.error().message.find("no AWS credentials found"), std::string::npos);
    EXPECT_EQ(src.next_attempt(), now + 1s);
}

TEST(credential_source, long_term_keys_are_never_refreshed) {
    sys_seconds now = t0;
    int calls = 0;
    credential_source src(
        [&]() -> bgw::result<bgw::aws::timed_credentials> {
            ++calls;
            return bgw::aws::timed_credentials{{"AKID", "secret", ""}, std::nullopt, "environment"};
        },
        [&] { return now; });
    ASSERT_TRUE(src.load());
    EXPECT_FALSE(src.next_attempt());
    now += 24h * 365;
    src.tick();
    EXPECT_EQ(calls, 1);
    EXPECT_TRUE(src.usable());
}

}  // namespace
