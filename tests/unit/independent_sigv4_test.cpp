// The fake upstream's own SigV4 verifier (tests/fakes/independent_sigv4) against the official
// AWS suite and the Bedrock vectors in tests/reference. It must agree with them on its own:
// nothing here reads a request or computes a value with the product's code.

#include "fakes/independent_sigv4.hpp"

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <string>
#include <vector>

#include "unit/slurp.hpp"
#include <gtest/gtest.h>

namespace {

namespace fs = std::filesystem;
namespace iv = bgw::test::independent_sigv4;

constexpr std::string_view suite_secret = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";

struct vector_case {
    std::string name;
    fs::path base;  ///< directory / leaf, to which the extensions are appended
};

void PrintTo(const vector_case& c, std::ostream* os) { *os << c.name; }

std::vector<vector_case> discover(std::string_view suite) {
    std::vector<vector_case> cases;
    const fs::path root = fs::path(BGW_REFERENCE_DIR) / suite;
    std::error_code ec;
    for (fs::recursive_directory_iterator it(root, ec), end; !ec && it != end; it.increment(ec)) {
        if (!it->is_directory()) continue;
        const fs::path base = it->path() / it->path().filename();
        if (fs::exists(base.string() + ".sreq") && fs::exists(base.string() + ".authz"))
            cases.push_back(
                {std::string(suite) + "/" + fs::relative(it->path(), root).string(), base});
    }
    std::sort(cases.begin(), cases.end(),
              [](const auto& a, const auto& b) { return a.name < b.name; });
    return cases;
}

std::vector<vector_case> all_cases() {
    auto cases = discover("sigv4-testsuite");
    auto bedrock = discover("sigv4-bedrock-vectors");
    cases.insert(cases.end(), bedrock.begin(), bedrock.end());
    return cases;
}

std::string read(const fs::path& base, std::string_view ext) {
    auto text = bgw::test::slurp(fs::path(base.string() + std::string(ext)));
    EXPECT_TRUE(text.has_value()) << base.string() << ext;
    std::string s = text.value_or("");
    s.erase(std::remove(s.begin(), s.end(), '\r'), s.end());
    return s;
}

/// A signed request of the suite (`.sreq`): request line, header lines (a line that starts
/// with a blank continues the previous value), a blank line, the body. Authorization is left
/// out: the case's `.authz` is the value under test.
iv::received parse_sreq(const std::string& text) {
    iv::received r;
    const auto head_end = text.find("\n\n");
    const std::string head = text.substr(0, head_end);
    if (head_end != std::string::npos) {
        const std::string body = text.substr(head_end + 2);
        r.payload_sha256 = iv::sha256_hex(body);
    } else {
        r.payload_sha256 = iv::sha256_hex("");
    }
    std::vector<std::string> lines;
    for (std::size_t s = 0; s <= head.size();) {
        auto e = head.find('\n', s);
        if (e == std::string::npos) e = head.size();
        lines.push_back(head.substr(s, e - s));
        s = e + 1;
    }
    // "GET /path with spaces?query HTTP/1.1"
    const std::string& line = lines.front();
    const auto first = line.find(' ');
    const auto last = line.rfind(' ');
    r.method = line.substr(0, first);
    const std::string target = line.substr(first + 1, last - first - 1);
    const auto q = target.find('?');
    r.wire_path = target.substr(0, q);
    r.query = q == std::string::npos ? "" : target.substr(q + 1);
    for (std::size_t i = 1; i < lines.size(); ++i) {
        const std::string& l = lines[i];
        if (l.empty()) continue;
        if ((l.front() == ' ' || l.front() == '\t') && !r.headers.empty()) {
            r.headers.back().second += " " + l;
            continue;
        }
        const auto colon = l.find(':');
        std::string name = l.substr(0, colon);
        std::string lowered = name;
        for (char& c : lowered) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
        if (lowered == "authorization") continue;
        r.headers.emplace_back(name, l.substr(colon + 1));
    }
    return r;
}

std::string trimmed(std::string s) {
    while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
    return s;
}

class IndependentSigV4 : public testing::TestWithParam<vector_case> {};

TEST_P(IndependentSigV4, AgreesWithTheReferenceCase) {
    const auto& c = GetParam();
    iv::received r = parse_sreq(read(c.base, ".sreq"));
    r.authorization = trimmed(read(c.base, ".authz"));
    auto got = iv::recompute(r, suite_secret);
    ASSERT_TRUE(got.has_value()) << r.authorization;
    EXPECT_EQ(got->canonical_request, trimmed(read(c.base, ".creq")));
    EXPECT_EQ(got->string_to_sign, trimmed(read(c.base, ".sts")));
    EXPECT_EQ(got->signature, got->claimed);
}

std::string case_name(const testing::TestParamInfo<vector_case>& p) {
    std::string n = p.param.name;
    for (char& ch : n)
        if (!std::isalnum(static_cast<unsigned char>(ch))) ch = '_';
    return n;
}

INSTANTIATE_TEST_SUITE_P(Reference, IndependentSigV4, testing::ValuesIn(all_cases()), case_name);

TEST(IndependentSigV4Suite, FindsBothSuites) {
    // A suite that found nothing would pass with zero cases: it must not.
    EXPECT_GE(discover("sigv4-testsuite").size(), 20u);
    EXPECT_GE(discover("sigv4-bedrock-vectors").size(), 5u);
}

/// One Bedrock case, changed in one place at a time: each change must break the signature.
TEST(IndependentSigV4Suite, AnyChangeToASignedPartBreaksTheSignature) {
    auto cases = discover("sigv4-bedrock-vectors");
    ASSERT_FALSE(cases.empty());
    const auto& c = cases.front();
    iv::received base = parse_sreq(read(c.base, ".sreq"));
    base.authorization = trimmed(read(c.base, ".authz"));
    auto ok = iv::recompute(base, suite_secret);
    ASSERT_TRUE(ok.has_value());
    ASSERT_EQ(ok->signature, ok->claimed);

    auto differs = [&](iv::received r) {
        auto got = iv::recompute(r, suite_secret);
        return !got.has_value() || got->signature != got->claimed;
    };
    {
        auto r = base;
        r.wire_path += "x";
        EXPECT_TRUE(differs(r)) << "path";
    }
    {
        auto r = base;
        r.query = r.query.empty() ? "a=b" : r.query + "&a=b";
        EXPECT_TRUE(differs(r)) << "query";
    }
    {
        auto r = base;
        r.payload_sha256 = iv::sha256_hex("other body");
        EXPECT_TRUE(differs(r)) << "body";
    }
    {
        auto r = base;
        r.method = r.method == "POST" ? "PUT" : "POST";
        EXPECT_TRUE(differs(r)) << "method";
    }
    {
        auto r = base;
        for (auto& [name, value] : r.headers)
            if (name == "Host" || name == "host") value = "bedrock-runtime.eu-west-1.amazonaws.com";
        EXPECT_TRUE(differs(r)) << "host";
    }
    {
        auto r = base;
        std::erase_if(r.headers, [](const auto& h) { return h.first == "X-Amz-Date"; });
        EXPECT_FALSE(iv::recompute(r, suite_secret).has_value()) << "x-amz-date missing";
    }
    EXPECT_NE(iv::recompute(base, "another secret")->signature, ok->claimed);
}

/// A request to `path` signing Host and X-Amz-Date, with an empty body: enough to read its
/// canonical request.
iv::received bare_request(std::string method, std::string path, std::string query = {}) {
    iv::received r;
    r.method = std::move(method);
    r.wire_path = std::move(path);
    r.query = std::move(query);
    r.headers = {{"Host", "h"}, {"X-Amz-Date", "20150830T123600Z"}};
    r.payload_sha256 = iv::sha256_hex("");
    r.authorization =
        "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/bedrock/aws4_request, "
        "SignedHeaders=host;x-amz-date, Signature=00";
    return r;
}

TEST(IndependentSigV4Suite, PathRules) {
    iv::received r = bare_request("POST", "/");
    auto first_line = [](const std::string& creq) {
        auto a = creq.find('\n');
        return creq.substr(a + 1, creq.find('\n', a + 1) - a - 1);
    };
    // Bedrock: an encoded model id is encoded again; dot segments and repeated slashes go.
    r.wire_path = "/model/a%3Ab/./x/../invoke";
    EXPECT_EQ(first_line(iv::recompute(r, "k")->canonical_request), "/model/a%253Ab/invoke");
    r.wire_path = "//model//m/";
    EXPECT_EQ(first_line(iv::recompute(r, "k")->canonical_request), "/model/m/");
    // S3: the path is encoded once, as it is, and never normalised.
    r.s3 = true;
    r.wire_path = "/bucket/a%3Ab/./key";
    EXPECT_EQ(first_line(iv::recompute(r, "k")->canonical_request), "/bucket/a%3Ab/./key");
}

TEST(IndependentSigV4Suite, QueryIsSortedAndEncodedStrictly) {
    const iv::received r = bare_request("GET", "/", "b=2&a=%7e&a=1&c&d=x y");
    auto creq = iv::recompute(r, "k")->canonical_request;
    EXPECT_NE(creq.find("\na=1&a=~&b=2&c=&d=x%20y\n"), std::string::npos) << creq;
}

TEST(IndependentSigV4Suite, WhatIsNotSigV4IsRefused) {
    iv::received r = bare_request("GET", "/");
    for (std::string a : {"", "Bearer abc", "AWS4-HMAC-SHA256 Credential=AK/20150830/us-east-1",
                          "AWS4-HMAC-SHA256 Credential=AK/20150830/us-east-1/bedrock/aws4_request, "
                          "Signature=00",
                          "AWS4-HMAC-SHA256 Credential=AK/20150830/us-east-1/bedrock/aws4_request, "
                          "SignedHeaders=host;x-amz-meta, Signature=00"}) {
        r.authorization = a;
        EXPECT_FALSE(iv::recompute(r, "k").has_value()) << a;
    }
}

}  // namespace
