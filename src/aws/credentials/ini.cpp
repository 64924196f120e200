// INI (shared config and credentials files), read as botocore reads them.

#include "bgw/aws/credentials/ini.hpp"

#include "bgw/aws/credentials/common.hpp"

namespace bgw::aws::cred {

/// Python's ConfigParser as botocore uses it: `[section]`, `key = value` or `key: value`, keys
/// case-insensitive, full-line `#`/`;` comments, and lines indented deeper than their key
/// continuing it (nested settings such as `s3 =`, which no credential key uses).
ini_file parse_ini(std::string_view text) {
    ini_file out;
    ini_section* section = nullptr;
    std::size_t key_indent = std::string_view::npos;
    while (!text.empty()) {
        auto nl = text.find('\n');
        std::string_view raw = text.substr(0, nl);
        text = nl == std::string_view::npos ? std::string_view{} : text.substr(nl + 1);
        std::string_view line = trim(raw);
        if (line.empty() || line.front() == '#' || line.front() == ';') continue;
        const std::size_t indent = raw.find_first_not_of(" \t");
        if (key_indent != std::string_view::npos && indent > key_indent) continue;
        key_indent = std::string_view::npos;
        if (line.front() == '[') {
            auto close = line.rfind(']');
            section = close == std::string_view::npos
                          ? nullptr
                          : &out[std::string(trim(line.substr(1, close - 1)))];
            continue;
        }
        auto eq = line.find_first_of("=:");
        if (!section || eq == std::string_view::npos) continue;
        (*section)[lower(trim(line.substr(0, eq)))] = std::string(trim(line.substr(eq + 1)));
        key_indent = indent;
    }
    return out;
}

}  // namespace bgw::aws::cred
