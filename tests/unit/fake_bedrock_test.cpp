// The fake Bedrock must be a strict judge, or every gateway test built on it proves nothing:
// a request signed correctly (by the real signer, as botocore would) is accepted, and each kind
// of mistake the gateway could make is rejected with Bedrock's status and x-amzn-ErrorType.

#include "fakes/fake_bedrock.hpp"

#include "bgw/aws/eventstream.hpp"
#include "bgw/aws/sigv4.hpp"

#include <cctype>
#include <chrono>
#include <string>
#include <string_view>
#include <tuple>
#include <utility>
#include <vector>

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/write.hpp>
#include <gtest/gtest.h>
#include <rapidjson/document.h>

namespace {

namespace net = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = net::ip::tcp;
using bgw::aws::credentials;
using bgw::test::fake_bedrock;
using bgw::test::fake_options;
using request = http::request<http::string_body>;
using response = http::response<http::string_body>;

const credentials good_creds{"AKIDFAKETEST", "fake-test-secret/K7MDENG+bPxRfiCY", ""};
constexpr std::string_view claude_path =
    "/model/anthropic.claude-3-5-sonnet-20240620-v1%3A0/invoke";

std::chrono::sys_seconds now() {
    return std::chrono::floor<std::chrono::seconds>(std::chrono::system_clock::now());
}

/// A tiny synchronous client: one connection, any number of request/response exchanges.
class client {
public:
    explicit client(unsigned short port) : stream_(ioc_) {
        stream_.connect(tcp::endpoint(net::ip::make_address("127.0.0.1"), port));
    }
    void write(const request& req) { http::write(stream_, req); }
    response read() {
        response res;
        http::read(stream_, buffer_, res);
        return res;
    }
    response exchange(const request& req) {
        write(req);
        return read();
    }

private:
    net::io_context ioc_;
    beast::tcp_stream stream_;
    beast::flat_buffer buffer_;
};

response send_once(unsigned short port, const request& req) { return client(port).exchange(req); }

request make_request(http::verb method, std::string_view target, std::string body = {}) {
    request req{method, target, 11};
    req.set(http::field::host, "bedrock-runtime.us-east-1.amazonaws.com");
    req.set(http::field::content_type, "application/json");
    req.set(http::field::accept, "application/json");
    req.body() = std::move(body);
    req.prepare_payload();
    return req;
}

rapidjson::Document parse_json(const std::string& s) {
    rapidjson::Document doc;
    doc.Parse(s.data(), s.size());
    return doc;
}

std::string json_string(const rapidjson::Value& obj, const char* key) {
    auto it = obj.FindMember(key);
    if (it == obj.MemberEnd() || !it->value.IsString()) return "<missing " + std::string(key) + ">";
    return {it->value.GetString(), it->value.GetStringLength()};
}

/// The code part of `x-amzn-ErrorType: Code:http://internal.amazon.com/...`.
std::string error_code(const response& res) {
    std::string_view v = res["x-amzn-ErrorType"];
    return std::string(v.substr(0, v.find(':')));
}

class fake_bedrock_test : public ::testing::Test {
protected:
    static fake_options options() {
        fake_options o;
        o.credentials = good_creds;
        o.regions = {"us-east-1", "eu-west-1"};
        return o;
    }
    void SetUp() override { fake_.start(); }

    response signed_send(request req,
                         const credentials& creds = good_creds,
                         std::string_view region = "us-east-1") {
        bgw::test::sign_request(req, creds, region, now());
        return send_once(fake_.port(), req);
    }

