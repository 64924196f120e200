// ISO 8601 times as AWS endpoints, credential_process and AWS_CREDENTIAL_EXPIRATION write them.

#include "bgw/aws/credential_chain.hpp"
#include "bgw/aws/credentials/common.hpp"

namespace bgw::aws {

using namespace std::chrono;

std::optional<sys_seconds> parse_iso8601(std::string_view s) {
    s = cred::trim(s);
    auto num = [&](std::size_t pos, std::size_t len) -> std::optional<int> {
        if (pos + len > s.size()) return std::nullopt;
        int v = 0;
        for (std::size_t i = pos; i < pos + len; ++i) {
            if (s[i] < '0' || s[i] > '9') return std::nullopt;
            v = v * 10 + (s[i] - '0');
        }
        return v;
    };
    auto at = [&](std::size_t pos, std::string_view chars) {
        return pos < s.size() && chars.find(s[pos]) != std::string_view::npos;
    };
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
    minutes offset{0};
    if (at(pos, "Zz")) {
        ++pos;
    } else if (at(pos, "+-")) {
        const int sign = s[pos] == '-' ? -1 : 1;
        auto oh = num(pos + 1, 2);
        if (!oh) return std::nullopt;
        pos += 3;
        int om = 0;
        if (at(pos, ":")) ++pos;
        if (pos < s.size()) {
            auto m = num(pos, 2);
            if (!m || *m > 59) return std::nullopt;
            om = *m;
            pos += 2;
        }
        if (*oh > 23) return std::nullopt;
        offset = minutes(sign * (*oh * 60 + om));
    }
    // No designator at all is read as UTC: every AWS endpoint speaks UTC.
    if (pos != s.size()) return std::nullopt;
    const year_month_day ymd{year{*y}, month{static_cast<unsigned>(*mo)},
                             day{static_cast<unsigned>(*d)}};
    if (!ymd.ok() || *h > 23 || *mi > 59 || *sec > 60) return std::nullopt;
    return sys_days{ymd} + hours{*h} + minutes{*mi} + seconds{*sec} - offset;
}

}  // namespace bgw::aws
