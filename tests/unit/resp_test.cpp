// RESP through hiredis: command encoding (binary-safe), the reply reader over every reply type,
// every way a stream can be cut into pieces, its protocol errors and its size bound, and the
// script digests EVALSHA uses.

#include "bgw/fleet/resp.hpp"

#include <string>
#include <vector>

#include <gtest/gtest.h>

namespace {

using bgw::fleet::format_command;
using bgw::fleet::lua_script;
using bgw::fleet::reply;
using bgw::fleet::resp_reader;
using kind = reply::kind;

using namespace std::string_literals;

TEST(RespFormat, EncodesAnArrayOfBulkStrings) {
    EXPECT_EQ(format_command({"SET", "k", "v"}), "*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n");
    EXPECT_EQ(format_command({"PING"}), "*1\r\n$4\r\nPING\r\n");
    EXPECT_EQ(format_command({"SET", "k", ""}), "*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$0\r\n\r\n");
    EXPECT_EQ(format_command({}), "");
}

TEST(RespFormat, IsBinarySafe) {
    const std::string odd = "a\0b\r\n$3\r\n*"s;
    EXPECT_EQ(
        format_command({"SET", odd, "x"}),
        "*3\r\n$3\r\nSET\r\n$" + std::to_string(odd.size()) + "\r\n" + odd + "\r\n$1\r\nx\r\n");
}

TEST(RespFormat, AppendsManyArguments) {
    std::vector<std::string> args(40, "k");
    args[0] = "DEL";
    std::string out = "prefix";
    bgw::fleet::append_command(out, args);
    std::string expected = "prefix*40\r\n$3\r\nDEL\r\n";
    for (int i = 1; i < 40; ++i) expected += "$1\r\nk\r\n";
    EXPECT_EQ(out, expected);
    std::vector<std::string_view> views = {"GET", "k"};
    bgw::fleet::append_command(out, views);
    EXPECT_EQ(out, expected + "*2\r\n$3\r\nGET\r\n$1\r\nk\r\n");
}

/// Every reply in `wire`, fed in one piece.
std::vector<reply> read_all(std::string_view wire) {
    resp_reader r;
    r.feed(wire);
    std::vector<reply> out;
    while (auto x = r.next()) out.push_back(std::move(*x));
    EXPECT_FALSE(r.failed()) << r.error();
    return out;
}

TEST(RespReader, ReadsEveryType) {
    auto v = read_all(
        "+OK\r\n-ERR bad thing\r\n:42\r\n:-7\r\n$5\r\nhello\r\n$-1\r\n*-1\r\n*0\r\n$0\r\n\r\n");
    ASSERT_EQ(v.size(), 9u);
    EXPECT_EQ(v[0].type, kind::status);
    EXPECT_EQ(v[0].str, "OK");
    EXPECT_FALSE(v[0].is_error());
    EXPECT_EQ(v[1].type, kind::error);
    EXPECT_TRUE(v[1].is_error());
    EXPECT_EQ(v[1].str, "ERR bad thing");
    EXPECT_EQ(v[2].type, kind::integer);
    EXPECT_EQ(v[2].integer, 42);
    EXPECT_EQ(v[3].integer, -7);
    EXPECT_EQ(v[4].type, kind::string);
    EXPECT_EQ(v[4].str, "hello");
    EXPECT_EQ(v[5].type, kind::nil);
    EXPECT_EQ(v[6].type, kind::nil);
    EXPECT_EQ(v[7].type, kind::array);
    EXPECT_TRUE(v[7].elements.empty());
    EXPECT_EQ(v[8].type, kind::string);
    EXPECT_EQ(v[8].str, "");
}

TEST(RespReader, ReadsNestedArraysAndBinaryStrings) {
    auto v = read_all("*3\r\n:1\r\n*2\r\n$3\r\na\0b\r\n$-1\r\n+x\r\n"s);
    ASSERT_EQ(v.size(), 1u);
    const reply& a = v[0];
    ASSERT_EQ(a.type, kind::array);
    ASSERT_EQ(a.elements.size(), 3u);
    EXPECT_EQ(a.elements[0].integer, 1);
    ASSERT_EQ(a.elements[1].type, kind::array);
    ASSERT_EQ(a.elements[1].elements.size(), 2u);
    EXPECT_EQ(a.elements[1].elements[0].str, "a\0b"s);
    EXPECT_EQ(a.elements[1].elements[1].type, kind::nil);
    EXPECT_EQ(a.elements[2].type, kind::status);
    EXPECT_EQ(a.elements[2].str, "x");
}

TEST(RespReader, ArraysLargerThanTheirFirstReserve) {
    std::string wire = "*100\r\n";
    for (int i = 0; i < 100; ++i) wire += ":" + std::to_string(i) + "\r\n";
    auto v = read_all(wire);
    ASSERT_EQ(v.size(), 1u);
    ASSERT_EQ(v[0].elements.size(), 100u);
    for (int i = 0; i < 100; ++i) EXPECT_EQ(v[0].elements[static_cast<std::size_t>(i)].integer, i);
}

// The same replies whatever the pieces: cut once at every offset, and byte by byte.
TEST(RespReader, AnyCutGivesTheSameReplies) {
    const std::string wire =
        "+PONG\r\n*2\r\n$3\r\nabc\r\n*1\r\n:-12\r\n-NOSCRIPT No matching\r\n$4\r\n\r\n\r\n\r\n";
    const auto whole = read_all(wire);
    ASSERT_EQ(whole.size(), 4u);
    auto same = [&](const std::vector<reply>& got) {
        ASSERT_EQ(got.size(), whole.size());
        EXPECT_EQ(got[0].str, "PONG");
        EXPECT_EQ(got[1].elements[0].str, "abc");
        EXPECT_EQ(got[1].elements[1].elements[0].integer, -12);
        EXPECT_EQ(got[2].str, "NOSCRIPT No matching");
        EXPECT_EQ(got[3].str, "\r\n\r\n");
    };
    for (std::size_t cut = 0; cut <= wire.size(); ++cut) {
        SCOPED_TRACE(cut);
        resp_reader r;
        std::vector<reply> got;
        r.feed(std::string_view(wire).substr(0, cut));
        while (auto x = r.next()) got.push_back(std::move(*x));
        r.feed(std::string_view(wire).substr(cut));
        while (auto x = r.next()) got.push_back(std::move(*x));
        ASSERT_FALSE(r.failed());
        same(got);
    }
    resp_reader r;
    std::vector<reply> got;
    for (char c : wire) {
        r.feed(std::string_view(&c, 1));
        while (auto x = r.next()) got.push_back(std::move(*x));
    }
    same(got);
}

TEST(RespReader, ProtocolErrorIsFinal) {
    resp_reader r;
    r.feed("+OK\r\n?what\r\n:1\r\n");
    auto first = r.next();
    ASSERT_TRUE(first);
    EXPECT_EQ(first->str, "OK");
    EXPECT_FALSE(r.next());
    EXPECT_TRUE(r.failed());
    EXPECT_NE(r.error().find("Protocol error"), std::string::npos) << r.error();
    r.feed(":2\r\n");
    EXPECT_FALSE(r.next());
    EXPECT_TRUE(r.failed());
}

TEST(RespReader, RefusesNegativeCountsAndDeepNesting) {
    {
        resp_reader r;
        r.feed("*-2\r\n");
        EXPECT_FALSE(r.next());
        EXPECT_TRUE(r.failed());
    }
    {
        resp_reader r;  // hiredis 0.14 nests 7 levels at most
        std::string deep;
        for (int i = 0; i < 9; ++i) deep += "*1\r\n";
        r.feed(deep + ":1\r\n");
        EXPECT_FALSE(r.next());
        EXPECT_TRUE(r.failed());
    }
}

std::string bulk(std::size_t n) {
    return "$" + std::to_string(n) + "\r\n" + std::string(n, 'x') + "\r\n";
}

TEST(RespReader, BoundsOneReplyToOneMebibyte) {
    const std::size_t max = resp_reader::max_reply_bytes;
    // The largest bulk string whose reply fits: header "$1048563\r\n" (10) + data + CRLF (2).
    const std::size_t fits = max - 12;
    ASSERT_EQ(bulk(fits).size(), max);
    {
        resp_reader r;
        r.feed(bulk(fits));
        auto x = r.next();
        ASSERT_TRUE(x) << r.error();
        EXPECT_EQ(x->str.size(), fits);
    }
    {
        // A reply announcing 2 MB is refused once a mebibyte of it has come, not buffered.
        resp_reader r;
        const std::string wire = bulk(2'000'000);
        std::size_t fed = 0;
        while (fed < wire.size() && !r.failed()) {
            const auto piece = std::string_view(wire).substr(fed, 4096);
            r.feed(piece);
            fed += piece.size();
            EXPECT_FALSE(r.next());
        }
        EXPECT_TRUE(r.failed());
        EXPECT_GT(fed, max);
        EXPECT_LE(fed, max + 4096);
        EXPECT_NE(r.error().find("larger than 1 MiB"), std::string::npos) << r.error();
    }
    {
        resp_reader r;  // one byte more than fits
        r.feed(bulk(fits + 1));
        EXPECT_FALSE(r.next());
        EXPECT_TRUE(r.failed());
    }
    {
        // An array announcing 2^31-1 items allocates nothing for them; its items count
        // toward the bound as they arrive.
        resp_reader r;
        r.feed("*2147483647\r\n");
        EXPECT_FALSE(r.next());
        EXPECT_FALSE(r.failed());
        std::string chunk;
        for (int i = 0; i < 16 * 1024; ++i) chunk += ":1\r\n";
        for (int i = 0; i < 20 && !r.failed(); ++i) {
            r.feed(chunk);
            EXPECT_FALSE(r.next());
        }
        EXPECT_TRUE(r.failed());
    }
    {
        resp_reader r;  // small replies, many of them: no bound on the stream, only on one reply
        std::string many;
        for (int i = 0; i < 1000; ++i) many += bulk(2000);
        r.feed(many);
        int n = 0;
        while (r.next()) ++n;
        EXPECT_FALSE(r.failed()) << r.error();
        EXPECT_EQ(n, 1000);
    }
}

TEST(RespReader, MovesWithItsState) {
    resp_reader a;
    a.feed("*2\r\n:1\r\n");
    EXPECT_FALSE(a.next());
    resp_reader b = std::move(a);
    b.feed(":2\r\n");
    auto x = b.next();
    ASSERT_TRUE(x);
    ASSERT_EQ(x->elements.size(), 2u);
    EXPECT_EQ(x->elements[1].integer, 2);
}

// Digests checked against sha1sum(1); the link test checks one against Redis's SCRIPT LOAD.
TEST(LuaScript, Sha1IsLowercaseHexOfTheBody) {
    EXPECT_EQ(lua_script("return 1").sha1, "e0e1f9fabfc9d4800c877a703b823ac0578ff8db");
    EXPECT_EQ(lua_script("").sha1, "da39a3ee5e6b4b0d3255bfef95601890afd80709");
    lua_script s("return redis.call('INCRBY', KEYS[1], ARGV[1])");
    EXPECT_EQ(s.sha1, "8cd00688c05c46bde4a2e60658ef20a2e5c0b248");
    EXPECT_EQ(s.body, "return redis.call('INCRBY', KEYS[1], ARGV[1])");
}

}  // namespace
