// The credential provider chain against a fake world: a map environment, in-memory files, a
// scripted HTTP peer that records every request, and a scripted credential_process.

#include "bgw/aws/credential_chain.hpp"

#include <chrono>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <gtest/gtest.h>

namespace {

using namespace std::chrono;
using namespace std::chrono_literals;
using bgw::aws::fetch_request;
using bgw::aws::fetch_response;
using bgw::aws::provider_io;
using bgw::aws::timed_credentials;

// Every secret the fixtures use. No error message may contain any of them.
constexpr const char* env_secret = "EnvSecretKeyEXAMPLEzzzzzzzzzzzzzzzzzzzzzz";
constexpr const char* env_token = "EnvSessionTokenEXAMPLE";
constexpr const char* profile_secret = "ProfileSecretKeyEXAMPLEyyyyyyyyyyyyyyyyyy";
constexpr const char* profile_token = "ProfileSessionTokenEXAMPLE";
constexpr const char* sts_secret = "StsSecretKeyEXAMPLExxxxxxxxxxxxxxxxxxxxxx";
constexpr const char* sts_token = "FwoGZXIvYXdzEStsSessionTokenEXAMPLE//////////wEaDH";
constexpr const char* jwt = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzeXN0ZW06c2EifQ.c2lnbmF0dXJl";
constexpr const char* process_secret = "ProcessSecretKeyEXAMPLEwwwwwwwwwwwwwwwwww";
constexpr const char* json_secret = "JsonSecretKeyEXAMPLEvvvvvvvvvvvvvvvvvvvvvv";
constexpr const char* json_token = "JsonSessionTokenEXAMPLE";
constexpr const char* bearer = "Bearer ContainerAuthTokenEXAMPLE";
constexpr const char* bearer_in_file = "ContainerAuthTokenFromFileEXAMPLE";
constexpr const char* imds_session = "ImdsSessionTokenEXAMPLE==";
const std::vector<std::string> all_secrets = {env_secret,
                                              env_token,
                                              profile_secret,
                                              profile_token,
                                              sts_secret,
                                              sts_token,
                                              jwt,
                                              process_secret,
                                              json_secret,
                                              json_token,
                                              bearer,
                                              "ContainerAuthTokenEXAMPLE",
                                              bearer_in_file,
                                              imds_session};

const sys_seconds now_fixed = sys_days{2026y / 11 / 23} + 12h;

std::string sts_ok(std::string_view action, std::string_view id = "ASIASTSEXAMPLE0001") {
    return "<" + std::string(action) +
           "Response xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\">\n"
           "  <" +
           std::string(action) +
           "Result>\n"
           "    <SubjectFromWebIdentityToken>system:serviceaccount:ai:gateway"
           "</SubjectFromWebIdentityToken>\n"
           "    <AssumedRoleUser>\n"
           "      <AssumedRoleId>AROA3XFRBF535PLBIFPI4:s3-access-example</AssumedRoleId>\n"
           "      <Arn>arn:aws:sts::123456789012:assumed-role/demo/s3-access-example</Arn>\n"
           "    </AssumedRoleUser>\n"
           "    <Credentials>\n"
           "      <AccessKeyId>" +
           std::string(id) +
           "</AccessKeyId>\n"
           "      <SecretAccessKey>" +
           sts_secret +
           "</SecretAccessKey>\n"
           "      <SessionToken>" +
           sts_token +
           "</SessionToken>\n"
           "      <Expiration>2026-11-23T13:00:00Z</Expiration>\n"
           "    </Credentials>\n"
           "    <PackedPolicySize>6</PackedPolicySize>\n"
           "  </" +
           std::string(action) +
           "Result>\n"
           "  <ResponseMetadata>\n"
           "    <RequestId>c6104cbe-af31-11e0-8154-cbc7ccf896c7</RequestId>\n"
           "  </ResponseMetadata>\n"
           "</" +
           std::string(action) + "Response>\n";
}

const std::string sts_denied =
    "<ErrorResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\">\n"
    "  <Error>\n"
    "    <Type>Sender</Type>\n"
    "    <Code>AccessDenied</Code>\n"
    "    <Message>User: arn:aws:iam::123456789012:user/dev is not authorized to perform: "
    "sts:AssumeRole on resource: arn:aws:iam::123456789012:role/demo</Message>\n"
    "  </Error>\n"
    "  <RequestId>4a4a3e6c-2a5b-4c8d-9b0e-1f2a3b4c5d6e</RequestId>\n"
    "</ErrorResponse>\n";

std::string creds_json(std::string_view id, std::string_view extra = "") {
    return "{\"AccessKeyId\":\"" + std::string(id) + "\",\"SecretAccessKey\":\"" + json_secret +
           "\",\"Token\":\"" + json_token + "\",\"Expiration\":\"2026-11-23T18:00:00Z\"" +
           std::string(extra) + "}";
}

/// The outside world, scripted.
struct fake_world {
    std::map<std::string, std::string> env;
    std::map<std::string, std::string> files;
    /// "METHOD URL" -> answer; anything unscripted gets no answer at all (a fetch error).
    std::map<std::string, bgw::result<fetch_response>> answers;
    std::vector<fetch_request> requests;
    std::map<std::string, bgw::result<std::string>> commands;
    std::vector<std::string> ran;
    sys_seconds now = now_fixed;

    void answer(const std::string& method,
                const std::string& url,
                unsigned status,
                std::string body) {
        answers[method + " " + url] = fetch_response{status, std::move(body)};
    }

    provider_io io() {
        provider_io io;
        io.env = [this](std::string_view name) -> std::optional<std::string> {
            auto it = env.find(std::string(name));
            if (it == env.end()) return std::nullopt;
            return it->second;
        };
        io.read_file = [this](const std::string& path) -> std::optional<std::string> {
            auto it = files.find(path);
            if (it == files.end()) return std::nullopt;
            return it->second;
        };
        io.fetch = [this](const fetch_request& r) -> bgw::result<fetch_response> {
            requests.push_back(r);
            auto it = answers.find(r.method + " " + r.url);
            if (it == answers.end()) {
                return bgw::error{boost::beast::http::status::service_unavailable,
                                  "ServiceUnavailableException", "cannot reach host: timed out"};
            }
            return it->second;
        };
        io.run = [this](const std::string& command) -> bgw::result<std::string> {
            ran.push_back(command);
            auto it = commands.find(command);
            if (it == commands.end()) {
                return bgw::error{boost::beast::http::status::service_unavailable,
                                  "ServiceUnavailableException",
                                  "credential_process exited with status 127"};
            }
            return it->second;
        };
        io.now = [this] { return now; };
        return io;
    }

