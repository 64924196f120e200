// The shared_state.redis.url setting by table: what parses (scheme, user, host forms, port,
// db) and what is refused, with a message that never repeats a password.

#include "bgw/fleet/redis_url.hpp"

#include <gtest/gtest.h>

namespace {

using bgw::fleet::parse_redis_url;

struct good_case {
    const char* url;
    bool tls;
    const char* host;
    std::uint16_t port;
    int db;
    const char* username;
};

const good_case good_cases[] = {
    {"redis://127.0.0.1:6379/0", false, "127.0.0.1", 6379, 0, ""},
    {"redis://localhost", false, "localhost", 6379, 0, ""},
    {"redis://localhost/", false, "localhost", 6379, 0, ""},
    {"rediss://cache.example.com:6380/3", true, "cache.example.com", 6380, 3, ""},
    {"REDISS://Cache.Example.com", true, "Cache.Example.com", 6379, 0, ""},
    {"redis://[::1]:6390", false, "::1", 6390, 0, ""},
    {"redis://[::1]", false, "::1", 6379, 0, ""},
    {"rediss://[2001:db8::7]:7000/15", true, "2001:db8::7", 7000, 15, ""},
    {"redis://alice@redis.internal/2", false, "redis.internal", 6379, 2, "alice"},
    {"redis://al%40ice@h", false, "h", 6379, 0, "al@ice"},
    {"redis://h:1/65535", false, "h", 1, 65535, ""},
    {"redis://h:65535", false, "h", 65535, 0, ""},
};

TEST(RedisUrl, Parses) {
    for (const auto& c : good_cases) {
        SCOPED_TRACE(c.url);
        auto r = parse_redis_url(c.url);
        ASSERT_TRUE(r) << r.error().message;
        EXPECT_EQ(r->tls, c.tls);
        EXPECT_EQ(r->host, c.host);
        EXPECT_EQ(r->port, c.port);
        EXPECT_EQ(r->db, c.db);
        EXPECT_EQ(r->username, c.username);
    }
}

struct bad_case {
    const char* url;
    const char* message_has;  ///< a piece of the error message
};

const bad_case bad_cases[] = {
    {"http://localhost:6379", "scheme must be redis:// or rediss://"},
    {"unix:///run/redis.sock", "scheme"},
    {"localhost:6379", "scheme"},
    {"not a url", "not a URL"},
    {"", "not a URL"},
    {"redis://", "no host"},
    {"redis://h:0", "port must be 1-65535"},
    {"redis://h:65536", "port must be 1-65535"},
    {"redis://h:99999999", "port must be 1-65535"},
    {"redis://h:", "port must be 1-65535"},
    {"redis://h/65536", "database number from 0 to 65535"},
    {"redis://h/-1", "database number"},
    {"redis://h/+1", "database number"},
    {"redis://h/abc", "database number"},
    {"redis://h/1/2", "database number"},
    {"redis://h//", "database number"},
    {"redis://h?db=1", "query or fragment"},
    {"redis://h#x", "not a URL"},  // an absolute URI has no fragment
    {"redis://[v1.x]", "name or an IPv4/IPv6 address"},
};

TEST(RedisUrl, Refuses) {
    for (const auto& c : bad_cases) {
        SCOPED_TRACE(c.url);
        auto r = parse_redis_url(c.url);
        ASSERT_FALSE(r);
        EXPECT_EQ(r.error().type, "ValidationException");
        EXPECT_NE(r.error().message.find(c.message_has), std::string::npos) << r.error().message;
    }
}

// A password in the URL is refused, and no error ever repeats it, whatever else is wrong.
TEST(RedisUrl, PasswordIsRefusedAndNeverEchoed) {
    const char* urls[] = {
        "redis://:hunter2secret@localhost:6379/0",
        "redis://alice:hunter2secret@localhost",
        "rediss://alice:hunter2secret@[::1]:6380/1",
        "redis://alice:hunter2secret@h:0",  // also a bad port
        "redis://alice:hunter2secret@h/x",  // also a bad db
        "http://alice:hunter2secret@h",     // also a bad scheme
        "redis://alice:hunter2secret @h",   // not a URL at all
    };
    for (const char* url : urls) {
        SCOPED_TRACE(url);
        auto r = parse_redis_url(url);
        ASSERT_FALSE(r);
        EXPECT_EQ(r.error().message.find("hunter2secret"), std::string::npos) << r.error().message;
    }
    auto r = parse_redis_url("redis://:hunter2secret@localhost");
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().message, "a password in the URL is refused: put it in password_file");
    // An empty password is a password field all the same.
    EXPECT_FALSE(parse_redis_url("redis://alice:@localhost"));
}

}  // namespace
