#include "bgw/routing/upstream_request.hpp"

#include <algorithm>

#include "support/fixtures.hpp"
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/string_body.hpp>
#include <gtest/gtest.h>

namespace {

namespace http = boost::beast::http;
using namespace std::chrono_literals;

bgw::config::config two_regions() {
    return bgw::test::config_from(
        R"({"default_region":"us-east-1","regions":{"us-east-1":{},"eu-west-1":{}}})");
}

const std::string app_sig_eu =
    "AWS4-HMAC-SHA256 Credential=AKIDAPP/20260101/eu-west-1/bedrock/aws4_request, "
    "SignedHeaders=host;x-amz-date, "
    "Signature=0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

const bgw::aws::header* find(const std::vector<bgw::aws::header>& hs, std::string_view name) {
    auto it = std::find_if(hs.begin(), hs.end(), [&](const auto& h) {
        return h.name.size() == name.size() &&
               std::equal(h.name.begin(), h.name.end(), name.begin(), [](char a, char b) {
                   return std::tolower(static_cast<unsigned char>(a)) ==
                          std::tolower(static_cast<unsigned char>(b));
               });
    });
    return it == hs.end() ? nullptr : &*it;
}

TEST(prepare_upstream_request, replaces_the_apps_auth_and_keeps_bedrock_headers) {
    auto cfg = two_regions();
    http::fields in;
    in.set(http::field::host, "127.0.0.1:8080");
    in.set(http::field::authorization, app_sig_eu);
    in.set("X-Amz-Date", "20260101T000000Z");
    in.set("X-Amz-Security-Token", "APP-TOKEN");
    in.set("X-Amz-Content-Sha256", "UNSIGNED-PAYLOAD");
    in.set(http::field::connection, "keep-alive");
    in.set(http::field::cookie, "session=1");
    in.set(http::field::user_agent, "Boto3/1.26");
    in.set(http::field::content_type, "application/json");
    in.set(http::field::accept, "application/json");
    in.set("X-Amzn-Bedrock-Trace", "ENABLED");
    in.set("X-Amzn-Bedrock-Service-Tier", "flex");
    in.set("X-Amzn-Bedrock-Evil", "a\r\nInjected: 1");

    auto rt = bgw::routing::parse_runtime_target(http::verb::post, "/model/a:b/invoke");
    ASSERT_TRUE(rt);
    bgw::aws::credentials creds{"AKIDGATEWAY", "gateway-secret", "GW-TOKEN"};
    auto now = std::chrono::sys_days{std::chrono::year{2026} / 11 / 23} + 9h + 30min;
    std::string body = R"({"prompt":"hi"})";
    const auto& ep = cfg.regions.at("eu-west-1");
    auto up = bgw::routing::prepare_upstream_request(http::verb::post, *rt, in, body,
                                                     {.endpoint = ep, .region = "eu-west-1"},
                                                     {.creds = creds, .now = now});

    EXPECT_EQ(up.target, "/model/a%3Ab/invoke");
    ASSERT_TRUE(find(up.headers, "host"));
    EXPECT_EQ(find(up.headers, "host")->value, "bedrock-runtime.eu-west-1.amazonaws.com");
    EXPECT_EQ(find(up.headers, "x-amz-date")->value, "20261123T093000Z");
    EXPECT_EQ(find(up.headers, "x-amz-security-token")->value, "GW-TOKEN");
    EXPECT_EQ(find(up.headers, "x-amzn-bedrock-trace")->value, "ENABLED");
    EXPECT_EQ(find(up.headers, "x-amzn-bedrock-service-tier")->value, "flex");
    EXPECT_EQ(find(up.headers, "content-type")->value, "application/json");
    EXPECT_EQ(find(up.headers, "accept")->value, "application/json");
    EXPECT_FALSE(find(up.headers, "x-amz-content-sha256"));
    EXPECT_FALSE(find(up.headers, "connection"));
    EXPECT_FALSE(find(up.headers, "cookie"));
    EXPECT_FALSE(find(up.headers, "x-amzn-bedrock-evil"));
    EXPECT_EQ(std::count_if(up.headers.begin(), up.headers.end(),
                            [](const auto& h) { return h.name == "Authorization"; }),
              1);
    // Exactly one Authorization: the gateway's, scoped to the chosen region and service bedrock,
    // and it must be the signature of what is actually sent.
    const auto& authz = up.headers.back();
    ASSERT_EQ(authz.name, "Authorization");
    auto parsed = bgw::aws::parse_authorization(authz.value);
    ASSERT_TRUE(parsed);
    EXPECT_EQ(parsed->access_key_id, "AKIDGATEWAY");
    EXPECT_EQ(parsed->region, "eu-west-1");
    EXPECT_EQ(parsed->service, "bedrock");
    EXPECT_EQ(parsed->date, "20261123");

    std::vector<bgw::aws::header> sent(up.headers.begin(), up.headers.end() - 1);
    std::string hash = bgw::aws::sha256_hex(body);
    bgw::aws::signing_input check{.method = "POST",
                                  .wire_path = "/model/a%3Ab/invoke",
                                  .query = "",
                                  .headers = sent,
                                  .payload_sha256 = hash,
                                  .region = "eu-west-1",
                                  .service = "bedrock",
                                  .time = now};
    EXPECT_EQ(bgw::aws::sign_v4(check, creds).signature_hex, parsed->signature_hex);
    std::string creq = bgw::aws::canonical_request(check);
    EXPECT_NE(creq.find("/model/a%253Ab/invoke"), std::string::npos) << creq;
    EXPECT_NE(creq.find("x-amz-security-token:GW-TOKEN"), std::string::npos) << creq;
}

// A presigned request behind an endpoint with a trailing slash (`http://gw/eu-west-1/`): what
// goes upstream is the canonical path, no query at all, and the gateway's header signature.
TEST(prepare_upstream_request, presigned_request_goes_canonical_and_signed_in_headers) {
    auto cfg = two_regions();
    auto rt = bgw::routing::parse_runtime_target(
        http::verb::post,
        "/eu-west-1//model/a:b/converse?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIDAPP"
        "%2F20260101%2Feu-west-1%2Fbedrock%2Faws4_request&X-Amz-Date=20260101T000000Z&X-Amz-"
        "Expires=300&X-Amz-SignedHeaders=host&X-Amz-Security-Token=APP-TOKEN&X-Amz-Signature="
        "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef");
    ASSERT_TRUE(rt) << rt.error().message;
    http::fields in;
    in.set(http::field::host, "127.0.0.1:8080");
    in.set(http::field::content_type, "application/json");
    bgw::aws::credentials creds{"AKIDGATEWAY", "gateway-secret", ""};
    const auto now = std::chrono::sys_seconds{std::chrono::seconds{1'790'000'000}};
    const std::string body = R"({"messages":[]})";
    auto up = bgw::routing::prepare_upstream_request(
        http::verb::post, *rt, in, body,
        {.endpoint = cfg.regions.at("eu-west-1"), .region = "eu-west-1"},
        {.creds = creds, .now = now});
    EXPECT_EQ(up.target, "/model/a%3Ab/converse");
    EXPECT_FALSE(find(up.headers, "x-amz-security-token"));  // the app's token went with the query
    const auto& authz = up.headers.back();
    ASSERT_EQ(authz.name, "Authorization");
    auto parsed = bgw::aws::parse_authorization(authz.value);
    ASSERT_TRUE(parsed);
    EXPECT_EQ(parsed->access_key_id, "AKIDGATEWAY");
    EXPECT_EQ(parsed->region, "eu-west-1");
    std::vector<bgw::aws::header> sent(up.headers.begin(), up.headers.end() - 1);
    const std::string hash = bgw::aws::sha256_hex(body);
    bgw::aws::signing_input check{.method = "POST",
                                  .wire_path = "/model/a%3Ab/converse",
                                  .query = "",
                                  .headers = sent,
                                  .payload_sha256 = hash,
                                  .region = "eu-west-1",
                                  .service = "bedrock",
                                  .time = now};
    EXPECT_EQ(bgw::aws::sign_v4(check, creds).signature_hex, parsed->signature_hex);
}

TEST(prepare_upstream_request, keeps_the_query_for_list_operations) {
    auto cfg = two_regions();
    auto rt = bgw::routing::parse_runtime_target(
        http::verb::get, "/async-invoke?maxResults=10&sortOrder=Descending");
    ASSERT_TRUE(rt);
    http::fields in;
    bgw::aws::credentials creds{"AKID", "secret", ""};
    auto up = bgw::routing::prepare_upstream_request(
        http::verb::get, *rt, in, "",
        {.endpoint = cfg.regions.at("us-east-1"), .region = "us-east-1"},
        {.creds = creds, .now = std::chrono::sys_seconds{std::chrono::seconds{1'700'000'000}}});
    EXPECT_EQ(up.target, "/async-invoke?maxResults=10&sortOrder=Descending");
    EXPECT_FALSE(find(up.headers, "x-amz-security-token"));

    // Presigned: the filters go on, the client's signature does not, and the gateway's header
    // signature covers exactly the query sent.
    auto presigned = bgw::routing::parse_runtime_target(
        http::verb::get,
        "/async-invoke?X-Amz-Date=20260101T000000Z&maxResults=10&X-Amz-Signature=00&sortOrder="
        "Descending&X-Amz-SignedHeaders=host");
    ASSERT_TRUE(presigned);
    const auto now = std::chrono::sys_seconds{std::chrono::seconds{1'700'000'000}};
    auto up2 = bgw::routing::prepare_upstream_request(
        http::verb::get, *presigned, in, "",
        {.endpoint = cfg.regions.at("us-east-1"), .region = "us-east-1"},
        {.creds = creds, .now = now});
    EXPECT_EQ(up2.target, up.target);
    EXPECT_EQ(up2.headers.back().value, up.headers.back().value);
}

TEST(prepare_upstream_request, a_route_service_tier_replaces_the_clients) {
    auto cfg = two_regions();
    auto rt = bgw::routing::parse_runtime_target(http::verb::post, "/model/m/invoke");
    ASSERT_TRUE(rt);
    http::fields in;
    in.set("X-Amzn-Bedrock-Service-Tier", "priority");
    bgw::aws::credentials creds{"AKID", "secret", ""};
    auto up = bgw::routing::prepare_upstream_request(
        http::verb::post, *rt, in, "{}",
        {.endpoint = cfg.regions.at("us-east-1"), .region = "us-east-1", .service_tier = "flex"},
        {.creds = creds, .now = std::chrono::sys_seconds{1700000000s}});
    auto tiers = std::count_if(up.headers.begin(), up.headers.end(), [](const auto& h) {
        return h.name == "X-Amzn-Bedrock-Service-Tier";
    });
    EXPECT_EQ(tiers, 1);
    ASSERT_TRUE(find(up.headers, "x-amzn-bedrock-service-tier"));
    EXPECT_EQ(find(up.headers, "x-amzn-bedrock-service-tier")->value, "flex");
}

TEST(with_converse_service_tier, sets_or_replaces_the_body_field) {
    auto added = bgw::routing::with_converse_service_tier(R"({"messages":[]})", "flex");
    ASSERT_TRUE(added);
    EXPECT_EQ(*added, R"({"messages":[],"serviceTier":{"type":"flex"}})");
    auto replaced = bgw::routing::with_converse_service_tier(
        R"({"serviceTier":{"type":"priority"},"messages":[]})", "default");
    ASSERT_TRUE(replaced);
    EXPECT_EQ(*replaced, R"({"serviceTier":{"type":"default"},"messages":[]})");
    EXPECT_FALSE(bgw::routing::with_converse_service_tier("[1]", "flex"));
    EXPECT_FALSE(bgw::routing::with_converse_service_tier("{", "flex"));
}

TEST(prepare_upstream_request, a_bedrock_api_key_replaces_sigv4) {
    auto cfg = two_regions();
    auto rt = bgw::routing::parse_runtime_target(http::verb::post, "/model/m/invoke");
    ASSERT_TRUE(rt);
    http::fields in;
    in.set(http::field::authorization, "AWS4-HMAC-SHA256 Credential=APP/x");
    const bgw::aws::credentials none;
    auto up = bgw::routing::prepare_upstream_request(
        http::verb::post, *rt, in, "{}",
        {.endpoint = cfg.regions.at("us-east-1"), .region = "us-east-1"},
        {.creds = none,
         .now = std::chrono::sys_seconds{1700000000s},
         .bearer_token = "bedrock-api-key-123"});
    ASSERT_TRUE(find(up.headers, "authorization"));
    EXPECT_EQ(find(up.headers, "authorization")->value, "Bearer bedrock-api-key-123");
    EXPECT_EQ(std::count_if(up.headers.begin(), up.headers.end(),
                            [](const auto& h) { return h.name == "Authorization"; }),
              1);
    EXPECT_FALSE(find(up.headers, "x-amz-date"));
}

TEST(wire_head, writes_the_request_line_fields_in_order_and_the_length) {
    bgw::routing::upstream_request r{http::verb::post,
                                     "/model/a%3Ab/invoke",
                                     {{"Host", "bedrock-runtime.us-east-1.amazonaws.com"},
                                      {"Content-Type", "application/json"},
                                      {"X-Amz-Date", "20261123T093000Z"}}};
    EXPECT_EQ(bgw::routing::wire_head(r, 15),
              "POST /model/a%3Ab/invoke HTTP/1.1\r\n"
              "Host: bedrock-runtime.us-east-1.amazonaws.com\r\n"
              "Content-Type: application/json\r\n"
              "X-Amz-Date: 20261123T093000Z\r\n"
              "Content-Length: 15\r\n"
              "\r\n");
    // A POST without a body still says so; a GET without one says nothing.
    EXPECT_NE(bgw::routing::wire_head(r, 0).find("Content-Length: 0\r\n"), std::string::npos);
    r.method = http::verb::get;
    EXPECT_EQ(bgw::routing::wire_head(r, 0).find("Content-Length"), std::string::npos);
}

TEST(wire_head, is_what_beasts_parser_reads_back_with_the_body) {
    auto cfg = two_regions();
    http::fields in;
    in.set(http::field::content_type, "application/json");
    in.set(http::field::accept, "application/json");
    auto rt = bgw::routing::parse_runtime_target(http::verb::post, "/model/a:b/converse");
    ASSERT_TRUE(rt);
    bgw::aws::credentials creds{"AKIDGATEWAY", "gateway-secret", ""};
    auto now = std::chrono::sys_days{std::chrono::year{2026} / 11 / 23} + 9h;
    std::string body = R"({"messages":[]})";
    auto up = bgw::routing::prepare_upstream_request(
        http::verb::post, *rt, in, body,
        {.endpoint = cfg.regions.at("us-east-1"), .region = "us-east-1"},
        {.creds = creds, .now = now});
    std::string wire = bgw::routing::wire_head(up, body.size()) + body;

    http::request_parser<http::string_body> parser;
    boost::system::error_code ec;
    parser.eager(true);
    const auto used = parser.put(boost::asio::buffer(wire), ec);
    ASSERT_FALSE(ec) << ec.message();
    EXPECT_EQ(used, wire.size());
    ASSERT_TRUE(parser.is_done());
    const auto& msg = parser.get();
    EXPECT_EQ(msg.method(), http::verb::post);
    EXPECT_EQ(msg.target(), up.target);
    EXPECT_TRUE(msg.keep_alive());
    EXPECT_EQ(msg.body(), body);
    for (const auto& h : up.headers) EXPECT_EQ(msg[h.name], h.value) << h.name;
    EXPECT_EQ(std::distance(msg.begin(), msg.end()), static_cast<long>(up.headers.size()) + 1);
}

}  // namespace