    // Each source, configured.
    void with_env_keys() {
        env["AWS_ACCESS_KEY_ID"] = "AKIAENVEXAMPLE0001";
        env["AWS_SECRET_ACCESS_KEY"] = env_secret;
        env["AWS_SESSION_TOKEN"] = env_token;
    }
    void with_web_identity() {
        env["AWS_WEB_IDENTITY_TOKEN_FILE"] = "/var/run/secrets/eks/token";
        env["AWS_ROLE_ARN"] = "arn:aws:iam::123456789012:role/web";
        files["/var/run/secrets/eks/token"] = jwt;
        answer("POST", "https://sts.us-east-1.amazonaws.com/", 200,
               sts_ok("AssumeRoleWithWebIdentity", "ASIAWEBEXAMPLE0001"));
    }
    void with_profile_keys() {
        env["HOME"] = "/home/gw";
        files["/home/gw/.aws/credentials"] =
            std::string("[default]\naws_access_key_id = ") +
            "AKIAPROFILEEXAMPLE\naws_secret_access_key = " + profile_secret + "\n";
    }
    void with_container() {
        env["AWS_CONTAINER_CREDENTIALS_RELATIVE_URI"] = "/v2/credentials/task-1";
        answer("GET", "http://169.254.170.2/v2/credentials/task-1", 200,
               creds_json("ASIACONTAINEREXAMPLE"));
    }
    void with_imds(const std::string& ep = "http://169.254.169.254") {
        answer("PUT", ep + "/latest/api/token", 200, imds_session);
        answer("GET", ep + "/latest/meta-data/iam/security-credentials/", 200,
               "gateway-role\nsecond-role\n");
        answer("GET", ep + "/latest/meta-data/iam/security-credentials/gateway-role", 200,
               creds_json("ASIAIMDSEXAMPLE0001",
                          ",\"Code\":\"Success\",\"LastUpdated\":\"2026-11-23T11:55:00Z\","
                          "\"Type\":\"AWS-HMAC\""));
    }
};

std::string header_value(const fetch_request& r, std::string_view name) {
    for (const auto& h : r.headers) {
        if (h.name.size() == name.size() &&
            std::equal(h.name.begin(), h.name.end(), name.begin(), [](char a, char b) {
                return std::tolower(static_cast<unsigned char>(a)) ==
                       std::tolower(static_cast<unsigned char>(b));
            }))
            return h.value;
    }
    return "<absent>";
}

bool has_header(const fetch_request& r, std::string_view name) {
    return header_value(r, name) != "<absent>";
}

/// The form body as fields (percent-decoded).
std::map<std::string, std::string> form_fields(std::string_view body) {
    auto decode = [](std::string_view s) {
        std::string out;
        for (std::size_t i = 0; i < s.size(); ++i) {
            if (s[i] == '%' && i + 2 < s.size()) {
                out += static_cast<char>(std::stoi(std::string(s.substr(i + 1, 2)), nullptr, 16));
                i += 2;
            } else {
                out += s[i];
            }
        }
        return out;
    };
    std::map<std::string, std::string> out;
    while (!body.empty()) {
        auto amp = body.find('&');
        auto pair = body.substr(0, amp);
        body = amp == std::string_view::npos ? std::string_view{} : body.substr(amp + 1);
        auto eq = pair.find('=');
        out[decode(pair.substr(0, eq))] =
            eq == std::string_view::npos ? "" : decode(pair.substr(eq + 1));
    }
    return out;
}

void expect_clean(const bgw::error& e) {
    for (const auto& s : all_secrets) {
        EXPECT_EQ(e.message.find(s), std::string::npos) << "secret in: " << e.message;
    }
    EXPECT_EQ(e.status, boost::beast::http::status::service_unavailable);
    EXPECT_EQ(e.type, "ServiceUnavailableException");
}

// --- Pieces --------------------------------------------------------------------------------------

TEST(credential_chain_pieces, parses_iso8601) {
    struct case_ {
        const char* in;
        std::optional<sys_seconds> want;
    };
    const sys_seconds base = sys_days{2026y / 11 / 23} + 13h;
    const case_ cases[] = {
        {"2026-11-23T13:00:00Z", base},
        {"2026-11-23T13:00:00.123456Z", base},
        {"2026-11-23T13:00:00+00:00", base},
        {"2026-11-23T15:00:00+02:00", base},
        {"2026-11-23T08:30:00-04:30", base},
        {"2026-11-23T14:00:00.5+0100", base},
        {"2026-11-23T13:00:00", base},
        {" 2026-11-23T13:00:00Z\n", base},
        {"2024-02-29T00:00:00Z", sys_days{2024y / 2 / 29}},
        {"2026-02-29T00:00:00Z", std::nullopt},
        {"2026-13-01T00:00:00Z", std::nullopt},
        {"2026-11-23T24:00:00Z", std::nullopt},
        {"2026-11-23 13:00", std::nullopt},
        {"2026-11-23T13:00:00.Z", std::nullopt},
        {"2026-11-23T13:00:00Zjunk", std::nullopt},
        {"1700000000", std::nullopt},
        {"", std::nullopt},
    };
    for (const auto& c : cases) EXPECT_EQ(bgw::aws::parse_iso8601(c.in), c.want) << c.in;
}

TEST(credential_chain_pieces, redacts_key_ids) {
    EXPECT_EQ(bgw::aws::redacted_key_id("AKIAIOSFODNN7EXAMPLE"), "****MPLE");
    EXPECT_EQ(bgw::aws::redacted_key_id("AKI"), "****");
}

TEST(credential_chain_pieces, container_hosts) {
    struct case_ {
        const char* url;
        bool ok;
    };
    const case_ cases[] = {
        {"http://127.0.0.1:8080/creds", true},
        {"http://127.42.0.9/creds", true},
        {"http://localhost/creds", true},
        {"http://LOCALHOST:9911/creds", true},
        {"http://[::1]:80/creds", true},
        {"http://169.254.170.2/v2/credentials", true},
        {"http://169.254.170.23/v1/credentials", true},
        {"http://[fd00:ec2::23]/v1/credentials", true},
        {"https://169.254.170.23/v1/credentials", true},
        {"https://localhost/creds", true},
        {"http://169.254.169.254/latest/meta-data/", false},
        {"http://example.com/creds", false},
        {"https://example.com/creds", false},
        {"http://128.0.0.1/", false},
        {"http://localhost.example.com/", false},
        {"http://[fd00:ec2::254]/", false},
        {"ftp://127.0.0.1/", false},
        {"not a url", false},
        {"/relative/only", false},
    };
    for (const auto& c : cases) EXPECT_EQ(bgw::aws::container_host_allowed(c.url), c.ok) << c.url;
}

TEST(credential_chain_pieces, sts_endpoints) {
    std::map<std::string, std::string> env;
    bgw::aws::env_lookup lookup = [&](std::string_view n) -> std::optional<std::string> {
        auto it = env.find(std::string(n));
        if (it == env.end()) return std::nullopt;
        return it->second;
    };
    EXPECT_EQ(bgw::aws::sts_endpoint(lookup, "eu-west-1"), "https://sts.eu-west-1.amazonaws.com");
    EXPECT_EQ(bgw::aws::sts_endpoint(lookup, "cn-north-1"),
              "https://sts.cn-north-1.amazonaws.com.cn");
    EXPECT_EQ(bgw::aws::sts_endpoint(lookup, ""), "https://sts.amazonaws.com");
    env["AWS_ENDPOINT_URL_STS"] = "http://127.0.0.1:4566/";
    EXPECT_EQ(bgw::aws::sts_endpoint(lookup, "eu-west-1"), "http://127.0.0.1:4566");
}

TEST(credential_chain_pieces, parses_sts_success) {
    auto r = bgw::aws::parse_sts_response(200, sts_ok("AssumeRole"));
    ASSERT_TRUE(r) << r.error().message;
    EXPECT_EQ(r->creds.access_key_id, "ASIASTSEXAMPLE0001");
    EXPECT_EQ(r->creds.secret_access_key, sts_secret);
    EXPECT_EQ(r->creds.session_token, sts_token);
    EXPECT_EQ(r->expiration, sys_days{2026y / 11 / 23} + 13h);

    // Entities are decoded (a token may in principle carry any XML-escaped character).
    auto escaped = sts_ok("AssumeRole");
    escaped.replace(escaped.find(sts_token), std::string(sts_token).size(), "a&amp;b&lt;c");
    auto e = bgw::aws::parse_sts_response(200, escaped);
    ASSERT_TRUE(e);
    EXPECT_EQ(e->creds.session_token, "a&b<c");
}

TEST(credential_chain_pieces, parses_sts_errors) {
    auto r = bgw::aws::parse_sts_response(403, sts_denied);
    ASSERT_FALSE(r);
    EXPECT_NE(r.error().message.find("403"), std::string::npos) << r.error().message;
    EXPECT_NE(r.error().message.find("AccessDenied"), std::string::npos);
    EXPECT_NE(r.error().message.find("is not authorized to perform: sts:AssumeRole"),
              std::string::npos);
    expect_clean(r.error());

    auto gateway = bgw::aws::parse_sts_response(502, "<html>Bad Gateway</html>");
    ASSERT_FALSE(gateway);
    EXPECT_EQ(gateway.error().message, "STS answered HTTP 502");

    // A 200 without the parts is no success.
    auto partial = sts_ok("AssumeRole");
    partial.erase(partial.find("<SessionToken>"),
                  partial.find("</SessionToken>") + 15 - partial.find("<SessionToken>"));
    auto p = bgw::aws::parse_sts_response(200, partial);
    ASSERT_FALSE(p);
    EXPECT_NE(p.error().message.find("SessionToken"), std::string::npos);
    expect_clean(p.error());
    EXPECT_FALSE(bgw::aws::parse_sts_response(200, "<AssumeRoleResponse/>"));
}

TEST(credential_chain_pieces, parses_credentials_json) {
    auto container = bgw::aws::parse_credentials_json(
        creds_json("ASIACONTAINER", ",\"RoleArn\":\"arn:aws:iam::123456789012:role/task\""));
    ASSERT_TRUE(container);
    EXPECT_EQ(container->creds.access_key_id, "ASIACONTAINER");
    EXPECT_EQ(container->creds.secret_access_key, json_secret);
    EXPECT_EQ(container->creds.session_token, json_token);
    EXPECT_EQ(container->expiration, sys_days{2026y / 11 / 23} + 18h);

    auto session_token = bgw::aws::parse_credentials_json(
        R"({"AccessKeyId":"AKIA1","SecretAccessKey":"s","SessionToken":"t"})");
    ASSERT_TRUE(session_token);
    EXPECT_EQ(session_token->creds.session_token, "t");
    EXPECT_FALSE(session_token->expiration);  // long-term

    const std::string bad[] = {
        "",
        "[]",
        std::string("{\"AccessKeyId\":\"AKIA1\",\"SecretAccessKey\":\"") + json_secret,  // cut
        R"({"SecretAccessKey":"s"})",
        R"({"AccessKeyId":"AKIA1"})",
        creds_json("AKIA1", ",\"Code\":\"AssumeRoleUnauthorizedAccess\""),
        std::string("{\"AccessKeyId\":\"AKIA1\",\"SecretAccessKey\":\"") + json_secret +
            "\",\"Expiration\":\"tomorrow\"}",
    };
    for (const auto& b : bad) {
        auto r = bgw::aws::parse_credentials_json(b);
        ASSERT_FALSE(r) << b;
        expect_clean(r.error());
    }
}

// --- The chain -----------------------------------------------------------------------------------

TEST(credential_chain, order_env_web_identity_profile_container_imds) {
    fake_world w;
    w.with_env_keys();
    w.with_web_identity();
    w.with_profile_keys();
    w.with_container();
    w.with_imds();
    auto io = w.io();

    auto r = bgw::aws::resolve_credentials(io, "us-east-1");
    ASSERT_TRUE(r) << r.error().message;
    EXPECT_EQ(r->source, "environment");
    EXPECT_EQ(r->creds.access_key_id, "AKIAENVEXAMPLE0001");
    EXPECT_EQ(r->creds.session_token, env_token);
    EXPECT_FALSE(r->expiration);
    EXPECT_TRUE(w.requests.empty());

    w.env.erase("AWS_ACCESS_KEY_ID");
    r = bgw::aws::resolve_credentials(io, "us-east-1");
    ASSERT_TRUE(r) << r.error().message;
    EXPECT_EQ(r->source, "web-identity");
    EXPECT_EQ(r->creds.access_key_id, "ASIAWEBEXAMPLE0001");

    w.env.erase("AWS_ROLE_ARN");
    r = bgw::aws::resolve_credentials(io, "us-east-1");
    ASSERT_TRUE(r) << r.error().message;
    EXPECT_EQ(r->source, "profile default");
    EXPECT_EQ(r->creds.access_key_id, "AKIAPROFILEEXAMPLE");

    w.files.erase("/home/gw/.aws/credentials");
    r = bgw::aws::resolve_credentials(io, "us-east-1");
    ASSERT_TRUE(r) << r.error().message;
    EXPECT_EQ(r->source, "container");

    w.env.erase("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI");
    r = bgw::aws::resolve_credentials(io, "us-east-1");
    ASSERT_TRUE(r) << r.error().message;
    EXPECT_EQ(r->source, "imds");

    w.env["AWS_EC2_METADATA_DISABLED"] = "true";
    r = bgw::aws::resolve_credentials(io, "us-east-1");
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().message,
              "no AWS credentials found: tried environment, web identity, profile default, "
              "container, IMDS");
    expect_clean(r.error());
}

