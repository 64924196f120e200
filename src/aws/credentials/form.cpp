// Form encoding for STS's Query API (AssumeRole, AssumeRoleWithWebIdentity).

#include "bgw/aws/credentials/form.hpp"

#include <cctype>

namespace bgw::aws::cred {
namespace {

/// application/x-www-form-urlencoded as botocore's query serializer writes it: everything but
/// RFC 3986 unreserved characters percent-encoded (so a space is %20, never '+').
std::string form_encode(std::string_view s) {
    static constexpr char hex[] = "0123456789ABCDEF";
    std::string out;
    for (unsigned char c : s) {
        if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~') {
            out += static_cast<char>(c);
        } else {
            out += '%';
            out += hex[c >> 4];
            out += hex[c & 0x0f];
        }
    }
    return out;
}

}  // namespace

std::string form(const std::vector<std::pair<std::string, std::string>>& fields) {
    std::string out;
    for (const auto& [k, v] : fields) {
        if (!out.empty()) out += '&';
        out += form_encode(k) + "=" + form_encode(v);
    }
    return out;
}

}  // namespace bgw::aws::cred