    fake_bedrock fake_{options()};
};

TEST_F(fake_bedrock_test, accepts_a_correctly_signed_invoke_and_echoes_what_it_saw) {
    auto req = make_request(http::verb::post, claude_path, R"({"prompt":"hi"})");
    req.set("X-Amzn-Bedrock-Service-Tier", "flex");
    auto res = signed_send(req);

    ASSERT_EQ(res.result_int(), 200u) << res.body();
    EXPECT_FALSE(res["x-amzn-RequestId"].empty());
    EXPECT_EQ(res["X-Amzn-Bedrock-Service-Tier"], "flex");
    EXPECT_FALSE(res["X-Amzn-Bedrock-Input-Token-Count"].empty());
    auto doc = parse_json(res.body());
    ASSERT_TRUE(doc.IsObject()) << res.body();
    EXPECT_EQ(json_string(doc, "modelId"), "anthropic.claude-3-5-sonnet-20240620-v1:0");
    EXPECT_EQ(json_string(doc, "wirePath"), claude_path);
    EXPECT_EQ(json_string(doc, "bodySha256"), bgw::aws::sha256_hex(R"({"prompt":"hi"})"));
    EXPECT_EQ(json_string(doc, "serviceTier"), "flex");
    EXPECT_EQ(json_string(doc, "region"), "us-east-1");

    auto recorded = fake_.requests();
    ASSERT_EQ(recorded.size(), 1u);
    EXPECT_TRUE(recorded[0].signature_ok);
    EXPECT_EQ(recorded[0].error_type, "");
    EXPECT_EQ(recorded[0].region, "us-east-1");
    EXPECT_EQ(recorded[0].access_key_id, good_creds.access_key_id);
    EXPECT_EQ(recorded[0].wire_path, claude_path);
    EXPECT_EQ(recorded[0].body, R"({"prompt":"hi"})");
    EXPECT_EQ(recorded[0].response_status, 200u);
    EXPECT_EQ(recorded[0].request_id, res["x-amzn-RequestId"]);
    ASSERT_FALSE(recorded[0].headers.empty());
    EXPECT_EQ(recorded[0].headers.front().name, "Host");  // arrival order is kept
}

TEST_F(fake_bedrock_test, accepts_the_second_configured_region) {
    auto res =
        signed_send(make_request(http::verb::post, claude_path, "{}"), good_creds, "eu-west-1");
    ASSERT_EQ(res.result_int(), 200u) << res.body();
    EXPECT_EQ(json_string(parse_json(res.body()), "region"), "eu-west-1");
}

// --- rejections: one row per mistake a gateway could make ---------------------------------------

struct sign_params {
    credentials creds = good_creds;
    std::string region = "us-east-1";
    std::chrono::sys_seconds time = now();
    std::string service = "bedrock";
};

struct rejection_case {
    const char* name;
    void (*before_signing)(sign_params&, request&);
    void (*after_signing)(request&);
    const char* error_type;
    const char* message_part;
};

void no_change(sign_params&, request&) {}
void no_tamper(request&) {}

const rejection_case rejection_cases[] = {
    {"tampered_body", no_change,
     [](request& r) {
         r.body() = R"({"prompt":"hI"})";  // same length: only the hash can tell
     },
     "InvalidSignatureException", "does not match the signature you provided"},
    {"tampered_path", no_change,
     [](request& r) { r.target("/model/anthropic.claude-3-haiku-20240307-v1%3A0/invoke"); },
     "InvalidSignatureException", "does not match"},
    {"path_sent_raw_but_signed_encoded", no_change,
     [](request& r) { r.target("/model/anthropic.claude-3-5-sonnet-20240620-v1:0/invoke"); },
     "InvalidSignatureException", "does not match"},
    {"tampered_signed_header", no_change, [](request& r) { r.set(http::field::accept, "*/*"); },
     "InvalidSignatureException", "does not match"},
    {"wrong_secret", [](sign_params& p, request&) { p.creds.secret_access_key = "not-the-secret"; },
     no_tamper, "InvalidSignatureException", "does not match"},
    {"unknown_access_key", [](sign_params& p, request&) { p.creds.access_key_id = "AKIDUNKNOWN"; },
     no_tamper, "UnrecognizedClientException", "security token included in the request is invalid"},
    {"unexpected_session_token",
     [](sign_params& p, request&) { p.creds.session_token = "app-session-token"; }, no_tamper,
     "UnrecognizedClientException", "security token"},
    {"region_not_accepted", [](sign_params& p, request&) { p.region = "ap-south-1"; }, no_tamper,
     "InvalidSignatureException", "scoped to a valid region"},
    {"signed_header_not_sent", no_change, [](request& r) { r.erase(http::field::accept); },
     "InvalidSignatureException", "does not match"},
    {"date_changed_after_signing", no_change,
     [](request& r) {
         r.set("X-Amz-Date", bgw::aws::format_amz_date(now() - std::chrono::minutes(1)));
     },
     "InvalidSignatureException", "does not match"},
    {"service_not_bedrock", [](sign_params& p, request&) { p.service = "bedrock-runtime"; },
     no_tamper, "InvalidSignatureException", "scoped to correct service"},
    {"stale_date", [](sign_params& p, request&) { p.time = now() - std::chrono::minutes(6); },
     no_tamper, "InvalidSignatureException", "Signature expired"},
    {"future_date", [](sign_params& p, request&) { p.time = now() + std::chrono::minutes(6); },
     no_tamper, "InvalidSignatureException", "Signature not yet current"},
    {"missing_authorization", no_change, [](request& r) { r.erase(http::field::authorization); },
     "MissingAuthenticationTokenException", "Missing Authentication Token"},
    {"bearer_token", no_change,
     [](request& r) { r.set(http::field::authorization, "Bearer bedrock-api-key-abc"); },
     "IncompleteSignatureException", "Authorization header requires"},
    {"date_header_removed", no_change, [](request& r) { r.erase("X-Amz-Date"); },
     "IncompleteSignatureException", "X-Amz-Date"},
};

class fake_bedrock_rejects : public fake_bedrock_test,
                             public ::testing::WithParamInterface<rejection_case> {};

TEST_P(fake_bedrock_rejects, with_bedrocks_status_and_error_type) {
    const auto& c = GetParam();
    int behaviour_calls = 0;
    fake_.set_behaviour([&behaviour_calls](const bgw::test::recorded_request& r) {
        ++behaviour_calls;
        return bgw::test::default_behaviour(r);
    });
    auto req = make_request(http::verb::post, claude_path, R"({"prompt":"hi"})");
    sign_params p;
    c.before_signing(p, req);
    bgw::test::sign_request(req, p.creds, p.region, p.time, p.service);
    c.after_signing(req);
    auto res = send_once(fake_.port(), req);

    EXPECT_EQ(res.result_int(), 403u) << res.body();
    EXPECT_EQ(error_code(res), c.error_type);
    EXPECT_EQ(res["x-amzn-ErrorType"],
              std::string(c.error_type) + ":http://internal.amazon.com/coral/com.amazon.bedrock/");
    EXPECT_FALSE(res["x-amzn-RequestId"].empty());
    auto doc = parse_json(res.body());
    ASSERT_TRUE(doc.IsObject()) << res.body();
    EXPECT_NE(json_string(doc, "message").find(c.message_part), std::string::npos)
        << json_string(doc, "message");
    EXPECT_EQ(behaviour_calls, 0) << "a rejected request must never reach the behaviour";
    auto recorded = fake_.requests();
    ASSERT_EQ(recorded.size(), 1u);
    EXPECT_FALSE(recorded[0].signature_ok);
    EXPECT_EQ(recorded[0].error_type, c.error_type);
}

INSTANTIATE_TEST_SUITE_P(cases,
                         fake_bedrock_rejects,
                         ::testing::ValuesIn(rejection_cases),
                         [](const auto& param_info) { return std::string(param_info.param.name); });

TEST(fake_bedrock_session_token, requires_the_configured_token) {
    fake_options o;
    o.credentials = {"ASIAFAKETEST", "temp-secret", "the-session-token"};
    fake_bedrock fake(o);
    fake.start();

    auto req = make_request(http::verb::post, claude_path, "{}");
    bgw::test::sign_request(req, o.credentials, "us-east-1", now());
    EXPECT_EQ(send_once(fake.port(), req).result_int(), 200u);

    auto without = o.credentials;
    without.session_token.clear();
    req = make_request(http::verb::post, claude_path, "{}");
    bgw::test::sign_request(req, without, "us-east-1", now());
    auto res = send_once(fake.port(), req);
    EXPECT_EQ(res.result_int(), 403u);
    EXPECT_EQ(error_code(res), "UnrecognizedClientException");
}

// --- Bedrock API keys (Authorization: Bearer) ---------------------------------------------------

TEST(fake_bedrock_bearer, accepts_exactly_the_configured_key_and_still_judges_sigv4) {
    fake_options o;
    o.credentials = good_creds;
    o.bearer_token = "bedrock-api-key-abc";
    fake_bedrock fake(o);
    fake.start();

    auto bearer_request = [](std::string_view authorization) {
        auto req = make_request(http::verb::post, claude_path, "{}");
        req.set(http::field::authorization, authorization);
        return req;
    };
    auto res = send_once(fake.port(), bearer_request("Bearer bedrock-api-key-abc"));
    ASSERT_EQ(res.result_int(), 200u) << res.body();
    EXPECT_EQ(json_string(parse_json(res.body()), "modelId"),
              "anthropic.claude-3-5-sonnet-20240620-v1:0");

    // A different key, a prefix of it, one with more after it, a second space: Bedrock's 403.
    for (std::string_view wrong : {"Bearer bedrock-api-key-abd", "Bearer bedrock-api-key-ab",
                                   "Bearer bedrock-api-key-abcd", "Bearer  bedrock-api-key-abc"}) {
        res = send_once(fake.port(), bearer_request(wrong));
        EXPECT_EQ(res.result_int(), 403u) << wrong;
        EXPECT_EQ(error_code(res), "AccessDeniedException") << wrong;
        EXPECT_NE(json_string(parse_json(res.body()), "message").find("API Key"), std::string::npos)
            << res.body();
    }
    // The right key with a session token riding along: a client's credentials leaked through.
    auto leaked = bearer_request("Bearer bedrock-api-key-abc");
    leaked.set("X-Amz-Security-Token", "app-session-token");
    res = send_once(fake.port(), leaked);
    EXPECT_EQ(res.result_int(), 403u);
    EXPECT_EQ(error_code(res), "UnrecognizedClientException");

    // SigV4 with the fake's keys still works, and a bad signature is still refused.
    auto req = make_request(http::verb::post, claude_path, "{}");
    bgw::test::sign_request(req, good_creds, "us-east-1", now());
    EXPECT_EQ(send_once(fake.port(), req).result_int(), 200u);
    auto bad = good_creds;
    bad.secret_access_key = "not-the-secret";
    req = make_request(http::verb::post, claude_path, "{}");
    bgw::test::sign_request(req, bad, "us-east-1", now());
    EXPECT_EQ(send_once(fake.port(), req).result_int(), 403u);

    auto recorded = fake.requests();
    ASSERT_EQ(recorded.size(), 8u);
    EXPECT_EQ(recorded[0].auth, "bearer");
    EXPECT_TRUE(recorded[0].signature_ok);
    EXPECT_EQ(recorded[0].access_key_id, "");
    EXPECT_EQ(recorded[0].error_type, "");
    EXPECT_EQ(recorded[0].response_status, 200u);
    for (std::size_t i = 1; i <= 5; ++i) {
        EXPECT_EQ(recorded[i].auth, "bearer") << i;
        EXPECT_FALSE(recorded[i].signature_ok) << i;
        EXPECT_EQ(recorded[i].access_key_id, "") << i;
    }
    EXPECT_EQ(recorded[1].error_type, "AccessDeniedException");
    EXPECT_EQ(recorded[5].error_type, "UnrecognizedClientException");
    EXPECT_EQ(recorded[6].auth, "sigv4");
    EXPECT_TRUE(recorded[6].signature_ok);
    EXPECT_EQ(recorded[6].access_key_id, good_creds.access_key_id);
    EXPECT_EQ(recorded[7].auth, "sigv4");
    EXPECT_FALSE(recorded[7].signature_ok);
}

TEST(fake_bedrock_bearer, without_a_configured_key_bearer_is_an_incomplete_signature) {
    fake_options o;
    o.credentials = good_creds;
    fake_bedrock fake(o);
    fake.start();
    auto req = make_request(http::verb::post, claude_path, "{}");
    req.set(http::field::authorization, "Bearer bedrock-api-key-abc");
    auto res = send_once(fake.port(), req);
    EXPECT_EQ(res.result_int(), 403u);
    EXPECT_EQ(error_code(res), "IncompleteSignatureException");
    auto recorded = fake.requests();
    ASSERT_EQ(recorded.size(), 1u);
    EXPECT_EQ(recorded[0].auth, "bearer");
    EXPECT_FALSE(recorded[0].signature_ok);
}

TEST(fake_bedrock_bearer, a_bearer_only_fake_refuses_every_sigv4_request_and_bearer_on_s3) {
    fake_options o;
    o.credentials = {"", "", ""};
    o.bearer_token = "bedrock-api-key-abc";
    fake_bedrock fake(o);
    fake.start();

    auto req = make_request(http::verb::post, claude_path, "{}");
    bgw::test::sign_request(req, good_creds, "us-east-1", now());
    auto res = send_once(fake.port(), req);
    EXPECT_EQ(res.result_int(), 403u);
    EXPECT_EQ(error_code(res), "UnrecognizedClientException");

    // S3 knows no Bedrock API keys: refused in S3's shape.
    request put{http::verb::put, "/bucket/key.jsonl", 11};
    put.set(http::field::host, "s3.us-east-1.amazonaws.com");
    put.set(http::field::authorization, "Bearer bedrock-api-key-abc");
    put.body() = "x";
    put.prepare_payload();
    res = send_once(fake.port(), put);
    EXPECT_EQ(res.result_int(), 403u);
    EXPECT_NE(res.body().find("<Code>AuthorizationHeaderMalformed</Code>"), std::string::npos)
        << res.body();
    EXPECT_FALSE(fake.s3_object("bucket", "key.jsonl").has_value());
}

// --- the default routes ------------------------------------------------------------------------

TEST_F(fake_bedrock_test, converse_echoes_the_last_user_text_unchanged) {
    // JSON escapes (as Python's json.dumps writes them) and raw UTF-8 must both come back as UTF-8.
    auto body = std::string(R"({"messages":[{"role":"user","content":[{"text":"first"}]},)") +
                R"({"role":"assistant","content":[{"text":"ok"}]},)" +
                R"({"role":"user","content":[{"text":"h\u00e9llo w\u00f6rld \u2014 )" +
                "日本語 \\ud83d\\ude80\"}]}]}";
    auto res =
        signed_send(make_request(http::verb::post, "/model/amazon.nova-pro-v1%3A0/converse", body));
    ASSERT_EQ(res.result_int(), 200u) << res.body();
    auto doc = parse_json(res.body());
    ASSERT_TRUE(doc.IsObject());
    const auto& content = doc["output"]["message"]["content"];
    ASSERT_TRUE(content.IsArray());
    EXPECT_EQ(json_string(content[0], "text"), "héllo wörld — 日本語 🚀");
    EXPECT_EQ(json_string(doc["output"]["message"], "role"), "assistant");
    EXPECT_EQ(json_string(doc, "stopReason"), "end_turn");
    const auto& usage = doc["usage"];
    EXPECT_EQ(usage["totalTokens"].GetUint64(),
              usage["inputTokens"].GetUint64() + usage["outputTokens"].GetUint64());
}

