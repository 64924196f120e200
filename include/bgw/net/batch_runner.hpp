#pragma once
/// The batch tier's runner (issue 6): turns due groups of the spool into Bedrock batch jobs (S3
/// input, CreateModelInvocationJob, polling, S3 output) or runs underfull groups on demand,
/// journaling every step in the spool before it takes effect.

#include "bgw/batch/book.hpp"
#include "bgw/config/config.hpp"
#include "bgw/net/asio.hpp"
#include "bgw/net/batch_spool.hpp"

#include <chrono>
#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace bgw::net {

struct gateway_context;

/// The wall clock in milliseconds since the epoch: when a record was accepted, a job created.
std::int64_t batch_now_ms();

class batch_runner {
public:
    /// `cfg` and `spool` must outlive the runner.
    batch_runner(const config::config& cfg, batch_spool& spool) : cfg_(cfg), spool_(spool) {}

    /// Makes, submits and polls jobs until the io_context stops.
    awaitable<void> run(gateway_context& g);

    /// What polling a job learnt: its status and message (empty where the answer had none).
    struct job_status {
        std::string status;
        std::string message;
    };

private:
    /// The tokens (and their estimated cost) a record's answer says it used, for the metrics.
    void count_usage(gateway_context& g,
                     const batch::record& r,
                     std::string_view output,
                     config::tier t);
    /// New jobs from the spool's due groups, each one's line durable before anything is sent
    /// for it. The caller holds the spool's lock.
    void plan_jobs_locked();
    /// The unfinished jobs whose turn it is at `now`: not waiting out a failed submit or their
    /// next poll. The caller holds the spool's lock.
    std::vector<batch::job> due_jobs_locked(std::chrono::steady_clock::time_point now);
    awaitable<void> submit(gateway_context& g, const batch::job& j);
    awaitable<void> poll(gateway_context& g, const batch::job& j);
    /// Schedules the job's next poll, the interval doubled (up to 32 poll intervals).
    void poll_later(const batch::job& j);
    /// A finished job's outcome, record by record (`lines`: its S3 output), then the job's.
    void store_results(gateway_context& g,
                       const batch::job& j,
                       const job_status& status,
                       const std::vector<batch::output_line>& lines);
    awaitable<void> run_on_demand(gateway_context& g, const batch::job& j);

    const config::config& cfg_;
    batch_spool& spool_;
    /// When each running job may be polled next, and the current interval (not journaled: after
    /// a restart every running job is polled at once).
    std::map<std::string,
             std::pair<std::chrono::steady_clock::time_point, std::chrono::milliseconds>>
        next_poll_;
    std::map<std::string, std::chrono::steady_clock::time_point> retry_at_;  ///< failed submits
};

}  // namespace bgw::net
