// The read-only control plane: what passes, what is refused, checked against the bedrock
// service model itself.

#include "bgw/routing/control_plane.hpp"

#include "bgw/net/control_plane.hpp"

#include <set>
#include <string>

#include "slurp.hpp"
#include <gtest/gtest.h>
#include <rapidjson/document.h>

namespace {

namespace http = boost::beast::http;
using bgw::routing::parse_control_target;

struct read_case {
    http::verb method;
    std::string_view target;
    std::string_view operation;
    std::string_view wire_path;
    std::string_view query;
    std::string_view region_prefix;
};

TEST(control_plane, passes_the_four_reads_with_their_canonical_paths) {
    const read_case cases[] = {
        {http::verb::get, "/inference-profiles?typeEquals=SYSTEM_DEFINED", "ListInferenceProfiles",
         "/inference-profiles", "typeEquals=SYSTEM_DEFINED", ""},
        {http::verb::get, "/inference-profiles/us.anthropic.claude-3-5-sonnet-20240620-v1:0",
         "GetInferenceProfile",
         "/inference-profiles/us.anthropic.claude-3-5-sonnet-20240620-v1%3A0", "", ""},
        {http::verb::get, "/inference-profiles/us.anthropic.claude-3-5-sonnet-20240620-v1%3A0",
         "GetInferenceProfile",
         "/inference-profiles/us.anthropic.claude-3-5-sonnet-20240620-v1%3A0", "", ""},
        {http::verb::get, "/foundation-models", "ListFoundationModels", "/foundation-models", "",
         ""},
        {http::verb::get, "/foundation-models?byProvider=Anthropic&byOutputModality=TEXT",
         "ListFoundationModels", "/foundation-models", "byProvider=Anthropic&byOutputModality=TEXT",
         ""},
        {http::verb::get, "/eu-west-1/foundation-models/amazon.titan-text-lite-v1",
         "GetFoundationModel", "/foundation-models/amazon.titan-text-lite-v1", "", "eu-west-1"},
        // Empty segments where the endpoint's path ends are absent; a presigned query's
        // signing parameters are dropped, its filters kept.
        {http::verb::get, "//inference-profiles", "ListInferenceProfiles", "/inference-profiles",
         "", ""},
        {http::verb::get, "/eu-west-1//foundation-models/amazon.titan-text-lite-v1",
         "GetFoundationModel", "/foundation-models/amazon.titan-text-lite-v1", "", "eu-west-1"},
        {http::verb::get,
         "/eu-west-1//foundation-models?X-Amz-Algorithm=AWS4-HMAC-SHA256&byProvider=Anthropic&"
         "X-Amz-Signature=00",
         "ListFoundationModels", "/foundation-models", "byProvider=Anthropic", "eu-west-1"},
        {http::verb::get, "/foundation-models/m?X-Amz-Date=20260101T000000Z&X-Amz-Signature=00",
         "GetFoundationModel", "/foundation-models/m", "", ""},
        // An ARN as the identifier: its slash stays inside the one label.
        {http::verb::get,
         "/inference-profiles/arn%3Aaws%3Abedrock%3Aus-east-1%3A1%3Ainference-profile%2Fx",
         "GetInferenceProfile",
         "/inference-profiles/arn%3Aaws%3Abedrock%3Aus-east-1%3A1%3Ainference-profile%2Fx", "", ""},
    };
    for (const auto& c : cases) {
        SCOPED_TRACE(std::string(c.target));
        auto r = parse_control_target(c.method, c.target);
        ASSERT_TRUE(r) << r.error().message;
        ASSERT_TRUE(r->has_value());
        EXPECT_EQ((*r)->operation, c.operation);
        EXPECT_EQ((*r)->wire_path, c.wire_path);
        EXPECT_EQ((*r)->query, c.query);
        EXPECT_EQ((*r)->region_prefix, c.region_prefix);
    }
}

TEST(control_plane, leaves_the_runtime_api_and_unknown_paths_alone) {
    for (auto target : {"/model/m/invoke", "/eu-west-1/model/m/converse", "/async-invoke",
                        "/guardrail/g/version/1/apply", "/nothing-here", "/", "/x/y/z",
                        "/eu-west-1//model/m/converse", "//model/m/converse", "//", "/eu-west-1//",
                        "//eu-west-1/inference-profiles", "/eu-west-1/%2Finference-profiles"}) {
        auto r = parse_control_target(http::verb::post, target);
        ASSERT_TRUE(r) << target;
        EXPECT_FALSE(r->has_value()) << target;
    }
}

TEST(control_plane, keeps_a_presigned_credential_apart) {
    auto r = parse_control_target(http::verb::get,
                                  "/inference-profiles?X-Amz-Credential=AKID%2F20260101%2Feu-west-"
                                  "1%2Fbedrock%2Faws4_request");
    ASSERT_TRUE(r && r->has_value());
    EXPECT_EQ((*r)->query, "");
    EXPECT_EQ((*r)->query_credential, "AKID/20260101/eu-west-1/bedrock/aws4_request");
}

TEST(control_plane, refuses_writes_and_other_reads_with_403) {
    const std::pair<http::verb, std::string_view> refused[] = {
        {http::verb::post, "/inference-profiles"},            // CreateInferenceProfile
        {http::verb::delete_, "/inference-profiles/p"},       // DeleteInferenceProfile
        {http::verb::put, "/foundation-models/m"},            // nothing, still refused
        {http::verb::get, "/inference-profiles/a/b"},         // deeper than any read
        {http::verb::get, "/provisioned-model-throughputs"},  // a read, but not allowed
        {http::verb::post, "/model-customization-jobs"},      // CreateModelCustomizationJob
        {http::verb::delete_, "/guardrails/g"},               // DeleteGuardrail
        {http::verb::post, "/us-east-1/provisioned-model-throughput"},
        {http::verb::post, "/us-east-1//provisioned-model-throughput"},
        {http::verb::delete_, "//guardrails/g?X-Amz-Signature=00"},
    };
    for (const auto& [method, target] : refused) {
        SCOPED_TRACE(std::string(target));
        auto r = parse_control_target(method, target);
        ASSERT_FALSE(r);
        EXPECT_EQ(r.error().status, http::status::forbidden);
        EXPECT_EQ(r.error().type, "AccessDeniedException");
        EXPECT_NE(r.error().message.find("ListInferenceProfiles"), std::string::npos);
    }
}

TEST(control_plane, refuses_bad_identifiers) {
    for (auto target :
         {"/inference-profiles/%2E%2E", "/foundation-models/a%20b", "/foundation-models/a%0Ab",
          "/inference-profiles/x?y=1", "/inference-profiles/x?X-Amz-Signature=00&y=1",
          "/inference-profiles/x?x-amz-signature=00"}) {
        auto r = parse_control_target(http::verb::get, target);
        ASSERT_FALSE(r) << target;
        EXPECT_EQ(r.error().status, http::status::bad_request) << target;
    }
}

// Every operation of the bedrock service model is either one of the four reads or refused:
// none can fall through to the runtime API's "unknown" path, or reach upstream.
TEST(control_plane, every_service_model_operation_is_read_or_refused) {
    const auto path =
        std::string(BGW_REFERENCE_DIR) + "/botocore-models/bedrock/2023-04-20/service-2.json";
    auto text = bgw::test::slurp(path);
    ASSERT_TRUE(text) << "cannot read " << path;
    rapidjson::Document model;
    model.Parse(text->data(), text->size());
    ASSERT_FALSE(model.HasParseError());
    const std::set<std::string> reads{"ListInferenceProfiles", "GetInferenceProfile",
                                      "ListFoundationModels", "GetFoundationModel"};
    std::size_t checked = 0;
    for (const auto& op : model["operations"].GetObject()) {
        const std::string name = op.name.GetString();
        std::string uri = op.value["http"]["requestUri"].GetString();
        const std::string method = op.value["http"]["method"].GetString();
        // Fill the labels with something plausible; drop the model's fixed query parts.
        std::string target;
        for (std::size_t i = 0; i < uri.size(); ++i) {
            if (uri[i] == '{') {
                target += "x";
                i = uri.find('}', i);
            } else if (uri[i] == '?') {
                break;
            } else {
                target += uri[i];
            }
        }
        SCOPED_TRACE(name + " " + method + " " + target);
        auto r = parse_control_target(http::string_to_verb(method), target);
        if (reads.contains(name)) {
            ASSERT_TRUE(r && r->has_value());
            EXPECT_EQ((*r)->operation, name);
        } else {
            ASSERT_FALSE(r);
            EXPECT_EQ(r.error().status, http::status::forbidden);
        }
        ++checked;
    }
    EXPECT_GT(checked, 100u);  // the whole model, not an empty list
}

TEST(control_plane_cache, serves_fresh_answers_and_forgets_stale_ones) {
    using clock = bgw::net::control_plane_cache::clock;
    bgw::net::control_plane_cache cache(2);
    const auto t0 = clock::time_point{} + std::chrono::hours(1);
    cache.put("a", {"A", "application/json"}, t0, std::chrono::seconds(60));
    ASSERT_TRUE(cache.get("a", t0 + std::chrono::seconds(59)));
    EXPECT_EQ(cache.get("a", t0 + std::chrono::seconds(59))->body, "A");
    EXPECT_FALSE(cache.get("a", t0 + std::chrono::seconds(60)));  // expired
    EXPECT_FALSE(cache.get("b", t0));
    cache.put("z", {"Z", ""}, t0, std::chrono::seconds(0));  // ttl 0: never stored
    EXPECT_FALSE(cache.get("z", t0));
    // Full: the entry that expires soonest makes room.
    cache.put("a", {"A", ""}, t0, std::chrono::seconds(10));
    cache.put("b", {"B", ""}, t0, std::chrono::seconds(30));
    cache.put("c", {"C", ""}, t0, std::chrono::seconds(20));
    EXPECT_FALSE(cache.get("a", t0));
    EXPECT_TRUE(cache.get("b", t0));
    EXPECT_TRUE(cache.get("c", t0));
}

TEST(control_plane, user_agent_keeps_the_apps_and_adds_the_gateways) {
    EXPECT_EQ(bgw::net::upstream_user_agent("claude-cli/2.1.3 (external, cli)"),
              "claude-cli/2.1.3 (external, cli) bedrock-gateway/" BGW_VERSION);
    EXPECT_EQ(bgw::net::upstream_user_agent(""), "bedrock-gateway/" BGW_VERSION);
}

}  // namespace
