// The `.req` parser and the `.sreq` writer (bgw/aws/raw_request.hpp).

#include "bgw/aws/raw_request.hpp"

#include <string>
#include <vector>

#include <gtest/gtest.h>

namespace {

using bgw::aws::header;

std::vector<std::pair<std::string, std::string>> pairs(const std::vector<header>& hs) {
    std::vector<std::pair<std::string, std::string>> out;
    for (const auto& h : hs) out.emplace_back(h.name, h.value);
    return out;
}

TEST(raw_request, parses_request_line_and_repeated_headers_in_order) {
    auto r = bgw::aws::parse_raw_request(
        "GET /a/b?x=1&y=2 HTTP/1.1\nHost:example.amazonaws.com\nMy-Header1:value4\n"
        "My-Header1:value1\nX-Amz-Date:20150830T123600Z");
    ASSERT_TRUE(r) << r.error().message;
    EXPECT_EQ(r->method, "GET");
    EXPECT_EQ(r->target, "/a/b?x=1&y=2");
    EXPECT_EQ(r->path(), "/a/b");
    EXPECT_EQ(r->query(), "x=1&y=2");
    EXPECT_EQ(r->version, "HTTP/1.1");
    EXPECT_EQ(pairs(r->headers), (std::vector<std::pair<std::string, std::string>>{
                                     {"Host", "example.amazonaws.com"},
                                     {"My-Header1", "value4"},
                                     {"My-Header1", "value1"},
                                     {"X-Amz-Date", "20150830T123600Z"}}));
    EXPECT_FALSE(r->has_header_terminator);
    EXPECT_TRUE(r->body.empty());
    EXPECT_EQ(r->eol, "\n");
}

TEST(raw_request, body_is_everything_after_the_empty_line) {
    auto r = bgw::aws::parse_raw_request("POST / HTTP/1.1\nHost:h\n\nline1\n\nline3\n");
    ASSERT_TRUE(r);
    EXPECT_TRUE(r->has_header_terminator);
    EXPECT_EQ(r->body, "line1\n\nline3\n");
    EXPECT_EQ(r->query(), "");

    auto empty_body = bgw::aws::parse_raw_request("GET / HTTP/1.1\nHost:h\n\n");
    ASSERT_TRUE(empty_body);
    EXPECT_TRUE(empty_body->has_header_terminator);
    EXPECT_TRUE(empty_body->body.empty());

    // A final line ending alone does not end the header section.
    auto trailing_lf = bgw::aws::parse_raw_request("GET / HTTP/1.1\nHost:h\n");
    ASSERT_TRUE(trailing_lf);
    EXPECT_FALSE(trailing_lf->has_header_terminator);
}

TEST(raw_request, optional_whitespace_around_values_is_trimmed) {
    auto r = bgw::aws::parse_raw_request(
        "GET / HTTP/1.1\nMy-Header1: value1 \nMy-Header2:\t\"a   b\"\t");
    ASSERT_TRUE(r);
    EXPECT_EQ(r->headers[0].value, "value1");
    // Inner runs are the signer's business (canonical value), not the parser's.
    EXPECT_EQ(r->headers[1].value, "\"a   b\"");
    EXPECT_EQ(r->fields[0], "My-Header1: value1 ");
}

TEST(raw_request, folded_lines_continue_the_value_joined_by_single_spaces) {
    auto r = bgw::aws::parse_raw_request(
        "GET / HTTP/1.1\nHost:h\nMy-Header1:value1\n  value2\n     value3\nX-Amz-Date:d");
    ASSERT_TRUE(r) << r.error().message;
    EXPECT_EQ(pairs(r->headers),
              (std::vector<std::pair<std::string, std::string>>{
                  {"Host", "h"}, {"My-Header1", "value1 value2 value3"}, {"X-Amz-Date", "d"}}));
    // The field itself stays as written, for the signed request.
    ASSERT_EQ(r->fields.size(), 3u);
    EXPECT_EQ(r->fields[1], "My-Header1:value1\n  value2\n     value3");
}

TEST(raw_request, folding_with_tabs_crlf_blank_pieces_and_an_empty_first_value) {
    auto r = bgw::aws::parse_raw_request(
        "GET / HTTP/1.1\r\nA:\r\n\tx  y \r\n \t \r\n\t z\r\nB: b \r\n\t\tc\r\n\r\n");
    ASSERT_TRUE(r) << r.error().message;
    // Inner runs stay (collapsing them is the signer's canonical form); a whitespace-only
    // continuation adds nothing; an empty first value gets no leading space.
    EXPECT_EQ(pairs(r->headers),
              (std::vector<std::pair<std::string, std::string>>{{"A", "x  y z"}, {"B", "b c"}}));
    ASSERT_EQ(r->fields.size(), 2u);
    EXPECT_EQ(r->fields[0], "A:\r\n\tx  y \r\n \t \r\n\t z");
    EXPECT_TRUE(r->has_header_terminator);
}

// The official suite's `get-header-value-multiline` case (botocore aws4_testsuite, aws-c-auth
// v4 suite): its canonical request shows the folded value joined with single spaces.
TEST(raw_request, suite_multiline_case_signs_as_the_suite_expects) {
    const std::string_view req_text =
        "GET / HTTP/1.1\nHost:example.amazonaws.com\nMy-Header1:value1\n  value2\n     value3\n"
        "X-Amz-Date:20150830T123600Z";
    auto r = bgw::aws::parse_raw_request(req_text);
    ASSERT_TRUE(r) << r.error().message;
    const auto when = bgw::aws::parse_amz_date("20150830T123600Z");
    ASSERT_TRUE(when);
    bgw::aws::signing_input in;
    in.method = r->method;
    in.wire_path = r->path();
    in.query = r->query();
    in.headers = r->headers;
    const std::string body_hash = bgw::aws::sha256_hex(r->body);
    in.payload_sha256 = body_hash;
    in.region = "us-east-1";
    in.service = "service";
    in.time = *when;
    EXPECT_EQ(bgw::aws::canonical_request(in),
              "GET\n/\n\nhost:example.amazonaws.com\nmy-header1:value1 value2 value3\n"
              "x-amz-date:20150830T123600Z\n\nhost;my-header1;x-amz-date\n"
              "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    const bgw::aws::credentials creds{"AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
                                      ""};
    EXPECT_EQ(bgw::aws::sign_v4(in, creds).authorization,
              "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, "
              "SignedHeaders=host;my-header1;x-amz-date, "
              "Signature=cfd34249e4b1c8d6b91ef74165d41a32e5fab3306300901bb65a51a73575eefd");
}

TEST(raw_request, target_may_contain_raw_spaces_and_utf8) {
    auto r = bgw::aws::parse_raw_request("GET /example space/\xe1\x88\xb4?q=a b HTTP/1.1\nHost:h");
    ASSERT_TRUE(r);
    EXPECT_EQ(r->path(), "/example space/\xe1\x88\xb4");
    EXPECT_EQ(r->query(), "q=a b");
}

TEST(raw_request, crlf_line_endings) {
    auto r = bgw::aws::parse_raw_request("POST /x HTTP/1.1\r\nHost: h\r\nA:1\r\n\r\nbody\r\n");
    ASSERT_TRUE(r);
    EXPECT_EQ(r->eol, "\r\n");
    EXPECT_EQ(r->version, "HTTP/1.1");
    EXPECT_EQ(r->headers[0].value, "h");
    EXPECT_EQ(r->fields[1], "A:1");
    EXPECT_EQ(r->body, "body\r\n");
}

TEST(raw_request, rejects_malformed_text) {
    for (std::string_view bad : {
             "",
             "\nHost:h",
             "GET",
             "GET /",
             "GET / FTP/1.0",
             "GET example HTTP/1.1",
             "G(T / HTTP/1.1",
             "GET / HTTP/1.1\nHost h",
             "GET / HTTP/1.1\nBad Name:v",
             "GET / HTTP/1.1\nName :v",
             "GET / HTTP/1.1\n:v",
             "GET / HTTP/1.1\n  folded-first",
         }) {
        auto r = bgw::aws::parse_raw_request(bad);
        EXPECT_FALSE(r) << "accepted: " << bad;
        if (!r) {
            EXPECT_EQ(r.error().type, "ValidationException");
            EXPECT_FALSE(r.error().message.empty());
        }
    }
}

TEST(raw_request, find_header_is_case_insensitive_and_returns_the_first) {
    const std::vector<header> hs = {{"X-Amz-Date", "a"}, {"x-amz-date", "b"}};
    EXPECT_EQ(bgw::aws::find_header(hs, "X-AMZ-DATE"), "a");
    EXPECT_FALSE(bgw::aws::find_header(hs, "host").has_value());
    EXPECT_FALSE(bgw::aws::find_header(hs, "x-amz-dat").has_value());
}

TEST(raw_request, format_without_body_keeps_the_unterminated_framing) {
    auto r = bgw::aws::parse_raw_request("GET / HTTP/1.1\nHost:h\nX-Amz-Date:d\n");
    ASSERT_TRUE(r);
    const std::vector<header> added = {{"X-Amz-Security-Token", "tok"}};
    EXPECT_EQ(bgw::aws::format_signed_request(*r, added, "AWS4-HMAC-SHA256 x"),
              "GET / HTTP/1.1\nHost:h\nX-Amz-Date:d\nX-Amz-Security-Token:tok\n"
              "Authorization:AWS4-HMAC-SHA256 x");
}

TEST(raw_request, format_with_body_and_folded_field_and_old_authorization) {
    auto r = bgw::aws::parse_raw_request(
        "POST /p?q HTTP/1.1\nHost:h\nauthorization: stale\nMy-Header1:v1\n  v2\n\n{\"a\":1}");
    ASSERT_TRUE(r);
    const std::string out = bgw::aws::format_signed_request(*r, {}, "AWS4-HMAC-SHA256 y");
    EXPECT_EQ(out,
              "POST /p?q HTTP/1.1\nHost:h\nMy-Header1:v1\n  v2\n"
              "Authorization:AWS4-HMAC-SHA256 y\n\n{\"a\":1}");
    // And the output reads back as the same request plus the new header.
    auto again = bgw::aws::parse_raw_request(out);
    ASSERT_TRUE(again);
    EXPECT_EQ(bgw::aws::find_header(again->headers, "authorization"), "AWS4-HMAC-SHA256 y");
    EXPECT_EQ(again->body, r->body);
}

TEST(raw_request, format_keeps_crlf) {
    auto r = bgw::aws::parse_raw_request("GET / HTTP/1.1\r\nHost:h\r\n\r\n");
    ASSERT_TRUE(r);
    EXPECT_EQ(bgw::aws::format_signed_request(*r, {}, "z"),
              "GET / HTTP/1.1\r\nHost:h\r\nAuthorization:z\r\n\r\n");
}

}  // namespace
