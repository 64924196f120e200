#include "bgw/http/h2_refusal.hpp"

#include <cstdint>

namespace bgw::http {
namespace {

void put_frame_header(std::string& out, std::uint32_t length, std::uint8_t type) {
    out.push_back(static_cast<char>((length >> 16) & 0xff));
    out.push_back(static_cast<char>((length >> 8) & 0xff));
    out.push_back(static_cast<char>(length & 0xff));
    out.push_back(static_cast<char>(type));
    out.append(5, '\0');  // flags 0, stream id 0
}

void put_u32(std::string& out, std::uint32_t v) {
    for (int shift = 24; shift >= 0; shift -= 8)
        out.push_back(static_cast<char>((v >> shift) & 0xff));
}

}  // namespace

bool looks_like_h2_preface(std::string_view received) {
    if (received.size() >= h2_preface.size()) return received.starts_with(h2_preface);
    return received.size() >= 16 && h2_preface.starts_with(received);
}

std::string h2_http11_required(std::string_view why) {
    constexpr std::uint8_t settings = 0x4, goaway = 0x7;
    constexpr std::uint32_t http_1_1_required = 0xd;
    why = why.substr(0, 1024);
    std::string out;
    put_frame_header(out, 0, settings);
    put_frame_header(out, static_cast<std::uint32_t>(8 + why.size()), goaway);
    put_u32(out, 0);  // last stream id: nothing was processed
    put_u32(out, http_1_1_required);
    out.append(why);
    return out;
}

}  // namespace bgw::http