TEST(credential_chain, a_configured_source_that_fails_stops_the_chain) {
    fake_world w;
    w.with_container();
    w.with_imds();
    w.answer("GET", "http://169.254.170.2/v2/credentials/task-1", 500, "{\"message\":\"boom\"}");
    auto io = w.io();
    auto r = bgw::aws::resolve_credentials(io, "us-east-1");
    ASSERT_FALSE(r);
    EXPECT_NE(r.error().message.find("container"), std::string::npos);
    EXPECT_NE(r.error().message.find("500"), std::string::npos);
    for (const auto& req : w.requests)
        EXPECT_EQ(req.url.find("169.254.169.254"), std::string::npos);
}

TEST(credential_chain, environment) {
    fake_world w;
    auto io = w.io();
    EXPECT_FALSE(bgw::aws::from_environment(io));
    w.env["AWS_ACCESS_KEY_ID"] = "AKIAENVEXAMPLE0001";
    EXPECT_FALSE(bgw::aws::from_environment(io));  // half a pair is no configuration
    w.env["AWS_SECRET_ACCESS_KEY"] = env_secret;
    auto r = bgw::aws::from_environment(io);
    ASSERT_TRUE(r && *r);
    EXPECT_EQ((*r)->creds.secret_access_key, env_secret);
    EXPECT_EQ((*r)->creds.session_token, "");
    EXPECT_FALSE((*r)->expiration);

    w.env["AWS_CREDENTIAL_EXPIRATION"] = "2026-11-23T13:00:00Z";
    r = bgw::aws::from_environment(io);
    ASSERT_TRUE(r && *r);
    EXPECT_EQ((*r)->expiration, sys_days{2026y / 11 / 23} + 13h);
}

// --- Web identity --------------------------------------------------------------------------------

