#include "fakes/independent_sigv4.hpp"

#include <algorithm>
#include <array>
#include <cctype>
#include <map>

#include <openssl/evp.h>
#include <openssl/hmac.h>

namespace bgw::test::independent_sigv4 {

namespace {

std::string hex(const unsigned char* p, std::size_t n) {
    static constexpr char digits[] = "0123456789abcdef";
    std::string out;
    out.reserve(n * 2);
    for (std::size_t i = 0; i < n; ++i) {
        out.push_back(digits[p[i] >> 4]);
        out.push_back(digits[p[i] & 0xf]);
    }
    return out;
}

std::string hmac(std::string_view key, std::string_view data) {
    std::array<unsigned char, EVP_MAX_MD_SIZE> out{};
    unsigned int n = 0;
    HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()),
         reinterpret_cast<const unsigned char*>(data.data()), data.size(), out.data(), &n);
    return std::string(reinterpret_cast<const char*>(out.data()), n);
}

/// Every piece between separators, empty ones included ("" is one empty piece).
std::vector<std::string_view> split(std::string_view s, char sep) {
    std::vector<std::string_view> out;
    for (std::size_t start = 0;;) {
        const auto end = s.find(sep, start);
        out.push_back(s.substr(start, end == std::string_view::npos ? s.npos : end - start));
        if (end == std::string_view::npos) return out;
        start = end + 1;
    }
}

std::string lower(std::string_view s) {
    std::string out(s);
    for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    return out;
}

bool unreserved(unsigned char c) {
    return std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~';
}

/// RFC 3986 percent-encoding of every byte but the unreserved ones (and '/' when asked).
std::string encode(std::string_view s, bool keep_slash) {
    static constexpr char digits[] = "0123456789ABCDEF";
    std::string out;
    for (unsigned char c : s) {
        if (unreserved(c) || (keep_slash && c == '/')) {
            out.push_back(static_cast<char>(c));
        } else {
            out.push_back('%');
            out.push_back(digits[c >> 4]);
            out.push_back(digits[c & 0xf]);
        }
    }
    return out;
}

int hex_value(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

std::string decode(std::string_view s) {
    std::string out;
    for (std::size_t i = 0; i < s.size(); ++i) {
        if (s[i] == '%' && i + 2 < s.size() && hex_value(s[i + 1]) >= 0 &&
            hex_value(s[i + 2]) >= 0) {
            out.push_back(static_cast<char>(hex_value(s[i + 1]) * 16 + hex_value(s[i + 2])));
            i += 2;
        } else {
            out.push_back(s[i]);
        }
    }
    return out;
}

/// RFC 3986 5.2.4 without "." and "..", and adjacent slashes collapsed (botocore's
/// remove_dot_segments, which AWS services match).
std::string remove_dot_segments(std::string_view path) {
    if (path.empty()) return "/";
    std::vector<std::string_view> kept;
    for (auto seg : split(path, '/')) {
        if (seg == "..") {
            if (!kept.empty()) kept.pop_back();
        } else if (!seg.empty() && seg != ".") {
            kept.push_back(seg);
        }
    }
    std::string out = path.front() == '/' ? "/" : "";
    for (std::size_t i = 0; i < kept.size(); ++i) {
        if (i) out += '/';
        out += kept[i];
    }
    if (path.back() == '/' && !kept.empty()) out += '/';
    return out.empty() ? "/" : out;
}

std::string canonical_uri(std::string_view wire_path, bool s3) {
    if (s3) return encode(decode(wire_path), true);
    return encode(remove_dot_segments(wire_path), true);
}

std::string canonical_query(std::string_view query) {
    std::vector<std::pair<std::string, std::string>> pairs;
    for (auto item : split(query, '&')) {
        if (item.empty()) continue;
        auto eq = item.find('=');
        auto key = item.substr(0, eq);
        auto value = eq == std::string_view::npos ? std::string_view{} : item.substr(eq + 1);
        pairs.emplace_back(encode(decode(key), false), encode(decode(value), false));
    }
    std::sort(pairs.begin(), pairs.end());
    std::string out;
    for (const auto& [k, v] : pairs) {
        if (!out.empty()) out += '&';
        out += k + '=' + v;
    }
    return out;
}

/// Leading and trailing blanks dropped, runs of blanks inside made one space.
std::string trim_all(std::string_view v) {
    std::string out;
    bool blank = false;
    for (char c : v) {
        if (c == ' ' || c == '\t') {
            blank = true;
            continue;
        }
        if (blank && !out.empty()) out += ' ';
        blank = false;
        out += c;
    }
    return out;
}

std::string_view trim(std::string_view s) {
    while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
    while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
    return s;
}

struct authorization_parts {
    std::string scope;  ///< date/region/service/aws4_request
    std::string date;   ///< YYYYMMDD of the scope
    std::string region;
    std::string service;
    std::vector<std::string> signed_headers;
    std::string signature;
};

std::optional<authorization_parts> parse_authorization(std::string_view v) {
    constexpr std::string_view algorithm = "AWS4-HMAC-SHA256 ";
    if (!v.starts_with(algorithm)) return std::nullopt;
    v.remove_prefix(algorithm.size());
    std::map<std::string, std::string, std::less<>> fields;
    for (auto item : split(v, ',')) {
        item = trim(item);
        auto eq = item.find('=');
        if (eq != std::string_view::npos)
            fields.emplace(std::string(item.substr(0, eq)), std::string(item.substr(eq + 1)));
    }
    auto credential = fields.find("Credential");
    auto names = fields.find("SignedHeaders");
    auto signature = fields.find("Signature");
    if (credential == fields.end() || names == fields.end() || signature == fields.end())
        return std::nullopt;
    authorization_parts a;
    // AKID/date/region/service/aws4_request
    const auto parts = split(credential->second, '/');
    if (parts.size() != 5 || parts[4] != "aws4_request") return std::nullopt;
    a.date = parts[1];
    a.region = parts[2];
    a.service = parts[3];
    a.scope = a.date + '/' + a.region + '/' + a.service + "/aws4_request";
    for (auto name : split(names->second, ';')) a.signed_headers.push_back(lower(name));
    a.signature = signature->second;
    return a;
}

}  // namespace

