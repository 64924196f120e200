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
                "/async-invoke/arn%3Aaws%3Abedrock%3Aus-east-1%3A1%3Aasync-invoke%2Fx", ""},
        // Where an endpoint's path ("/", "/eu-west-1/") meets the API path, empty segments are
        // absent; the wire path never has them.
        ok_case{post, "//model/m/converse", operation::converse, "m", "/model/m/converse", ""},
        ok_case{post, "/eu-west-1//model/a:b/converse", operation::converse, "a:b",
                "/model/a%3Ab/converse", ""},
        ok_case{post, "/eu-west-1///model/m/invoke", operation::invoke_model, "m",
                "/model/m/invoke", ""},
        ok_case{post,
                "/eu-west-1//model/arn%3Aaws%3Abedrock%3Aus-east-1%3A1%3Aprovisioned-model%2Fabc/"
                "invoke",
                operation::invoke_model, "arn:aws:bedrock:us-east-1:1:provisioned-model/abc",
                "/model/arn%3Aaws%3Abedrock%3Aus-east-1%3A1%3Aprovisioned-model%2Fabc/invoke", ""},
        ok_case{get, "/eu-west-1//async-invoke?maxResults=1", operation::list_async_invokes, "",
                "/async-invoke", "maxResults=1"},
        // A query-signed (presigned) request: the client's signature is dropped, the rest kept.
        ok_case{post,
                "/model/m/converse?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKID%2F"
                "20260101%2Fus-east-1%2Fbedrock%2Faws4_request&X-Amz-Date=20260101T000000Z&X-Amz-"
                "Expires=300&X-Amz-SignedHeaders=host&X-Amz-Security-Token=tok&X-Amz-Signature="
                "0123abcd",
                operation::converse, "m", "/model/m/converse", ""},
        ok_case{post, "/eu-west-1//model/m/converse-stream?X-Amz-Signature=00&X-Amz-Date=1",
                operation::converse_stream, "m", "/model/m/converse-stream", ""},
        ok_case{get, "/async-invoke?maxResults=10&X-Amz-Signature=00&statusEquals=InProgress",
                operation::list_async_invokes, "", "/async-invoke",
                "maxResults=10&statusEquals=InProgress"}));

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
    ::testing::Values(
        bad_case{post, "/", 404, "UnknownOperationException"},
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
        bad_case{post, "http://evil.example/model/m/invoke", 400, "ValidationException"},
        bad_case{post, "/model/m/invoke?x=1", 400, "ValidationException"},
        // Only empty segments where the endpoint's path ends are absent: an empty
        // label is still one, and `%2F` is never a separator.
        bad_case{post, "/eu-west-1//model//converse", 400, "ValidationException"},
        bad_case{post, "/eu-west-1/model//m/converse", 404, "UnknownOperationException"},
        bad_case{post, "/model/m//converse", 404, "UnknownOperationException"},
        bad_case{post, "//eu-west-1/model/m/converse", 404, "UnknownOperationException"},
        bad_case{post, "/eu-west-1/%2Fmodel/m/converse", 404, "UnknownOperationException"},
        bad_case{post, "/eu-west-1//", 404, "UnknownOperationException"},
        bad_case{post, "/eu-west-1//model/m/converse//", 404, "UnknownOperationException"},
        // SigV4's own parameters go; any other still refuses, whatever its case.
        bad_case{post, "/model/m/converse?X-Amz-Signature=00&x=1", 400, "ValidationException"},
        bad_case{post, "/model/m/converse?x-amz-signature=00", 400, "ValidationException"},
        bad_case{post, "/model/m/converse?X-Amz-Content-Sha256=UNSIGNED-PAYLOAD", 400,
                 "ValidationException"},
        bad_case{post, "/model/m/converse?X-Amz-SignatureX=00", 400, "ValidationException"}));

TEST(runtime_path, empty_segments_after_the_prefix_change_nothing) {
    auto with = parse_runtime_target(http::verb::post, "/eu-west-1//model/a%3Ab/converse");
    auto without = parse_runtime_target(http::verb::post, "/eu-west-1/model/a%3Ab/converse");
    ASSERT_TRUE(with) << with.error().message;
    ASSERT_TRUE(without) << without.error().message;
    EXPECT_EQ(with->region_prefix, "eu-west-1");
    EXPECT_EQ(with->region_prefix, without->region_prefix);
    EXPECT_EQ(with->model_id, without->model_id);
    EXPECT_EQ(with->wire_path, without->wire_path);
    auto bare = parse_runtime_target(http::verb::post, "//model/m/converse");
    ASSERT_TRUE(bare) << bare.error().message;
    EXPECT_EQ(bare->region_prefix, "");  // a leading empty segment is no (empty) prefix
}

