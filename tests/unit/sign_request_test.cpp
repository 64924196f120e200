// aws::sign_request, the one place requests are signed: what it adds, in which order, and that
// a second, independent SigV4 implementation (the fake upstream's) accepts what it signs.

#include "bgw/aws/sign_request.hpp"

#include <cctype>
#include <chrono>
#include <string>
#include <vector>

#include "fakes/independent_sigv4.hpp"
#include <gtest/gtest.h>

namespace {

using bgw::aws::header;
namespace iv = bgw::test::independent_sigv4;

const bgw::aws::credentials keys{"AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", ""};
const bgw::aws::credentials temporary{"ASIAEXAMPLE", "secret/for/temporary", "token+value=="};
// 2015-08-30T12:36:00Z
constexpr std::chrono::sys_seconds when{std::chrono::seconds{1440938160}};

bgw::aws::request_to_sign bedrock_invoke(std::string_view body) {
    return {.method = "POST",
            .wire_path = "/model/anthropic.claude-3-haiku-20240307-v1%3A0/invoke",
            .query = "",
            .body = body,
            .region = "us-east-1",
            .service = "bedrock",
            .time = when};
}

bgw::aws::request_to_sign s3_request(std::string_view method,
                                     std::string_view path,
                                     std::string_view body) {
    return {.method = method,
            .wire_path = path,
            .query = "",
            .body = body,
            .region = "us-east-1",
            .service = "s3",
            .time = when};
}

std::vector<std::string> names(const std::vector<header>& hs) {
    std::vector<std::string> out;
    for (const auto& h : hs) out.push_back(h.name);
    return out;
}

/// What the fake upstream would say about the signed request.
bool independent_check_accepts(const std::vector<header>& headers,
                               const bgw::aws::request_to_sign& r,
                               std::string_view secret) {
    iv::received in;
    in.method = r.method;
    in.wire_path = r.wire_path;
    in.query = r.query;
    for (const auto& h : headers) {
        if (h.name == "Authorization")
            in.authorization = h.value;
        else
            in.headers.emplace_back(h.name, h.value);
    }
    in.s3 = r.service == "s3";
    // S3 signs the hash it is told (UNSIGNED-PAYLOAD, say); everything else the body's.
    in.payload_sha256 = iv::sha256_hex(r.body);
    for (const auto& h : headers) {
        std::string name = h.name;
        for (char& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
        if (in.s3 && name == "x-amz-content-sha256") in.payload_sha256 = h.value;
    }
    auto got = iv::recompute(in, secret);
    return got && got->signature == got->claimed;
}

TEST(SignRequest, AddsTheDateThenAuthorizationForLongTermKeys) {
    std::vector<header> headers{{"Host", "bedrock-runtime.us-east-1.amazonaws.com"},
                                {"Content-Type", "application/json"}};
    const auto r = bedrock_invoke(R"({"prompt":"hi"})");
    auto added = bgw::aws::sign_request(headers, r, keys);
    EXPECT_EQ(names(added), (std::vector<std::string>{"X-Amz-Date", "Authorization"}));
    EXPECT_EQ(added.front().value, "20150830T123600Z");
    EXPECT_EQ(headers.size(), 4u);
    EXPECT_TRUE(independent_check_accepts(headers, r, keys.secret_access_key));
    EXPECT_FALSE(independent_check_accepts(headers, r, "another secret"));
}

TEST(SignRequest, TemporaryCredentialsAddTheTokenFirstAndSignIt) {
    std::vector<header> headers{{"Host", "bedrock-runtime.us-east-1.amazonaws.com"}};
    const auto r = bedrock_invoke("{}");
    auto added = bgw::aws::sign_request(headers, r, temporary);
    EXPECT_EQ(names(added),
              (std::vector<std::string>{"X-Amz-Security-Token", "X-Amz-Date", "Authorization"}));
    EXPECT_EQ(added.front().value, temporary.session_token);
    EXPECT_NE(added.back().value.find("x-amz-security-token"), std::string::npos);
    EXPECT_TRUE(independent_check_accepts(headers, r, temporary.secret_access_key));
}

TEST(SignRequest, ADateAlreadyThereIsTheSigningInstant) {
    std::vector<header> headers{{"Host", "h"}, {"x-amz-date", "20240102T030405Z"}};
    auto added = bgw::aws::sign_request(headers, bedrock_invoke(""), keys);
    EXPECT_EQ(names(added), (std::vector<std::string>{"Authorization"}));
    EXPECT_NE(added.back().value.find("/20240102/us-east-1/bedrock/"), std::string::npos);
}

TEST(SignRequest, ADateThatDoesNotParseIsReplaced) {
    std::vector<header> headers{{"Host", "h"}, {"X-Amz-Date", "yesterday"}, {"Accept", "*/*"}};
    const auto r = bedrock_invoke("");
    auto added = bgw::aws::sign_request(headers, r, keys);
    EXPECT_EQ(names(added), (std::vector<std::string>{"X-Amz-Date", "Authorization"}));
    EXPECT_EQ(names(headers),
              (std::vector<std::string>{"Host", "Accept", "X-Amz-Date", "Authorization"}));
    EXPECT_TRUE(independent_check_accepts(headers, r, keys.secret_access_key));
}

TEST(SignRequest, S3SendsAndSignsThePayloadHash) {
    std::vector<header> headers{{"Host", "bucket.s3.us-east-1.amazonaws.com"}};
    const auto r = s3_request("PUT", "/a//b/./c.jsonl", "line\n");
    auto added = bgw::aws::sign_request(headers, r, keys);
    ASSERT_EQ(names(added),
              (std::vector<std::string>{"X-Amz-Date", "x-amz-content-sha256", "Authorization"}));
    EXPECT_EQ(added[1].value, iv::sha256_hex("line\n"));
    EXPECT_TRUE(independent_check_accepts(headers, r, keys.secret_access_key));
}

TEST(SignRequest, S3SignsADeclaredPayloadHashAsItIs) {
    std::vector<header> headers{{"Host", "h"}, {"X-Amz-Content-SHA256", "UNSIGNED-PAYLOAD"}};
    const auto r = s3_request("GET", "/bucket/key", "");
    auto added = bgw::aws::sign_request(headers, r, keys);
    EXPECT_EQ(names(added), (std::vector<std::string>{"X-Amz-Date", "Authorization"}));
    // Checked against UNSIGNED-PAYLOAD, not the empty body's hash.
    EXPECT_TRUE(independent_check_accepts(headers, r, keys.secret_access_key));
}

TEST(SignRequest, TheBodyIsSigned) {
    std::vector<header> headers{{"Host", "h"}};
    const auto r = bedrock_invoke("one body");
    bgw::aws::sign_request(headers, r, keys);
    EXPECT_TRUE(independent_check_accepts(headers, r, keys.secret_access_key));
    EXPECT_FALSE(
        independent_check_accepts(headers, bedrock_invoke("another body"), keys.secret_access_key));
}

}  // namespace