TEST_F(fake_bedrock_test, converse_rejects_malformed_json_as_validation) {
    auto res = signed_send(make_request(http::verb::post, "/model/m/converse", "{not json"));
    EXPECT_EQ(res.result_int(), 400u);
    EXPECT_EQ(error_code(res), "ValidationException");
}

TEST_F(fake_bedrock_test, serves_the_other_runtime_operations) {
    auto tokens = signed_send(make_request(http::verb::post, "/model/m/count-tokens",
                                           R"({"input":{"converse":{"messages":[]}}})"));
    ASSERT_EQ(tokens.result_int(), 200u);
    EXPECT_TRUE(parse_json(tokens.body())["inputTokens"].IsUint());

    auto guard = signed_send(make_request(http::verb::post, "/guardrail/gr1/version/1/apply",
                                          R"({"source":"INPUT","content":[]})"));
    ASSERT_EQ(guard.result_int(), 200u);
    EXPECT_EQ(json_string(parse_json(guard.body()), "action"), "NONE");

    auto start = signed_send(
        make_request(http::verb::post, "/async-invoke", R"({"modelId":"amazon.nova-reel-v1:0"})"),
        good_creds, "eu-west-1");
    ASSERT_EQ(start.result_int(), 200u);
    auto arn = json_string(parse_json(start.body()), "invocationArn");
    EXPECT_EQ(arn.rfind("arn:aws:bedrock:eu-west-1:", 0), 0u) << arn;

    auto list = signed_send(make_request(http::verb::get, "/async-invoke?maxResults=5"));
    ASSERT_EQ(list.result_int(), 200u);
    EXPECT_TRUE(parse_json(list.body())["asyncInvokeSummaries"].IsArray());

    auto get = signed_send(make_request(
        http::verb::get,
        "/async-invoke/arn%3Aaws%3Abedrock%3Aus-east-1%3A123456789012%3Aasync-invoke%2Fabc"));
    ASSERT_EQ(get.result_int(), 200u);
    EXPECT_EQ(json_string(parse_json(get.body()), "invocationArn"),
              "arn:aws:bedrock:us-east-1:123456789012:async-invoke/abc");
    EXPECT_EQ(fake_.requests().back().query, "");
    EXPECT_EQ(fake_.requests()[3].query, "maxResults=5");
}

TEST_F(fake_bedrock_test, unknown_operations_are_404_even_when_signed) {
    for (auto [verb, target] :
         {std::pair{http::verb::post, "/model/m/unknown"},
          std::pair{http::verb::get, "/model/m/invoke"}, std::pair{http::verb::post, "/"},
          std::pair{http::verb::delete_, "/async-invoke/x"}}) {
        auto res = signed_send(make_request(verb, target));
        EXPECT_EQ(res.result_int(), 404u) << target;
        EXPECT_EQ(error_code(res), "UnknownOperationException") << target;
    }
}

TEST_F(fake_bedrock_test, scripted_errors_use_the_requested_status_and_code) {
    for (auto [id, status, code] :
         {std::tuple{"fake-error-429-ThrottlingException", 429u, "ThrottlingException"},
          std::tuple{"fake-error-400-ValidationException", 400u, "ValidationException"},
          std::tuple{"fake-error-503-ServiceUnavailableException", 503u,
                     "ServiceUnavailableException"}}) {
        auto res = signed_send(
            make_request(http::verb::post, "/model/" + std::string(id) + "/invoke", "{}"));
        EXPECT_EQ(res.result_int(), status) << id;
        EXPECT_EQ(error_code(res), code) << id;
        EXPECT_TRUE(parse_json(res.body()).HasMember("message")) << id;
    }
}

// --- scripted error shapes and flaky ids ---------------------------------------------------------

