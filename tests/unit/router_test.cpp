// The router (issue 5) by table: region intent (header, path prefix, credential scope, none)
// x routes x tier intent x the allow-list.

#include "bgw/routing/router.hpp"

#include "support/fixtures.hpp"
#include <gtest/gtest.h>

namespace {

using namespace bgw;

const char* config_json = R"({
  "default_region": "us-east-1",
  "regions": { "us-east-1": {}, "eu-west-1": {}, "us-west-2": {} },
  "routes": {
    "claude-prod": { "targets": [
      { "region": "us-east-1", "tier": "provisioned",
        "model_id": "arn:aws:bedrock:us-east-1:123456789012:provisioned-model/pt1" },
      { "region": "us-east-1", "tier": "on-demand",
        "model_id": "anthropic.claude-3-5-sonnet-20240620-v1:0" },
      { "region": "eu-west-1", "tier": "on-demand",
        "model_id": "anthropic.claude-3-5-sonnet-20240620-v1:0", "service_tier": "flex" } ] } } })";

const config::config& cfg() {
    static const config::config c = bgw::test::config_from(config_json);
    return c;
}

std::string auth_for(std::string_view region) {
    return "AWS4-HMAC-SHA256 Credential=AKID/20250101/" + std::string(region) +
           "/bedrock/aws4_request, SignedHeaders=host;x-amz-date, "
           "Signature=0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
}

struct case_ {
    const char* name;
    std::string path;
    std::string region_header;
    std::string authorization;
    std::string tier_header;
    // Expected: "region tier model [service_tier]" per target, or "!status Type" for an error.
    std::vector<std::string> expected;
};

std::string show(const routing::target& t) {
    std::string s = t.region + " " + std::string(config::tier_name(t.tier)) + " " + t.model_id;
    if (!t.service_tier.empty()) s += " " + t.service_tier;
    return s;
}

class router_table : public testing::TestWithParam<case_> {};

TEST_P(router_table, plans) {
    const auto& c = GetParam();
    auto req = routing::parse_runtime_target(boost::beast::http::verb::post, c.path);
    ASSERT_TRUE(req) << req.error().message;
    routing::intent in{c.region_header, req->region_prefix, c.authorization, c.tier_header};
    auto plan = routing::route(*req, in, cfg());
    std::vector<std::string> got;
    if (!plan) {
        got.push_back("!" + std::to_string(static_cast<int>(plan.error().status)) + " " +
                      plan.error().type);
    } else {
        for (const auto& t : plan->targets) got.push_back(show(t));
    }
    EXPECT_EQ(got, c.expected) << (plan ? "" : plan.error().message);
}

const std::string claude = "anthropic.claude-3-5-sonnet-20240620-v1:0";
const std::string pt1 = "arn:aws:bedrock:us-east-1:123456789012:provisioned-model/pt1";

