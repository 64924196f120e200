#include "bgw/http/wire.hpp"

namespace bgw::http {

std::string response_head(const boost::beast::http::response_header<>& h) {
    namespace bh = boost::beast::http;
    const unsigned code = h.result_int();
    std::string_view reason = h.reason();
    if (reason.empty()) reason = bh::obsolete_reason(h.result());
    std::size_t n = 9 + 4 + reason.size() + 2 + 2;
    for (const auto& f : h) n += f.name_string().size() + 2 + f.value().size() + 2;
    std::string out;
    out.reserve(n);
    out.append(h.version() == 10 ? "HTTP/1.0 " : "HTTP/1.1 ");
    const char digits[3] = {static_cast<char>('0' + code / 100 % 10),
                            static_cast<char>('0' + code / 10 % 10),
                            static_cast<char>('0' + code % 10)};
    out.append(digits, 3).append(" ").append(reason.data(), reason.size()).append("\r\n");
    for (const auto& f : h) {
        const auto name = f.name_string();
        const auto value = f.value();
        out.append(name.data(), name.size())
            .append(": ")
            .append(value.data(), value.size())
            .append("\r\n");
    }
    out.append("\r\n");
    return out;
}

std::size_t chunk_size_line(std::size_t size, char* out) {
    static constexpr char hex[] = "0123456789abcdef";
    char digits[16];
    std::size_t n = 0;
    do {
        digits[n++] = hex[size & 0xf];
        size >>= 4;
    } while (size != 0);
    for (std::size_t i = 0; i < n; ++i) out[i] = digits[n - 1 - i];
    out[n] = '\r';
    out[n + 1] = '\n';
    return n + 2;
}

}  // namespace bgw::http
