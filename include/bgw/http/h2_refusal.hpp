#pragma once
/// Clients that open with HTTP/2 prior knowledge (h2c), such as the AWS SDK for JavaScript v3
/// BedrockRuntimeClient by default, get a proper HTTP/2 refusal instead of a parse error:
/// SETTINGS + GOAWAY with HTTP_1_1_REQUIRED (RFC 9113 §3.4, §6.8, §7).

#include <string>
#include <string_view>

namespace bgw::http {

/// The 24-byte HTTP/2 client connection preface.
inline constexpr std::string_view h2_preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// True when `received` starts with the HTTP/2 preface (or is a prefix of it of >= 16 bytes,
/// enough to tell it from any HTTP/1.1 request line).
bool looks_like_h2_preface(std::string_view received);

/// An empty server SETTINGS frame followed by GOAWAY(last stream 0, HTTP_1_1_REQUIRED, `why`).
std::string h2_http11_required(std::string_view why);

}  // namespace bgw::http
