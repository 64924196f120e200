#include "bgw/http/wire.hpp"

namespace bgw::http {

void append_status_line(std::string& out, unsigned code, std::string_view reason) {
    if (reason.empty())
        reason = boost::beast::http::obsolete_reason(static_cast<boost::beast::http::status>(code));
    const char digits[3] = {static_cast<char>('0' + code / 100 % 10),
                            static_cast<char>('0' + code / 10 % 10),
                            static_cast<char>('0' + code % 10)};
    out.append("HTTP/1.1 ").append(digits, 3).append(" ").append(reason).append("\r\n");
}

void append_field(std::string& out, std::string_view name, std::string_view value) {
    out.append(name).append(": ").append(value).append("\r\n");
}

std::string response_head(const boost::beast::http::response_header<>& h) {
    std::size_t n = 9 + 4 + h.reason().size() + 32 + 2;
    for (const auto& f : h) n += f.name_string().size() + 2 + f.value().size() + 2;
    std::string out;
    out.reserve(n);
    append_status_line(out, h.result_int(), h.reason());
    for (const auto& f : h) append_field(out, f.name_string(), f.value());
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
