#pragma once
/// The one way the I/O shell writes a gather list (a head and a body, a chunk and its framing)
/// to a stream, plain or TLS.
///
/// `asio::async_write` of a two-buffer array is not safe over `beast::ssl_stream`: once the first
/// buffer is written, asio's two-buffer write passes `{empty, rest}` on; Beast's `flat_stream`
/// (inside `ssl_stream`) flattens at most 16 KiB, so when `rest` is larger it writes 0 bytes, and
/// asio's composed write takes a 0-byte write as the end and reports success with `rest`
/// unwritten. `write_all` never hands the stream a sequence that starts with an empty buffer, and
/// takes a 0-byte write with no error for the error it is.

#include "bgw/net/asio.hpp"

#include <array>
#include <cstddef>
#include <tuple>
#include <type_traits>

#include <boost/asio/buffer.hpp>
#include <boost/asio/error.hpp>

namespace bgw::net {

/// The non-empty buffers of a gather list, of which the first `skip` bytes are already written.
template <std::size_t N>
struct gather_list {
    std::array<asio::const_buffer, N> parts{};
    std::size_t count = 0;
    std::size_t total = 0;

    explicit gather_list(const std::array<asio::const_buffer, N>& in) {
        for (const auto& b : in) {
            if (b.size() == 0) continue;
            parts[count++] = b;
            total += b.size();
        }
    }

    /// Drops the first `n` bytes; whole buffers that are written leave the list.
    void consume(std::size_t n) {
        std::size_t first = 0;
        while (n > 0 && first < count) {
            if (n < parts[first].size()) {
                parts[first] += n;
                n = 0;
            } else {
                n -= parts[first].size();
                ++first;
            }
        }
        for (std::size_t i = first; i < count; ++i) parts[i - first] = parts[i];
        count -= first;
    }
};

/// A view of the first `count` buffers of an array, as a ConstBufferSequence.
template <std::size_t N>
struct buffer_prefix_view {
    const std::array<asio::const_buffer, N>* parts;
    std::size_t count;
    const asio::const_buffer* begin() const { return parts->data(); }
    const asio::const_buffer* end() const { return parts->data() + count; }
};

/// Writes every byte of `buffers` (empty ones are skipped) to `stream`. Returns the error, if
/// any, and the bytes written. A stream that accepts 0 bytes without an error gets
/// `asio::error::no_buffer_space` rather than a silent short write.
template <class Stream, std::size_t N>
awaitable<std::tuple<beast::error_code, std::size_t>> write_all(
    Stream& stream, const std::array<asio::const_buffer, N>& buffers) {
    gather_list<N> list(buffers);
    std::size_t written = 0;
    while (list.count > 0) {
        auto [ec, n] = co_await stream.async_write_some(
            buffer_prefix_view<N>{&list.parts, list.count}, use_nothrow);
        written += n;
        if (ec) co_return std::tuple{ec, written};
        if (n == 0) co_return std::tuple{beast::error_code(asio::error::no_buffer_space), written};
        list.consume(n);
    }
    co_return std::tuple{beast::error_code{}, written};
}

/// The same for buffers given one by one: `write_all(s, asio::buffer(head), asio::buffer(body))`.
template <class Stream, class... Buffers>
requires(std::is_convertible_v<Buffers, asio::const_buffer>&&...)
    awaitable<std::tuple<beast::error_code, std::size_t>> write_all(Stream& stream,
                                                                    Buffers... buffers) {
    co_return co_await write_all(
        stream, std::array<asio::const_buffer, sizeof...(Buffers)>{asio::const_buffer(buffers)...});
}

}  // namespace bgw::net
