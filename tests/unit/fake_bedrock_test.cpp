// The fake Bedrock must be a strict judge, or every gateway test built on it proves nothing:
// a request signed correctly (by the real signer, as botocore would) is accepted, and each kind
// of mistake the gateway could make is rejected with Bedrock's status and x-amzn-ErrorType.

#include "fakes/fake_bedrock.hpp"

#include "bgw/aws/eventstream.hpp"
#include "bgw/aws/sigv4.hpp"

#include <chrono>
#include <string>
#include <string_view>
#include <tuple>
#include <utility>

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

TEST(fake_bedrock_helpers, percent_decode) {
    EXPECT_EQ(bgw::test::percent_decode("a%3Ab%2fc"), "a:b/c");
    EXPECT_EQ(bgw::test::percent_decode("100%"), "100%");
    EXPECT_EQ(bgw::test::percent_decode("%zz%4"), "%zz%4");
    EXPECT_EQ(bgw::test::percent_decode("%E6%97%A5"), "日");
}

}  // namespace