constexpr const char* model_ops[] = {"invoke", "converse", "count-tokens",
                                     "invoke-with-response-stream", "converse-stream"};
constexpr std::string_view chat_body =
    R"({"messages":[{"role":"user","content":[{"text":"hi there"}]}]})";

request model_request(std::string_view model_id, std::string_view op) {
    return make_request(http::verb::post, "/model/" + std::string(model_id) + "/" + std::string(op),
                        std::string(chat_body));
}

/// "<status> <x-amzn-ErrorType code>" ("200 " for a success), so attempts compare at a glance.
std::string outcome(const response& res) {
    return std::to_string(res.result_int()) + " " + error_code(res);
}

TEST_F(fake_bedrock_test, scripted_errorbody_puts_the_code_only_in_the_body) {
    for (const char* op : model_ops) {
        auto res = signed_send(model_request("fake-errorbody-503-ServiceUnavailableException", op));
        EXPECT_EQ(res.result_int(), 503u) << op;
        EXPECT_EQ(res.find("x-amzn-ErrorType"), res.end()) << op;
        EXPECT_EQ(res[http::field::content_type], "application/json") << op;
        EXPECT_FALSE(res["x-amzn-RequestId"].empty()) << op;
        auto doc = parse_json(res.body());
        ASSERT_TRUE(doc.IsObject()) << op << ": " << res.body();
        EXPECT_EQ(json_string(doc, "__type"), "com.amazon.bedrock#ServiceUnavailableException")
            << op;
        EXPECT_EQ(json_string(doc, "message"), "fake-bedrock scripted ServiceUnavailableException")
            << op;
    }
}

TEST_F(fake_bedrock_test, scripted_flaky_fails_n_times_across_operations_then_answers_normally) {
    constexpr std::string_view id = "fake-flaky-2-429-ThrottlingException-t1";
    auto first = signed_send(model_request(id, "invoke"));
    auto second = signed_send(model_request(id, "converse"));
    auto third = signed_send(model_request(id, "invoke"));
    auto fourth = signed_send(model_request(id, "converse"));

    for (const auto* res : {&first, &second}) {
        EXPECT_EQ(outcome(*res), "429 ThrottlingException");
        EXPECT_EQ(json_string(parse_json(res->body()), "message"),
                  "fake-bedrock scripted ThrottlingException");
    }
    ASSERT_EQ(third.result_int(), 200u) << third.body();
    EXPECT_EQ(third.find("x-amzn-ErrorType"), third.end());
    EXPECT_EQ(json_string(parse_json(third.body()), "modelId"), id);  // the normal invoke echo
    ASSERT_EQ(fourth.result_int(), 200u) << fourth.body();
    EXPECT_EQ(json_string(parse_json(fourth.body())["output"]["message"]["content"][0], "text"),
              "hi there");
}

TEST_F(fake_bedrock_test, scripted_flaky_counts_each_id_on_its_own_and_only_accepted_requests) {
    constexpr std::string_view a = "fake-flaky-1-503-ServiceUnavailableException-a";
    constexpr std::string_view b = "fake-flaky-1-503-ServiceUnavailableException-b.2_x";
    constexpr std::string_view untagged = "fake-flaky-1-429-ThrottlingException";

    auto bad_sig = model_request(a, "invoke");
    bgw::test::sign_request(bad_sig, {good_creds.access_key_id, "not-the-secret", ""}, "us-east-1",
                            now());
    EXPECT_EQ(send_once(fake_.port(), bad_sig).result_int(), 403u);

    EXPECT_EQ(outcome(signed_send(model_request(a, "invoke"))), "503 ServiceUnavailableException");
    EXPECT_EQ(outcome(signed_send(model_request(a, "invoke"))), "200 ");
    EXPECT_EQ(outcome(signed_send(model_request(b, "invoke"))), "503 ServiceUnavailableException");
    EXPECT_EQ(outcome(signed_send(model_request(b, "invoke"))), "200 ");
    EXPECT_EQ(outcome(signed_send(model_request(untagged, "count-tokens"))),
              "429 ThrottlingException");
    EXPECT_EQ(outcome(signed_send(model_request(untagged, "count-tokens"))), "200 ");
    EXPECT_EQ(
        outcome(signed_send(model_request("fake-flaky-0-500-InternalServerException", "invoke"))),
        "200 ");

    // Another fake in the same process starts from zero.
    fake_bedrock other{options()};
    other.start();
    auto req = model_request(a, "invoke");
    bgw::test::sign_request(req, good_creds, "us-east-1", now());
    EXPECT_EQ(outcome(send_once(other.port(), req)), "503 ServiceUnavailableException");
}

TEST_F(fake_bedrock_test, scripted_flaky_stream_errors_first_then_streams_for_real) {
    for (auto [op, id, first_event] :
         {std::tuple{"converse-stream", "fake-flaky-1-429-ThrottlingException-cs", "messageStart"},
          std::tuple{"invoke-with-response-stream", "fake-flaky-1-429-ThrottlingException-iwrs",
                     "chunk"}}) {
        auto error = signed_send(model_request(id, op));
        EXPECT_EQ(outcome(error), "429 ThrottlingException") << op;
        EXPECT_EQ(error[http::field::content_type], "application/json") << op;

        auto res = signed_send(model_request(id, op));
        ASSERT_EQ(res.result_int(), 200u) << op << ": " << res.body();
        EXPECT_EQ(res[http::field::content_type], "application/vnd.amazon.eventstream") << op;
        auto frames = bgw::aws::eventstream::decode_all(res.body());
        ASSERT_TRUE(frames) << op;
        ASSERT_GE(frames->size(), 3u) << op;
        EXPECT_EQ(frames->front().string_header(":event-type"), first_event) << op;
        for (const auto& f : *frames) EXPECT_EQ(f.string_header(":message-type"), "event") << op;
    }
}

TEST_F(fake_bedrock_test, malformed_scripted_ids_are_validation_errors) {
    for (const char* id : {
             "fake-flaky-",
             "fake-flaky-x-429-ThrottlingException",
             "fake-flaky-1001-429-ThrottlingException",
             "fake-flaky--1-429-ThrottlingException",
             "fake-flaky-1-399-ThrottlingException",
             "fake-flaky-1-600-ThrottlingException",
             "fake-flaky-1-429",
             "fake-flaky-1-429-",
             "fake-flaky-1-429-Throttling_Exception",
             "fake-flaky-1-429-ThrottlingException-",
             "fake-flaky-1-429-ThrottlingException-a-b",
             "fake-flaky-1-429-ThrottlingException-a%2Fb",
             "fake-errorbody-42-ThrottlingException",
             "fake-errorbody-503-",
             "fake-errorbody-503",
         }) {
        for (const char* op : {"invoke", "converse-stream"}) {
            auto res = signed_send(model_request(id, op));
            EXPECT_EQ(outcome(res), "400 ValidationException") << id << " " << op;
        }
    }
}

TEST_F(fake_bedrock_test, scripted_delay_answers_late_without_blocking_other_clients) {
    using namespace std::chrono_literals;
    constexpr auto delay = 1500ms;
    auto slow_req = make_request(http::verb::post, "/model/fake-delay-1500/invoke", "{}");
    bgw::test::sign_request(slow_req, good_creds, "us-east-1", now());
    client slow(fake_.port());
    auto t0 = std::chrono::steady_clock::now();
    slow.write(slow_req);

    // The delay is a timer on the fake's loop, so another connection is served meanwhile.
    auto fast = signed_send(make_request(http::verb::post, claude_path, "{}"));
    auto fast_elapsed = std::chrono::steady_clock::now() - t0;
    auto res = slow.read();
    auto slow_elapsed = std::chrono::steady_clock::now() - t0;

    EXPECT_EQ(fast.result_int(), 200u);
    EXPECT_LT(fast_elapsed, delay);
    EXPECT_EQ(res.result_int(), 200u);
    EXPECT_GE(slow_elapsed, delay);
    EXPECT_EQ(json_string(parse_json(res.body()), "modelId"), "fake-delay-1500");
}

