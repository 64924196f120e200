// Caller keys: presented as x-api-key or a Bearer token, matched by hash, then scoped.

#include "bgw/policy/callers.hpp"

#include "bgw/aws/sigv4.hpp"

#include "support/fixtures.hpp"
#include <gtest/gtest.h>

namespace {

using bgw::policy::authenticate;

bgw::config::config with_keys() {
    auto hex = [](std::string_view key) { return bgw::aws::sha256_hex(key); };
    return bgw::test::config_from(
        R"({"regions": {"us-east-1": {}, "eu-west-1": {}}, "caller_keys": {
            "free": {"sha256": ")" +
        hex("free-key") + R"("},
            "eu-claude": {"sha256": ")" +
        hex("eu-key") + R"(", "models": ["claude"], "regions": ["eu-west-1"]}}})");
}

TEST(callers, without_keys_everyone_passes) {
    auto c = bgw::config::parse_config("{}");
    ASSERT_TRUE(c);
    auto who = authenticate(*c, "", "");
    ASSERT_TRUE(who);
    EXPECT_EQ(who->key, nullptr);
    EXPECT_TRUE(bgw::policy::authorize_model(*who, "anything"));
    EXPECT_TRUE(bgw::policy::region_allowed(*who, "us-east-1"));
}

TEST(callers, a_key_is_found_by_header_or_bearer_token) {
    auto c = with_keys();
    auto by_header = authenticate(c, "free-key", "");
    ASSERT_TRUE(by_header) << by_header.error().message;
    EXPECT_EQ(by_header->name, "free");
    auto by_bearer = authenticate(c, "", "Bearer eu-key");
    ASSERT_TRUE(by_bearer);
    EXPECT_EQ(by_bearer->name, "eu-claude");
    auto lower = authenticate(c, "", "bearer  eu-key");
    ASSERT_TRUE(lower);
    EXPECT_EQ(lower->name, "eu-claude");
}

TEST(callers, missing_wrong_or_sigv4_credentials_are_401) {
    auto c = with_keys();
    for (auto [api_key, authorization] :
         {std::pair{"", ""}, std::pair{"wrong", ""}, std::pair{"", "Bearer wrong"},
          std::pair{"",
                    "AWS4-HMAC-SHA256 Credential=AKID/20261123/us-east-1/bedrock/aws4_request, "
                    "SignedHeaders=host, Signature=abc"},
          std::pair{"FREE-KEY", ""}}) {
        auto who = authenticate(c, api_key, authorization);
        ASSERT_FALSE(who) << api_key << " / " << authorization;
        EXPECT_EQ(who.error().status, boost::beast::http::status::unauthorized);
        EXPECT_EQ(who.error().type, "UnrecognizedClientException");
    }
}

TEST(callers, a_scoped_key_reaches_only_its_models_and_regions) {
    auto c = with_keys();
    auto eu = authenticate(c, "eu-key", "");
    ASSERT_TRUE(eu);
    EXPECT_TRUE(bgw::policy::authorize_model(*eu, "claude"));
    auto other = bgw::policy::authorize_model(*eu, "llama");
    ASSERT_FALSE(other);
    EXPECT_EQ(other.error().status, boost::beast::http::status::forbidden);
    EXPECT_NE(other.error().message.find("eu-claude may not call model llama"), std::string::npos);
    EXPECT_FALSE(bgw::policy::authorize_model(*eu, ""));  // no model named: not for this key
    EXPECT_TRUE(bgw::policy::region_allowed(*eu, "eu-west-1"));
    EXPECT_FALSE(bgw::policy::region_allowed(*eu, "us-east-1"));
    auto free = authenticate(c, "free-key", "");
    ASSERT_TRUE(free);
    EXPECT_TRUE(bgw::policy::authorize_model(*free, ""));
    EXPECT_TRUE(bgw::policy::region_allowed(*free, "us-east-1"));
}

}  // namespace
