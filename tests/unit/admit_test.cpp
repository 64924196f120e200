// admit() (issue 18): everything before upstream, by case: the path's operation, the caller key's
// models, regions and rpm, the event-stream bound, the credentials, the route and the client's
// terms. Each refusal is checked for its status and type; an admitted request for its plan.

#include "bgw/pipeline/admit.hpp"

#include "bgw/aws/sigv4.hpp"

#include <gtest/gtest.h>

namespace {

using namespace bgw;
namespace http = boost::beast::http;

config::config gateway_config() {
    auto hex = [](std::string_view key) { return aws::sha256_hex(key); };
    auto c = config::parse_config(R"({
      "default_region": "us-east-1",
      "regions": {"us-east-1": {}, "eu-west-1": {}},
      "limits": {"max_streams": 1},
      "routes": {"claude": {"targets": [
        {"region": "us-east-1", "tier": "on-demand", "model_id": "anthropic.claude-v2"},
        {"region": "eu-west-1", "tier": "on-demand", "model_id": "anthropic.claude-v2"}]}},
      "caller_keys": {
        "any": {"sha256": ")" + hex("any-key") +
                                  R"("},
        "eu": {"sha256": ")" + hex("eu-key") +
                                  R"(", "regions": ["eu-west-1"]},
        "us-only-claude": {"sha256": ")" +
                                  hex("us-key") + R"(", "models": ["claude"],
                           "regions": ["us-east-1"]},
        "slow": {"sha256": ")" + hex("slow-key") +
                                  R"(", "rpm": 1}}})");
    EXPECT_TRUE(c) << c.error().message;
    return *c;
}

struct admission_case : ::testing::Test {
    config::config cfg = gateway_config();
    std::atomic<std::size_t> streams{0};
    result<std::shared_ptr<const aws::timed_credentials>> signing =
        std::make_shared<const aws::timed_credentials>();
    std::shared_ptr<policy::rate_limiter> caller_limits = std::make_shared<policy::rate_limiter>(
        std::map<std::string, policy::model_limit>{{"slow", {1, 0}}});
    pipeline::request_ctx ctx;

    std::variant<pipeline::admitted, pipeline::refusal> admit_as(
        std::string_view key,
        std::string target,
        std::vector<std::pair<std::string, std::string>> fields = {}) {
        http::request<http::string_body> req{http::verb::post, target, 11};
        for (auto& [name, value] : fields) req.set(name, value);
        req.body() = R"({"max_tokens": 10})";
        auto who = policy::authenticate(cfg, key, "");
        EXPECT_TRUE(who) << who.error().message;
        pipeline::admission_state state{.cfg = cfg,
                                        .streams = streams,
                                        .caller_limits = caller_limits,
                                        .signing = &signing,
                                        .bearer = false};
        return pipeline::admit(req, *who, state, ctx);
    }
};

/// The error a refusal carries ("" when it was admitted or is a throttle).
std::string refused(const std::variant<pipeline::admitted, pipeline::refusal>& r) {
    const auto* no = std::get_if<pipeline::refusal>(&r);
    if (!no) return "";
    const auto* e = std::get_if<error>(no);
    if (!e) return "429 " + std::string(std::get<policy::throttle_answer>(*no).source);
    return std::to_string(static_cast<int>(e->status)) + " " + e->type;
}

std::vector<std::string> regions(const std::variant<pipeline::admitted, pipeline::refusal>& r) {
    std::vector<std::string> out;
    for (const auto& t : std::get<pipeline::admitted>(r).plan.targets) out.push_back(t.region);
    return out;
}

TEST_F(admission_case, a_route_is_admitted_with_its_targets_and_the_client_terms) {
    auto r = admit_as("any-key", "/model/claude/invoke", {{"X-Gateway-Max-Attempts", "2"}});
    ASSERT_EQ(refused(r), "");
    EXPECT_EQ(regions(r), (std::vector<std::string>{"us-east-1", "eu-west-1"}));
    EXPECT_EQ(std::get<pipeline::admitted>(r).terms.max_attempts, 2);
    EXPECT_EQ(ctx.op, "InvokeModel");
    EXPECT_EQ(ctx.model, "claude");
    EXPECT_EQ(ctx.route, "claude");
}

TEST_F(admission_case, a_keys_regions_drop_the_other_targets_or_refuse_it) {
    EXPECT_EQ(regions(admit_as("eu-key", "/model/claude/invoke")),
              (std::vector<std::string>{"eu-west-1"}));
    EXPECT_EQ(refused(admit_as("eu-key", "/model/m/invoke", {{"X-Gateway-Region", "us-east-1"}})),
              "403 AccessDeniedException");
}

TEST_F(admission_case, a_keys_models_and_paths_that_name_no_operation_are_refused) {
    EXPECT_EQ(refused(admit_as("us-key", "/model/other/invoke")), "403 AccessDeniedException");
    EXPECT_EQ(ctx.op, "InvokeModel");  // known before the key's say
    ctx = {};
    EXPECT_EQ(refused(admit_as("any-key", "/model/m/nonsense")), "404 UnknownOperationException");
    EXPECT_EQ(ctx.op, "-");  // the operation was never known
}

TEST_F(admission_case, event_streams_are_bounded_and_their_slot_is_given_back) {
    {
        auto first = admit_as("any-key", "/model/m/converse-stream");
        ASSERT_EQ(refused(first), "");
        EXPECT_EQ(streams.load(), 1u);
        EXPECT_EQ(refused(admit_as("any-key", "/model/m/converse-stream")),
                  "503 ServiceUnavailableException");
        EXPECT_EQ(streams.load(), 1u);  // the refused one took nothing
        EXPECT_EQ(refused(admit_as("any-key", "/model/m/converse")), "");  // not a stream
    }
    EXPECT_EQ(streams.load(), 0u);  // the admitted stream's slot went back with it
}

TEST_F(admission_case, no_usable_credentials_is_a_503_before_anything_is_routed) {
    signing = error{http::status::service_unavailable, "ServiceUnavailableException",
                    "the gateway has no AWS credentials"};
    EXPECT_EQ(refused(admit_as("any-key", "/model/m/invoke")), "503 ServiceUnavailableException");
    EXPECT_EQ(streams.load(), 0u);
}

TEST_F(admission_case, a_key_over_its_rpm_gets_a_429_and_the_next_minute_is_its_wait) {
    EXPECT_EQ(refused(admit_as("slow-key", "/model/m/invoke")), "");
    auto over = admit_as("slow-key", "/model/m/invoke");
    ASSERT_EQ(refused(over), "429 caller_limit");
    const auto& a = std::get<policy::throttle_answer>(std::get<pipeline::refusal>(over));
    EXPECT_GT(a.wait, policy::milliseconds{59000});
    EXPECT_LE(a.wait, policy::milliseconds{60000});
}

TEST_F(admission_case, bad_client_terms_are_refused_naming_the_header) {
    auto r = admit_as("any-key", "/model/m/invoke", {{"X-Gateway-Max-Attempts", "zero"}});
    ASSERT_EQ(refused(r), "400 ValidationException");
    const auto& e = std::get<error>(std::get<pipeline::refusal>(r));
    EXPECT_NE(e.message.find("X-Gateway-Max-Attempts"), std::string::npos) << e.message;
}

}  // namespace
