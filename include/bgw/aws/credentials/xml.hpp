#pragma once
/// The little XML reading STS answers need (src/aws/credentials/xml.cpp).

#include <optional>
#include <string>
#include <string_view>

namespace bgw::aws::cred {

/// The raw text between the first <tag> and </tag>.
std::optional<std::string_view> xml_element(std::string_view xml, std::string_view tag);
/// The same, trimmed and with the five XML entities decoded.
std::optional<std::string> xml_text(std::string_view xml, std::string_view tag);

}  // namespace bgw::aws::cred
