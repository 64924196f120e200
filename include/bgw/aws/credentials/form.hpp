#pragma once
/// STS's Query API bodies (src/aws/credentials/form.cpp).

#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace bgw::aws::cred {

/// `fields` as application/x-www-form-urlencoded, in their order.
std::string form(const std::vector<std::pair<std::string, std::string>>& fields);

inline constexpr std::string_view form_content_type =
    "application/x-www-form-urlencoded; charset=utf-8";

}  // namespace bgw::aws::cred