TEST_F(fake_bedrock_test, keeps_the_connection_alive_across_requests) {
    client c(fake_.port());
    for (int i = 0; i < 3; ++i) {
        auto req = make_request(http::verb::post, claude_path, "{}");
        bgw::test::sign_request(req, good_creds, "us-east-1", now());
        auto res = c.exchange(req);
        EXPECT_EQ(res.result_int(), 200u);
        EXPECT_TRUE(res.keep_alive());
    }
    EXPECT_EQ(fake_.request_count(), 3u);
    EXPECT_TRUE(fake_.wait_for_requests(3, std::chrono::milliseconds(0)));
    EXPECT_FALSE(fake_.wait_for_requests(4, std::chrono::milliseconds(1)));
}

TEST_F(fake_bedrock_test, custom_behaviour_sees_the_verified_request) {
    fake_.set_behaviour([](const bgw::test::recorded_request& r) {
        bgw::test::fake_response resp;
        resp.status = 201;
        resp.body = r.region + " " + r.method + " " + r.wire_path;
        return resp;
    });
    auto res =
        signed_send(make_request(http::verb::post, "/anything", "{}"), good_creds, "eu-west-1");
    EXPECT_EQ(res.result_int(), 201u);
    EXPECT_EQ(res.body(), "eu-west-1 POST /anything");
    EXPECT_FALSE(res["x-amzn-RequestId"].empty());  // added even when the behaviour forgets it
}

TEST(fake_bedrock_lifecycle, stops_promptly_with_idle_and_pending_connections) {
    fake_options o;
    o.credentials = good_creds;
    fake_bedrock fake(o);
    fake.start();
    client idle(fake.port());  // connected, never sends
    client pending(fake.port());
    auto req = make_request(http::verb::post, "/model/fake-delay-60000/invoke", "{}");
    bgw::test::sign_request(req, good_creds, "us-east-1", now());
    pending.write(req);
    ASSERT_TRUE(fake.wait_for_requests(1, std::chrono::seconds(10)));

    auto t0 = std::chrono::steady_clock::now();
    fake.stop();
    EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(5));
    EXPECT_THROW(pending.read(), boost::system::system_error);  // closed, not answered
    fake.stop();                                                // idempotent
}

// --- S3 (path style, verified the S3 way)
// ---------------------------------------------------------

request s3_request(http::verb method, std::string_view target, std::string body = {}) {
    request req{method, target, 11};
    req.set(http::field::host, "s3.us-east-1.amazonaws.com");
    if (method == http::verb::put) req.set(http::field::content_type, "application/x-ndjson");
    req.body() = std::move(body);
    req.prepare_payload();
    return req;
}

/// Signs by hand, to make the mistakes sign_request never makes: `s3_canonical_uri` false is the
/// Bedrock canonicalisation (normalised, double-encoded); `content_hash` adds X-Amz-Content-SHA256.
void sign_custom(request& req, std::string_view service, bool s3_canonical_uri, bool content_hash) {
    req.set("X-Amz-Date", bgw::aws::format_amz_date(now()));
    if (content_hash) req.set("X-Amz-Content-SHA256", bgw::aws::sha256_hex(req.body()));
    req.prepare_payload();
    std::vector<bgw::aws::header> headers;
    for (const auto& f : req)
        headers.push_back({std::string(f.name_string()), std::string(f.value())});
    auto body_hash = bgw::aws::sha256_hex(req.body());
    bgw::aws::signing_input in;
    in.method = req.method_string();
    in.wire_path = req.target();
    in.headers = headers;
    in.payload_sha256 = body_hash;
    in.region = "us-east-1";
    in.service = service;
    in.time = now();
    in.normalize_path = !s3_canonical_uri;
    in.double_encode_path = !s3_canonical_uri;
    req.set(http::field::authorization, bgw::aws::sign_v4(in, good_creds).authorization);
}

/// `<Code>` of an S3 XML error; empty when there is none.
std::string s3_code(const response& res) {
    const std::string& b = res.body();
    auto open = b.find("<Code>");
    auto close = b.find("</Code>");
    if (open == std::string::npos || close == std::string::npos) return {};
    return b.substr(open + 6, close - open - 6);
}

constexpr std::string_view colon_key_path = "/batch-in/jobs/2024/run%3A1/input.jsonl";
constexpr std::string_view colon_key = "jobs/2024/run:1/input.jsonl";

TEST_F(fake_bedrock_test, s3_put_then_get_round_trips_a_key_with_slashes_and_a_colon) {
    const std::string bytes = "{\"recordId\":\"r1\"}\n{\"recordId\":\"r2\"}\n";
    auto put = s3_request(http::verb::put, colon_key_path, bytes);
    bgw::test::sign_request(put, good_creds, "us-east-1", now(), "s3");
    auto put_res = send_once(fake_.port(), put);
    ASSERT_EQ(put_res.result_int(), 200u) << put_res.body();
    const std::string etag(put_res[http::field::etag]);
    EXPECT_EQ(etag.size(), 34u) << etag;  // "<32 hex md5>"
    EXPECT_EQ(etag.front(), '"');
    EXPECT_FALSE(put_res["x-amz-request-id"].empty());
    EXPECT_EQ(put_res["x-amz-request-id"], put_res["x-amzn-RequestId"]);

    auto get = s3_request(http::verb::get, std::string(colon_key_path) + "?x-id=GetObject");
    bgw::test::sign_request(get, good_creds, "us-east-1", now(), "s3");
    auto get_res = send_once(fake_.port(), get);
    ASSERT_EQ(get_res.result_int(), 200u) << get_res.body();
    EXPECT_EQ(get_res.body(), bytes);
    EXPECT_EQ(get_res[http::field::etag], etag);
    EXPECT_EQ(get_res[http::field::content_type], "application/x-ndjson");

    auto stored = fake_.s3_object("batch-in", colon_key);
    ASSERT_TRUE(stored);
    EXPECT_EQ(stored->body, bytes);
    EXPECT_EQ(stored->etag, etag);
    auto listed = fake_.s3_objects("batch-in", "jobs/2024/");
    ASSERT_EQ(listed.size(), 1u);
    EXPECT_EQ(listed[0].key, colon_key);
    EXPECT_TRUE(fake_.s3_objects("other-bucket").empty());

    auto recorded = fake_.requests();
    ASSERT_EQ(recorded.size(), 2u);
    for (const auto& r : recorded) {
        EXPECT_TRUE(r.signature_ok);
        EXPECT_EQ(r.service, "s3");
        EXPECT_EQ(r.s3_bucket, "batch-in");
        EXPECT_EQ(r.s3_key, colon_key);
    }
    EXPECT_EQ(recorded[0].request_id, put_res["x-amz-request-id"]);

    // Signed the Bedrock way (canonical URI `%253A`), the same request is refused.
    auto double_encoded = s3_request(http::verb::get, colon_key_path);
    sign_custom(double_encoded, "s3", false, true);
    auto res = send_once(fake_.port(), double_encoded);
    EXPECT_EQ(res.result_int(), 403u) << res.body();
    EXPECT_EQ(s3_code(res), "SignatureDoesNotMatch") << res.body();
}

