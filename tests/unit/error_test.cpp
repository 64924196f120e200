#include "bgw/error.hpp"

#include <gtest/gtest.h>

namespace {

bgw::result<int> half(int x) {
    if (x % 2 != 0) return bgw::validation_error("odd");
    return x / 2;
}

TEST(result, carries_value_or_error) {
    auto ok = half(4);
    ASSERT_TRUE(ok);
    EXPECT_EQ(*ok, 2);
    auto bad = half(3);
    ASSERT_FALSE(bad);
    EXPECT_EQ(bad.error().type, "ValidationException");
    EXPECT_EQ(bad.error().status, boost::beast::http::status::bad_request);
}

}  // namespace