TEST(runtime_path, presigned_credential_is_kept_apart) {
    auto r =
        parse_runtime_target(http::verb::post,
                             "/model/m/converse?X-Amz-Credential=AKID%2F20260101%2Fus-west-2%2F"
                             "bedrock%2Faws4_request&X-Amz-Signature=00");
    ASSERT_TRUE(r) << r.error().message;
    EXPECT_EQ(r->query, "");
    EXPECT_EQ(r->query_credential, "AKID/20260101/us-west-2/bedrock/aws4_request");
    auto plain = parse_runtime_target(http::verb::post, "/model/m/converse");
    ASSERT_TRUE(plain);
    EXPECT_EQ(plain->query_credential, "");
}

struct strip_case {
    const char* query;
    const char* rest;
    const char* credential;
};

class sigv4_query_strip : public ::testing::TestWithParam<strip_case> {};

TEST_P(sigv4_query_strip, drops_exactly_the_signing_parameters) {
    const auto& c = GetParam();
    auto out = bgw::routing::strip_sigv4_query(c.query);
    EXPECT_EQ(out.rest, c.rest) << c.query;
    EXPECT_EQ(out.credential, c.credential) << c.query;
}

INSTANTIATE_TEST_SUITE_P(
    table,
    sigv4_query_strip,
    ::testing::Values(
        strip_case{"", "", ""},
        // Nothing to drop: the query byte for byte, empty pieces and all.
        strip_case{"a=1&&b&c=%2F", "a=1&&b&c=%2F", ""},
        strip_case{"X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKID%2F20260101%2Feu-west-1"
                   "%2Fbedrock%2Faws4_request&X-Amz-Date=20260101T000000Z&X-Amz-Expires=300&X-"
                   "Amz-SignedHeaders=host%3Bx-amz-date&X-Amz-Security-Token=a%2Bb%3D&X-Amz-"
                   "Signature=0123",
                   "", "AKID/20260101/eu-west-1/bedrock/aws4_request"},
        // The others keep their order and their encoding; empty pieces go once rebuilt.
        strip_case{"maxResults=5&X-Amz-Date=1&&nextToken=a%2Fb%3D&X-Amz-Signature=0&flag",
                   "maxResults=5&nextToken=a%2Fb%3D&flag", ""},
        // Names as AWS reads them: percent-decoded, case-sensitive, whole.
        strip_case{"X%2DAmz-Signature=0&a=1", "a=1", ""},
        strip_case{"x-amz-signature=0", "x-amz-signature=0", ""},
        strip_case{"X-AMZ-DATE=1", "X-AMZ-DATE=1", ""},
        strip_case{"X-Amz-SignatureX=0&X-Amz-Content-Sha256=x",
                   "X-Amz-SignatureX=0&X-Amz-Content-Sha256=x", ""},
        strip_case{"X-Amz-Signature&X-Amz-Expires=", "", ""},
        strip_case{"X-Amz-Credential=first&X-Amz-Credential=second", "", "first"}));

// The target is a view into the request's buffer (Beast's start line), never NUL-terminated
// where it ends: nothing may be read past it (Boost 1.81's parse_query would).
TEST(runtime_path, reads_nothing_past_the_targets_end) {
    const std::string line =
        "/async-invoke?maxResults=1&X-Amz-Date=2&statusEquals=Completed HTTP/1.1\r\n";
    const std::string_view target(line.data(), line.find(' '));
    EXPECT_EQ(bgw::routing::strip_sigv4_query(target.substr(target.find('?') + 1)).rest,
              "maxResults=1&statusEquals=Completed");
    auto r = parse_runtime_target(http::verb::get, target);
    ASSERT_TRUE(r) << r.error().message;
    EXPECT_EQ(r->query, "maxResults=1&statusEquals=Completed");
    const std::string cred = "X-Amz-Credential=AKID%2Fd%2Feu-west-1%2Fbedrock%2Faws4_request";
    const std::string tail = cred + "-and-more";
    EXPECT_EQ(
        bgw::routing::strip_sigv4_query(std::string_view(tail.data(), cred.size())).credential,
        "AKID/d/eu-west-1/bedrock/aws4_request");
}

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
