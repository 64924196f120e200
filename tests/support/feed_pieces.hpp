#pragma once
/// Feeds a parser a client's bytes as a connection would deliver them: in pieces, each appended
/// to what the parser left unconsumed (the connection's read buffer). Shared by the front
/// parser's unit tests and its fuzz target.

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

#include <boost/asio/buffer.hpp>
#include <boost/beast/http/error.hpp>

namespace bgw::test {

/// Where a feed stopped: the parser's error (need_more is not one) and the bytes it left.
struct feed_result {
    boost::beast::error_code ec;
    std::size_t left = 0;  ///< bytes not consumed: after the message, or unread after an error
};

/// Feeds `wire` to `parser` in the pieces `cuts` marks (ascending offsets), until the message is
/// complete, the parser fails, or the bytes run out.
template <class Parser>
feed_result feed_pieces(Parser& parser,
                        std::string_view wire,
                        const std::vector<std::size_t>& cuts) {
    std::string pending;
    std::size_t from = 0;
    boost::beast::error_code ec;
    std::vector<std::size_t> ends = cuts;
    ends.push_back(wire.size());
    for (std::size_t end : ends) {
        pending.append(wire.substr(from, end - from));
        from = end;
        while (!pending.empty() && !parser.is_done()) {
            const auto used = parser.put(boost::asio::buffer(pending), ec);
            pending.erase(0, used);
            if (ec == boost::beast::http::error::need_more) {
                ec = {};
                break;
            }
            if (ec) break;
        }
        if (ec || parser.is_done()) break;
    }
    return {ec, pending.size() + (wire.size() - from)};
}

}  // namespace bgw::test
