#include "bgw/aws/sigv4.hpp"

#include "bgw/aws/signing_key_cache.hpp"

#include <algorithm>
#include <array>
#include <cctype>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <utility>

#include <openssl/evp.h>

namespace bgw::aws {
namespace {

constexpr std::string_view algorithm = "AWS4-HMAC-SHA256";
constexpr std::string_view hex_digits = "0123456789abcdef";
constexpr std::string_view upper_hex_digits = "0123456789ABCDEF";

char ascii_lower(char c) { return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c; }

std::string to_lower(std::string_view s) {
    std::string out(s);
    std::transform(out.begin(), out.end(), out.begin(), ascii_lower);
    return out;
}

bool is_digit(char c) { return c >= '0' && c <= '9'; }

bool is_unreserved(unsigned char c) {
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '.' || c == '_' || c == '~';
}

int hex_value(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

bool is_pct_triplet(std::string_view s, std::size_t i) {
    return i + 2 < s.size() && s[i] == '%' && hex_value(s[i + 1]) >= 0 && hex_value(s[i + 2]) >= 0;
}

void append_pct(std::string& out, unsigned char c) {
    out += '%';
    out += upper_hex_digits[c >> 4];
    out += upper_hex_digits[c & 0x0f];
}

/// SigV4's UriEncode: everything outside the unreserved set becomes %XX (upper-case hex).
/// `keep_slash` is true for paths, false for query keys and values.
std::string uri_encode(std::string_view s, bool keep_slash) {
    std::string out;
    out.reserve(s.size());
    for (char ch : s) {
        auto c = static_cast<unsigned char>(ch);
        if (is_unreserved(c) || (keep_slash && c == '/')) {
            out += ch;
        } else {
            append_pct(out, c);
        }
    }
    return out;
}

/// S3-style single encoding of a path that is normally already encoded on the wire: valid %XX
/// escapes stay as they are (encoding them again would be the double encoding S3 does not
/// do), anything else outside the unreserved set is encoded once.
std::string encode_path_once(std::string_view s) {
    std::string out;
    out.reserve(s.size());
    for (std::size_t i = 0; i < s.size(); ++i) {
        auto c = static_cast<unsigned char>(s[i]);
        if (is_unreserved(c) || c == '/') {
            out += s[i];
        } else if (is_pct_triplet(s, i)) {
            out += '%';
            out += static_cast<char>(std::toupper(static_cast<unsigned char>(s[i + 1])));
            out += static_cast<char>(std::toupper(static_cast<unsigned char>(s[i + 2])));
            i += 2;
        } else {
            append_pct(out, c);
        }
    }
    return out;
}

/// Decodes %XX escapes; a '%' that does not start a valid escape is kept literally (and is then
/// encoded as %25), matching aws-c-auth. '+' is not a space here: SigV4 treats it as a literal.
std::string pct_decode(std::string_view s) {
    std::string out;
    out.reserve(s.size());
    for (std::size_t i = 0; i < s.size(); ++i) {
        if (is_pct_triplet(s, i)) {
            out += static_cast<char>(hex_value(s[i + 1]) * 16 + hex_value(s[i + 2]));
            i += 2;
        } else {
            out += s[i];
        }
    }
    return out;
}

/// Removes dot segments and empty segments (duplicate slashes), as botocore's
/// `remove_dot_segments` does: a leading slash is kept, a trailing slash is kept when anything
/// is left, and ".." above the root is dropped.
std::string normalize_path(std::string_view path) {
    if (path.empty()) return "/";
    std::vector<std::string_view> kept;
    std::size_t start = 0;
    while (start <= path.size()) {
        std::size_t slash = path.find('/', start);
        if (slash == std::string_view::npos) slash = path.size();
        std::string_view segment = path.substr(start, slash - start);
        if (segment == "..") {
            if (!kept.empty()) kept.pop_back();
        } else if (!segment.empty() && segment != ".") {
            kept.push_back(segment);
        }
        start = slash + 1;
    }
    std::string out = path.front() == '/' ? "/" : "";
    for (std::size_t i = 0; i < kept.size(); ++i) {
        if (i > 0) out += '/';
        out += kept[i];
    }
    if (path.back() == '/' && !kept.empty()) out += '/';
    return out;
}

/// Trims and collapses runs of spaces and tabs to one space (the SigV4 canonical header value).
std::string canonical_header_value(std::string_view v) {
    std::string out;
    out.reserve(v.size());
    bool pending_space = false;
    for (char c : v) {
        if (c == ' ' || c == '\t' || c == '\r' || c == '\n') {
            pending_space = !out.empty();
            continue;
        }
        if (pending_space) out += ' ';
        pending_space = false;
        out += c;
    }
    return out;
}

/// Signed headers grouped by lower-case name (sorted), values in wire order.
std::map<std::string, std::vector<std::string>> signed_header_map(std::span<const header> hs) {
    std::map<std::string, std::vector<std::string>> grouped;
    for (const auto& h : hs) {
        std::string name = to_lower(h.name);
        if (is_unsigned_header(name)) continue;
        grouped[std::move(name)].push_back(canonical_header_value(h.value));
    }
    return grouped;
}

std::string to_hex(const unsigned char* data, std::size_t n) {
    std::string out;
    out.reserve(n * 2);
    for (std::size_t i = 0; i < n; ++i) {
        out += hex_digits[data[i] >> 4];
        out += hex_digits[data[i] & 0x0f];
    }
    return out;
}

std::string scope_date(std::string_view amz_date) { return std::string(amz_date.substr(0, 8)); }

std::string credential_scope(std::string_view date, const signing_input& in) {
    std::string s(date);
    s += '/';
    s += in.region;
    s += '/';
    s += in.service;
    s += "/aws4_request";
    return s;
}

void split_once(std::string_view s, char sep, std::string_view& head, std::string_view& tail) {
    auto pos = s.find(sep);
    head = s.substr(0, pos);
    tail = pos == std::string_view::npos ? std::string_view{} : s.substr(pos + 1);
}

/// Every piece between separators, empty ones included ("a;" gives {"a", ""}), so callers can
/// reject stray separators.
std::vector<std::string_view> split_all(std::string_view s, char sep) {
    std::vector<std::string_view> parts;
    while (true) {
        auto pos = s.find(sep);
        parts.push_back(s.substr(0, pos));
        if (pos == std::string_view::npos) return parts;
        s.remove_prefix(pos + 1);
    }
}

}  // namespace

bool is_unsigned_header(std::string_view n) {
    // Hop-by-hop headers are rewritten by every proxy on the way, and the rest are what botocore
    // leaves out (SIGNED_HEADERS_BLACKLIST). `authorization` carries the signature itself, so
    // signing it can never verify.
    static constexpr std::array<std::string_view, 11> names = {
        "authorization",   "connection",        "expect",  "keep-alive", "te",
        "trailer",         "transfer-encoding", "upgrade", "user-agent", "x-amzn-trace-id",
        "proxy-connection"};
    if (n.starts_with("proxy-")) return true;
    return std::find(names.begin(), names.end(), n) != names.end();
}

std::string canonical_uri(const signing_input& in) {
    std::string path = in.normalize_path ? normalize_path(in.wire_path) : std::string(in.wire_path);
    if (path.empty()) return "/";  // an empty wire path means the root
    // Double encoding (every non-S3 service): the wire path is treated as raw bytes and encoded
    // again, so an escape `%3A` becomes `%253A` and a raw byte (space, UTF-8) becomes `%XX`.
    return in.double_encode_path ? uri_encode(path, true) : encode_path_once(path);
}

std::string canonical_query(std::string_view raw_query) {
    std::vector<std::pair<std::string, std::string>> params;
    while (!raw_query.empty()) {
        std::string_view pair;
        split_once(raw_query, '&', pair, raw_query);
        if (pair.empty()) continue;
        std::string_view key;
        std::string_view value;
        split_once(pair, '=', key, value);
        // Decode then encode, so the wire's own choice (raw UTF-8 or %e1, lower-case hex) does
        // not change the canonical form.
        params.emplace_back(uri_encode(pct_decode(key), false),
                            uri_encode(pct_decode(value), false));
    }
    // Sort by key, then by value for repeated keys (not by "key=value", where '-' < '=' would
    // put "Param-3" before "Param").
    std::sort(params.begin(), params.end());
    std::string out;
    for (const auto& [k, v] : params) {
        if (!out.empty()) out += '&';
        out += k;
        out += '=';
        out += v;
    }
    return out;
}

std::string signed_header_names(std::span<const header> headers) {
    std::string out;
    for (const auto& entry : signed_header_map(headers)) {
        if (!out.empty()) out += ';';
        out += entry.first;
    }
    return out;
}

std::string canonical_request(const signing_input& in) {
    std::string out(in.method);
    out += '\n';
    out += canonical_uri(in);
    out += '\n';
    out += canonical_query(in.query);
    out += '\n';
    auto grouped = signed_header_map(in.headers);
    std::string names;
    for (const auto& [name, values] : grouped) {
        out += name;
        out += ':';
        for (std::size_t i = 0; i < values.size(); ++i) {
            if (i > 0) out += ',';
            out += values[i];
        }
        out += '\n';
        if (!names.empty()) names += ';';
        names += name;
    }
    out += '\n';
    out += names;
    out += '\n';
    out += in.payload_sha256;
    return out;
}

std::string string_to_sign(std::string_view creq, const signing_input& in) {
    std::string amz_date = format_amz_date(in.time);
    std::string out(algorithm);
    out += '\n';
    out += amz_date;
    out += '\n';
    out += credential_scope(scope_date(amz_date), in);
    out += '\n';
    out += sha256_hex(creq);
    return out;
}

std::string format_amz_date(std::chrono::sys_seconds t) {
    using namespace std::chrono;
    const auto day = floor<days>(t);
    const year_month_day ymd{day};
    const hh_mm_ss hms{t - day};
    char buf[32];
    std::snprintf(buf, sizeof buf, "%04d%02u%02uT%02d%02d%02dZ", static_cast<int>(ymd.year()),
                  static_cast<unsigned>(ymd.month()), static_cast<unsigned>(ymd.day()),
                  static_cast<int>(hms.hours().count()), static_cast<int>(hms.minutes().count()),
                  static_cast<int>(hms.seconds().count()));
    return buf;
}

std::optional<std::chrono::sys_seconds> parse_amz_date(std::string_view s) {
    using namespace std::chrono;
    if (s.size() != 16 || s[8] != 'T' || s[15] != 'Z') return std::nullopt;
    for (std::size_t i = 0; i < 15; ++i) {
        if (i != 8 && !is_digit(s[i])) return std::nullopt;
    }
    auto num = [&](std::size_t pos, std::size_t len) {
        int v = 0;
        for (std::size_t i = pos; i < pos + len; ++i) v = v * 10 + (s[i] - '0');
        return v;
    };
    const year_month_day ymd{year{num(0, 4)}, month{static_cast<unsigned>(num(4, 2))},
                             day{static_cast<unsigned>(num(6, 2))}};
    const int h = num(9, 2);
    const int m = num(11, 2);
    const int sec = num(13, 2);
    // Leap seconds (":60") are rejected: X-Amz-Date is compared to server time in whole seconds.
    if (!ymd.ok() || h > 23 || m > 59 || sec > 59) return std::nullopt;
    return sys_days{ymd} + hours{h} + minutes{m} + seconds{sec};
}

std::string sha256_hex(std::string_view data) {
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    // With a built-in digest the only failure is memory exhaustion: fatal, as everywhere.
    if (EVP_Digest(data.data(), data.size(), md, &len, EVP_sha256(), nullptr) != 1) std::abort();
    return to_hex(md, len);
}

signature sign_v4(const signing_input& in, const credentials& creds, signing_key_cache* cache) {
    const std::string creq = canonical_request(in);
    const std::string sts = string_to_sign(creq, in);
    const std::string date = scope_date(format_amz_date(in.time));
    const signing_key key =
        cache != nullptr ? cache->get(creds, date, in.region, in.service)
                         : derive_signing_key(creds.secret_access_key, date, in.region, in.service);
    const auto mac = hmac_sha256(key, sts);

    signature sig;
    sig.signed_headers = signed_header_names(in.headers);
    sig.signature_hex = to_hex(mac.data(), mac.size());
    sig.authorization = std::string(algorithm);
    sig.authorization += " Credential=";
    sig.authorization += creds.access_key_id;
    sig.authorization += '/';
    sig.authorization += credential_scope(date, in);
    sig.authorization += ", SignedHeaders=";
    sig.authorization += sig.signed_headers;
    sig.authorization += ", Signature=";
    sig.authorization += sig.signature_hex;
    return sig;
}

std::optional<parsed_authorization> parse_authorization(std::string_view value) {
    auto trim = [](std::string_view s) {
        while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
        while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
        return s;
    };
    value = trim(value);
    if (!value.starts_with(algorithm)) return std::nullopt;
    value.remove_prefix(algorithm.size());
    // The scheme must be followed by whitespace ("AWS4-HMAC-SHA256X" is another scheme).
    if (value.empty() || (value.front() != ' ' && value.front() != '\t')) return std::nullopt;

    std::optional<std::string_view> credential;
    std::optional<std::string_view> signed_headers;
    std::optional<std::string_view> sig;
    for (std::string_view part : split_all(trim(value), ',')) {
        part = trim(part);
        const auto eq = part.find('=');
        if (eq == std::string_view::npos) return std::nullopt;
        const std::string_view key = part.substr(0, eq);
        std::optional<std::string_view>* slot = key == "Credential"      ? &credential
                                                : key == "SignedHeaders" ? &signed_headers
                                                : key == "Signature"     ? &sig
                                                                         : nullptr;
        if (slot == nullptr || slot->has_value()) return std::nullopt;  // unknown or repeated
        *slot = part.substr(eq + 1);
    }
    if (!credential || !signed_headers || !sig) return std::nullopt;

    // Credential = AKID/YYYYMMDD/region/service/aws4_request
    const auto scope = split_all(*credential, '/');
    if (scope.size() != 5 || scope[4] != "aws4_request" || scope[1].size() != 8 ||
        !std::all_of(scope[1].begin(), scope[1].end(), is_digit)) {
        return std::nullopt;
    }
    if (std::any_of(scope.begin(), scope.end(), [](auto p) { return p.empty(); })) {
        return std::nullopt;
    }
    if (sig->size() != 64 || !std::all_of(sig->begin(), sig->end(), [](char c) {
            return is_digit(c) || (c >= 'a' && c <= 'f');
        })) {
        return std::nullopt;
    }

    parsed_authorization out;
    out.access_key_id = scope[0];
    out.date = scope[1];
    out.region = scope[2];
    out.service = scope[3];
    out.signature_hex = *sig;
    for (std::string_view name : split_all(*signed_headers, ';')) {
        if (name.empty()) return std::nullopt;
        out.signed_headers.emplace_back(name);
    }
    return out;
}

}  // namespace bgw::aws
