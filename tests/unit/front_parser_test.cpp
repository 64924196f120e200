// The client-side request parser (issue 16): each request is fed whole, one byte at a time and
// split at every byte boundary, and must come out the same every time: the same refusal, or the
// same head and body.

#include "bgw/http/front_parser.hpp"

#include <string>
#include <vector>

#include "support/feed_pieces.hpp"
#include <boost/asio/buffer.hpp>
#include <gtest/gtest.h>

namespace {

namespace http = boost::beast::http;
using bgw::http::front_limits;
using bgw::http::front_parser;

/// What a parse came to: the refusal's status (0: none), Beast's error (empty: none), whether
/// the message is complete, and what it holds.
struct outcome {
    unsigned status = 0;
    std::string beast_error;
    bool done = false;
    std::string target;
    std::string fields;  ///< "name: value\n" for each field kept
    std::string body;
    std::size_t left = 0;  ///< bytes after the message (a pipelined next request)

    bool operator==(const outcome&) const = default;
};

std::ostream& operator<<(std::ostream& os, const outcome& o) {
    return os << "{status " << o.status << ", error '" << o.beast_error << "', done " << o.done
              << ", target '" << o.target << "', body " << o.body.size() << " bytes, left "
              << o.left << "}";
}

/// Feeds `wire` as a connection would deliver it: the pieces `cuts` marks, each appended to
/// what the parser left unconsumed.
outcome parse(const std::string& wire, const std::vector<std::size_t>& cuts, front_limits limits) {
    front_parser p(limits);
    p.eager(true);
    const auto [ec, left] = bgw::test::feed_pieces(p, wire, cuts);
    outcome o;
    if (p.refusal()) o.status = static_cast<unsigned>(p.refusal()->status);
    if (ec) o.beast_error = ec.message();
    o.done = p.is_done();
    o.target = std::string(p.get().target());
    for (const auto& f : p.get()) {
        o.fields += std::string(f.name_string()) + ": " + std::string(f.value()) + "\n";
    }
    o.body = p.get().body();
    // What an error leaves unparsed is of no interest: the connection closes.
    if (!ec) o.left = left;
    return o;
}

outcome whole(const std::string& wire, front_limits l = {}) { return parse(wire, {}, l); }

/// Parses `wire` whole, then byte by byte, then split in two at every boundary, and expects the
/// same outcome each time; returns it.
outcome same_every_way(const std::string& wire, front_limits l = {}) {
    const outcome expected = whole(wire, l);
    std::vector<std::size_t> bytes;
    for (std::size_t i = 1; i < wire.size(); ++i) bytes.push_back(i);
    EXPECT_EQ(parse(wire, bytes, l), expected) << "fed one byte at a time";
    for (std::size_t i = 1; i < wire.size(); ++i)
        EXPECT_EQ(parse(wire, {i}, l), expected) << "split at " << i;
    return expected;
}

const std::string converse = "POST /model/m/converse HTTP/1.1\r\nHost: gw\r\n";

TEST(front_parser, content_length_body_same_every_way) {
    auto o =
        same_every_way(converse + "Content-Length: 5\r\n\r\nhello" + "GET /healthz HTTP/1.1\r\n");
    EXPECT_TRUE(o.done);
    EXPECT_EQ(o.body, "hello");
    EXPECT_EQ(o.left, 23u);  // the pipelined request stays for the next parse
}

TEST(front_parser, chunked_body_with_extension_and_trailer_same_every_way) {
    auto o = same_every_way(converse +
                            "Transfer-Encoding: chunked\r\n\r\n"
                            "3;ext=1\r\nabc\r\n2\r\nde\r\n0\r\nX-Trailer: t\r\n\r\n");
    EXPECT_TRUE(o.done) << o;
    EXPECT_EQ(o.status, 0u);
    EXPECT_EQ(o.body, "abcde");
    EXPECT_EQ(o.fields.find("X-Trailer"), std::string::npos) << "trailers are dropped";
}

TEST(front_parser, a_field_beast_cannot_hold_is_431_not_an_exception) {
    front_limits l;
    l.max_header_bytes = 1024 * 1024;  // the head limit allows it; the field limit holds
    for (std::size_t size : {65'533u, 65'534u, 70'000u}) {
        const std::string value(size, 'v');
        auto o = whole(converse + "X-Big: " + value + "\r\n\r\n", l);
        if (size <= bgw::http::max_field_bytes) {
            EXPECT_EQ(o.status, 0u) << size;
            EXPECT_TRUE(o.done) << size;
        } else {
            EXPECT_EQ(o.status, 431u) << size;
        }
        const std::string name(size, 'n');
        auto n = whole(converse + name + ": v\r\n\r\n", l);
        EXPECT_EQ(n.status, size <= bgw::http::max_field_bytes ? 0u : 431u) << size;
    }
}

TEST(front_parser, a_trailer_field_beast_cannot_hold_is_431) {
    front_limits l;
    l.max_header_bytes = 1024 * 1024;
    auto o = whole(converse + "Transfer-Encoding: chunked\r\n\r\n1\r\na\r\n0\r\nX-T: " +
                       std::string(70'000, 't') + "\r\n\r\n",
                   l);
    EXPECT_EQ(o.status, 431u) << o;
}

TEST(front_parser, chunk_extensions_and_trailers_count_against_the_head_limit) {
    front_limits l;
    l.max_header_bytes = 2048;
    std::string chunks;
    for (int i = 0; i < 40; ++i) chunks += "1;e=" + std::string(60, 'x') + "\r\na\r\n";
    auto ext = whole(converse + "Transfer-Encoding: chunked\r\n\r\n" + chunks + "0\r\n\r\n", l);
    EXPECT_EQ(ext.status, 431u) << ext;
    std::string trailers;
    for (int i = 0; i < 40; ++i)
        trailers += "X-T" + std::to_string(i) + ": " + std::string(60, 'y') + "\r\n";
    auto tr = whole(
        converse + "Transfer-Encoding: chunked\r\n\r\n1\r\na\r\n0\r\n" + trailers + "\r\n", l);
    EXPECT_EQ(tr.status, 431u) << tr;
    l.max_header_count = 8;
    std::string few;
    for (int i = 0; i < 10; ++i) few += "X-T" + std::to_string(i) + ": y\r\n";
    auto count =
        whole(converse + "Transfer-Encoding: chunked\r\n\r\n1\r\na\r\n0\r\n" + few + "\r\n", l);
    EXPECT_EQ(count.status, 431u) << count;
}

struct framing_case {
    const char* head;  ///< after the request line and Host
    unsigned status;   ///< 0: accepted
};

class front_parser_framing : public ::testing::TestWithParam<framing_case> {};

TEST_P(front_parser_framing, follows_rfc_9112) {
    const auto& c = GetParam();
    auto o = same_every_way(converse + c.head + "\r\n" + "5\r\nhello\r\n0\r\n\r\n");
    if (c.status == 0) {
        EXPECT_TRUE(o.done) << c.head << " " << o;
        EXPECT_EQ(o.body, "hello");
    } else if (o.status == 0) {
        // Beast's own refusal (a repeated Transfer-Encoding): a 400 in the session as well.
        EXPECT_EQ(c.status, 400u) << c.head << " " << o;
        EXPECT_FALSE(o.beast_error.empty()) << c.head << " " << o;
    } else {
        EXPECT_EQ(o.status, c.status) << c.head << " " << o;
    }
}

INSTANTIATE_TEST_SUITE_P(
    table,
    front_parser_framing,
    ::testing::Values(framing_case{"Transfer-Encoding: chunked\r\n", 0},
                      framing_case{"Transfer-Encoding: CHUNKED\r\n", 0},
                      framing_case{"Transfer-Encoding: xchunked\r\n", 400},
                      framing_case{"Transfer-Encoding: gzip\r\n", 400},
                      framing_case{"Transfer-Encoding: identity\r\n", 400},
                      framing_case{"Transfer-Encoding: chunked, chunked\r\n", 400},
                      framing_case{"Transfer-Encoding: chunked, identity\r\n", 400},
                      framing_case{"Transfer-Encoding: chunked\r\nTransfer-Encoding: gzip\r\n",
                                   400},
                      framing_case{"Transfer-Encoding: gzip, chunked\r\n", 501},
                      framing_case{"Transfer-Encoding: ,\r\n", 400},
                      framing_case{"Transfer-Encoding: gzip\r\nContent-Length: 18\r\n", 400}));

TEST(front_parser, chunked_in_http_1_0_is_400) {
    auto o = whole(
        "POST /model/m/converse HTTP/1.0\r\nHost: gw\r\nTransfer-Encoding: chunked\r\n"
        "\r\n5\r\nhello\r\n0\r\n\r\n");
    EXPECT_EQ(o.status, 400u) << o;
}

TEST(front_parser, host_is_required_once) {
    EXPECT_EQ(whole("GET /healthz HTTP/1.1\r\n\r\n").status, 400u);
    EXPECT_EQ(whole("GET /healthz HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n").status, 400u);
    EXPECT_EQ(whole("GET /healthz HTTP/1.0\r\n\r\n").status, 0u);  // 1.0 need not name one
    EXPECT_TRUE(whole("GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n").done);
}

TEST(front_parser, fields_named_by_connection_are_dropped) {
    auto o = whole(converse +
                   "Connection: keep-alive, X-Amzn-Bedrock-Trace, Content-Type\r\n"
                   "X-Amzn-Bedrock-Trace: ENABLED\r\nContent-Type: application/json\r\n"
                   "Accept: */*\r\nContent-Length: 0\r\n\r\n");
    ASSERT_TRUE(o.done) << o;
    EXPECT_EQ(o.fields.find("\nX-Amzn-Bedrock-Trace:"), std::string::npos) << o.fields;
    EXPECT_EQ(o.fields.find("\nContent-Type:"), std::string::npos) << o.fields;
    EXPECT_NE(o.fields.find("Accept: */*"), std::string::npos) << o.fields;
    EXPECT_NE(o.fields.find("Connection:"), std::string::npos) << o.fields;
}

TEST(front_parser, target_and_field_count_limits) {
    front_limits l;
    l.max_target_bytes = 300;
    EXPECT_EQ(whole("GET /" + std::string(400, 'a') + " HTTP/1.1\r\nHost: a\r\n\r\n", l).status,
              414u);
    l.max_header_count = 8;
    std::string many;
    for (int i = 0; i < 9; ++i) many += "X-" + std::to_string(i) + ": v\r\n";
    EXPECT_EQ(whole("GET /healthz HTTP/1.1\r\n" + many + "\r\n", l).status, 431u);
}

TEST(front_parser, a_declared_length_reserves_nothing) {
    front_limits l;
    auto o = whole(converse + "Content-Length: 25000000\r\n\r\nabc", l);
    EXPECT_FALSE(o.done);
    EXPECT_EQ(o.body, "abc");
    front_parser p(l);
    p.eager(true);
    boost::beast::error_code ec;
    const std::string head = converse + "Content-Length: 25000000\r\n\r\nabc";
    p.put(boost::asio::buffer(head), ec);
    EXPECT_LT(p.get().body().capacity(), 1024u) << "memory follows the bytes that arrived";
}

TEST(front_parser, body_limit_is_beasts) {
    front_limits l;
    l.max_body_bytes = 4;
    auto o = whole(converse + "Content-Length: 5\r\n\r\nhello", l);
    EXPECT_EQ(o.beast_error, boost::beast::error_code(http::error::body_limit).message());
    auto c = whole(converse + "Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", l);
    EXPECT_EQ(c.beast_error, boost::beast::error_code(http::error::body_limit).message());
}

}  // namespace
