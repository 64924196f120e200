#pragma once
/// Test helper shared by the suites that read tests/reference at test time.

#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>
#include <string>

namespace bgw::test {

/// The whole file, byte for byte; nullopt when it cannot be opened.
inline std::optional<std::string> slurp(const std::filesystem::path& p) {
    std::ifstream f(p, std::ios::binary);
    if (!f) return std::nullopt;
    std::ostringstream s;
    s << f.rdbuf();
    return s.str();
}

}  // namespace bgw::test
