// Hand-written HTTP framing against Beast's own serializer: the same bytes.

#include "bgw/http/wire.hpp"

#include <sstream>

#include <boost/beast/http/empty_body.hpp>
#include <boost/beast/http/message.hpp>
#include <boost/beast/http/write.hpp>
#include <gtest/gtest.h>

namespace {

namespace bh = boost::beast::http;

std::string beast_head(const bh::response<bh::empty_body>& res) {
    std::ostringstream os;
    os << res.base();
    return os.str();
}

TEST(response_head, matches_beasts_serialization_of_the_same_header) {
    bh::response<bh::empty_body> res{bh::status::ok, 11};
    res.set(bh::field::content_type, "application/vnd.amazon.eventstream");
    res.set("x-amzn-RequestId", "5c1e9a9e-0000-4000-8000-000000000000");
    res.set("X-Amzn-Bedrock-Input-Token-Count", "12");
    res.chunked(true);
    res.keep_alive(false);
    EXPECT_EQ(bgw::http::response_head(res.base()), beast_head(res));

    bh::response<bh::empty_body> throttled{bh::status::too_many_requests, 11};
    throttled.content_length(42);
    throttled.set(bh::field::retry_after, "3");
    EXPECT_EQ(bgw::http::response_head(throttled.base()), beast_head(throttled));
    EXPECT_EQ(bgw::http::response_head(throttled.base()).substr(0, 30),
              "HTTP/1.1 429 Too Many Requests");

    bh::response<bh::empty_body> custom{bh::status::bad_request, 11};
    custom.reason("Because");
    EXPECT_EQ(bgw::http::response_head(custom.base()), "HTTP/1.1 400 Because\r\n\r\n");
}

TEST(chunk_size_line, is_lowercase_hex_with_crlf) {
    char buf[18];
    auto line = [&](std::size_t n) { return std::string(buf, bgw::http::chunk_size_line(n, buf)); };
    EXPECT_EQ(line(0), "0\r\n");
    EXPECT_EQ(line(9), "9\r\n");
    EXPECT_EQ(line(10), "a\r\n");
    EXPECT_EQ(line(65536), "10000\r\n");
    EXPECT_EQ(line(0xdeadbeef), "deadbeef\r\n");
    EXPECT_EQ(line(~std::size_t{0}), "ffffffffffffffff\r\n");
}

}  // namespace