std::string sha256_hex(std::string_view data) {
    std::array<unsigned char, EVP_MAX_MD_SIZE> out{};
    unsigned int n = 0;
    EVP_Digest(data.data(), data.size(), out.data(), &n, EVP_sha256(), nullptr);
    return hex(out.data(), n);
}

std::optional<computed> recompute(const received& r, std::string_view secret_key) {
    auto a = parse_authorization(r.authorization);
    if (!a) return std::nullopt;

    // Repeated headers join with ',' in arrival order; names sort as lowercase bytes.
    std::map<std::string, std::string> values;
    for (const auto& [name, value] : r.headers) {
        auto key = lower(name);
        auto [it, fresh] = values.emplace(key, trim_all(value));
        if (!fresh) it->second += ',' + trim_all(value);
    }
    auto date = values.find("x-amz-date");
    if (date == values.end()) return std::nullopt;

    std::vector<std::string> names = a->signed_headers;
    std::sort(names.begin(), names.end());
    std::string headers_block;
    std::string names_list;
    for (const auto& name : names) {
        auto it = values.find(name);
        if (it == values.end()) return std::nullopt;
        headers_block += name + ':' + it->second + '\n';
        if (!names_list.empty()) names_list += ';';
        names_list += name;
    }

    computed out;
    out.claimed = a->signature;
    out.canonical_request = r.method + '\n' + canonical_uri(r.wire_path, r.s3) + '\n' +
                            canonical_query(r.query) + '\n' + headers_block + '\n' + names_list +
                            '\n' + r.payload_sha256;
    out.string_to_sign = "AWS4-HMAC-SHA256\n" + date->second + '\n' + a->scope + '\n' +
                         sha256_hex(out.canonical_request);
    auto key = hmac("AWS4" + std::string(secret_key), a->date);
    key = hmac(key, a->region);
    key = hmac(key, a->service);
    key = hmac(key, "aws4_request");
    auto sig = hmac(key, out.string_to_sign);
    out.signature = hex(reinterpret_cast<const unsigned char*>(sig.data()), sig.size());
    return out;
}

}  // namespace bgw::test::independent_sigv4
