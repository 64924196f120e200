#include "bgw/aws/raw_request.hpp"

#include <algorithm>

namespace bgw::aws {
namespace {

bool is_ows(char c) { return c == ' ' || c == '\t'; }

std::string_view trim_ows(std::string_view s) {
    while (!s.empty() && is_ows(s.front())) s.remove_prefix(1);
    while (!s.empty() && is_ows(s.back())) s.remove_suffix(1);
    return s;
}

/// RFC 9110 tchar: the characters allowed in a method or a header field name.
bool is_tchar(char c) {
    if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9')) return true;
    return std::string_view("!#$%&'*+-.^_`|~").find(c) != std::string_view::npos;
}

bool is_token(std::string_view s) {
    return !s.empty() && std::all_of(s.begin(), s.end(), is_tchar);
}

bool iequals(std::string_view a, std::string_view b) {
    return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
               auto lower = [](char c) {
                   return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c;
               };
               return lower(x) == lower(y);
           });
}

/// Splits off one line; `rest` moves past its LF. A trailing CR is dropped from the line.
/// Returns false when `rest` is empty (no more lines).
bool next_line(std::string_view& rest, std::string_view& line) {
    if (rest.empty()) return false;
    const auto nl = rest.find('\n');
    line = rest.substr(0, nl);
    rest = nl == std::string_view::npos ? std::string_view{} : rest.substr(nl + 1);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    return true;
}

std::string_view field_name(std::string_view field) { return field.substr(0, field.find(':')); }

/// METHOD SP target SP version, into `req`.
result<void> parse_request_line(std::string_view line, raw_request& req) {
    const auto first_sp = line.find(' ');
    const auto last_sp = line.rfind(' ');
    if (first_sp == std::string_view::npos || first_sp == last_sp) {
        return validation_error("malformed request line (expected METHOD SP target SP version)");
    }
    req.method = line.substr(0, first_sp);
    req.target = line.substr(first_sp + 1, last_sp - first_sp - 1);
    req.version = line.substr(last_sp + 1);
    if (!is_token(req.method)) return validation_error("malformed request method");
    if (req.target.empty() || req.target.front() != '/') {
        return validation_error("request target must be a path starting with '/'");
    }
    if (!req.version.starts_with("HTTP/")) {
        return validation_error("malformed HTTP version in the request line");
    }
    return {};
}

}  // namespace

std::string_view raw_request::path() const {
    return std::string_view(target).substr(0, target.find('?'));
}

std::string_view raw_request::query() const {
    const auto q = target.find('?');
    return q == std::string::npos ? std::string_view{} : std::string_view(target).substr(q + 1);
}

result<raw_request> parse_raw_request(std::string_view text) {
    raw_request req;
    std::string_view rest = text;
    std::string_view line;
    if (!next_line(rest, line) || line.empty()) {
        return validation_error("request is empty (expected a request line)");
    }
    const auto line_end = text.find('\n');
    if (line_end != std::string_view::npos && line_end > 0 && text[line_end - 1] == '\r') {
        req.eol = "\r\n";
    }

    if (auto r = parse_request_line(line, req); !r) return r.error();

    while (next_line(rest, line)) {
        if (line.empty()) {
            req.has_header_terminator = true;
            req.body = rest;
            return req;
        }
        if (is_ows(line.front())) {
            // obs-fold: the line continues the previous field's value. The pieces join with
            // one space, as the suite's canonical request for `get-header-value-multiline`
            // shows (`my-header1:value1 value2 value3`); the field itself is kept verbatim.
            if (req.fields.empty()) {
                return validation_error("continuation line before the first header");
            }
            req.fields.back() += req.eol;
            req.fields.back() += line;
            const std::string_view piece = trim_ows(line);
            std::string& value = req.headers.back().value;
            if (!piece.empty() && !value.empty()) value += ' ';
            value += piece;
            continue;
        }
        const auto colon = line.find(':');
        if (colon == std::string_view::npos) {
            return validation_error("header line without ':'");
        }
        const std::string_view name = line.substr(0, colon);
        // No whitespace between name and colon (RFC 9112 section 5.1): it is a smuggling vector.
        if (!is_token(name)) return validation_error("invalid header name");
        req.headers.push_back({std::string(name), std::string(trim_ows(line.substr(colon + 1)))});
        req.fields.emplace_back(line);
    }
    return req;
}

bool header_named(const header& h, std::string_view name) { return iequals(h.name, name); }

std::optional<std::string_view> find_header(std::span<const header> headers,
                                            std::string_view name) {
    for (const auto& h : headers) {
        if (header_named(h, name)) return std::string_view(h.value);
    }
    return std::nullopt;
}

std::string format_signed_request(const raw_request& req,
                                  std::span<const header> added,
                                  std::string_view authorization) {
    std::string out = req.method;
    out += ' ';
    out += req.target;
    out += ' ';
    out += req.version;
    for (const auto& field : req.fields) {
        if (iequals(field_name(field), "authorization")) continue;
        out += req.eol;
        out += field;
    }
    for (const auto& h : added) {
        out += req.eol;
        out += h.name;
        out += ':';
        out += h.value;
    }
    out += req.eol;
    out += "Authorization:";
    out += authorization;
    if (req.has_header_terminator || !req.body.empty()) {
        out += req.eol;
        out += req.eol;
        out += req.body;
    }
    return out;
}

}  // namespace bgw::aws
