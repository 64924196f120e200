// `bedrock-gateway sign` (bgw/cli/sign_command.hpp): usage errors, credentials, what it adds
// to the request, and that its signature is the library's.

#include "bgw/cli/sign_command.hpp"

#include "bgw/aws/raw_request.hpp"
#include "bgw/aws/sigv4.hpp"

#include <chrono>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>

namespace {

using namespace std::chrono;
using bgw::aws::header;

constexpr std::string_view secret = "s3cr3t/KEY+do-not-print";
const bgw::aws::credentials gateway_creds{"AKIDGATEWAY", std::string(secret), ""};

constexpr std::string_view bedrock_request =
    "POST /model/anthropic.claude-3-haiku-20240307-v1%3A0/invoke HTTP/1.1\n"
    "Host:bedrock-runtime.us-east-1.amazonaws.com\n"
    "Content-Type:application/json\n"
    "\n"
    "{\"max_tokens\":16}";

struct run_result {
    int rc = -1;
    std::string out;
    std::string err;
};

run_result run(std::vector<std::string_view> args,
               std::string_view request = bedrock_request,
               const std::optional<bgw::aws::credentials>& creds = gateway_creds) {
    std::istringstream in{std::string(request)};
    std::ostringstream out;
    std::ostringstream err;
    run_result r;
    r.rc = bgw::cli::run_sign_command(args, in, out, err, creds);
    r.out = out.str();
    r.err = err.str();
    return r;
}

/// What the library gives for the command's output request (with the headers it added).
std::string library_authorization(const std::string& signed_text,
                                  std::string_view service,
                                  bool normalize,
                                  bool double_encode,
                                  const bgw::aws::credentials& creds) {
    auto req = bgw::aws::parse_raw_request(signed_text);
    if (!req) return "unparsable";
    std::vector<header> hs;
    for (const auto& h : req->headers) {
        if (h.name != "Authorization") hs.push_back(h);
    }
    const auto date = bgw::aws::find_header(hs, "x-amz-date");
    if (!date) return "no date";
    const std::string body_hash = bgw::aws::sha256_hex(req->body);
    bgw::aws::signing_input in;
    in.method = req->method;
    in.wire_path = req->path();
    in.query = req->query();
    in.headers = hs;
    in.payload_sha256 = body_hash;
    in.region = "us-east-1";
    in.service = service;
    in.time = *bgw::aws::parse_amz_date(*date);
    in.normalize_path = normalize;
    in.double_encode_path = double_encode;
    return bgw::aws::sign_v4(in, creds).authorization;
}

std::string authorization_of(const std::string& signed_text) {
    auto req = bgw::aws::parse_raw_request(signed_text);
    if (!req) return {};
    auto v = bgw::aws::find_header(req->headers, "authorization");
    return v ? std::string(*v) : std::string{};
}

TEST(sign_command, usage_errors_exit_2) {
    const std::vector<std::vector<std::string_view>> bad = {
        {},
        {"--region", "us-east-1"},               // no --service
        {"--service", "bedrock"},                // no --region
        {"--region", "us-east-1", "--service"},  // missing value
        {"--region", "us-east-1", "--region", "us-west-2", "--service", "bedrock"},
        {"--region", "", "--service", "bedrock"},
        {"--region", "us/east", "--service", "bedrock"},
        {"--region", "us-east-1", "--service", "bed rock"},
        {"--region", "us-east-1", "--service", "bedrock", "--bogus", "x"},
        {"--region", "us-east-1", "--service", "bedrock", "--time", "2015-08-30T12:36:00Z"},
        {"--region", "us-east-1", "--service", "bedrock", "--time", "20151330T123600Z"},
        {"--region", "us-east-1", "--service", "bedrock", "--access-key", "AKID"},
        {"--region", "us-east-1", "--service", "bedrock", "--secret-key", "x"},
        {"--region", "us-east-1", "--service", "bedrock", "--session-token", "t"},
        {"--region", "us-east-1", "--service", "bedrock", "extra"},
    };
    for (const auto& args : bad) {
        const auto r = run(args);
        std::string joined;
        for (auto a : args) joined += std::string(a) + " ";
        EXPECT_EQ(r.rc, 2) << joined;
        EXPECT_TRUE(r.out.empty()) << joined;
        EXPECT_NE(r.err.find("sign: "), std::string::npos) << joined;
        EXPECT_NE(r.err.find("usage:"), std::string::npos) << joined;
    }
}

TEST(sign_command, flag_equals_form_is_accepted) {
    const auto r = run({"--region=us-east-1", "--service=bedrock", "--time=20150830T123600Z"});
    ASSERT_EQ(r.rc, 0) << r.err;
    EXPECT_NE(r.out.find("X-Amz-Date:20150830T123600Z"), std::string::npos);
}

TEST(sign_command, help_prints_usage_and_succeeds) {
    const auto r = run({"--help"});
    EXPECT_EQ(r.rc, 0);
    EXPECT_NE(r.out.find("usage: bedrock-gateway sign"), std::string::npos);
    EXPECT_TRUE(r.err.empty());
}

TEST(sign_command, never_echoes_a_secret_from_a_mistyped_flag) {
    const std::string flag = "--secrt-key=" + std::string(secret);
    for (const auto& args : std::vector<std::vector<std::string_view>>{
             {"--region", "us-east-1", "--service", "bedrock", "--secrt-key", secret},
             {"--region", "us-east-1", "--service", "bedrock", flag},
             {"--region", "us-east-1", "--service", "bedrock", secret}}) {
        const auto r = run(args);
        EXPECT_EQ(r.rc, 2);
        EXPECT_EQ(r.err.find(secret), std::string::npos) << r.err;
    }
}

TEST(sign_command, missing_credentials_exit_2_with_a_clear_message) {
    const auto r =
        run({"--region", "us-east-1", "--service", "bedrock"}, bedrock_request, std::nullopt);
    EXPECT_EQ(r.rc, 2);
    EXPECT_TRUE(r.out.empty());
    EXPECT_NE(r.err.find("no credentials"), std::string::npos) << r.err;
    EXPECT_NE(r.err.find("--access-key"), std::string::npos) << r.err;
}

TEST(sign_command, bad_request_text_exits_1) {
    const std::vector<std::string_view> args = {"--region", "us-east-1", "--service", "bedrock"};
    for (std::string_view bad : {
             std::string_view(""),
             std::string_view("not a request"),
             std::string_view("GET / HTTP/1.1\nNoColon"),
             std::string_view("GET / HTTP/1.1\nAccept:*/*"),  // no Host
             std::string_view("GET / HTTP/1.1\nHost:h\nX-Amz-Date:yesterday"),
         }) {
        const auto r = run(args, bad);
        EXPECT_EQ(r.rc, 1) << bad;
        EXPECT_TRUE(r.out.empty()) << bad;
        EXPECT_NE(r.err.find("sign: bad request"), std::string::npos) << r.err;
    }
}

TEST(sign_command, gateway_credentials_sign_like_the_library) {
    const auto r =
        run({"--region", "us-east-1", "--service", "bedrock", "--time", "20150830T123600Z"});
    ASSERT_EQ(r.rc, 0) << r.err;
    EXPECT_EQ(r.out.find(secret), std::string::npos);
    EXPECT_TRUE(r.err.empty());
    // The request as given, then the date, then the signature, then the body.
    EXPECT_TRUE(r.out.starts_with(
        "POST /model/anthropic.claude-3-haiku-20240307-v1%3A0/invoke HTTP/1.1\n"
        "Host:bedrock-runtime.us-east-1.amazonaws.com\n"
        "Content-Type:application/json\n"
        "X-Amz-Date:20150830T123600Z\n"
        "Authorization:AWS4-HMAC-SHA256 Credential=AKIDGATEWAY/20150830/us-east-1/bedrock/"
        "aws4_request, SignedHeaders=content-type;host;x-amz-date, Signature="))
        << r.out;
    EXPECT_TRUE(r.out.ends_with("\n\n{\"max_tokens\":16}"));
    const std::string authz = authorization_of(r.out);
    EXPECT_EQ(authz, library_authorization(r.out, "bedrock", true, true, gateway_creds));
    // Bedrock double-encodes: signing the single-encoded form gives another signature.
    EXPECT_NE(authz, library_authorization(r.out, "bedrock", true, false, gateway_creds));
}

TEST(sign_command, key_flags_override_gateway_credentials) {
    const auto r =
        run({"--region", "us-east-1", "--service", "bedrock", "--time", "20150830T123600Z",
             "--access-key", "AKIDFLAG", "--secret-key", "flag-secret"});
    ASSERT_EQ(r.rc, 0) << r.err;
    const bgw::aws::credentials flag_creds{"AKIDFLAG", "flag-secret", ""};
    EXPECT_EQ(authorization_of(r.out),
              library_authorization(r.out, "bedrock", true, true, flag_creds));
    EXPECT_EQ(r.out.find("flag-secret"), std::string::npos);
}

TEST(sign_command, existing_x_amz_date_wins_over_time_flag) {
    const std::string_view req = "GET / HTTP/1.1\nHost:h\nX-Amz-Date:20200101T000000Z";
    const auto r =
        run({"--region", "us-east-1", "--service", "bedrock", "--time", "20150830T123600Z"}, req);
    ASSERT_EQ(r.rc, 0) << r.err;
    EXPECT_EQ(r.out.find("20150830"), std::string::npos) << r.out;
    EXPECT_NE(r.out.find("Credential=AKIDGATEWAY/20200101/"), std::string::npos) << r.out;
    // Exactly one X-Amz-Date line.
    EXPECT_EQ(r.out.find("X-Amz-Date"), r.out.rfind("X-Amz-Date"));
}

TEST(sign_command, default_time_is_now) {
    const auto before = floor<seconds>(system_clock::now());
    const auto r = run({"--region", "us-east-1", "--service", "bedrock"});
    const auto after = floor<seconds>(system_clock::now());
    ASSERT_EQ(r.rc, 0) << r.err;
    auto req = bgw::aws::parse_raw_request(r.out);
    ASSERT_TRUE(req);
    const auto date = bgw::aws::find_header(req->headers, "x-amz-date");
    ASSERT_TRUE(date);
    const auto t = bgw::aws::parse_amz_date(*date);
    ASSERT_TRUE(t);
    EXPECT_GE(*t, before);
    EXPECT_LE(*t, after);
}

TEST(sign_command, session_token_is_added_and_signed) {
    const bgw::aws::credentials temp{"ASIATEMP", "temp-secret", "the-token"};
    const auto r =
        run({"--region", "us-east-1", "--service", "bedrock", "--time", "20150830T123600Z"},
            bedrock_request, temp);
    ASSERT_EQ(r.rc, 0) << r.err;
    EXPECT_NE(r.out.find("\nX-Amz-Security-Token:the-token\nX-Amz-Date:20150830T123600Z\n"),
              std::string::npos)
        << r.out;
    const auto parsed = bgw::aws::parse_authorization(authorization_of(r.out));
    ASSERT_TRUE(parsed);
    EXPECT_EQ(
        parsed->signed_headers,
        (std::vector<std::string>{"content-type", "host", "x-amz-date", "x-amz-security-token"}));
    EXPECT_EQ(authorization_of(r.out), library_authorization(r.out, "bedrock", true, true, temp));
    EXPECT_EQ(r.out.find("temp-secret"), std::string::npos);
}

TEST(sign_command, token_already_in_the_request) {
    const std::vector<std::string_view> args = {
        "--region",         "us-east-1",    "--service", "bedrock",      "--time",
        "20150830T123600Z", "--access-key", "ASIA",      "--secret-key", "x",
        "--session-token",  "tok"};
    const auto same = run(args, "GET / HTTP/1.1\nHost:h\nX-Amz-Security-Token:tok");
    ASSERT_EQ(same.rc, 0) << same.err;
    EXPECT_EQ(same.out.find("X-Amz-Security-Token"), same.out.rfind("X-Amz-Security-Token"));
    const auto other = run(args, "GET / HTTP/1.1\nHost:h\nX-Amz-Security-Token:old");
    EXPECT_EQ(other.rc, 1);
    EXPECT_NE(other.err.find("X-Amz-Security-Token"), std::string::npos);
}

TEST(sign_command, existing_authorization_is_replaced) {
    const auto r =
        run({"--region", "us-east-1", "--service", "bedrock", "--time", "20150830T123600Z"},
            "GET / HTTP/1.1\nHost:h\nAuthorization:Bearer old-key");
    ASSERT_EQ(r.rc, 0) << r.err;
    EXPECT_EQ(r.out.find("Bearer"), std::string::npos) << r.out;
    EXPECT_EQ(r.out.find("Authorization"), r.out.rfind("Authorization"));
}

TEST(sign_command, s3_turns_off_normalisation_and_double_encoding) {
    const std::string_view req = "GET /bucket//a/../key%3A1 HTTP/1.1\nHost:s3.amazonaws.com";
    const std::vector<std::string_view> base = {"--region", "us-east-1", "--time",
                                                "20150830T123600Z"};
    auto with_service = [&](std::string_view service) {
        auto args = base;
        args.insert(args.end(), {"--service", service});
        return run(args, req);
    };
    const auto s3 = with_service("s3");
    ASSERT_EQ(s3.rc, 0) << s3.err;
    EXPECT_EQ(authorization_of(s3.out),
              library_authorization(s3.out, "s3", false, false, gateway_creds));
    EXPECT_NE(authorization_of(s3.out),
              library_authorization(s3.out, "s3", true, true, gateway_creds));
    const auto other = with_service("sts");
    ASSERT_EQ(other.rc, 0) << other.err;
    EXPECT_EQ(authorization_of(other.out),
              library_authorization(other.out, "sts", true, true, gateway_creds));
}

TEST(sign_command, s3_signs_the_declared_payload_hash) {
    const std::string_view req =
        "PUT /bucket/key HTTP/1.1\nHost:s3.amazonaws.com\nX-Amz-Content-Sha256:UNSIGNED-PAYLOAD"
        "\n\nbody";
    const auto r =
        run({"--region", "us-east-1", "--service", "s3", "--time", "20150830T123600Z"}, req);
    ASSERT_EQ(r.rc, 0) << r.err;
    auto parsed = bgw::aws::parse_raw_request(r.out);
    ASSERT_TRUE(parsed);
    std::vector<header> hs;
    for (const auto& h : parsed->headers) {
        if (h.name != "Authorization") hs.push_back(h);
    }
    bgw::aws::signing_input in;
    in.method = "PUT";
    in.wire_path = "/bucket/key";
    in.headers = hs;
    in.payload_sha256 = "UNSIGNED-PAYLOAD";
    in.region = "us-east-1";
    in.service = "s3";
    in.time = sys_days{2015y / 8 / 30} + 12h + 36min;
    in.normalize_path = false;
    in.double_encode_path = false;
    EXPECT_EQ(authorization_of(r.out), bgw::aws::sign_v4(in, gateway_creds).authorization);
}

}  // namespace
