#include "request_head.hpp"

#include <charconv>

namespace bgw::bench {
namespace {

bool iequals(std::string_view a, std::string_view b) {
    if (a.size() != b.size()) return false;
    for (std::size_t i = 0; i < a.size(); ++i) {
        const auto lower = [](char c) { return c >= 'A' && c <= 'Z' ? char(c - 'A' + 'a') : c; };
        if (lower(a[i]) != lower(b[i])) return false;
    }
    return true;
}

std::string_view trim(std::string_view s) {
    while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
    while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
    return s;
}

/// True when the comma-separated `value` lists `token` (case-insensitively).
bool has_token(std::string_view value, std::string_view token) {
    while (!value.empty()) {
        const auto comma = value.find(',');
        if (iequals(trim(value.substr(0, comma)), token)) return true;
        if (comma == std::string_view::npos) break;
        value.remove_prefix(comma + 1);
    }
    return false;
}

}  // namespace

std::size_t head_end(std::string_view in) {
    const auto at = in.find("\r\n\r\n");
    return at == std::string_view::npos ? 0 : at + 4;
}

request_head parse_head(std::string_view head) {
    request_head r;
    auto line_end = head.find("\r\n");
    if (line_end == std::string_view::npos) return r;
    const std::string_view line = head.substr(0, line_end);
    const auto sp1 = line.find(' ');
    const auto sp2 = line.rfind(' ');
    if (sp1 == std::string_view::npos || sp2 == sp1) return r;
    r.method = line.substr(0, sp1);
    r.target = line.substr(sp1 + 1, sp2 - sp1 - 1);
    const std::string_view version = line.substr(sp2 + 1);
    if (version == "HTTP/1.0") {
        r.keep_alive = false;
    } else if (version != "HTTP/1.1") {
        return r;
    }
    bool have_length = false;
    for (std::size_t pos = line_end + 2; pos < head.size();) {
        line_end = head.find("\r\n", pos);
        if (line_end == std::string_view::npos || line_end == pos) break;  // blank line: done
        const std::string_view field = head.substr(pos, line_end - pos);
        pos = line_end + 2;
        const auto colon = field.find(':');
        if (colon == std::string_view::npos) return r;
        const std::string_view name = field.substr(0, colon);
        const std::string_view value = trim(field.substr(colon + 1));
        if (iequals(name, "content-length")) {
            std::size_t n = 0;
            auto [end, ec] = std::from_chars(value.data(), value.data() + value.size(), n);
            if (have_length || ec != std::errc{} || end != value.data() + value.size()) return r;
            r.content_length = n;
            have_length = true;
        } else if (iequals(name, "transfer-encoding")) {
            return r;  // chunked request bodies: nobody sends them to Bedrock; refused
        } else if (iequals(name, "connection")) {
            if (has_token(value, "close")) r.keep_alive = false;
            if (has_token(value, "keep-alive")) r.keep_alive = true;
        }
    }
    r.ok = true;
    return r;
}

model_call parse_model_call(std::string_view target) {
    model_call c;
    target = target.substr(0, target.find('?'));
    constexpr std::string_view prefix = "/model/";
    if (!target.starts_with(prefix)) return c;
    target.remove_prefix(prefix.size());
    const auto slash = target.rfind('/');
    if (slash == std::string_view::npos || slash == 0) return c;
    c.model_id = target.substr(0, slash);
    const std::string_view op = target.substr(slash + 1);
    if (op == "invoke") {
        c.op = operation::invoke;
    } else if (op == "converse") {
        c.op = operation::converse;
    } else if (op == "converse-stream") {
        c.op = operation::converse_stream;
    } else if (op == "invoke-with-response-stream") {
        c.op = operation::invoke_stream;
    }
    return c;
}

}  // namespace bgw::bench