TEST(credential_chain, web_identity_request) {
    fake_world w;
    w.with_web_identity();
    w.answers.clear();
    w.answer("POST", "https://sts.eu-west-1.amazonaws.com/", 200,
             sts_ok("AssumeRoleWithWebIdentity"));
    w.env["AWS_ROLE_ARN"] = "arn:aws:iam::123456789012:role/web role+x";
    auto io = w.io();

    auto r = bgw::aws::from_web_identity(io, "eu-west-1");
    ASSERT_TRUE(r && *r) << (r ? (*r).error().message : "nullopt");
    EXPECT_EQ((*r)->source, "web-identity");
    EXPECT_EQ((*r)->creds.session_token, sts_token);
    EXPECT_EQ((*r)->expiration, sys_days{2026y / 11 / 23} + 13h);

    ASSERT_EQ(w.requests.size(), 1u);
    const auto& req = w.requests[0];
    EXPECT_EQ(req.method, "POST");
    EXPECT_EQ(req.url, "https://sts.eu-west-1.amazonaws.com/");
    EXPECT_EQ(header_value(req, "Content-Type"),
              "application/x-www-form-urlencoded; charset=utf-8");
    EXPECT_FALSE(has_header(req, "Authorization"));  // unsigned: the token is the proof
    EXPECT_FALSE(has_header(req, "X-Amz-Date"));
    auto f = form_fields(req.body);
    EXPECT_EQ(f["Action"], "AssumeRoleWithWebIdentity");
    EXPECT_EQ(f["Version"], "2011-06-15");
    EXPECT_EQ(f["RoleArn"], "arn:aws:iam::123456789012:role/web role+x");
    EXPECT_EQ(f["RoleSessionName"],
              "bedrock-gateway-" + std::to_string(now_fixed.time_since_epoch().count()));
    EXPECT_EQ(f["WebIdentityToken"], jwt);
    EXPECT_EQ(f.size(), 5u);
    // Properly encoded: no raw ':', '/', ' ' or '+' in the body.
    EXPECT_NE(req.body.find("RoleArn=arn%3Aaws%3Aiam%3A%3A123456789012%3Arole%2Fweb%20role%2Bx"),
              std::string::npos)
        << req.body;

    // The token file is read afresh each time (EKS rotates it); a trailing newline is no part.
    w.files["/var/run/secrets/eks/token"] = "rotated.jwt.value\n";
    w.env["AWS_ROLE_SESSION_NAME"] = "my-session";
    r = bgw::aws::from_web_identity(io, "eu-west-1");
    ASSERT_TRUE(r && *r);
    f = form_fields(w.requests.back().body);
    EXPECT_EQ(f["WebIdentityToken"], "rotated.jwt.value");
    EXPECT_EQ(f["RoleSessionName"], "my-session");
}

TEST(credential_chain, web_identity_not_configured_or_failing) {
    fake_world w;
    auto io = w.io();
    EXPECT_FALSE(bgw::aws::from_web_identity(io, "us-east-1"));
    w.env["AWS_WEB_IDENTITY_TOKEN_FILE"] = "/token";
    EXPECT_FALSE(bgw::aws::from_web_identity(io, "us-east-1"));  // no role

    w.env["AWS_ROLE_ARN"] = "arn:aws:iam::123456789012:role/web";
    auto unreadable = bgw::aws::from_web_identity(io, "us-east-1");
    ASSERT_TRUE(unreadable);
    ASSERT_FALSE(*unreadable);
    EXPECT_NE(unreadable->error().message.find("/token"), std::string::npos);
    EXPECT_TRUE(w.requests.empty());

    w.files["/token"] = jwt;
    w.answer("POST", "https://sts.us-east-1.amazonaws.com/", 400,
             "<ErrorResponse><Error><Type>Sender</Type><Code>InvalidIdentityToken</Code>"
             "<Message>No OpenIDConnect provider found in your account for "
             "https://oidc.eks.us-east-1.amazonaws.com/id/EXAMPLE</Message></Error>"
             "</ErrorResponse>");
    auto denied = bgw::aws::from_web_identity(io, "us-east-1");
    ASSERT_TRUE(denied && !*denied);
    EXPECT_NE(denied->error().message.find("InvalidIdentityToken"), std::string::npos);
    EXPECT_NE(denied->error().message.find("web identity"), std::string::npos);
    expect_clean(denied->error());
}

// --- Profiles ------------------------------------------------------------------------------------

TEST(credential_chain, profile_static_keys_and_file_precedence) {
    fake_world w;
    w.env["HOME"] = "/home/gw";
    w.files["/home/gw/.aws/config"] =
        "# shared config\n"
        "[default]\nregion = us-west-2\n"
        "[profile dev]\n"
        "aws_access_key_id = AKIACONFIGEXAMPLE\n"
        "aws_secret_access_key = config-secret\n"
        "s3 =\n  max_concurrent_requests = 10\n"
        "[profile cfgonly]\n"
        "AWS_Access_Key_Id: AKIACFGONLYEXAMPLE\n"
        "aws_secret_access_key = cfg-secret\n"
        "aws_session_token = cfg-token\n"
        "[dev-without-prefix]\naws_access_key_id = AKIAIGNORED\naws_secret_access_key = x\n";
    w.files["/home/gw/.aws/credentials"] = std::string("[dev]\n") +
                                           "aws_access_key_id = AKIACREDSEXAMPLE\n" +
                                           "aws_secret_access_key = " + profile_secret + "\n" +
                                           "aws_session_token = " + profile_token + "\n";
    auto io = w.io();

    auto dev = bgw::aws::from_profile(io, "us-east-1", "dev");
    ASSERT_TRUE(dev && *dev) << (dev ? (*dev).error().message : "nullopt");
    EXPECT_EQ((*dev)->source, "profile dev");
    EXPECT_EQ((*dev)->creds.access_key_id, "AKIACREDSEXAMPLE");  // the credentials file wins
    EXPECT_EQ((*dev)->creds.secret_access_key, profile_secret);
    EXPECT_EQ((*dev)->creds.session_token, profile_token);
    EXPECT_FALSE((*dev)->expiration);

    auto cfg = bgw::aws::from_profile(io, "us-east-1", "cfgonly");
    ASSERT_TRUE(cfg && *cfg);
    EXPECT_EQ((*cfg)->creds.access_key_id, "AKIACFGONLYEXAMPLE");
    EXPECT_EQ((*cfg)->creds.session_token, "cfg-token");

    // AWS_PROFILE names the profile when the argument does not.
    w.env["AWS_PROFILE"] = "cfgonly";
    auto by_env = bgw::aws::from_profile(io, "us-east-1", "");
    ASSERT_TRUE(by_env && *by_env);
    EXPECT_EQ((*by_env)->source, "profile cfgonly");

    // A bare [NAME] in the config file is no profile.
    auto bare = bgw::aws::from_profile(io, "us-east-1", "dev-without-prefix");
    ASSERT_TRUE(bare && !*bare);

    // default exists (region only) but holds no credentials: the chain moves on.
    w.env.erase("AWS_PROFILE");
    EXPECT_FALSE(bgw::aws::from_profile(io, "us-east-1", ""));
}

TEST(credential_chain, profile_paths_from_env) {
    fake_world w;
    w.env["AWS_CONFIG_FILE"] = "/etc/gw/config";
    w.env["AWS_SHARED_CREDENTIALS_FILE"] = "/etc/gw/credentials";
    w.files["/etc/gw/credentials"] =
        std::string("[ops]\naws_access_key_id=AKIAOPS\naws_secret_access_key=") + profile_secret;
    auto io = w.io();
    auto r = bgw::aws::from_profile(io, "us-east-1", "ops");
    ASSERT_TRUE(r && *r);
    EXPECT_EQ((*r)->creds.access_key_id, "AKIAOPS");
}

TEST(credential_chain, missing_profiles) {
    fake_world w;
    w.env["HOME"] = "/home/gw";
    auto io = w.io();
    // The implicit default need not exist.
    EXPECT_FALSE(bgw::aws::from_profile(io, "us-east-1", ""));
    // A named one must.
    auto named = bgw::aws::from_profile(io, "us-east-1", "prod");
    ASSERT_TRUE(named && !*named);
    EXPECT_NE(named->error().message.find("profile prod"), std::string::npos);
    EXPECT_NE(named->error().message.find("/home/gw/.aws/config"), std::string::npos);
    w.env["AWS_PROFILE"] = "prod";
    auto by_env = bgw::aws::from_profile(io, "us-east-1", "");
    ASSERT_TRUE(by_env && !*by_env);
    // ...and then the chain stops there.
    w.with_imds();
    auto chain = bgw::aws::resolve_credentials(io, "us-east-1");
    ASSERT_FALSE(chain);
    EXPECT_NE(chain.error().message.find("profile prod"), std::string::npos);
}