TEST_F(fake_bedrock_test, s3_get_of_a_missing_key_is_no_such_key) {
    auto get = s3_request(http::verb::get, "/batch-in/nothing/here.jsonl");
    bgw::test::sign_request(get, good_creds, "us-east-1", now(), "s3");
    auto res = send_once(fake_.port(), get);
    EXPECT_EQ(res.result_int(), 404u);
    EXPECT_EQ(res[http::field::content_type], "application/xml");
    EXPECT_EQ(s3_code(res), "NoSuchKey") << res.body();
    EXPECT_NE(res.body().find("<Key>nothing/here.jsonl</Key>"), std::string::npos) << res.body();
}

struct s3_rejection_case {
    const char* name;
    void (*sign)(request&);
    const char* code;
    const char* message_part;
};

const s3_rejection_case s3_rejection_cases[] = {
    {"wrong_content_sha256_signed",
     [](request& r) {
         r.set("X-Amz-Content-SHA256", bgw::aws::sha256_hex("something else"));
         bgw::test::sign_request(r, good_creds, "us-east-1", now(), "s3");
     },
     "SignatureDoesNotMatch", "does not match what was computed"},
    {"unsigned_payload",
     [](request& r) {
         r.set("X-Amz-Content-SHA256", "UNSIGNED-PAYLOAD");
         bgw::test::sign_request(r, good_creds, "us-east-1", now(), "s3");
     },
     "SignatureDoesNotMatch", "does not match what was computed"},
    {"content_sha256_missing", [](request& r) { sign_custom(r, "s3", true, false); },
     "SignatureDoesNotMatch", "x-amz-content-sha256"},
    {"body_tampered",
     [](request& r) {
         bgw::test::sign_request(r, good_creds, "us-east-1", now(), "s3");
         r.body() = "{\"recordId\":\"rX\"}\n";
     },
     "SignatureDoesNotMatch", "does not match what was computed"},
    {"signed_as_bedrock",
     [](request& r) { bgw::test::sign_request(r, good_creds, "us-east-1", now(), "bedrock"); },
     "SignatureDoesNotMatch", "scoped to correct service: 's3'"},
    {"signed_as_bedrock_with_content_sha256",
     [](request& r) { sign_custom(r, "bedrock", true, true); }, "SignatureDoesNotMatch",
     "scoped to correct service: 's3'"},
    {"wrong_secret",
     [](request& r) {
         bgw::test::sign_request(r, {good_creds.access_key_id, "not-the-secret", ""}, "us-east-1",
                                 now(), "s3");
     },
     "SignatureDoesNotMatch", "does not match the signature you provided"},
    {"unknown_access_key",
     [](request& r) {
         bgw::test::sign_request(r, {"AKIDUNKNOWN", good_creds.secret_access_key, ""}, "us-east-1",
                                 now(), "s3");
     },
     "InvalidAccessKeyId", "does not exist in our records"},
    {"region_not_accepted",
     [](request& r) { bgw::test::sign_request(r, good_creds, "ap-south-1", now(), "s3"); },
     "AuthorizationHeaderMalformed", "region 'ap-south-1' is wrong"},
    {"stale_date",
     [](request& r) {
         bgw::test::sign_request(r, good_creds, "us-east-1", now() - std::chrono::minutes(6), "s3");
     },
     "RequestTimeTooSkewed", "too large"},
    {"unsigned", [](request&) {}, "AccessDenied", "Access Denied"},
};

class fake_bedrock_s3_rejects : public fake_bedrock_test,
                                public ::testing::WithParamInterface<s3_rejection_case> {};

TEST_P(fake_bedrock_s3_rejects, with_403_in_s3s_xml_shape) {
    const auto& c = GetParam();
    auto req = s3_request(http::verb::put, colon_key_path, "{\"recordId\":\"r1\"}\n");
    c.sign(req);
    auto res = send_once(fake_.port(), req);

    EXPECT_EQ(res.result_int(), 403u) << res.body();
    EXPECT_EQ(res[http::field::content_type], "application/xml");
    EXPECT_EQ(res.body().rfind(R"(<?xml version="1.0" encoding="UTF-8"?>)", 0), 0u) << res.body();
    EXPECT_EQ(s3_code(res), c.code) << res.body();
    EXPECT_NE(res.body().find(c.message_part), std::string::npos) << res.body();
    EXPECT_EQ(res.find("x-amzn-ErrorType"), res.end());
    EXPECT_FALSE(res["x-amz-request-id"].empty());
    EXPECT_FALSE(fake_.s3_object("batch-in", colon_key)) << "a rejected PUT must store nothing";
    auto recorded = fake_.requests();
    ASSERT_EQ(recorded.size(), 1u);
    EXPECT_FALSE(recorded[0].signature_ok);
    EXPECT_EQ(recorded[0].error_type, c.code);
    EXPECT_EQ(recorded[0].s3_key, colon_key);
}

INSTANTIATE_TEST_SUITE_P(cases,
                         fake_bedrock_s3_rejects,
                         ::testing::ValuesIn(s3_rejection_cases),
                         [](const auto& param_info) { return std::string(param_info.param.name); });

TEST_F(fake_bedrock_test, a_runtime_request_signed_as_s3_is_refused_the_bedrock_way) {
    auto req = make_request(http::verb::post, claude_path, R"({"prompt":"hi"})");
    bgw::test::sign_request(req, good_creds, "us-east-1", now(), "s3");
    auto res = send_once(fake_.port(), req);
    EXPECT_EQ(res.result_int(), 403u) << res.body();
    EXPECT_EQ(error_code(res), "InvalidSignatureException");
    EXPECT_EQ(json_string(parse_json(res.body()), "message"),
              "Credential should be scoped to correct service: 'bedrock'.");
}

// --- the control plane's batch jobs -------------------------------------------------------------

constexpr std::string_view role_arn = "arn:aws:iam::123456789012:role/BedrockBatch";

std::string job_body(std::string_view name,
                     std::string_view model_id,
                     std::string_view input_uri,
                     std::string_view extra = {}) {
    return R"({"jobName":")" + std::string(name) + R"(","roleArn":")" + std::string(role_arn) +
           R"(","modelId":")" + std::string(model_id) +
           R"(","inputDataConfig":{"s3InputDataConfig":{"s3Uri":")" + std::string(input_uri) +
           R"(","s3InputFormat":"JSONL"}},"outputDataConfig":{"s3OutputDataConfig":)" +
           R"({"s3Uri":"s3://batch-out/results"}})" + std::string(extra) + "}";
}

/// botocore's label encoding: everything but unreserved characters.
std::string uri_label(std::string_view s) {
    std::string out;
    for (unsigned char c : s) {
        if (std::isalnum(c) || c == '-' || c == '.' || c == '_' || c == '~') {
            out.push_back(static_cast<char>(c));
        } else {
            static constexpr char hex[] = "0123456789ABCDEF";
            out += {'%', hex[c >> 4], hex[c & 0xf]};
        }
    }
    return out;
}

class fake_batch_test : public fake_bedrock_test {
protected:
    void put_input(std::string_view key, std::string body) {
        fake_.put_s3_object("batch-in", key, std::move(body), "application/x-ndjson");
    }
    response create(std::string body) {
        return signed_send(make_request(http::verb::post, "/model-invocation-job", std::move(body)),
                           good_creds, "eu-west-1");
    }
    std::string create_arn(std::string body) {
        auto res = create(std::move(body));
        EXPECT_EQ(res.result_int(), 200u) << res.body();
        return json_string(parse_json(res.body()), "jobArn");
    }
    rapidjson::Document get_job(std::string_view identifier) {
        auto res = signed_send(
            make_request(http::verb::get, "/model-invocation-job/" + uri_label(identifier)));
        EXPECT_EQ(res.result_int(), 200u) << res.body();
        return parse_json(res.body());
    }
    static std::vector<std::string> lines(const std::string& s) {
        std::vector<std::string> out;
        std::size_t start = 0;
        while (start < s.size()) {
            auto nl = s.find('\n', start);
            out.push_back(s.substr(start, nl - start));
            if (nl == std::string::npos) break;
            start = nl + 1;
        }
        return out;
    }
};