INSTANTIATE_TEST_SUITE_P(
    intents,
    router_table,
    testing::Values(
        // No route: the model itself, on demand, in the strongest region asked for.
        case_{"plain_default", "/model/m/invoke", "", "", "", {"us-east-1 on-demand m"}},
        case_{"plain_header", "/model/m/invoke", "eu-west-1", "", "", {"eu-west-1 on-demand m"}},
        case_{"plain_prefix", "/eu-west-1/model/m/invoke", "", "", "", {"eu-west-1 on-demand m"}},
        case_{"plain_scope",
              "/model/m/invoke",
              "",
              auth_for("us-west-2"),
              "",
              {"us-west-2 on-demand m"}},
        case_{"header_beats_prefix",
              "/eu-west-1/model/m/invoke",
              "us-west-2",
              "",
              "",
              {"us-west-2 on-demand m"}},
        case_{"prefix_beats_scope",
              "/eu-west-1/model/m/invoke",
              "",
              auth_for("us-west-2"),
              "",
              {"eu-west-1 on-demand m"}},
        case_{"bearer_token_is_no_scope",
              "/model/m/invoke",
              "",
              "Bearer abc",
              "",
              {"us-east-1 on-demand m"}},
        // A credential scope outside the allow-list is only a hint: ignored.
        case_{"scope_not_allowed",
              "/model/m/invoke",
              "",
              auth_for("ap-south-1"),
              "",
              {"us-east-1 on-demand m"}},
        // Strong intent outside the allow-list or not a region at all: refused.
        case_{"header_not_allowed",
              "/model/m/invoke",
              "ap-south-1",
              "",
              "",
              {"!403 AccessDeniedException"}},
        case_{"prefix_not_allowed",
              "/ap-south-1/model/m/invoke",
              "",
              "",
              "",
              {"!403 AccessDeniedException"}},
        case_{"header_not_a_region",
              "/model/m/invoke",
              "evil.example.com",
              "",
              "",
              {"!400 ValidationException"}},
        case_{"header_dots", "/model/m/invoke", "../x", "", "", {"!400 ValidationException"}},
        case_{"prefix_not_a_region",
              "/evil.example.com/model/m/invoke",
              "",
              "",
              "",
              {"!400 ValidationException"}},
        // A route: its targets in order, batch left out unless asked for.
        case_{"route",
              "/model/claude-prod/invoke",
              "",
              "",
              "",
              {"us-east-1 provisioned " + pt1, "us-east-1 on-demand " + claude,
               "eu-west-1 on-demand " + claude + " flex"}},
        case_{"route_weak_region_first",
              "/model/claude-prod/converse",
              "",
              auth_for("eu-west-1"),
              "",
              {"eu-west-1 on-demand " + claude + " flex", "us-east-1 provisioned " + pt1,
               "us-east-1 on-demand " + claude}},
        case_{"route_pinned_region",
              "/model/claude-prod/invoke",
              "us-east-1",
              "",
              "",
              {"us-east-1 provisioned " + pt1, "us-east-1 on-demand " + claude}},
        case_{"route_pinned_by_prefix",
              "/eu-west-1/model/claude-prod/invoke",
              "",
              auth_for("us-east-1"),
              "",
              {"eu-west-1 on-demand " + claude + " flex"}},
        case_{"route_pinned_where_it_has_no_target",
              "/model/claude-prod/invoke",
              "us-west-2",
              "",
              "",
              {"!400 ValidationException"}},
        case_{"route_tier_on_demand",
              "/model/claude-prod/invoke",
              "",
              "",
              "on-demand",
              {"us-east-1 on-demand " + claude, "eu-west-1 on-demand " + claude + " flex"}},
        case_{"route_tier_provisioned",
              "/model/claude-prod/invoke",
              "",
              "",
              "provisioned",
              {"us-east-1 provisioned " + pt1}},
        case_{"route_tier_provisioned_elsewhere",
              "/model/claude-prod/invoke",
              "eu-west-1",
              "",
              "provisioned",
              {"!400 ValidationException"}},
        case_{"tier_batch_without_batch_section",
              "/model/m/invoke",
              "",
              "",
              "batch",
              {"!501 NotImplementedException"}},
        case_{"tier_unknown",
              "/model/claude-prod/invoke",
              "",
              "",
              "spot",
              {"!400 ValidationException"}},
        case_{"plain_model_tier_provisioned",
              "/model/m/invoke",
              "",
              "",
              "provisioned",
              {"!400 ValidationException"}},
        case_{"plain_model_tier_on_demand",
              "/model/m/invoke",
              "",
              "",
              "on-demand",
              {"us-east-1 on-demand m"}},
        // A presigned (query-signed) request's credential scope is the same weak intent as an
        // Authorization header's, which wins when both are there.
        case_{"presigned_scope",
              "/model/m/invoke?X-Amz-Credential=AKID%2F20250101%2Fus-west-2%2Fbedrock%2F"
              "aws4_request&X-Amz-Signature=00",
              "",
              "",
              "",
              {"us-west-2 on-demand m"}},
        case_{"header_scope_beats_presigned_scope",
              "/model/m/invoke?X-Amz-Credential=AKID%2F20250101%2Fus-west-2%2Fbedrock%2F"
              "aws4_request",
              "",
              auth_for("eu-west-1"),
              "",
              {"eu-west-1 on-demand m"}},
        case_{"presigned_scope_not_allowed",
              "/model/m/invoke?X-Amz-Credential=AKID%2F20250101%2Fap-south-1%2Fbedrock%2F"
              "aws4_request",
              "",
              "",
              "",
              {"us-east-1 on-demand m"}},
        case_{"presigned_credential_not_a_scope",
              "/model/m/invoke?X-Amz-Credential=us-west-2",
              "",
              "",
              "",
              {"us-east-1 on-demand m"}},
        case_{"presigned_scope_route_weak_region_first",
              "/model/claude-prod/converse?X-Amz-Credential=AKID%2F20250101%2Feu-west-1%2F"
              "bedrock%2Faws4_request",
              "",
              "",
              "",
              {"eu-west-1 on-demand " + claude + " flex", "us-east-1 provisioned " + pt1,
               "us-east-1 on-demand " + claude}},
        // An endpoint with a trailing slash after its region (`http://gw/eu-west-1/`) pins it
        // the same.
        case_{"prefix_with_trailing_slash",
              "/eu-west-1//model/claude-prod/invoke",
              "",
              "",
              "",
              {"eu-west-1 on-demand " + claude + " flex"}},
        case_{"bare_double_slash_is_no_prefix",
              "//model/m/invoke",
              "",
              "",
              "",
              {"us-east-1 on-demand m"}},
        // Operations without a model id go where the region intent says.
        case_{"guardrail_prefix",
              "/eu-west-1/guardrail/g1/version/1/apply",
              "",
              "",
              "",
              {"eu-west-1 on-demand "}}),
    [](const testing::TestParamInfo<case_>& p) { return std::string(p.param.name); });