TEST(credential_chain, profile_partial_keys_are_an_error) {
    fake_world w;
    w.env["HOME"] = "/home/gw";
    w.files["/home/gw/.aws/credentials"] = "[default]\naws_access_key_id = AKIAHALF\n";
    auto io = w.io();
    auto r = bgw::aws::from_profile(io, "us-east-1", "");
    ASSERT_TRUE(r && !*r);
    EXPECT_NE(r->error().message.find("aws_secret_access_key"), std::string::npos);
}

TEST(credential_chain, profile_credential_process) {
    fake_world w;
    w.env["HOME"] = "/home/gw";
    w.files["/home/gw/.aws/config"] =
        "[profile proc]\ncredential_process = /usr/bin/get-creds --account 123 --secret-arg x\n";
    const std::string command = "/usr/bin/get-creds --account 123 --secret-arg x";
    w.commands[command] = std::string("{\"Version\": 1, \"AccessKeyId\": \"ASIAPROCESS\", ") +
                          "\"SecretAccessKey\": \"" + process_secret +
                          "\", \"SessionToken\": \"tok\", "
                          "\"Expiration\": \"2026-11-23T12:45:00.000+00:00\"}";
    auto io = w.io();
    auto r = bgw::aws::from_profile(io, "us-east-1", "proc");
    ASSERT_TRUE(r && *r) << (r ? (*r).error().message : "nullopt");
    EXPECT_EQ((*r)->source, "profile proc (credential_process)");
    EXPECT_EQ((*r)->creds.secret_access_key, process_secret);
    EXPECT_EQ((*r)->creds.session_token, "tok");
    EXPECT_EQ((*r)->expiration, now_fixed + 45min);
    EXPECT_EQ(w.ran, std::vector<std::string>{command});

    // No Expiration: long-term.
    w.commands[command] = std::string("{\"Version\":1,\"AccessKeyId\":\"AKIAPROC\",") +
                          "\"SecretAccessKey\":\"" + process_secret + "\"}";
    r = bgw::aws::from_profile(io, "us-east-1", "proc");
    ASSERT_TRUE(r && *r);
    EXPECT_FALSE((*r)->expiration);

    // Version is the contract.
    w.commands[command] = std::string("{\"Version\":2,\"AccessKeyId\":\"AKIAPROC\",") +
                          "\"SecretAccessKey\":\"" + process_secret + "\"}";
    r = bgw::aws::from_profile(io, "us-east-1", "proc");
    ASSERT_TRUE(r && !*r);
    EXPECT_NE(r->error().message.find("Version"), std::string::npos);
    expect_clean(r->error());
    w.commands[command] = std::string("{\"AccessKeyId\":\"AKIAPROC\",") + "\"SecretAccessKey\":\"" +
                          process_secret + "\"}";
    r = bgw::aws::from_profile(io, "us-east-1", "proc");
    ASSERT_TRUE(r && !*r);

    // A failing process: its reason, never the command line (arguments may hold secrets).
    w.commands.erase(command);
    r = bgw::aws::from_profile(io, "us-east-1", "proc");
    ASSERT_TRUE(r && !*r);
    EXPECT_NE(r->error().message.find("profile proc (credential_process)"), std::string::npos);
    EXPECT_NE(r->error().message.find("status 127"), std::string::npos);
    EXPECT_EQ(r->error().message.find("--secret-arg"), std::string::npos);
}

/// Re-signs a recorded AssumeRole request with the same inputs: the Authorization it carries
/// must be the one sign_v4 makes over exactly the headers and body that were sent.
void expect_signed_by(const fetch_request& req,
                      const bgw::aws::credentials& creds,
                      std::string_view region) {
    std::vector<bgw::aws::header> sent;
    for (const auto& h : req.headers)
        if (h.name != "Authorization") sent.push_back(h);
    const auto date = bgw::aws::parse_amz_date(header_value(req, "X-Amz-Date"));
    ASSERT_TRUE(date);
    const auto hash = bgw::aws::sha256_hex(req.body);
    bgw::aws::signing_input in;
    in.method = "POST";
    in.wire_path = "/";
    in.headers = sent;
    in.payload_sha256 = hash;
    in.region = region;
    in.service = "sts";
    in.time = *date;
    EXPECT_EQ(header_value(req, "Authorization"), bgw::aws::sign_v4(in, creds).authorization);
}

TEST(credential_chain, profile_assume_role_with_source_profile) {
    fake_world w;
    w.env["HOME"] = "/home/gw";
    w.files["/home/gw/.aws/config"] =
        "[profile app]\n"
        "role_arn = arn:aws:iam::123456789012:role/bedrock-invoke\n"
        "source_profile = base\n"
        "region = eu-central-1\n"
        "external_id = ext-42\n"
        "duration_seconds = 1800\n"
        "role_session_name = gw-app\n";
    w.files["/home/gw/.aws/credentials"] = std::string("[base]\n") +
                                           "aws_access_key_id = AKIABASEEXAMPLE\n" +
                                           "aws_secret_access_key = " + profile_secret + "\n" +
                                           "aws_session_token = " + profile_token + "\n";
    w.answer("POST", "https://sts.eu-central-1.amazonaws.com/", 200, sts_ok("AssumeRole"));
    auto io = w.io();

    auto r = bgw::aws::from_profile(io, "us-east-1", "app");
    ASSERT_TRUE(r && *r) << (r ? (*r).error().message : "nullopt");
    EXPECT_EQ((*r)->source, "profile app (assume role)");
    EXPECT_EQ((*r)->creds.access_key_id, "ASIASTSEXAMPLE0001");
    EXPECT_EQ((*r)->creds.session_token, sts_token);
    EXPECT_EQ((*r)->expiration, sys_days{2026y / 11 / 23} + 13h);

    ASSERT_EQ(w.requests.size(), 1u);
    const auto& req = w.requests[0];
    EXPECT_EQ(req.method, "POST");
    EXPECT_EQ(req.url, "https://sts.eu-central-1.amazonaws.com/");
    auto f = form_fields(req.body);
    EXPECT_EQ(f["Action"], "AssumeRole");
    EXPECT_EQ(f["Version"], "2011-06-15");
    EXPECT_EQ(f["RoleArn"], "arn:aws:iam::123456789012:role/bedrock-invoke");
    EXPECT_EQ(f["RoleSessionName"], "gw-app");
    EXPECT_EQ(f["ExternalId"], "ext-42");
    EXPECT_EQ(f["DurationSeconds"], "1800");
    EXPECT_EQ(header_value(req, "Host"), "sts.eu-central-1.amazonaws.com");
    EXPECT_EQ(header_value(req, "Content-Type"),
              "application/x-www-form-urlencoded; charset=utf-8");
    EXPECT_EQ(header_value(req, "X-Amz-Date"), "20261123T120000Z");
    EXPECT_EQ(header_value(req, "X-Amz-Security-Token"), profile_token);
    const auto authz = header_value(req, "Authorization");
    EXPECT_TRUE(authz.starts_with(
        "AWS4-HMAC-SHA256 Credential=AKIABASEEXAMPLE/20261123/eu-central-1/sts/aws4_request, "))
        << authz;
    expect_signed_by(req, {"AKIABASEEXAMPLE", profile_secret, profile_token}, "eu-central-1");
}

