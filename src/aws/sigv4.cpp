#include "bgw/aws/sigv4.hpp"

#include "bgw/aws/signing_key_cache.hpp"

#include <algorithm>
#include <array>
#include <cctype>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <utility>

#include <openssl/evp.h>

namespace bgw::aws {
namespace {

constexpr std::string_view algorithm = "AWS4-HMAC-SHA256";
constexpr std::string_view upper_hex_digits = "0123456789ABCDEF";

/// Every byte's two lower-case hex digits, so a digest is encoded one table load per byte.
constexpr std::array<char, 512> hex_pairs = [] {
    constexpr std::string_view digits = "0123456789abcdef";
    std::array<char, 512> t{};
    for (std::size_t b = 0; b < 256; ++b) {
        t[2 * b] = digits[b >> 4];
        t[2 * b + 1] = digits[b & 0x0f];
    }
    return t;
}();

/// Writes the 64 lower-case hex digits of `d` to `out`.
void hex_encode(const sha256_digest& d, char* out) {
    for (std::size_t i = 0; i < d.size(); ++i) std::memcpy(out + 2 * i, &hex_pairs[2 * d[i]], 2);
}

void append_hex(std::string& out, const sha256_digest& d) {
    const std::size_t at = out.size();
    out.resize(at + 2 * d.size());
    hex_encode(d, out.data() + at);
}

char ascii_lower(char c) { return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c; }

bool is_digit(char c) { return c >= '0' && c <= '9'; }

constexpr bool is_unreserved_char(unsigned char c) {
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '.' || c == '_' || c == '~';
}

/// 1: unreserved, 2: '/', 0: anything else (one load per byte in the encoders).
constexpr std::array<std::uint8_t, 256> uri_class = [] {
    std::array<std::uint8_t, 256> t{};
    for (std::size_t c = 0; c < 256; ++c) t[c] = is_unreserved_char(static_cast<unsigned char>(c));
    t['/'] = 2;
    return t;
}();

bool is_unreserved(unsigned char c) { return uri_class[c] == 1; }

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

/// SigV4's UriEncode, appended to `out`: everything outside the unreserved set becomes %XX
/// (upper-case hex). `keep_slash` is true for paths, false for query keys and values.
void append_uri_encoded(std::string& out, std::string_view s, bool keep_slash) {
    const std::uint8_t keep = keep_slash ? 2 : 1;
    std::size_t i = 0;
    while (i < s.size()) {
        // Copy each run of bytes that pass through unchanged in one append.
        std::size_t run = i;
        while (run < s.size()) {
            const std::uint8_t k = uri_class[static_cast<unsigned char>(s[run])];
            if (k == 0 || k > keep) break;
            ++run;
        }
        out.append(s.data() + i, run - i);
        if (run == s.size()) return;
        append_pct(out, static_cast<unsigned char>(s[run]));
        i = run + 1;
    }
}

std::string uri_encode(std::string_view s, bool keep_slash) {
    std::string out;
    out.reserve(s.size());
    append_uri_encoded(out, s, keep_slash);
    return out;
}

/// S3-style single encoding of a path that is normally already encoded on the wire: valid %XX
/// escapes stay as they are (encoding them again would be the double encoding S3 does not
/// do), anything else outside the unreserved set is encoded once. Appended to `out`.
void append_path_once(std::string& out, std::string_view s) {
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

/// True when `normalize_path(path)` would return `path` unchanged: no empty segment except the
/// ones a leading or trailing slash makes, and no "." or "..". The usual wire path is already
/// normal, and this check lets it skip the general (allocating) normalisation.
bool is_normalized(std::string_view path) {
    if (path.empty()) return false;
    std::size_t start = 0;
    while (true) {
        std::size_t slash = path.find('/', start);
        const bool last = slash == std::string_view::npos;
        if (last) slash = path.size();
        const std::string_view segment = path.substr(start, slash - start);
        if (segment == "." || segment == "..") return false;
        if (segment.empty() && start != 0 && !last) return false;  // "//" inside the path
        if (last) return true;
        start = slash + 1;
    }
}

/// SigV4's whitespace in header values: 1 for ' ', 3 for tab, CR and LF (bit 2: "not a plain
/// space"), 0 for anything else.
constexpr std::array<std::uint8_t, 256> space_class = [] {
    std::array<std::uint8_t, 256> t{};
    t[' '] = 1;
    t['\t'] = t['\r'] = t['\n'] = 3;
    return t;
}();

bool is_header_space(char c) { return space_class[static_cast<unsigned char>(c)] != 0; }

/// Appends the SigV4 canonical form of a header value: trimmed, and every run of spaces, tabs,
/// CR and LF collapsed to one space.
void append_canonical_header_value(std::string& out, std::string_view v) {
    std::size_t first = 0;
    std::size_t last = v.size();
    while (first < last && is_header_space(v[first])) ++first;
    while (last > first && is_header_space(v[last - 1])) --last;
    v = v.substr(first, last - first);
    // The common value has nothing to collapse (no tab, CR, LF or double space): append it
    // whole. The check is branch-free; `v` is trimmed, so its last byte is never a space.
    unsigned collapse = 0;
    for (std::size_t i = 0; i + 1 < v.size(); ++i) {
        collapse |= space_class[static_cast<unsigned char>(v[i])] &
                    (space_class[static_cast<unsigned char>(v[i + 1])] | 2u);
    }
    if (collapse == 0) {
        out += v;
        return;
    }
    bool pending_space = false;
    for (char c : v) {
        if (is_header_space(c)) {
            pending_space = true;
            continue;
        }
        if (pending_space) out += ' ';
        pending_space = false;
        out += c;
    }
}

/// One signed header: its lower-case name and where it is in the input.
struct header_ref {
    std::string_view name;
    std::size_t index;
};

/// Per-thread scratch space, reused by every signature on the thread, so that a warm
/// `sign_v4` allocates nothing but its results. Signing never suspends (no I/O inside), so
/// one set per thread is enough.
struct scratch_space {
    std::string names;              ///< the lower-cased header names, back to back
    std::vector<header_ref> refs;   ///< the signed headers, sorted by (name, wire order)
    std::string canonical_request;  ///< sign_v4's stage 1
    std::string string_to_sign;     ///< sign_v4's stage 2

    /// Lets go of buffers a rare huge request grew, so a thread does not keep them for good.
    void trim() {
        constexpr std::size_t keep = 64 * 1024;
        if (names.capacity() > keep) std::string().swap(names);
        if (refs.capacity() > keep / sizeof(header_ref)) std::vector<header_ref>().swap(refs);
        if (canonical_request.capacity() > keep) std::string().swap(canonical_request);
        if (string_to_sign.capacity() > keep) std::string().swap(string_to_sign);
    }
};

scratch_space& thread_scratch() {
    thread_local scratch_space s;
    return s;
}

/// Fills `s.refs` with the signed headers of `hs`, sorted by lower-case name and, for a
/// repeated name, in wire order (SigV4 joins repeated values in the order they were sent).
void collect_signed_headers(std::span<const header> hs, scratch_space& s) {
    std::size_t total = 0;
    for (const auto& h : hs) total += h.name.size();
    // Sized before any view into it is taken: it must never reallocate while views exist.
    s.names.resize(total);
    s.refs.clear();
    char* at = s.names.data();
    for (std::size_t i = 0; i < hs.size(); ++i) {
        const std::string& n = hs[i].name;
        for (std::size_t j = 0; j < n.size(); ++j) at[j] = ascii_lower(n[j]);
        const std::string_view name(at, n.size());
        if (is_unsigned_header(name)) continue;  // its bytes are overwritten by the next name
        s.refs.push_back({name, i});
        at += n.size();
    }
    std::sort(s.refs.begin(), s.refs.end(), [](const header_ref& a, const header_ref& b) {
        return a.name != b.name ? a.name < b.name : a.index < b.index;
    });
}

/// "host;x-amz-date" from the sorted refs.
void append_signed_header_names(std::string& out, std::span<const header_ref> refs) {
    for (std::size_t i = 0; i < refs.size(); ++i) {
        if (i > 0 && refs[i].name == refs[i - 1].name) continue;
        if (i > 0) out += ';';
        out += refs[i].name;
    }
}

/// Writes `20150830T123600Z` to `out` (16 bytes) without snprintf.
void write_amz_date(std::chrono::sys_seconds t, char* out) {
    using namespace std::chrono;
    const auto day = floor<days>(t);
    const year_month_day ymd{day};
    const hh_mm_ss hms{t - day};
    auto two = [](char* p, unsigned v) {
        p[0] = static_cast<char>('0' + v / 10);
        p[1] = static_cast<char>('0' + v % 10);
    };
    const auto y = static_cast<unsigned>(static_cast<int>(ymd.year()));
    two(out, y / 100);
    two(out + 2, y % 100);
    two(out + 4, static_cast<unsigned>(ymd.month()));
    two(out + 6, static_cast<unsigned>(ymd.day()));
    out[8] = 'T';
    two(out + 9, static_cast<unsigned>(hms.hours().count()));
    two(out + 11, static_cast<unsigned>(hms.minutes().count()));
    two(out + 13, static_cast<unsigned>(hms.seconds().count()));
    out[15] = 'Z';
}

/// True for the instants `write_amz_date` covers: years 0000 to 9999.
bool amz_date_in_range(std::chrono::sys_seconds t) {
    using namespace std::chrono;
    const int y = static_cast<int>(year_month_day{floor<days>(t)}.year());
    return y >= 0 && y <= 9999;
}

/// "20150830/us-east-1/bedrock/aws4_request"
void append_credential_scope(std::string& out, std::string_view date, const signing_input& in) {
    out += date;
    out += '/';
    out += in.region;
    out += '/';
    out += in.service;
    out += "/aws4_request";
}

/// The canonical URI into `out`: normalised (unless S3), then encoded again or once.
void append_canonical_uri(std::string& out, const signing_input& in) {
    std::string_view path = in.wire_path;
    std::string normalized;
    if (in.normalize_path && !is_normalized(path)) {
        normalized = normalize_path(path);
        path = normalized;
    }
    if (path.empty()) {
        out += '/';  // an empty wire path means the root
    } else if (in.double_encode_path) {
        // Double encoding (every non-S3 service): the wire path is treated as raw bytes and
        // encoded again, so an escape `%3A` becomes `%253A` and a raw byte (space, UTF-8)
        // becomes `%XX`.
        append_uri_encoded(out, path, true);
    } else {
        append_path_once(out, path);
    }
}

/// Stage 1 into `out`, with the signed headers already collected into `s.refs`.
void append_canonical_request(std::string& out, const signing_input& in, const scratch_space& s) {
    out += in.method;
    out += '\n';
    append_canonical_uri(out, in);
    out += '\n';
    if (!in.query.empty()) out += canonical_query(in.query);
    out += '\n';
    // Canonical headers: "name:value1,value2\n" per name, sorted by name.
    for (std::size_t i = 0; i < s.refs.size(); ++i) {
        const header_ref& r = s.refs[i];
        if (i > 0 && r.name == s.refs[i - 1].name) {
            out += ',';
        } else {
            if (i > 0) out += '\n';
            out += r.name;
            out += ':';
        }
        append_canonical_header_value(out, in.headers[r.index].value);
    }
    if (!s.refs.empty()) out += '\n';
    out += '\n';
    append_signed_header_names(out, s.refs);
    out += '\n';
    out += in.payload_sha256;
}

/// Stage 2 into `out`.
void append_string_to_sign(std::string& out,
                           std::string_view creq,
                           std::string_view amz_date,
                           const signing_input& in) {
    out += algorithm;
    out += '\n';
    out += amz_date;
    out += '\n';
    append_credential_scope(out, amz_date.substr(0, 8), in);
    out += '\n';
    append_hex(out, sha256(creq));
}

/// The SHA-256 implementation, fetched from the default provider once per process. An implicit
/// fetch (EVP_sha256() handed to EVP_Digest) repeats the provider lookup on every call, which
/// cost more than hashing a 1 KiB body. The pointer is never freed: it lives as long as the
/// process (OPENSSL_cleanup at exit releases the provider behind it).
const EVP_MD* sha256_md() {
    static EVP_MD* const md = [] {
        EVP_MD* m = EVP_MD_fetch(nullptr, "SHA256", nullptr);
        if (m == nullptr) std::abort();  // no default provider: nothing can be signed
        return m;
    }();
    return md;
}

/// One digest context per thread, re-initialised for each hash. Re-initialising with the same
/// fetched digest keeps the provider's context, so no call allocates.
EVP_MD_CTX* thread_md_ctx() {
    struct holder {
        EVP_MD_CTX* ctx = EVP_MD_CTX_new();
        ~holder() { EVP_MD_CTX_free(ctx); }  // frees (and cleanses) the provider context
    };
    thread_local holder h;
    if (h.ctx == nullptr) std::abort();
    return h.ctx;
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
    std::string out;
    out.reserve(in.wire_path.size() + in.wire_path.size() / 2 + 1);
    append_canonical_uri(out, in);
    return out;
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
    scratch_space& s = thread_scratch();
    collect_signed_headers(headers, s);
    std::string out;
    append_signed_header_names(out, s.refs);
    s.trim();
    return out;
}

std::string canonical_request(const signing_input& in) {
    scratch_space& s = thread_scratch();
    collect_signed_headers(in.headers, s);
    std::string out;
    append_canonical_request(out, in, s);
    s.trim();
    return out;
}

std::string string_to_sign(std::string_view creq, const signing_input& in) {
    char date[16];
    std::string out;
    if (amz_date_in_range(in.time)) {
        write_amz_date(in.time, date);
        append_string_to_sign(out, creq, {date, sizeof date}, in);
    } else {
        append_string_to_sign(out, creq, format_amz_date(in.time), in);
    }
    return out;
}

std::string format_amz_date(std::chrono::sys_seconds t) {
    if (amz_date_in_range(t)) {
        char buf[16];
        write_amz_date(t, buf);
        return {buf, sizeof buf};
    }
    // Outside years 0000-9999 (never a real request): the general, slower formatting.
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

sha256_digest sha256(std::initializer_list<std::string_view> parts) {
    sha256_digest out;
    unsigned int len = 0;
    EVP_MD_CTX* ctx = thread_md_ctx();
    // With a built-in digest the only failure is memory exhaustion: fatal, as everywhere.
    if (EVP_DigestInit_ex2(ctx, sha256_md(), nullptr) != 1) std::abort();
    for (std::string_view part : parts) {
        if (EVP_DigestUpdate(ctx, part.data(), part.size()) != 1) std::abort();
    }
    if (EVP_DigestFinal_ex(ctx, out.data(), &len) != 1 || len != out.size()) std::abort();
    return out;
}

sha256_digest sha256(std::string_view data) {
    return sha256(std::initializer_list<std::string_view>{data});
}

std::string sha256_hex(std::string_view data) {
    std::string out(64, '\0');
    hex_encode(sha256(data), out.data());
    return out;
}

signature sign_v4(const signing_input& in, const credentials& creds, signing_key_cache* cache) {
    scratch_space& s = thread_scratch();
    collect_signed_headers(in.headers, s);
    s.canonical_request.clear();
    append_canonical_request(s.canonical_request, in, s);

    char amz_date_buf[16];
    std::string amz_date_str;  // only for years outside 0000-9999
    std::string_view amz_date;
    if (amz_date_in_range(in.time)) {
        write_amz_date(in.time, amz_date_buf);
        amz_date = {amz_date_buf, sizeof amz_date_buf};
    } else {
        amz_date_str = format_amz_date(in.time);
        amz_date = amz_date_str;
    }
    const std::string_view date = amz_date.substr(0, 8);
    s.string_to_sign.clear();
    append_string_to_sign(s.string_to_sign, s.canonical_request, amz_date, in);

    const signing_key key =
        cache != nullptr ? cache->get(creds, date, in.region, in.service)
                         : derive_signing_key(creds.secret_access_key, date, in.region, in.service);
    const signing_key mac = hmac_sha256(key, s.string_to_sign);

    signature sig;
    append_signed_header_names(sig.signed_headers, s.refs);
    sig.signature_hex.resize(64);
    hex_encode(mac, sig.signature_hex.data());
    // Sized once: "AWS4-HMAC-SHA256 Credential=" AKID "/" scope ", SignedHeaders=" names
    // ", Signature=" hex.
    sig.authorization.reserve(algorithm.size() + 12 + creds.access_key_id.size() + 1 + 8 + 1 +
                              in.region.size() + 1 + in.service.size() + 13 + 16 +
                              sig.signed_headers.size() + 12 + 64);
    sig.authorization += algorithm;
    sig.authorization += " Credential=";
    sig.authorization += creds.access_key_id;
    sig.authorization += '/';
    append_credential_scope(sig.authorization, date, in);
    sig.authorization += ", SignedHeaders=";
    sig.authorization += sig.signed_headers;
    sig.authorization += ", Signature=";
    sig.authorization += sig.signature_hex;
    s.trim();
    return sig;
}

namespace {

std::string_view trim_blanks(std::string_view s) {
    while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
    while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
    return s;
}

/// The three comma-separated fields after the scheme, each present exactly once.
struct authorization_fields {
    std::string_view credential;
    std::string_view signed_headers;
    std::string_view signature;
};

std::optional<authorization_fields> split_authorization_fields(std::string_view fields) {
    std::optional<std::string_view> credential;
    std::optional<std::string_view> signed_headers;
    std::optional<std::string_view> sig;
    for (std::string_view part : split_all(trim_blanks(fields), ',')) {
        part = trim_blanks(part);
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
    return authorization_fields{*credential, *signed_headers, *sig};
}

/// Credential = AKID/YYYYMMDD/region/service/aws4_request, no part empty.
bool is_credential_scope(const std::vector<std::string_view>& scope) {
    return scope.size() == 5 && scope[4] == "aws4_request" && scope[1].size() == 8 &&
           std::all_of(scope[1].begin(), scope[1].end(), is_digit) &&
           std::none_of(scope.begin(), scope.end(), [](auto p) { return p.empty(); });
}

/// 64 lowercase hex digits.
bool is_signature_hex(std::string_view sig) {
    return sig.size() == 64 && std::all_of(sig.begin(), sig.end(), [](char c) {
               return is_digit(c) || (c >= 'a' && c <= 'f');
           });
}

}  // namespace

std::optional<parsed_authorization> parse_authorization(std::string_view value) {
    value = trim_blanks(value);
    if (!value.starts_with(algorithm)) return std::nullopt;
    value.remove_prefix(algorithm.size());
    // The scheme must be followed by whitespace ("AWS4-HMAC-SHA256X" is another scheme).
    if (value.empty() || (value.front() != ' ' && value.front() != '\t')) return std::nullopt;
    const auto fields = split_authorization_fields(value);
    if (!fields) return std::nullopt;
    const auto scope = split_all(fields->credential, '/');
    if (!is_credential_scope(scope) || !is_signature_hex(fields->signature)) return std::nullopt;

    parsed_authorization out;
    out.access_key_id = scope[0];
    out.date = scope[1];
    out.region = scope[2];
    out.service = scope[3];
    out.signature_hex = fields->signature;
    for (std::string_view name : split_all(fields->signed_headers, ';')) {
        if (name.empty()) return std::nullopt;
        out.signed_headers.emplace_back(name);
    }
    return out;
}

}  // namespace bgw::aws
