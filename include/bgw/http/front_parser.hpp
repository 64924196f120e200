#pragma once
/// The client-side request parser: Beast's HTTP/1.1 tokenizer (`basic_parser`) with the
/// gateway's own rules on top, so every bad request becomes a clear error value instead of an
/// exception, an unbounded buffer or a lenient framing.
///
/// What it adds to Beast's `request_parser<string_body>`:
/// - A field name or value longer than `max_field_bytes` is refused (431). Beast's
///   `basic_fields` stores both with 16-bit offsets and throws `std::length_error` past them
///   (RFC 9110 §5.4: a server may refuse large fields with 431).
/// - The target length and the field count are checked as they arrive (414, 431), and chunk
///   extensions and trailer fields count against `max_header_bytes` / `max_header_count`.
///   Trailer fields are counted and then dropped (RFC 9110 §6.5.1): nothing upstream needs them.
/// - RFC 9112 §6.1 and §6.3: a Transfer-Encoding whose last coding is not `chunked`, `chunked`
///   applied twice, Transfer-Encoding in an HTTP/1.0 request, or Transfer-Encoding alongside
///   Content-Length: 400 (the caller closes the connection after any refusal).
/// - RFC 9112 §3.2: an HTTP/1.1 request without Host, or any request with more than one, is 400.
/// - RFC 9110 §7.6.1: the fields the Connection header names are hop-by-hop; they are removed.
/// - The body grows with the bytes that arrive; nothing is reserved for a declared length.

#include "bgw/error.hpp"

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>

#include <boost/beast/http/basic_parser.hpp>
#include <boost/beast/http/message.hpp>
#include <boost/beast/http/string_body.hpp>

namespace bgw::http {

/// The longest field name or value Beast's `basic_fields` can hold (16-bit offsets, two bytes
/// of which it keeps for itself).
inline constexpr std::size_t max_field_bytes = 65'533;

/// What a request may hold (the `limits` section, issue 10).
struct front_limits {
    std::size_t max_header_bytes = 64 * 1024;  ///< the head; also extensions plus trailers
    std::size_t max_header_count = 100;        ///< fields in the head; also trailer fields
    std::size_t max_target_bytes = 8 * 1024;
    std::size_t max_body_bytes = 25'000'000;
};

/// Parses one request (feed it with `put`, or Beast's `async_read*`). On a refusal the parse
/// stops with an error code and `refusal()` says what to answer; other error codes are Beast's
/// own (bad syntax, `header_limit`, `body_limit`...).
class front_parser final : public boost::beast::http::basic_parser<true> {
public:
    using message_type = boost::beast::http::request<boost::beast::http::string_body>;

    explicit front_parser(const front_limits& limits);

    /// The request parsed so far (its body: the bytes that arrived).
    message_type& get() { return msg_; }
    const message_type& get() const { return msg_; }
    message_type release() { return std::move(msg_); }

    /// Set when the parse stopped on one of the gateway's own rules.
    const std::optional<error>& refusal() const { return refusal_; }

    /// Chunk-extension and trailer bytes seen so far.
    std::size_t extra_head_bytes() const { return extra_bytes_; }

private:
    void on_request_impl(boost::beast::http::verb method,
                         boost::beast::string_view method_str,
                         boost::beast::string_view target,
                         int version,
                         boost::beast::error_code& ec) override;
    void on_response_impl(int,
                          boost::beast::string_view,
                          int,
                          boost::beast::error_code& ec) override;
    void on_field_impl(boost::beast::http::field name,
                       boost::beast::string_view name_string,
                       boost::beast::string_view value,
                       boost::beast::error_code& ec) override;
    void on_header_impl(boost::beast::error_code& ec) override;
    void on_body_init_impl(const boost::optional<std::uint64_t>& content_length,
                           boost::beast::error_code& ec) override;
    std::size_t on_body_impl(boost::beast::string_view body, boost::beast::error_code& ec) override;
    void on_chunk_header_impl(std::uint64_t size,
                              boost::beast::string_view extensions,
                              boost::beast::error_code& ec) override;
    std::size_t on_chunk_body_impl(std::uint64_t remain,
                                   boost::beast::string_view body,
                                   boost::beast::error_code& ec) override;
    void on_finish_impl(boost::beast::error_code& ec) override;

    void refuse(error e, boost::beast::error_code& ec);

    front_limits limits_;
    message_type msg_;
    std::optional<error> refusal_;
    std::size_t fields_ = 0;       ///< fields in the head, then trailer fields too
    std::size_t hosts_ = 0;        ///< Host fields in the head
    std::size_t extra_bytes_ = 0;  ///< chunk extensions and trailer fields
};

}  // namespace bgw::http
