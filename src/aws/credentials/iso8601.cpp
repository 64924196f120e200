// ISO 8601 times as AWS endpoints, credential_process and AWS_CREDENTIAL_EXPIRATION write them.

#include "bgw/aws/credential_chain.hpp"
#include "bgw/aws/credentials/common.hpp"

namespace bgw::aws {

using namespace std::chrono;

namespace {

/// The `len` decimal digits at `pos` as a number; none unless all are there.
std::optional<int> digits_at(std::string_view s, std::size_t pos, std::size_t len) {
    if (pos + len > s.size()) return std::nullopt;
    int v = 0;
    for (std::size_t i = pos; i < pos + len; ++i) {
        if (s[i] < '0' || s[i] > '9') return std::nullopt;
        v = v * 10 + (s[i] - '0');
    }
    return v;
}

/// Whether the character at `pos` is one of `chars`.
bool one_of_at(std::string_view s, std::size_t pos, std::string_view chars) {
    return pos < s.size() && chars.find(s[pos]) != std::string_view::npos;
}

/// The zone designator at `pos` ("Z", "+hh", "+hhmm", "+hh:mm", or none, read as UTC) as the
/// offset from UTC; `pos` moves past it. None when it is malformed.
std::optional<minutes> utc_offset(std::string_view s, std::size_t& pos) {
    if (one_of_at(s, pos, "Zz")) {
        ++pos;
        return minutes{0};
    }
    if (!one_of_at(s, pos, "+-")) return minutes{0};
    const int sign = s[pos] == '-' ? -1 : 1;
    auto oh = digits_at(s, pos + 1, 2);
    if (!oh) return std::nullopt;
    pos += 3;
    int om = 0;
    if (one_of_at(s, pos, ":")) ++pos;
    if (pos < s.size()) {
        auto m = digits_at(s, pos, 2);
        if (!m || *m > 59) return std::nullopt;
        om = *m;
        pos += 2;
    }
    if (*oh > 23) return std::nullopt;
    return minutes(sign * (*oh * 60 + om));
}

}  // namespace

std::optional<sys_seconds> parse_iso8601(std::string_view s) {
    s = cred::trim(s);
    auto num = [&](std::size_t pos, std::size_t len) { return digits_at(s, pos, len); };
    auto at = [&](std::size_t pos, std::string_view chars) { return one_of_at(s, pos, chars); };
    auto y = num(0, 4), mo = num(5, 2), d = num(8, 2), h = num(11, 2), mi = num(14, 2),
         sec = num(17, 2);
    if (!y || !mo || !d || !h || !mi || !sec || !at(4, "-") || !at(7, "-") || !at(10, "Tt ") ||
        !at(13, ":") || !at(16, ":"))
        return std::nullopt;
    std::size_t pos = 19;
    // Fractions are dropped: rounding an expiry down is the safe side.
    if (at(pos, ".,")) {
        const auto start = ++pos;
        while (at(pos, "0123456789")) ++pos;
        if (pos == start) return std::nullopt;
    }
    const auto offset = utc_offset(s, pos);
    // No designator at all is read as UTC: every AWS endpoint speaks UTC.
    if (!offset || pos != s.size()) return std::nullopt;
    const year_month_day ymd{year{*y}, month{static_cast<unsigned>(*mo)},
                             day{static_cast<unsigned>(*d)}};
    if (!ymd.ok() || *h > 23 || *mi > 59 || *sec > 60) return std::nullopt;
    return sys_days{ymd} + hours{*h} + minutes{*mi} + seconds{*sec} - *offset;
}

}  // namespace bgw::aws
