// Request and batch record ids (issue 16): UUID version 4 from a CSPRNG (RAND_bytes). A record
// id is all that guards a batch result when caller keys are off, so ids must not repeat or
// follow one another; this checks their form and that a run of them never repeats.

#include "bgw/net/gateway.hpp"

#include <set>
#include <string>

#include <gtest/gtest.h>

namespace {

TEST(request_id, is_a_version_4_uuid) {
    for (int i = 0; i < 100; ++i) {
        const std::string id = bgw::net::new_request_id();
        ASSERT_EQ(id.size(), 36u) << id;
        for (std::size_t k : {8u, 13u, 18u, 23u}) EXPECT_EQ(id[k], '-') << id;
        EXPECT_EQ(id[14], '4') << id;
        EXPECT_NE(std::string("89ab").find(id[19]), std::string::npos) << id;
        for (char c : id) EXPECT_TRUE(c == '-' || (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'));
    }
}

TEST(request_id, never_repeats) {
    std::set<std::string> seen;
    for (int i = 0; i < 10000; ++i) EXPECT_TRUE(seen.insert(bgw::net::new_request_id()).second);
}

}  // namespace