constexpr std::string_view converse_input =
    R"({"recordId":"rec-1","modelInput":{"messages":[{"role":"user","content":[{"text":"one"}]}]}})"
    "\n"
    R"({"recordId":"rec-2","modelInput":{"messages":[{"role":"user","content":[{"text":"two"}]}]}})"
    "\n";

TEST_F(fake_batch_test, create_validates_required_fields_and_the_input_object) {
    put_input("in/records.jsonl", std::string(converse_input));
    constexpr std::string_view in_uri = "s3://batch-in/in/records.jsonl";
    const std::string missing_output =
        R"({"jobName":"j","roleArn":")" + std::string(role_arn) +
        R"(","modelId":"m","inputDataConfig":{"s3InputDataConfig":{"s3Uri":"s3://batch-in/in/records.jsonl"}}})";
    for (auto [what, body] : {
             std::pair{"no input object", job_body("job1", "m", "s3://batch-in/in/absent.jsonl")},
             std::pair{"input bucket absent", job_body("job1", "m", "s3://nope/in/records.jsonl")},
             std::pair{"no jobName", job_body("", "m", in_uri)},
             std::pair{"jobName too long", job_body(std::string(64, 'a'), "m", in_uri)},
             std::pair{"jobName pattern", job_body("-bad", "m", in_uri)},
             std::pair{"no modelId", job_body("job1", "", in_uri)},
             std::pair{"no input s3Uri",
                       std::string(R"({"jobName":"j","roleArn":")") + std::string(role_arn) +
                           R"(","modelId":"m","inputDataConfig":{"s3InputDataConfig":{}},)"
                           R"("outputDataConfig":{"s3OutputDataConfig":{"s3Uri":"s3://o/"}}})"},
             std::pair{"no output", missing_output},
             std::pair{"no roleArn", std::string(R"({"jobName":"j","modelId":"m"})")},
             std::pair{"bad invocation type",
                       job_body("job1", "m", in_uri, R"(,"modelInvocationType":"Chat")")},
             std::pair{"not json", std::string("{nope")},
         }) {
        auto res = create(body);
        EXPECT_EQ(res.result_int(), 400u) << what << ": " << res.body();
        EXPECT_EQ(error_code(res), "ValidationException") << what;
        EXPECT_TRUE(parse_json(res.body()).HasMember("message")) << what;
    }
    EXPECT_EQ(fake_.batch_jobs_created(), 0u);
    EXPECT_TRUE(fake_.batch_jobs().empty());
    for (const auto& r : fake_.requests()) EXPECT_FALSE(r.created_job);

    auto res = create(job_body("job1", "m", in_uri));
    EXPECT_EQ(res.result_int(), 200u) << res.body();
    EXPECT_EQ(fake_.batch_jobs_created(), 1u);
}

TEST_F(fake_batch_test, a_job_goes_submitted_in_progress_completed_and_writes_the_output) {
    put_input("in/2024/records.jsonl", std::string(converse_input));
    auto arn = create_arn(job_body(
        "conv-job", "anthropic.claude-3-haiku-20240307-v1:0", "s3://batch-in/in/2024/records.jsonl",
        R"(,"modelInvocationType":"Converse","clientRequestToken":"t-1")"));
    const std::string prefix = "arn:aws:bedrock:eu-west-1:123456789012:model-invocation-job/";
    ASSERT_EQ(arn.rfind(prefix, 0), 0u) << arn;
    const auto id = arn.substr(prefix.size());
    ASSERT_EQ(id.size(), 12u);
    for (char c : id) EXPECT_TRUE(std::islower(static_cast<unsigned char>(c)) || std::isdigit(c));
    EXPECT_TRUE(fake_.requests().back().created_job);

    auto first = get_job(arn);
    EXPECT_EQ(json_string(first, "status"), "Submitted");
    EXPECT_EQ(json_string(first, "jobArn"), arn);
    EXPECT_EQ(json_string(first, "jobName"), "conv-job");
    EXPECT_EQ(json_string(first, "modelId"), "anthropic.claude-3-haiku-20240307-v1:0");
    EXPECT_EQ(json_string(first, "roleArn"), role_arn);
    EXPECT_EQ(json_string(first, "clientRequestToken"), "t-1");
    EXPECT_EQ(json_string(first, "modelInvocationType"), "Converse");
    auto submit = json_string(first, "submitTime");
    EXPECT_EQ(submit.size(), 20u) << submit;  // 2024-11-20T17:45:23Z
    EXPECT_EQ(submit[10], 'T');
    EXPECT_EQ(submit.back(), 'Z');
    EXPECT_EQ(json_string(first["inputDataConfig"]["s3InputDataConfig"], "s3Uri"),
              "s3://batch-in/in/2024/records.jsonl");
    EXPECT_EQ(json_string(first["outputDataConfig"]["s3OutputDataConfig"], "s3Uri"),
              "s3://batch-out/results");
    EXPECT_FALSE(first.HasMember("totalRecordCount"));

    EXPECT_EQ(json_string(get_job(id), "status"), "InProgress");  // the bare id works too
    EXPECT_TRUE(fake_.s3_objects("batch-out").empty());

    auto done = get_job(arn);
    EXPECT_EQ(json_string(done, "status"), "Completed");
    EXPECT_EQ(done["totalRecordCount"].GetUint64(), 2u);
    EXPECT_EQ(done["successRecordCount"].GetUint64(), 2u);
    EXPECT_EQ(done["errorRecordCount"].GetUint64(), 0u);
    EXPECT_TRUE(done.HasMember("endTime"));
    EXPECT_EQ(json_string(get_job(arn), "status"), "Completed");  // and stays so

    const std::string out_key = "results/" + id + "/records.jsonl.out";
    auto out = fake_.s3_object("batch-out", out_key);
    ASSERT_TRUE(out) << out_key;
    auto out_lines = lines(out->body);
    ASSERT_EQ(out_lines.size(), 2u) << out->body;
    for (std::size_t i = 0; i < out_lines.size(); ++i) {
        auto line = parse_json(out_lines[i]);
        ASSERT_TRUE(line.IsObject()) << out_lines[i];
        EXPECT_EQ(json_string(line, "recordId"), "rec-" + std::to_string(i + 1));
        EXPECT_EQ(json_string(line["modelInput"]["messages"][0]["content"][0], "text"),
                  i == 0 ? "one" : "two");
        const auto& output = line["modelOutput"];
        EXPECT_EQ(json_string(output["output"]["message"]["content"][0], "text"), "batch answer");
        EXPECT_EQ(json_string(output, "stopReason"), "end_turn");
        EXPECT_EQ(output["usage"]["outputTokens"].GetUint64(), 3u);
        EXPECT_EQ(output["usage"]["totalTokens"].GetUint64(),
                  output["usage"]["inputTokens"].GetUint64() + 3);
        EXPECT_FALSE(line.HasMember("error"));
    }
    auto manifest = fake_.s3_object("batch-out", "results/" + id + "/manifest.json.out");
    ASSERT_TRUE(manifest);
    auto m = parse_json(manifest->body);
    EXPECT_EQ(m["totalRecordCount"].GetUint64(), 2u);
    EXPECT_EQ(m["errorRecordCount"].GetUint64(), 0u);

    // A signed S3 GET reads the same bytes.
    auto get = s3_request(http::verb::get, "/batch-out/" + out_key);
    bgw::test::sign_request(get, good_creds, "us-east-1", now(), "s3");
    auto res = send_once(fake_.port(), get);
    ASSERT_EQ(res.result_int(), 200u) << res.body();
    EXPECT_EQ(res.body(), out->body);

    auto jobs = fake_.batch_jobs();
    ASSERT_EQ(jobs.size(), 1u);
    EXPECT_EQ(jobs[0].job_id, id);
    EXPECT_EQ(jobs[0].status, "Completed");
    EXPECT_EQ(jobs[0].get_count, 4u);
    EXPECT_EQ(jobs[0].output_object_uri, "s3://batch-out/" + out_key);
}

