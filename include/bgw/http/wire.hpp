#pragma once
/// HTTP/1.1 framing written by hand on the relay's hot path: a response head in one string and
/// chunk-size lines. Beast's serializer does the same through layers of buffer views that cost
/// more than the rest of a small request's relay; these produce the same bytes.

#include <cstddef>
#include <string>
#include <string_view>

#include <boost/beast/http/message.hpp>

namespace bgw::http {

/// Appends an HTTP/1.1 status line; an empty `reason` means the standard one for `code`.
void append_status_line(std::string& out, unsigned code, std::string_view reason);

/// Appends one field line, `name: value`.
void append_field(std::string& out, std::string_view name, std::string_view value);

/// The status line (HTTP/1.1, as every answer of the gateway), every field in order, and the
/// blank line; the reason phrase is the header's own, or the standard one for its status.
std::string response_head(const boost::beast::http::response_header<>& h);

/// A chunk-size line ("1a2b\r\n") for `size` bytes, written into `out` (at least 18 bytes);
/// returns its length.
std::size_t chunk_size_line(std::size_t size, char* out);

/// The last chunk of a chunked body, with no trailer.
inline constexpr std::string_view last_chunk = "0\r\n\r\n";

}  // namespace bgw::http
