// Unit tests of the signer's pieces: encoding rules, canonical parts, dates, Authorization
// parsing and the signing-key cache. The end-to-end vectors are in sigv4_vectors_test.cpp.

#include "bgw/aws/sigv4.hpp"

#include "bgw/aws/signing_key_cache.hpp"

#include <algorithm>
#include <array>
#include <chrono>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

namespace {

using namespace std::chrono;
using bgw::aws::header;

std::string hex(const bgw::aws::signing_key& k) {
    static constexpr char digits[] = "0123456789abcdef";
    std::string s;
    for (auto b : k) {
        s += digits[b >> 4];
        s += digits[b & 0x0f];
    }
    return s;
}

bgw::aws::signing_input input_for(std::string_view path,
                                  bool normalize = true,
                                  bool double_encode = true) {
    bgw::aws::signing_input in;
    in.method = "POST";
    in.wire_path = path;
    in.region = "us-east-1";
    in.service = "bedrock";
    in.normalize_path = normalize;
    in.double_encode_path = double_encode;
    return in;
}

// ---- hashing and key derivation --------------------------------------------------------------

TEST(sigv4_hash, sha256_known_answers) {
    // FIPS 180-2 examples.
    EXPECT_EQ(bgw::aws::sha256_hex(""),
              "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    EXPECT_EQ(bgw::aws::sha256_hex("abc"),
              "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

TEST(sigv4_signing_key, matches_aws_documentation_example) {
    // docs.aws.amazon.com/IAM/latest/UserGuide/signing-elements.html ("derive a signing key"):
    // secret wJalr..., 20120215, us-east-1, iam.
    const auto key = bgw::aws::derive_signing_key("wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
                                                  "20120215", "us-east-1", "iam");
    EXPECT_EQ(hex(key), "f4780e2d9f65fa895f9c67b32ce1baf0b0d8a43505a000a1a9e090d414db404d");
}

// ---- signing key cache -----------------------------------------------------------------------

const bgw::aws::credentials creds_a{"AKIDA", "secret-a", ""};

TEST(sigv4_key_cache, returns_the_derived_key_and_reuses_it) {
    bgw::aws::signing_key_cache cache;
    const auto first = cache.get(creds_a, "20150830", "us-east-1", "bedrock");
    EXPECT_EQ(first, bgw::aws::derive_signing_key("secret-a", "20150830", "us-east-1", "bedrock"));
    EXPECT_EQ(cache.size(), 1u);
    EXPECT_EQ(cache.get(creds_a, "20150830", "us-east-1", "bedrock"), first);
    EXPECT_EQ(cache.size(), 1u);
}

TEST(sigv4_key_cache, different_scope_gets_its_own_entry) {
    bgw::aws::signing_key_cache cache;
    const auto east = cache.get(creds_a, "20150830", "us-east-1", "bedrock");
    const auto west = cache.get(creds_a, "20150830", "us-west-2", "bedrock");
    EXPECT_NE(east, west);
    EXPECT_EQ(west, bgw::aws::derive_signing_key("secret-a", "20150830", "us-west-2", "bedrock"));
    EXPECT_EQ(cache.size(), 2u);
}

TEST(sigv4_key_cache, rotated_secret_is_never_served_the_old_key) {
    bgw::aws::signing_key_cache cache;
    const auto old_key = cache.get(creds_a, "20150830", "us-east-1", "bedrock");
    const bgw::aws::credentials rotated{"AKIDA", "secret-b", ""};
    const auto new_key = cache.get(rotated, "20150830", "us-east-1", "bedrock");
    EXPECT_NE(new_key, old_key);
    EXPECT_EQ(new_key,
              bgw::aws::derive_signing_key("secret-b", "20150830", "us-east-1", "bedrock"));
    // Same access key id and scope: the entry was replaced, not duplicated.
    EXPECT_EQ(cache.size(), 1u);
}

TEST(sigv4_key_cache, new_date_evicts_old_entries_and_old_dates_are_not_cached) {
    bgw::aws::signing_key_cache cache;
    cache.get(creds_a, "20150830", "us-east-1", "bedrock");
    cache.get(creds_a, "20150830", "us-west-2", "bedrock");
    ASSERT_EQ(cache.size(), 2u);
    const auto next_day = cache.get(creds_a, "20150831", "us-east-1", "bedrock");
    EXPECT_EQ(next_day,
              bgw::aws::derive_signing_key("secret-a", "20150831", "us-east-1", "bedrock"));
    EXPECT_EQ(cache.size(), 1u);
    // A straggler signed with yesterday's date still gets the right key, without evicting today.
    const auto straggler = cache.get(creds_a, "20150830", "us-west-2", "bedrock");
    EXPECT_EQ(straggler,
              bgw::aws::derive_signing_key("secret-a", "20150830", "us-west-2", "bedrock"));
    EXPECT_EQ(cache.size(), 1u);
    EXPECT_EQ(cache.get(creds_a, "20150831", "us-east-1", "bedrock"), next_day);
}

TEST(sigv4_key_cache, concurrent_use_returns_correct_keys) {
    bgw::aws::signing_key_cache cache;
    const std::array<std::string, 4> regions = {"us-east-1", "us-west-2", "eu-west-1",
                                                "ap-south-1"};
    std::array<bgw::aws::signing_key, 4> expected{};
    for (std::size_t i = 0; i < regions.size(); ++i) {
        expected[i] = bgw::aws::derive_signing_key("secret-a", "20150830", regions[i], "bedrock");
    }
    std::vector<int> wrong(8, 0);
    std::vector<std::thread> threads;
    for (std::size_t t = 0; t < wrong.size(); ++t) {
        threads.emplace_back([&, t] {
            for (std::size_t i = 0; i < 200; ++i) {
                const std::size_t r = (i + t) % regions.size();
                if (cache.get(creds_a, "20150830", regions[r], "bedrock") != expected[r]) {
                    ++wrong[t];
                }
            }
        });
    }
    for (auto& th : threads) th.join();
    EXPECT_EQ(std::count(wrong.begin(), wrong.end(), 0), static_cast<long>(wrong.size()));
    EXPECT_EQ(cache.size(), regions.size());
}

TEST(sigv4_key_cache, sign_v4_with_cache_equals_without) {
    bgw::aws::signing_key_cache cache;
    const std::vector<header> hs = {{"Host", "bedrock-runtime.us-east-1.amazonaws.com"},
                                    {"X-Amz-Date", "20150830T123600Z"}};
    auto in = input_for("/model/m/invoke");
    in.headers = hs;
    // signing_input holds views: the hash must outlive it.
    const std::string body_hash = bgw::aws::sha256_hex("{}");
    in.payload_sha256 = body_hash;
    in.time = sys_days{2015y / 8 / 30} + 12h + 36min;
    const auto plain = bgw::aws::sign_v4(in, creds_a);
    EXPECT_EQ(bgw::aws::sign_v4(in, creds_a, &cache).authorization, plain.authorization);
    EXPECT_EQ(bgw::aws::sign_v4(in, creds_a, &cache).authorization, plain.authorization);
    EXPECT_EQ(cache.size(), 1u);
    EXPECT_EQ(plain.signature_hex.size(), 64u);
    EXPECT_EQ(plain.signed_headers, "host;x-amz-date");
}

// ---- canonical URI ---------------------------------------------------------------------------

struct uri_case {
    std::string_view wire;
    bool normalize;
    bool double_encode;
    std::string_view canonical;
};

TEST(sigv4_canonical_uri, table) {
    const uri_case cases[] = {
        // Bedrock: the already-encoded wire path is encoded again.
        {"/model/a%3Ab/invoke", true, true, "/model/a%253Ab/invoke"},
        {"/model/arn%3Aaws%3Abedrock%2Fx/invoke", true, true,
         "/model/arn%253Aaws%253Abedrock%252Fx/invoke"},
        // Raw bytes (AnthropicBedrock's ':' and the classic suite's raw paths) are encoded once.
        {"/model/a:b/invoke", true, true, "/model/a%3Ab/invoke"},
        {"/example space/", true, true, "/example%20space/"},
        {"/\xe1\x88\xb4", true, true, "/%E1%88%B4"},
        {"/-._~AZaz09", true, true, "/-._~AZaz09"},
        {"/$delete", true, true, "/%24delete"},
        // Dot segments and duplicate slashes are removed.
        {"/a/./b/../c", true, true, "/a/c"},
        {"/example/..", true, true, "/"},
        {"/../../a", true, true, "/a"},
        {"//a//b//", true, true, "/a/b/"},
        {"//", true, true, "/"},
        {"/./", true, true, "/"},
        {"", true, true, "/"},
        // "%2F" inside a segment is not a separator, and "%2E%2E" is not a dot segment.
        {"/a%2F../b", true, true, "/a%252F../b"},
        {"/a/%2E%2E/b", true, true, "/a/%252E%252E/b"},
        // Normalisation off: the path is kept as sent.
        {"/example/..", false, true, "/example/.."},
        {"//example//", false, true, "//example//"},
        // S3: neither normalised nor double-encoded; raw bytes still get encoded once.
        {"/a//b/../c%3A d", false, false, "/a//b/../c%3A%20d"},
        {"/k%3ax", false, false, "/k%3Ax"},
        {"/100%", false, false, "/100%25"},
    };
    for (const auto& c : cases) {
        EXPECT_EQ(bgw::aws::canonical_uri(input_for(c.wire, c.normalize, c.double_encode)),
                  c.canonical)
            << "wire " << c.wire << " normalize=" << c.normalize << " double=" << c.double_encode;
    }
}

// ---- canonical query -------------------------------------------------------------------------

TEST(sigv4_canonical_query, table) {
    const std::pair<std::string_view, std::string_view> cases[] = {
        {"", ""},
        {"b=2&a=1", "a=1&b=2"},
        // Sorted by key, then value; not by "key=value" ('-' < '=').
        {"Param-3=x&Param=y", "Param=y&Param-3=x"},
        {"k=b&k=B&k=a", "k=B&k=a&k=b"},
        // A key without '=' gets an empty value; empty pairs disappear.
        {"flag&&a=1&", "a=1&flag="},
        // Raw bytes and lower-case escapes end up in one canonical form.
        {"\xe1\x88\xb4=bar", "%E1%88%B4=bar"},
        {"%e1%88%b4=bar", "%E1%88%B4=bar"},
        {"q=a b", "q=a%20b"},
        // '+' is a literal plus, '=' in a value and '/' are encoded, a broken escape is literal.
        {"q=a+b", "q=a%2Bb"},
        {"q=a=b", "q=a%3Db"},
        {"p=/x", "p=%2Fx"},
        {"q=%zz", "q=%25zz"},
        {"nextToken=abc%3D%3D&maxResults=10", "maxResults=10&nextToken=abc%3D%3D"},
    };
    for (const auto& [raw, canonical] : cases) {
        EXPECT_EQ(bgw::aws::canonical_query(raw), canonical) << "raw query: " << raw;
    }
}

// ---- canonical headers -----------------------------------------------------------------------

TEST(sigv4_canonical_headers, values_trimmed_collapsed_and_grouped) {
    const std::vector<header> hs = {
        {"Host", "example.amazonaws.com"},  {"My-Header2", "  \"a   b \t c\"  "},
        {"my-header1", "value4"},           {"MY-HEADER1", "value1"},
        {"X-Amz-Date", "20150830T123600Z"}, {"User-Agent", "boto3"},
        {"Connection", "keep-alive"},       {"X-Amzn-Trace-Id", "Root=1"},
        {"Proxy-Authorization", "Basic x"}, {"Authorization", "AWS4-HMAC-SHA256 stale"},
        {"Transfer-Encoding", "chunked"},
    };
    auto in = input_for("/");
    in.method = "GET";
    in.headers = hs;
    in.payload_sha256 = "UNSIGNED-PAYLOAD";
    EXPECT_EQ(bgw::aws::canonical_request(in),
              "GET\n/\n\n"
              "host:example.amazonaws.com\n"
              "my-header1:value4,value1\n"
              "my-header2:\"a b c\"\n"
              "x-amz-date:20150830T123600Z\n"
              "\n"
              "host;my-header1;my-header2;x-amz-date\n"
              "UNSIGNED-PAYLOAD");
    EXPECT_EQ(bgw::aws::signed_header_names(hs), "host;my-header1;my-header2;x-amz-date");
}

TEST(sigv4_canonical_headers, unsigned_header_list) {
    for (std::string_view n : {"connection", "expect", "keep-alive", "proxy-authorization",
                               "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade",
                               "user-agent", "x-amzn-trace-id", "authorization"}) {
        EXPECT_TRUE(bgw::aws::is_unsigned_header(n)) << n;
    }
    for (std::string_view n :
         {"host", "x-amz-date", "x-amz-security-token", "content-type", "content-length",
          "x-amz-content-sha256", "accept", "x-amzn-bedrock-service-tier", "tee"}) {
        EXPECT_FALSE(bgw::aws::is_unsigned_header(n)) << n;
    }
}

TEST(sigv4_string_to_sign, scope_uses_date_region_service) {
    auto in = input_for("/");
    in.time = sys_days{2015y / 8 / 30} + 12h + 36min;
    EXPECT_EQ(bgw::aws::string_to_sign("x", in),
              "AWS4-HMAC-SHA256\n20150830T123600Z\n20150830/us-east-1/bedrock/aws4_request\n" +
                  bgw::aws::sha256_hex("x"));
}

// ---- dates -----------------------------------------------------------------------------------

TEST(sigv4_amz_date, format_and_parse_round_trip) {
    const sys_seconds t = sys_days{2015y / 8 / 30} + 12h + 36min;
    EXPECT_EQ(bgw::aws::format_amz_date(t), "20150830T123600Z");
    EXPECT_EQ(bgw::aws::parse_amz_date("20150830T123600Z"), t);
    EXPECT_EQ(bgw::aws::format_amz_date(sys_seconds{}), "19700101T000000Z");
    const sys_seconds leap_day = sys_days{2016y / 2 / 29} + 23h + 59min + 59s;
    EXPECT_EQ(bgw::aws::format_amz_date(leap_day), "20160229T235959Z");
    EXPECT_EQ(bgw::aws::parse_amz_date("20160229T235959Z"), leap_day);
}

TEST(sigv4_amz_date, rejects_malformed) {
    for (std::string_view bad :
         {"", "20150830T123600", "20150830T123600z", "20150830 123600Z", "2015083T0123600Z",
          "2015-08-30T12:36:00Z", "20150830T12360aZ", "20151330T123600Z", "20150230T123600Z",
          "20150229T000000Z", "20150800T123600Z", "20150830T243600Z", "20150830T126000Z",
          "20150830T123660Z", "20150830T123600Z ", "+0150830T123600Z"}) {
        EXPECT_FALSE(bgw::aws::parse_amz_date(bad).has_value()) << bad;
    }
}

// ---- Authorization parsing -------------------------------------------------------------------

constexpr std::string_view valid_authz =
    "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/bedrock/aws4_request, "
    "SignedHeaders=host;x-amz-date, "
    "Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31";

TEST(sigv4_parse_authorization, valid) {
    const auto p = bgw::aws::parse_authorization(valid_authz);
    ASSERT_TRUE(p);
    EXPECT_EQ(p->access_key_id, "AKIDEXAMPLE");
    EXPECT_EQ(p->date, "20150830");
    EXPECT_EQ(p->region, "us-east-1");
    EXPECT_EQ(p->service, "bedrock");
    EXPECT_EQ(p->signed_headers, (std::vector<std::string>{"host", "x-amz-date"}));
    EXPECT_EQ(p->signature_hex, "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31");
}

TEST(sigv4_parse_authorization, tolerates_spacing_and_order) {
    const auto p = bgw::aws::parse_authorization(
        "  AWS4-HMAC-SHA256   Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d"
        "763fbf31,Credential=AKID/20150830/eu-west-1/bedrock/aws4_request ,SignedHeaders=host ");
    ASSERT_TRUE(p);
    EXPECT_EQ(p->access_key_id, "AKID");
    EXPECT_EQ(p->region, "eu-west-1");
    EXPECT_EQ(p->signed_headers, std::vector<std::string>{"host"});
}

TEST(sigv4_parse_authorization, round_trips_sign_v4_output) {
    auto in = input_for("/model/m/invoke");
    const std::vector<header> hs = {{"Host", "h"}, {"X-Amz-Date", "20150830T123600Z"}};
    in.headers = hs;
    const std::string body_hash = bgw::aws::sha256_hex("");
    in.payload_sha256 = body_hash;
    in.time = sys_days{2015y / 8 / 30} + 12h + 36min;
    const auto sig = bgw::aws::sign_v4(in, creds_a);
    const auto p = bgw::aws::parse_authorization(sig.authorization);
    ASSERT_TRUE(p);
    EXPECT_EQ(p->access_key_id, "AKIDA");
    EXPECT_EQ(p->signature_hex, sig.signature_hex);
}

TEST(sigv4_parse_authorization, rejects_other_schemes_and_malformed_values) {
    const std::string sig =
        "Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31";
    const std::string cred = "Credential=AKID/20150830/us-east-1/bedrock/aws4_request";
    const std::string sh = "SignedHeaders=host;x-amz-date";
    auto v4 = [](const std::string& rest) { return "AWS4-HMAC-SHA256 " + rest; };
    const std::vector<std::string> bad = {
        "",
        "Bearer ABSKQmVkcm9ja0FQSUtleS1leGFtcGxl",
        "AWS4-HMAC-SHA256",
        "AWS4-HMAC-SHA256X " + cred + ", " + sh + ", " + sig,
        "aws4-hmac-sha256 " + cred + ", " + sh + ", " + sig,
        "AWS4-HMAC-SHA256" + cred + ", " + sh + ", " + sig,
        v4(cred + ", " + sh),                             // no Signature
        v4(sh + ", " + sig),                              // no Credential
        v4(cred + ", " + sig),                            // no SignedHeaders
        v4(cred + ", " + cred + ", " + sh + ", " + sig),  // repeated
        v4(cred + ", " + sh + ", " + sig + ", Extra=1"),  // unknown part
        v4(cred + ", " + sh + ", " + sig + ","),          // stray comma
        v4(cred + " " + sh + ", " + sig),                 // missing comma
        v4("Credential=AKID/20150830/us-east-1/aws4_request, " + sh + ", " + sig),
        v4("Credential=AKID/20150830/us-east-1/bedrock/aws4_request/, " + sh + ", " + sig),
        v4("Credential=AKID/2015083/us-east-1/bedrock/aws4_request, " + sh + ", " + sig),
        v4("Credential=AKID/2015083x/us-east-1/bedrock/aws4_request, " + sh + ", " + sig),
        v4("Credential=AKID/20150830/us-east-1/bedrock/aws4_requests, " + sh + ", " + sig),
        v4("Credential=/20150830/us-east-1/bedrock/aws4_request, " + sh + ", " + sig),
        v4("Credential=AKID/20150830//bedrock/aws4_request, " + sh + ", " + sig),
        v4(cred + ", SignedHeaders=, " + sig),
        v4(cred + ", SignedHeaders=host;;x-amz-date, " + sig),
        v4(cred + ", SignedHeaders=host;, " + sig),
        v4(cred + ", " + sh + ", Signature=5fa00fa3"),  // too short
        v4(cred + ", " + sh +
           ", Signature=5FA00FA31553B73EBF1942676E86291E8372FF2A2260956D9B8AAE1D763FBF31"),
        v4(cred + ", " + sh +
           ", Signature=zfa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"),
    };
    for (const auto& v : bad) {
        EXPECT_FALSE(bgw::aws::parse_authorization(v).has_value()) << v;
    }
    // Sanity: the pieces above do form a valid value.
    EXPECT_TRUE(bgw::aws::parse_authorization(v4(cred + ", " + sh + ", " + sig)).has_value());
}

}  // namespace
