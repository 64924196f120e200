#include "bgw/routing/runtime_path.hpp"

#include <gtest/gtest.h>

namespace {

namespace http = boost::beast::http;
using bgw::routing::operation;
using bgw::routing::parse_runtime_target;

struct ok_case {
    http::verb method;
    const char* target;
    operation op;
    const char* model_id;
    const char* wire_path;
    const char* query;
};

class runtime_path_ok : public ::testing::TestWithParam<ok_case> {};

TEST_P(runtime_path_ok, recognises_and_re_encodes) {
    const auto& c = GetParam();
    auto r = parse_runtime_target(c.method, c.target);
    ASSERT_TRUE(r) << c.target << ": " << r.error().message;
    EXPECT_EQ(r->op, c.op);
    EXPECT_EQ(r->model_id, c.model_id);
    EXPECT_EQ(r->wire_path, c.wire_path);
    EXPECT_EQ(r->query, c.query);
}

constexpr auto post = http::verb::post;
constexpr auto get = http::verb::get;

INSTANTIATE_TEST_SUITE_P(
    table,
    runtime_path_ok,
    ::testing::Values(
        // Encoded by botocore (quote(safe='-._~')) and raw as AnthropicBedrock sends it: same wire.
        ok_case{post, "/model/anthropic.claude-3-5-sonnet-20240620-v1%3A0/invoke",
                operation::invoke_model, "anthropic.claude-3-5-sonnet-20240620-v1:0",
                "/model/anthropic.claude-3-5-sonnet-20240620-v1%3A0/invoke", ""},
        ok_case{post, "/model/anthropic.claude-3-5-sonnet-20240620-v1:0/invoke",
                operation::invoke_model, "anthropic.claude-3-5-sonnet-20240620-v1:0",
                "/model/anthropic.claude-3-5-sonnet-20240620-v1%3A0/invoke", ""},
        ok_case{post, "/model/a%3ab/converse", operation::converse, "a:b", "/model/a%3Ab/converse",
                ""},
        // An ARN keeps its '/' inside the label.
        ok_case{post,
                "/model/arn%3Aaws%3Abedrock%3Aus-east-1%3A123456789012%3Aprovisioned-model%2Fabc/"
                "invoke",
                operation::invoke_model,
                "arn:aws:bedrock:us-east-1:123456789012:provisioned-model/abc",
                "/model/arn%3Aaws%3Abedrock%3Aus-east-1%3A123456789012%3Aprovisioned-model%2Fabc/"
                "invoke",
                ""},
        ok_case{post, "/model/us.m%2Bx/invoke-with-response-stream",
                operation::invoke_model_with_response_stream, "us.m+x",
                "/model/us.m%2Bx/invoke-with-response-stream", ""},
        ok_case{post, "/model/m+x/converse-stream", operation::converse_stream, "m+x",
                "/model/m%2Bx/converse-stream", ""},
        ok_case{post, "/model/m/count-tokens", operation::count_tokens, "m",
                "/model/m/count-tokens", ""},
        ok_case{post, "/guardrail/gr1/version/DRAFT/apply", operation::apply_guardrail, "",
                "/guardrail/gr1/version/DRAFT/apply", ""},
        ok_case{post, "/guardrail-checks/invoke", operation::invoke_guardrail_checks, "",
                "/guardrail-checks/invoke", ""},
        ok_case{post, "/async-invoke", operation::start_async_invoke, "", "/async-invoke", ""},
        ok_case{get, "/async-invoke?maxResults=10&statusEquals=InProgress",
                operation::list_async_invokes, "", "/async-invoke",
                "maxResults=10&statusEquals=InProgress"},
        ok_case{get, "/async-invoke/arn%3Aaws%3Abedrock%3Aus-east-1%3A1%3Aasync-invoke%2Fx",
                operation::get_async_invoke, "",
                "/async-invoke/arn%3Aaws%3Abedrock%3Aus-east-1%3A1%3Aasync-invoke%2Fx", ""}));

struct bad_case {
    http::verb method;
    const char* target;
    unsigned status;
    const char* type;
};

class runtime_path_rejects : public ::testing::TestWithParam<bad_case> {};

TEST_P(runtime_path_rejects, with_bedrock_shaped_error) {
    const auto& c = GetParam();
    auto r = parse_runtime_target(c.method, c.target);
    ASSERT_FALSE(r) << c.target;
    EXPECT_EQ(static_cast<unsigned>(r.error().status), c.status) << c.target;
    EXPECT_EQ(r.error().type, c.type) << c.target;
    EXPECT_FALSE(r.error().message.empty());
}

INSTANTIATE_TEST_SUITE_P(
    table,
    runtime_path_rejects,
    ::testing::Values(bad_case{post, "/", 404, "UnknownOperationException"},
                      bad_case{post, "/model/m/unknown", 404, "UnknownOperationException"},
                      bad_case{post, "/model/m/invoke/extra", 404, "UnknownOperationException"},
                      bad_case{post, "/model/m/invoke/", 404, "UnknownOperationException"},
                      bad_case{get, "/model/m/invoke", 404, "UnknownOperationException"},
                      bad_case{post, "/model/m/invoke-with-bidirectional-stream", 404,
                               "UnknownOperationException"},
                      bad_case{post, "/model//invoke", 400, "ValidationException"},
                      bad_case{post, "/model/%2E%2E/invoke", 400, "ValidationException"},
                      bad_case{post, "/model/../invoke", 400, "ValidationException"},
                      bad_case{post, "/model/a%0Ab/invoke", 400, "ValidationException"},
                      // Bedrock's ids are visible ASCII: no UTF-8 (valid or not), no spaces.
                      bad_case{post, "/model/caf%C3%A9/invoke", 400, "ValidationException"},
                      bad_case{post, "/model/a%FF%FEb/converse", 400, "ValidationException"},
                      bad_case{post, "/model/a%20b/invoke", 400, "ValidationException"},
                      bad_case{post, "/model/a%7Fb/invoke", 400, "ValidationException"},
                      bad_case{post, "/eu%FF/model/m/invoke", 400, "ValidationException"},
                      bad_case{post, "/model/a%zzb/invoke", 400, "ValidationException"},
                      bad_case{post, "model/m/invoke", 400, "ValidationException"},
                      bad_case{post, "http://evil.example/model/m/invoke", 400,
                               "ValidationException"},
                      bad_case{post, "/model/m/invoke?x=1", 400, "ValidationException"}));

TEST(runtime_path, over_long_label_rejected) {
    std::string target =
        "/model/" + std::string(bgw::routing::max_label_bytes + 1, 'a') + "/invoke";
    auto r = parse_runtime_target(http::verb::post, target);
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().type, "ValidationException");
}

TEST(runtime_path, encode_label_keeps_only_unreserved) {
    EXPECT_EQ(bgw::routing::encode_label("aZ09-._~:/ %"), "aZ09-._~%3A%2F%20%25");
}

}  // namespace