TEST(credential_chain, profile_role_chain_signs_each_hop_with_the_previous_credentials) {
    fake_world w;
    w.env["HOME"] = "/home/gw";
    w.env["AWS_ENDPOINT_URL_STS"] = "http://127.0.0.1:4566";
    w.files["/home/gw/.aws/config"] =
        "[profile top]\nrole_arn = arn:aws:iam::111111111111:role/top\nsource_profile = mid\n"
        "[profile mid]\nrole_arn = arn:aws:iam::222222222222:role/mid\nsource_profile = root\n"
        "[profile root]\naws_access_key_id = AKIAROOTEXAMPLE\n"
        "aws_secret_access_key = root-secret\n";
    // One URL for both hops; answer by the RoleArn in the body via two scripted replies.
    auto io = w.io();
    auto inner_fetch = io.fetch;
    io.fetch = [&w, inner_fetch](const fetch_request& r) -> bgw::result<fetch_response> {
        w.requests.push_back(r);
        const bool mid = r.body.find("role%2Fmid") != std::string::npos;
        return fetch_response{200, sts_ok("AssumeRole", mid ? "ASIAMIDEXAMPLE" : "ASIATOPEXAMPLE")};
    };
    auto r = bgw::aws::from_profile(io, "us-west-2", "top");
    ASSERT_TRUE(r && *r) << (r ? (*r).error().message : "nullopt");
    EXPECT_EQ((*r)->creds.access_key_id, "ASIATOPEXAMPLE");
    ASSERT_EQ(w.requests.size(), 2u);
    EXPECT_EQ(w.requests[0].url, "http://127.0.0.1:4566/");
    EXPECT_EQ(header_value(w.requests[0], "Host"), "127.0.0.1:4566");
    EXPECT_EQ(form_fields(w.requests[0].body)["RoleArn"], "arn:aws:iam::222222222222:role/mid");
    EXPECT_NE(header_value(w.requests[0], "Authorization")
                  .find("Credential=AKIAROOTEXAMPLE/20261123/us-west-2/sts/aws4_request"),
              std::string::npos);
    EXPECT_FALSE(has_header(w.requests[0], "X-Amz-Security-Token"));
    EXPECT_EQ(form_fields(w.requests[1].body)["RoleArn"], "arn:aws:iam::111111111111:role/top");
    EXPECT_NE(header_value(w.requests[1], "Authorization")
                  .find("Credential=ASIAMIDEXAMPLE/20261123/us-west-2/sts/aws4_request"),
              std::string::npos);
    EXPECT_EQ(header_value(w.requests[1], "X-Amz-Security-Token"), sts_token);
    expect_signed_by(w.requests[1], {"ASIAMIDEXAMPLE", sts_secret, sts_token}, "us-west-2");
}

TEST(credential_chain, profile_role_errors) {
    fake_world w;
    w.env["HOME"] = "/home/gw";
    w.files["/home/gw/.aws/config"] =
        "[profile a]\nrole_arn = arn:aws:iam::1:role/a\nsource_profile = b\n"
        "[profile b]\nrole_arn = arn:aws:iam::1:role/b\nsource_profile = a\n"
        "[profile self]\nrole_arn = arn:aws:iam::1:role/self\nsource_profile = self\n"
        "[profile selfkeys]\nrole_arn = arn:aws:iam::1:role/sk\nsource_profile = selfkeys\n"
        "aws_access_key_id = AKIASELF\naws_secret_access_key = self-secret\n"
        "[profile ecs]\nrole_arn = arn:aws:iam::1:role/e\ncredential_source = EcsContainer\n"
        "[profile orphan]\nrole_arn = arn:aws:iam::1:role/o\nsource_profile = nowhere\n"
        "[profile nosource]\nrole_arn = arn:aws:iam::1:role/n\n"
        "[profile mfa]\nrole_arn = arn:aws:iam::1:role/m\nsource_profile = keys\n"
        "mfa_serial = arn:aws:iam::1:mfa/me\n"
        "[profile denied]\nrole_arn = arn:aws:iam::1:role/d\nsource_profile = keys\n"
        "[profile empty]\nregion = us-east-1\n"
        "[profile needsempty]\nrole_arn = arn:aws:iam::1:role/x\nsource_profile = empty\n";
    w.files["/home/gw/.aws/credentials"] = std::string("[keys]\naws_access_key_id = AKIAKEYS\n") +
                                           "aws_secret_access_key = " + profile_secret + "\n";
    w.answer("POST", "https://sts.us-east-1.amazonaws.com/", 403, sts_denied);
    auto io = w.io();
    auto fails = [&](const char* profile, const char* needle) {
        auto r = bgw::aws::from_profile(io, "us-east-1", profile);
        ASSERT_TRUE(r) << profile;
        ASSERT_FALSE(*r) << profile;
        EXPECT_NE(r->error().message.find(needle), std::string::npos)
            << profile << ": " << r->error().message;
        expect_clean(r->error());
    };
    fails("a", "loop");
    fails("b", "loop");
    fails("self", "loop");
    fails("ecs", "credential_source");
    fails("orphan", "nowhere");
    fails("nosource", "source_profile");
    fails("mfa", "mfa_serial");
    fails("denied", "AccessDenied");
    fails("needsempty", "source profile empty has no credentials");
    // Nothing reached STS except "denied" (and "selfkeys" below).
    EXPECT_EQ(w.requests.size(), 1u);

    // A profile naming itself, with its own keys, assumes its role with them (as botocore).
    w.answer("POST", "https://sts.us-east-1.amazonaws.com/", 200, sts_ok("AssumeRole"));
    auto self = bgw::aws::from_profile(io, "us-east-1", "selfkeys");
    ASSERT_TRUE(self && *self) << (self ? (*self).error().message : "nullopt");
    EXPECT_NE(header_value(w.requests.back(), "Authorization").find("Credential=AKIASELF/"),
              std::string::npos);
}

TEST(credential_chain, profile_web_identity) {
    fake_world w;
    w.env["HOME"] = "/home/gw";
    w.files["/home/gw/.aws/config"] =
        "[profile eks]\nrole_arn = arn:aws:iam::123456789012:role/eks\n"
        "web_identity_token_file = ~/token\nrole_session_name = pod\nregion = ap-south-1\n";
    w.files["/home/gw/token"] = jwt;
    w.answer("POST", "https://sts.ap-south-1.amazonaws.com/", 200,
             sts_ok("AssumeRoleWithWebIdentity"));
    auto io = w.io();
    auto r = bgw::aws::from_profile(io, "us-east-1", "eks");
    ASSERT_TRUE(r && *r) << (r ? (*r).error().message : "nullopt");
    EXPECT_EQ((*r)->source, "profile eks (web identity)");
    ASSERT_EQ(w.requests.size(), 1u);
    EXPECT_FALSE(has_header(w.requests[0], "Authorization"));
    auto f = form_fields(w.requests[0].body);
    EXPECT_EQ(f["WebIdentityToken"], jwt);
    EXPECT_EQ(f["RoleSessionName"], "pod");
    EXPECT_EQ(f["RoleArn"], "arn:aws:iam::123456789012:role/eks");
}

// --- Container -----------------------------------------------------------------------------------

TEST(credential_chain, container_relative_uri) {
    fake_world w;
    w.with_container();
    auto io = w.io();
    auto r = bgw::aws::from_container(io);
    ASSERT_TRUE(r && *r) << (r ? (*r).error().message : "nullopt");
    EXPECT_EQ((*r)->source, "container");
    EXPECT_EQ((*r)->creds.access_key_id, "ASIACONTAINEREXAMPLE");
    EXPECT_EQ((*r)->expiration, sys_days{2026y / 11 / 23} + 18h);
    ASSERT_EQ(w.requests.size(), 1u);
    EXPECT_EQ(w.requests[0].method, "GET");
    EXPECT_EQ(w.requests[0].url, "http://169.254.170.2/v2/credentials/task-1");
    EXPECT_FALSE(has_header(w.requests[0], "Authorization"));
}

