#include "bgw/http/headers.hpp"

#include <array>

namespace bgw::http {
namespace {

char lower(char c) { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c; }

bool in(std::string_view name, std::initializer_list<std::string_view> list) {
    for (auto item : list) {
        if (iequals(name, item)) return true;
    }
    return false;
}

}  // namespace

bool iequals(std::string_view a, std::string_view b) {
    if (a.size() != b.size()) return false;
    for (std::size_t i = 0; i < a.size(); ++i) {
        if (lower(a[i]) != lower(b[i])) return false;
    }
    return true;
}

bool istarts_with(std::string_view s, std::string_view prefix) {
    return s.size() >= prefix.size() && iequals(s.substr(0, prefix.size()), prefix);
}

bool is_hop_by_hop(std::string_view name) {
    return in(name,
              {"connection", "keep-alive", "proxy-connection", "proxy-authenticate",
               "proxy-authorization", "te", "trailer", "transfer-encoding", "upgrade", "expect"});
}

bool forward_request_header(std::string_view name) {
    return istarts_with(name, "x-amzn-bedrock-") ||
           in(name, {"content-type", "content-encoding", "accept", "amz-sdk-invocation-id",
                     "amz-sdk-request", "x-amzn-trace-id"});
}

bool forward_response_header(std::string_view name) {
    return !is_hop_by_hop(name) && !iequals(name, "content-length");
}

bool is_safe_header_value(std::string_view value) {
    for (char c : value) {
        if (c == '\r' || c == '\n' || c == '\0') return false;
    }
    return true;
}

}  // namespace bgw::http
