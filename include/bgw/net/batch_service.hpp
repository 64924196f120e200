#pragma once
/// The batch tier's I/O shell (issue 6): ties the durable spool (net::batch_spool), the HTTP
/// answers for `/gateway/batch/...` (batch::answer, pure) and the runner (net::batch_runner).

#include "bgw/batch/book.hpp"
#include "bgw/config/config.hpp"
#include "bgw/net/asio.hpp"
#include "bgw/net/batch_runner.hpp"
#include "bgw/net/batch_spool.hpp"

#include <cstdint>
#include <map>
#include <string>
#include <string_view>

#include <boost/beast/http/message.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/http/verb.hpp>

namespace bgw::net {

struct gateway_context;

class batch_service {
public:
    /// Opens (creating it if needed) `{spool_dir}/journal.jsonl` and replays it; a torn last line
    /// from a crash is cut off. Throws std::runtime_error when the spool cannot be used.
    explicit batch_service(const config::config& cfg);
    batch_service(const batch_service&) = delete;
    batch_service& operator=(const batch_service&) = delete;

    /// Spools one record owned by `owner`, the caller key's name (empty when the gateway has no
    /// caller keys); its id, or an error (503) when the spool cannot be written. The record
    /// exists (and survives any crash, owner included) once this returns.
    result<std::string> accept(std::string region,
                               std::string model,
                               std::string operation,
                               std::string input_json,
                               std::string_view owner);

    /// Answers `/gateway/batch/records/{id}` (GET, DELETE) and `/gateway/batch/jobs` (GET) for
    /// `caller` as batch::answer() says, first making durable the journal line it asks for (a
    /// cancel); when that line cannot be written, the answer is its error (503).
    boost::beast::http::response<boost::beast::http::string_body> answer(
        boost::beast::http::verb method,
        std::string_view target,
        std::string_view caller,
        std::string_view request_id);

    /// Records by state name, for the metrics.
    std::map<std::string, std::uint64_t> record_counts();

    /// Makes, submits and polls jobs until the io_context stops.
    awaitable<void> run(gateway_context& g);

private:
    config::config cfg_;
    batch_spool spool_;
    batch_runner runner_;  ///< after cfg_ and spool_, which it refers to
};

}  // namespace bgw::net
