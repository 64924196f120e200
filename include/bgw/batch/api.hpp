#pragma once
/// The `/gateway/batch/...` HTTP answers (issue 6) as a pure function of the batch book: which
/// response to send, and which journal line (if any) must be made durable before it is sent.
/// The I/O shell (net::batch_service) appends that line and sends the response. Nothing here
/// touches a file, a socket or a clock.

#include "bgw/batch/book.hpp"
#include "bgw/config/config.hpp"
#include "bgw/error.hpp"

#include <optional>
#include <string>
#include <string_view>

#include <boost/beast/http/message.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/http/verb.hpp>

namespace bgw::batch {

/// A journal line an answer depends on, and the error to answer instead when it cannot be
/// written.
struct journal_write {
    std::string line;
    error unwritten;
};

struct api_answer {
    boost::beast::http::response<boost::beast::http::string_body> response;
    /// Appended (durably) before `response` is sent; when that fails, `unwritten` is the answer.
    std::optional<journal_write> event;
};

/// Answers `/gateway/batch/records/{id}` (GET, DELETE) and `/gateway/batch/jobs` (GET) for
/// `caller`, the caller key's name (empty when the gateway has no caller keys: everything is
/// visible). A record that visible_to() hides from `caller` gets the same 404 as an unknown id,
/// so its existence is not revealed; the job list then shows only jobs holding the caller's
/// records, counting only those. `cfg` gives the Retry-After of a record still in progress.
api_answer answer(const book& b,
                  const config::batch_config& cfg,
                  boost::beast::http::verb method,
                  std::string_view target,
                  std::string_view caller,
                  std::string_view request_id);

}  // namespace bgw::batch
