#pragma once
/// The batch tier's I/O shell (issue 6): the durable spool (a journal of bgw::batch::book
/// events, each written and fsynced before it takes effect), the HTTP answers for
/// `/gateway/batch/...`, and the runner that turns due groups into Bedrock batch jobs (S3 input,
/// CreateModelInvocationJob, polling, S3 output) or runs underfull groups on demand.

#include "bgw/batch/book.hpp"
#include "bgw/config/config.hpp"
#include "bgw/net/asio.hpp"

#include <map>
#include <mutex>
#include <string>

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
    ~batch_service();
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
    /// `caller`, the caller key's name (empty when the gateway has no caller keys: everything is
    /// visible). A record that batch::visible_to() hides from `caller` gets the same 404 as an
    /// unknown id, so its existence is not revealed; the job list then shows only jobs holding
    /// the caller's records, counting only those.
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
    bool append(const std::string& line);  // write + fdatasync, then apply; under mutex_
    /// The tokens (and their estimated cost) a record's answer says it used, for the metrics.
    void count_usage(gateway_context& g,
                     const batch::record& r,
                     std::string_view output,
                     config::tier t);
    awaitable<void> submit(gateway_context& g, const batch::job& j);
    awaitable<void> poll(gateway_context& g, const batch::job& j);
    awaitable<void> run_on_demand(gateway_context& g, const batch::job& j);

    config::config cfg_;
    std::mutex mutex_;
    batch::book book_;
    int fd_ = -1;
    /// When each running job may be polled next, and the current interval (not journaled: after
    /// a restart every running job is polled at once).
    std::map<std::string,
             std::pair<std::chrono::steady_clock::time_point, std::chrono::milliseconds>>
        next_poll_;
    std::map<std::string, std::chrono::steady_clock::time_point> retry_at_;  ///< failed submits
};

}  // namespace bgw::net