TEST(credential_chain, container_full_uri_and_tokens) {
    fake_world w;
    w.env["AWS_CONTAINER_CREDENTIALS_FULL_URI"] = "http://169.254.170.23/v1/credentials";
    w.env["AWS_CONTAINER_AUTHORIZATION_TOKEN"] = bearer;
    w.answer("GET", "http://169.254.170.23/v1/credentials", 200, creds_json("ASIAPODIDENTITY"));
    auto io = w.io();

    auto r = bgw::aws::from_container(io);
    ASSERT_TRUE(r && *r) << (r ? (*r).error().message : "nullopt");
    EXPECT_EQ(header_value(w.requests.back(), "Authorization"), bearer);

    // The token file wins over the variable, and is read on every call.
    w.env["AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE"] = "/var/run/secrets/pods.eks/token";
    w.files["/var/run/secrets/pods.eks/token"] = std::string(bearer_in_file) + "\n";
    r = bgw::aws::from_container(io);
    ASSERT_TRUE(r && *r);
    EXPECT_EQ(header_value(w.requests.back(), "Authorization"), bearer_in_file);
    w.files["/var/run/secrets/pods.eks/token"] = "rotated-token";
    r = bgw::aws::from_container(io);
    ASSERT_TRUE(r && *r);
    EXPECT_EQ(header_value(w.requests.back(), "Authorization"), "rotated-token");

    // An unreadable token file is an error, not a silent unauthenticated call.
    w.files.erase("/var/run/secrets/pods.eks/token");
    const auto before = w.requests.size();
    r = bgw::aws::from_container(io);
    ASSERT_TRUE(r && !*r);
    EXPECT_NE(r->error().message.find("/var/run/secrets/pods.eks/token"), std::string::npos);
    EXPECT_EQ(w.requests.size(), before);

    // RELATIVE_URI wins over FULL_URI.
    w.env["AWS_CONTAINER_CREDENTIALS_RELATIVE_URI"] = "/v2/credentials/x";
    w.env.erase("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE");
    w.answer("GET", "http://169.254.170.2/v2/credentials/x", 200, creds_json("ASIAECS"));
    r = bgw::aws::from_container(io);
    ASSERT_TRUE(r && *r);
    EXPECT_EQ((*r)->creds.access_key_id, "ASIAECS");
}

TEST(credential_chain, container_full_uri_refuses_other_hosts) {
    for (const char* url : {"http://169.254.169.254/latest/meta-data/iam/security-credentials/x",
                            "http://example.com/creds", "https://example.com/creds"}) {
        fake_world w;
        w.env["AWS_CONTAINER_CREDENTIALS_FULL_URI"] = url;
        w.env["AWS_CONTAINER_AUTHORIZATION_TOKEN"] = bearer;
        auto io = w.io();
        auto r = bgw::aws::from_container(io);
        ASSERT_TRUE(r && !*r) << url;
        const auto& msg = r->error().message;
        EXPECT_NE(
            msg.find(std::string(url).find("example") != std::string::npos ? "example.com"
                                                                           : "169.254.169.254"),
            std::string::npos)
            << msg;
        EXPECT_NE(msg.find("loopback"), std::string::npos) << msg;
        EXPECT_TRUE(w.requests.empty());  // the token never leaves
        expect_clean(r->error());
    }
}

TEST(credential_chain, container_failures) {
    fake_world w;
    auto io = w.io();
    EXPECT_FALSE(bgw::aws::from_container(io));
    w.env["AWS_CONTAINER_CREDENTIALS_RELATIVE_URI"] = "/v2/credentials/gone";
    auto no_answer = bgw::aws::from_container(io);
    ASSERT_TRUE(no_answer && !*no_answer);
    w.answer("GET", "http://169.254.170.2/v2/credentials/gone", 404, "not found");
    auto status = bgw::aws::from_container(io);
    ASSERT_TRUE(status && !*status);
    EXPECT_NE(status->error().message.find("404"), std::string::npos);
    w.answer("GET", "http://169.254.170.2/v2/credentials/gone", 200,
             std::string("{\"SecretAccessKey\":\"") + json_secret + "\"}");
    auto bad = bgw::aws::from_container(io);
    ASSERT_TRUE(bad && !*bad);
    expect_clean(bad->error());
}

// --- IMDS ----------------------------------------------------------------------------------------

TEST(credential_chain, imds_v2_sequence) {
    fake_world w;
    w.with_imds();
    auto io = w.io();
    auto r = bgw::aws::from_imds(io);
    ASSERT_TRUE(r && *r) << (r ? (*r).error().message : "nullopt");
    EXPECT_EQ((*r)->source, "imds");
    EXPECT_EQ((*r)->creds.access_key_id, "ASIAIMDSEXAMPLE0001");
    EXPECT_EQ((*r)->creds.session_token, json_token);
    EXPECT_EQ((*r)->expiration, sys_days{2026y / 11 / 23} + 18h);

    ASSERT_EQ(w.requests.size(), 3u);
    EXPECT_EQ(w.requests[0].method, "PUT");
    EXPECT_EQ(w.requests[0].url, "http://169.254.169.254/latest/api/token");
    EXPECT_EQ(header_value(w.requests[0], "X-aws-ec2-metadata-token-ttl-seconds"), "21600");
    EXPECT_EQ(w.requests[1].method, "GET");
    EXPECT_EQ(w.requests[1].url,
              "http://169.254.169.254/latest/meta-data/iam/security-credentials/");
    EXPECT_EQ(header_value(w.requests[1], "X-aws-ec2-metadata-token"), imds_session);
    EXPECT_EQ(w.requests[2].method, "GET");
    EXPECT_EQ(w.requests[2].url,
              "http://169.254.169.254/latest/meta-data/iam/security-credentials/gateway-role");
    EXPECT_EQ(header_value(w.requests[2], "X-aws-ec2-metadata-token"), imds_session);
}

TEST(credential_chain, imds_endpoint_override_and_disable) {
    fake_world w;
    w.env["AWS_EC2_METADATA_SERVICE_ENDPOINT"] = "http://127.0.0.1:1338/";
    w.with_imds("http://127.0.0.1:1338");
    auto io = w.io();
    auto r = bgw::aws::from_imds(io);
    ASSERT_TRUE(r && *r) << (r ? (*r).error().message : "nullopt");
    EXPECT_EQ(w.requests[0].url, "http://127.0.0.1:1338/latest/api/token");

    w.requests.clear();
    for (const char* off : {"true", "TRUE", "True"}) {
        w.env["AWS_EC2_METADATA_DISABLED"] = off;
        EXPECT_FALSE(bgw::aws::from_imds(io)) << off;
    }
    EXPECT_TRUE(w.requests.empty());
    w.env["AWS_EC2_METADATA_DISABLED"] = "false";
    EXPECT_TRUE(bgw::aws::from_imds(io));
}

TEST(credential_chain, imds_absent_or_failing) {
    fake_world w;
    auto io = w.io();
    // Not on EC2: nobody answers the token PUT. Nothing configured, nothing else asked.
    EXPECT_FALSE(bgw::aws::from_imds(io));
    EXPECT_EQ(w.requests.size(), 1u);

    // Answered with an error: IMDS is there but refuses.
    w.answer("PUT", "http://169.254.169.254/latest/api/token", 403, "Forbidden");
    auto refused = bgw::aws::from_imds(io);
    ASSERT_TRUE(refused && !*refused);
    EXPECT_NE(refused->error().message.find("403"), std::string::npos);

    // On EC2 without an instance profile: no credentials here.
    w.with_imds();
    w.answer("GET", "http://169.254.169.254/latest/meta-data/iam/security-credentials/", 404, "");
    EXPECT_FALSE(bgw::aws::from_imds(io));

    // A role whose credentials cannot be made.
    w.with_imds();
    w.answer("GET", "http://169.254.169.254/latest/meta-data/iam/security-credentials/gateway-role",
             200, creds_json("ASIAX", ",\"Code\":\"AssumeRoleUnauthorizedAccess\""));
    auto code = bgw::aws::from_imds(io);
    ASSERT_TRUE(code && !*code);
    EXPECT_NE(code->error().message.find("AssumeRoleUnauthorizedAccess"), std::string::npos);
    expect_clean(code->error());
}