TEST(router, route_name_is_matched_exactly_and_not_by_prefix) {
    auto req = routing::parse_runtime_target(boost::beast::http::verb::post,
                                             "/model/claude-prod-2/invoke");
    ASSERT_TRUE(req);
    auto plan = routing::route(*req, {}, cfg());
    ASSERT_TRUE(plan);
    EXPECT_TRUE(plan->route.empty());
    ASSERT_EQ(plan->targets.size(), 1u);
    EXPECT_EQ(plan->targets[0].model_id, "claude-prod-2");
}

TEST(router, refusals_say_what_and_why) {
    auto req =
        routing::parse_runtime_target(boost::beast::http::verb::post, "/model/claude-prod/invoke");
    ASSERT_TRUE(req);
    auto denied = routing::route(*req, {"ap-south-1", "", "", ""}, cfg());
    ASSERT_FALSE(denied);
    EXPECT_NE(denied.error().message.find("ap-south-1"), std::string::npos);
    EXPECT_NE(denied.error().message.find("eu-west-1"), std::string::npos);  // what is allowed
    auto no_tier = routing::route(*req, {"eu-west-1", "", "", "provisioned"}, cfg());
    ASSERT_FALSE(no_tier);
    EXPECT_NE(no_tier.error().message.find("its tiers: on-demand, provisioned"), std::string::npos)
        << no_tier.error().message;
}

TEST(runtime_path, region_prefix_is_split_off_and_model_paths_rebuilt) {
    auto req = routing::parse_runtime_target(boost::beast::http::verb::post,
                                             "/eu-west-1/model/a%3Ab/converse-stream");
    ASSERT_TRUE(req);
    EXPECT_EQ(req->region_prefix, "eu-west-1");
    EXPECT_EQ(req->model_id, "a:b");
    EXPECT_EQ(req->wire_path, "/model/a%3Ab/converse-stream");
    EXPECT_EQ(routing::model_wire_path(routing::operation::invoke_model, pt1),
              "/model/arn%3Aaws%3Abedrock%3Aus-east-1%3A123456789012%3Aprovisioned-model%2Fpt1/"
              "invoke");
    auto dots =
        routing::parse_runtime_target(boost::beast::http::verb::post, "/%2E%2E/model/m/invoke");
    EXPECT_FALSE(dots);
}

TEST(router, choose_region_reads_a_presigned_scope_after_the_header) {
    const std::string_view eu = "AKID/20250101/eu-west-1/bedrock/aws4_request";
    auto weak = routing::choose_region({}, "", cfg(), eu);
    ASSERT_TRUE(weak);
    EXPECT_EQ(*weak, "eu-west-1");
    const std::string us_west = auth_for("us-west-2");
    auto header = routing::choose_region({"", "", us_west, ""}, "", cfg(), eu);
    ASSERT_TRUE(header);
    EXPECT_EQ(*header, "us-west-2");
    auto none = routing::choose_region({}, "", cfg());
    ASSERT_TRUE(none);
    EXPECT_EQ(*none, "us-east-1");
}

TEST(router, batch_tier_with_the_batch_section) {
    auto c = config::parse_config(R"({
      "regions": { "us-east-1": {}, "eu-west-1": {} },
      "batch": { "bucket": "my-bucket", "role_arn": "arn:aws:iam::123456789012:role/b",
                 "spool_dir": "/tmp/spool" },
      "routes": {
        "mixed": { "targets": [ { "region": "us-east-1", "tier": "on-demand", "model_id": "m" },
                                { "region": "eu-west-1", "tier": "batch", "model_id": "m" } ] },
        "cheap": { "targets": [ { "region": "eu-west-1", "tier": "batch", "model_id": "m" } ] } } })");
    ASSERT_TRUE(c) << c.error().message;
    auto plan_for = [&](std::string path, std::string tier) {
        auto req = routing::parse_runtime_target(boost::beast::http::verb::post, path);
        EXPECT_TRUE(req);
        return routing::route(*req, {"", "", "", tier}, *c);
    };
    auto asked = plan_for("/model/mixed/invoke", "batch");
    ASSERT_TRUE(asked) << asked.error().message;
    ASSERT_EQ(asked->targets.size(), 1u);
    EXPECT_EQ(asked->targets[0].tier, config::tier::batch);
    EXPECT_EQ(asked->targets[0].region, "eu-west-1");
    auto not_asked = plan_for("/model/mixed/invoke", "");
    ASSERT_TRUE(not_asked);
    EXPECT_EQ(not_asked->targets[0].tier, config::tier::on_demand);
    auto only_batch = plan_for("/model/cheap/converse", "");
    ASSERT_TRUE(only_batch);
    EXPECT_EQ(only_batch->targets[0].tier, config::tier::batch);
    auto plain = plan_for("/model/plain/converse", "batch");
    ASSERT_TRUE(plain);
    EXPECT_EQ(plain->targets[0].tier, config::tier::batch);
    EXPECT_EQ(plain->targets[0].region, "us-east-1");
    auto stream = plan_for("/model/plain/converse-stream", "batch");
    ASSERT_FALSE(stream);
    EXPECT_EQ(stream.error().status, boost::beast::http::status::bad_request);
}

}  // namespace
