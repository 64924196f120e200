#include "bgw/http/headers.hpp"

#include "bgw/aws/static_credentials.hpp"
#include "bgw/http/error_response.hpp"

#include <gtest/gtest.h>

namespace {

TEST(headers, request_allow_list) {
    using bgw::http::forward_request_header;
    for (auto h : {"Content-Type", "accept", "X-Amzn-Bedrock-Trace", "x-amzn-bedrock-service-tier",
                   "X-Amzn-Bedrock-Accept", "amz-sdk-invocation-id", "Content-Encoding"}) {
        EXPECT_TRUE(forward_request_header(h)) << h;
    }
    for (auto h : {"Authorization", "X-Amz-Date", "x-amz-security-token", "X-Amz-Content-Sha256",
                   "Host", "Connection", "Transfer-Encoding", "Cookie", "Expect", "Upgrade",
                   "Proxy-Authorization", "X-Forwarded-For", "X-Amzn-Bedrock"}) {
        EXPECT_FALSE(forward_request_header(h)) << h;
    }
}

TEST(headers, response_relay) {
    using bgw::http::forward_response_header;
    EXPECT_TRUE(forward_response_header("x-amzn-RequestId"));
    EXPECT_TRUE(forward_response_header("X-Amzn-Bedrock-Content-Type"));
    EXPECT_TRUE(forward_response_header("Content-Type"));
    EXPECT_FALSE(forward_response_header("Transfer-Encoding"));
    EXPECT_FALSE(forward_response_header("Content-Length"));
    EXPECT_FALSE(forward_response_header("Connection"));
}

TEST(error_response, is_bedrock_shaped_and_escapes) {
    bgw::error e{boost::beast::http::status::not_found, "UnknownOperationException",
                 "no \"op\" \\ here\n"};
    auto res = bgw::http::make_error_response(e, "req-1", 11, false);
    EXPECT_EQ(res.result_int(), 404u);
    EXPECT_EQ(res["x-amzn-ErrorType"], "UnknownOperationException");
    EXPECT_EQ(res["x-amzn-RequestId"], "req-1");
    EXPECT_EQ(res[boost::beast::http::field::content_type], "application/json");
    EXPECT_EQ(res.body(), R"({"message":"no \"op\" \\ here\n"})");
    EXPECT_EQ(res[boost::beast::http::field::content_length], std::to_string(res.body().size()));
    EXPECT_FALSE(res.keep_alive());
}

bgw::aws::env_lookup env_of(std::map<std::string, std::string> m) {
    return [m](std::string_view k) -> std::optional<std::string> {
        auto it = m.find(std::string(k));
        if (it == m.end()) return std::nullopt;
        return it->second;
    };
}

TEST(static_credentials, from_env) {
    auto c = bgw::aws::credentials_from_env(env_of({{"AWS_ACCESS_KEY_ID", "AK"},
                                                    {"AWS_SECRET_ACCESS_KEY", "SK"},
                                                    {"AWS_SESSION_TOKEN", "TK"}}));
    ASSERT_TRUE(c);
    EXPECT_EQ(c->access_key_id, "AK");
    EXPECT_EQ(c->secret_access_key, "SK");
    EXPECT_EQ(c->session_token, "TK");
    EXPECT_FALSE(bgw::aws::credentials_from_env(env_of({{"AWS_ACCESS_KEY_ID", "AK"}})));
    EXPECT_FALSE(bgw::aws::credentials_from_env(
        env_of({{"AWS_ACCESS_KEY_ID", ""}, {"AWS_SECRET_ACCESS_KEY", "SK"}})));
}

TEST(static_credentials, from_ini_profile) {
    const char* ini =
        "# comment\n[default]\naws_access_key_id = AKDEF\naws_secret_access_key=SKDEF\r\n"
        "\n[ prod ]\n; other\naws_access_key_id=AKPROD\naws_secret_access_key = SKPROD\n"
        "aws_session_token = TKPROD\n[half]\naws_access_key_id=X\n";
    auto d = bgw::aws::credentials_from_ini(ini, "default");
    ASSERT_TRUE(d);
    EXPECT_EQ(d->access_key_id, "AKDEF");
    EXPECT_EQ(d->secret_access_key, "SKDEF");
    EXPECT_TRUE(d->session_token.empty());
    auto p = bgw::aws::credentials_from_ini(ini, "prod");
    ASSERT_TRUE(p);
    EXPECT_EQ(p->access_key_id, "AKPROD");
    EXPECT_EQ(p->session_token, "TKPROD");
    EXPECT_FALSE(bgw::aws::credentials_from_ini(ini, "half"));
    EXPECT_FALSE(bgw::aws::credentials_from_ini(ini, "missing"));
}

TEST(static_credentials, paths_and_profile) {
    EXPECT_EQ(*bgw::aws::shared_credentials_path(env_of({{"HOME", "/h"}})), "/h/.aws/credentials");
    EXPECT_EQ(*bgw::aws::shared_credentials_path(
                  env_of({{"HOME", "/h"}, {"AWS_SHARED_CREDENTIALS_FILE", "/x"}})),
              "/x");
    EXPECT_EQ(bgw::aws::profile_name(env_of({})), "default");
    EXPECT_EQ(bgw::aws::profile_name(env_of({{"AWS_PROFILE", "p"}})), "p");
}

}  // namespace
