#pragma once
/// Test helper shared by the suites that read tests/reference at test time.

#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>
#include <string>

#include <gtest/gtest.h>

namespace bgw::test {

/// The whole file, byte for byte; nullopt when it cannot be opened.
inline std::optional<std::string> slurp(const std::filesystem::path& p) {
    std::ifstream f(p, std::ios::binary);
    if (!f) return std::nullopt;
    std::ostringstream s;
    s << f.rdbuf();
    return s.str();
}

/// The whole file a test needs: one that cannot be read fails the calling test and reads as
/// empty, so the test fails on its own assertions.
inline std::string read_or_fail(const std::filesystem::path& p) {
    auto text = slurp(p);
    EXPECT_TRUE(text.has_value()) << "missing " << p.string();
    return text.value_or("");
}

}  // namespace bgw::test