TEST_F(fake_batch_test, a_failed_record_makes_the_job_partially_completed) {
    put_input("mixed.jsonl",
              R"({"recordId":"ok-1","modelInput":{"prompt":"fine"}})"
              "\n\n"
              R"({"recordId":"bad-1","modelInput":{"prompt":"please fake-record-error now"}})"
              "\r\n"
              R"({"modelInput":{"prompt":"no id"}})");
    auto arn = create_arn(job_body("mixed", "amazon.nova-lite-v1:0", "s3://batch-in/mixed.jsonl"));
    EXPECT_EQ(json_string(get_job(arn), "status"), "Submitted");
    EXPECT_EQ(json_string(get_job(arn), "status"), "InProgress");
    auto done = get_job(arn);
    EXPECT_EQ(json_string(done, "status"), "PartiallyCompleted");
    EXPECT_EQ(done["totalRecordCount"].GetUint64(), 3u);
    EXPECT_EQ(done["successRecordCount"].GetUint64(), 2u);
    EXPECT_EQ(done["errorRecordCount"].GetUint64(), 1u);
    EXPECT_FALSE(done.HasMember("modelInvocationType"));

    auto id = arn.substr(arn.rfind('/') + 1);
    auto out = fake_.s3_object("batch-out", "results/" + id + "/mixed.jsonl.out");
    ASSERT_TRUE(out);
    auto out_lines = lines(out->body);
    ASSERT_EQ(out_lines.size(), 3u) << out->body;

    auto ok = parse_json(out_lines[0]);
    EXPECT_EQ(json_string(ok, "recordId"), "ok-1");
    EXPECT_TRUE(ok["modelOutput"]["fakeBatch"].GetBool());
    EXPECT_EQ(json_string(ok["modelOutput"], "recordId"), "ok-1");
    EXPECT_EQ(json_string(ok["modelOutput"], "modelId"), "amazon.nova-lite-v1:0");

    auto bad = parse_json(out_lines[1]);
    EXPECT_EQ(json_string(bad, "recordId"), "bad-1");
    EXPECT_FALSE(bad.HasMember("modelOutput"));
    EXPECT_EQ(bad["error"]["errorCode"].GetInt(), 400);
    EXPECT_EQ(json_string(bad["error"], "errorMessage"), "fake-bedrock scripted record error");
    EXPECT_EQ(json_string(bad["modelInput"], "prompt"), "please fake-record-error now");

    auto made_up = parse_json(out_lines[2]);
    EXPECT_FALSE(json_string(made_up, "recordId").empty());
    EXPECT_TRUE(made_up.HasMember("modelOutput"));

    auto manifest =
        parse_json(fake_.s3_object("batch-out", "results/" + id + "/manifest.json.out")->body);
    EXPECT_EQ(manifest["successRecordCount"].GetUint64(), 2u);
    EXPECT_EQ(manifest["errorRecordCount"].GetUint64(), 1u);
}

TEST_F(fake_batch_test, the_same_client_request_token_returns_the_same_job) {
    put_input("in.jsonl", std::string(converse_input));
    const auto body =
        job_body("idem", "m", "s3://batch-in/in.jsonl", R"(,"clientRequestToken":"tok-42")");
    auto first = create_arn(body);
    auto second = create_arn(body);
    EXPECT_EQ(first, second);
    EXPECT_EQ(fake_.batch_jobs_created(), 1u);
    EXPECT_EQ(fake_.batch_jobs().size(), 1u);
    auto recorded = fake_.requests();
    ASSERT_EQ(recorded.size(), 2u);
    EXPECT_TRUE(recorded[0].created_job);
    EXPECT_FALSE(recorded[1].created_job);

    // Another token, or none, is another job.
    EXPECT_NE(create_arn(job_body("idem", "m", "s3://batch-in/in.jsonl",
                                  R"(,"clientRequestToken":"tok-43")")),
              first);
    EXPECT_NE(create_arn(job_body("idem", "m", "s3://batch-in/in.jsonl")), first);
    EXPECT_EQ(fake_.batch_jobs_created(), 3u);
}

TEST_F(fake_batch_test, fake_batch_fail_ends_failed_with_a_message_and_no_output) {
    put_input("in.jsonl", std::string(converse_input));
    auto arn = create_arn(job_body("doomed", "fake-batch-fail", "s3://batch-in/in.jsonl"));
    EXPECT_EQ(json_string(get_job(arn), "status"), "Submitted");
    EXPECT_EQ(json_string(get_job(arn), "status"), "InProgress");
    auto failed = get_job(arn);
    EXPECT_EQ(json_string(failed, "status"), "Failed");
    EXPECT_EQ(json_string(failed, "message"), "fake-bedrock scripted batch job failure");
    EXPECT_FALSE(failed.HasMember("totalRecordCount"));
    EXPECT_TRUE(fake_.s3_objects("batch-out").empty());
    EXPECT_EQ(json_string(get_job(arn), "status"), "Failed");
}

TEST_F(fake_batch_test, unknown_jobs_are_resource_not_found) {
    for (std::string_view id :
         {"abcdefghijkl",
          "arn:aws:bedrock:us-east-1:123456789012:model-invocation-job/zzzzzzzzzzzz"}) {
        auto res =
            signed_send(make_request(http::verb::get, "/model-invocation-job/" + uri_label(id)));
        EXPECT_EQ(res.result_int(), 404u) << id;
        EXPECT_EQ(error_code(res), "ResourceNotFoundException") << id;
    }
}

TEST(fake_batch_polls, in_progress_lasts_the_configured_number_of_polls) {
    fake_options o;
    o.credentials = good_creds;
    o.batch_in_progress_polls = 3;
    fake_bedrock fake(o);
    fake.start();
    fake.put_s3_object("b", "k.jsonl", R"({"recordId":"1","modelInput":{}})");
    auto create = make_request(http::verb::post, "/model-invocation-job",
                               job_body("polls", "m", "s3://b/k.jsonl"));
    bgw::test::sign_request(create, good_creds, "us-east-1", now());
    auto arn = json_string(parse_json(send_once(fake.port(), create).body()), "jobArn");
    std::vector<std::string> seen;
    for (int i = 0; i < 6; ++i) {
        auto get = make_request(http::verb::get, "/model-invocation-job/" + uri_label(arn));
        bgw::test::sign_request(get, good_creds, "us-east-1", now());
        seen.push_back(json_string(parse_json(send_once(fake.port(), get).body()), "status"));
    }
    EXPECT_EQ(seen, (std::vector<std::string>{"Submitted", "InProgress", "InProgress", "InProgress",
                                              "Completed", "Completed"}));
}

TEST(fake_bedrock_helpers, percent_decode) {
    EXPECT_EQ(bgw::test::percent_decode("a%3Ab%2fc"), "a:b/c");
    EXPECT_EQ(bgw::test::percent_decode("100%"), "100%");
    EXPECT_EQ(bgw::test::percent_decode("%zz%4"), "%zz%4");
    EXPECT_EQ(bgw::test::percent_decode("%E6%97%A5"), "日");
}

}  // namespace