// --- Pinned sources ------------------------------------------------------------------------------

TEST(credential_chain, pinned_source) {
    fake_world w;
    w.with_env_keys();
    w.with_container();
    auto io = w.io();

    // Only the pinned source is asked, even when an earlier one is configured.
    auto r = bgw::aws::resolve_credentials(io, "us-east-1", "container");
    ASSERT_TRUE(r) << r.error().message;
    EXPECT_EQ(r->source, "container");

    auto imds = bgw::aws::resolve_credentials(io, "us-east-1", "imds");
    ASSERT_FALSE(imds);
    EXPECT_TRUE(imds.error().message.starts_with("credentials.source imds is not configured: "))
        << imds.error().message;
    EXPECT_NE(imds.error().message.find("no answer from IMDS"), std::string::npos);

    auto web = bgw::aws::resolve_credentials(io, "us-east-1", "web-identity");
    ASSERT_FALSE(web);
    EXPECT_EQ(web.error().message,
              "credentials.source web-identity is not configured: AWS_WEB_IDENTITY_TOKEN_FILE "
              "and AWS_ROLE_ARN are not both set");

    w.env["HOME"] = "/home/gw";
    w.files["/home/gw/.aws/credentials"] =
        std::string("[ops]\naws_access_key_id = AKIAOPS\naws_secret_access_key = ") +
        profile_secret + "\n";
    auto ops = bgw::aws::resolve_credentials(io, "us-east-1", "profile", "ops");
    ASSERT_TRUE(ops) << ops.error().message;
    EXPECT_EQ(ops->source, "profile ops");
    auto def = bgw::aws::resolve_credentials(io, "us-east-1", "profile");
    ASSERT_FALSE(def);
    EXPECT_NE(def.error().message.find("credentials.source profile is not configured: profile "
                                       "default is in neither"),
              std::string::npos)
        << def.error().message;

    auto env = bgw::aws::resolve_credentials(io, "us-east-1", "environment");
    ASSERT_TRUE(env);
    EXPECT_EQ(env->source, "environment");

    auto unknown = bgw::aws::resolve_credentials(io, "us-east-1", "sso");
    ASSERT_FALSE(unknown);
    EXPECT_NE(unknown.error().message.find("sso"), std::string::npos);
}

// --- No secret in any error ----------------------------------------------------------------------

TEST(credential_chain, no_error_message_contains_a_secret) {
    std::vector<bgw::error> errors;
    auto collect = [&](const bgw::aws::provider_result& r) {
        if (r && !*r) {
            errors.push_back(r->error());
        } else {
            ADD_FAILURE() << "case " << errors.size() << " did not fail";
        }
    };

    {  // STS refusing a web identity token
        fake_world w;
        w.with_web_identity();
        w.answer("POST", "https://sts.us-east-1.amazonaws.com/", 400,
                 "<ErrorResponse><Error><Code>ExpiredTokenException</Code><Message>Token "
                 "expired: current date/time 1700000000 must be before the expiration date/time "
                 "1690000000</Message></Error></ErrorResponse>");
        auto io = w.io();
        collect(bgw::aws::from_web_identity(io, "us-east-1"));
    }
    {  // STS answering 200 with garbage that holds a secret
        fake_world w;
        w.with_web_identity();
        w.answer("POST", "https://sts.us-east-1.amazonaws.com/", 200,
                 std::string("<Credentials><SecretAccessKey>") + sts_secret +
                     "</SecretAccessKey><SessionToken>" + sts_token + "</SessionToken>");
        auto io = w.io();
        collect(bgw::aws::from_web_identity(io, "us-east-1"));
    }
    {  // AssumeRole denied, source with a session token; bad duration
        fake_world w;
        w.env["HOME"] = "/h";
        w.files["/h/.aws/config"] =
            "[profile r]\nrole_arn = arn:aws:iam::1:role/r\nsource_profile = s\n"
            "[profile d]\nrole_arn = arn:aws:iam::1:role/r\nsource_profile = s\n"
            "duration_seconds = one hour\n";
        w.files["/h/.aws/credentials"] = std::string("[s]\naws_access_key_id = AKIAS\n") +
                                         "aws_secret_access_key = " + profile_secret +
                                         "\naws_session_token = " + profile_token + "\n";
        w.answer("POST", "https://sts.us-east-1.amazonaws.com/", 403, sts_denied);
        auto io = w.io();
        collect(bgw::aws::from_profile(io, "us-east-1", "r"));
        collect(bgw::aws::from_profile(io, "us-east-1", "d"));
        // STS unreachable
        w.answers.clear();
        collect(bgw::aws::from_profile(io, "us-east-1", "r"));
    }
    {  // credential_process printing broken JSON with the secret in it
        fake_world w;
        w.env["HOME"] = "/h";
        w.files["/h/.aws/config"] = "[default]\ncredential_process = creds\n";
        w.commands["creds"] =
            std::string("{\"Version\":1,\"SecretAccessKey\":\"") + process_secret + "\",";
        auto io = w.io();
        collect(bgw::aws::from_profile(io, "us-east-1", ""));
        w.commands["creds"] =
            std::string("{\"Version\":1,\"SecretAccessKey\":\"") + process_secret + "\"}";
        collect(bgw::aws::from_profile(io, "us-east-1", ""));
    }
    {  // container: refused host with a bearer token, bad status, body with a secret
        fake_world w;
        w.env["AWS_CONTAINER_CREDENTIALS_FULL_URI"] = "http://example.com/?t=1";
        w.env["AWS_CONTAINER_AUTHORIZATION_TOKEN"] = bearer;
        auto io = w.io();
        collect(bgw::aws::from_container(io));
        w.env["AWS_CONTAINER_CREDENTIALS_FULL_URI"] = "http://127.0.0.1:9000/creds";
        w.answer("GET", "http://127.0.0.1:9000/creds", 401,
                 std::string("{\"message\":\"bad token ") + bearer + "\"}");
        collect(bgw::aws::from_container(io));
        w.answer("GET", "http://127.0.0.1:9000/creds", 200,
                 std::string("{\"AccessKeyId\":\"A\",\"Token\":\"") + json_token +
                     "\",\"SecretAccessKey\":\"" + json_secret + "\",\"Expiration\":\"soon\"}");
        collect(bgw::aws::from_container(io));
        w.env["AWS_CONTAINER_AUTHORIZATION_TOKEN"] = std::string(bearer) + "\r\nX-Evil: 1";
        collect(bgw::aws::from_container(io));
    }
    {  // IMDS: every step failing after the token was issued
        fake_world w;
        w.with_imds();
        w.answer("GET", "http://169.254.169.254/latest/meta-data/iam/security-credentials/", 500,
                 imds_session);
        auto io = w.io();
        collect(bgw::aws::from_imds(io));
        w.with_imds();
        w.answer("GET",
                 "http://169.254.169.254/latest/meta-data/iam/security-credentials/gateway-role",
                 200, std::string("{\"Code\":\"Success\",\"Token\":\"") + json_token + "\"}");
        collect(bgw::aws::from_imds(io));
    }
    {  // the chain's own errors
        fake_world w;
        w.with_env_keys();
        w.env["AWS_CREDENTIAL_EXPIRATION"] = "later";
        auto io = w.io();
        auto r = bgw::aws::resolve_credentials(io, "us-east-1");
        ASSERT_FALSE(r);
        errors.push_back(r.error());
    }

    EXPECT_EQ(errors.size(), 14u);
    for (const auto& e : errors) {
        SCOPED_TRACE(e.message);
        EXPECT_FALSE(e.message.empty());
        expect_clean(e);
    }
}

}  // namespace
