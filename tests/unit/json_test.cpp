// Hostile JSON: deep nesting must be refused with constant stack, never crash the process.

#include "bgw/util/json.hpp"

#include "bgw/aws/eventstream.hpp"
#include "bgw/http/event_relay.hpp"
#include "bgw/policy/traffic.hpp"
#include "bgw/routing/upstream_request.hpp"

#include <string>

#include <gtest/gtest.h>

namespace {

using bgw::util::parse_json;

TEST(json, deep_nesting_is_refused_without_recursion) {
    rapidjson::Document doc;
    const std::string bomb(5'000'000, '[');  // once overflowed the stack and killed the gateway
    EXPECT_FALSE(parse_json(doc, bomb));
    EXPECT_TRUE(doc.HasParseError());
    const std::string deep = std::string(129, '[') + std::string(129, ']');
    EXPECT_FALSE(parse_json(doc, deep));
    const std::string ok = std::string(128, '[') + std::string(128, ']');
    EXPECT_TRUE(parse_json(doc, ok));
}

TEST(json, brackets_inside_strings_do_not_count) {
    rapidjson::Document doc;
    const std::string text = R"({"a":")" + std::string(1000, '[') + R"(\"[[["})";
    ASSERT_TRUE(parse_json(doc, text));
    EXPECT_EQ(doc["a"].GetStringLength(), 1004u);  // 1000 + the escaped quote + 3
    EXPECT_FALSE(parse_json(doc, "{\"a\":"));
    EXPECT_TRUE(doc.HasParseError());
}

TEST(json, client_and_upstream_bodies_that_nest_too_deep_are_harmless) {
    const std::string bomb(1'000'000, '[');
    EXPECT_GE(bgw::policy::estimate_tokens(bomb), bomb.size() / 4);
    EXPECT_FALSE(bgw::policy::usage_from_converse_body(bomb));
    EXPECT_FALSE(bgw::policy::usage_from_model_output(bomb));
    EXPECT_FALSE(bgw::routing::with_converse_service_tier(bomb, "flex"));
    // A stream's metadata event whose payload nests too deep: relayed, not read.
    bgw::http::event_relay relay;
    std::string out;
    const auto frame = bgw::aws::eventstream::bedrock_event("metadata", std::string(100'000, '['));
    EXPECT_TRUE(relay.feed(frame, out));
    EXPECT_EQ(out, frame);
    EXPECT_FALSE(relay.summary().input_tokens);
}

}  // namespace
