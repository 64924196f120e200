#pragma once
/// The shared config and credentials files' INI dialect (src/aws/credentials/ini.cpp).

#include <map>
#include <string>
#include <string_view>

namespace bgw::aws::cred {

using ini_section = std::map<std::string, std::string>;
using ini_file = std::map<std::string, ini_section>;

/// The sections of `text` by name, each its keys (lower-cased) and values.
ini_file parse_ini(std::string_view text);

}  // namespace bgw::aws::cred
