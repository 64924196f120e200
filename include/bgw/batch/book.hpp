#pragma once
/// The batch tier's state (issue 6) as a pure value rebuilt from a journal of JSON lines.
///
/// Every change is first written as one journal line (see the `*_event` functions), made
/// durable, and only then applied with book::apply(); replaying the journal after a crash gives
/// the same book. That is what makes the tier restart-safe:
/// - a record exists once its `accept` line is durable, and the 202 is sent only after that;
/// - a job's `job` line (its id and records) is durable before anything is sent upstream, and the
///   job id is the CreateModelInvocationJob clientRequestToken, so re-submitting a job that was
///   interrupted is idempotent and no record is ever in two jobs;
/// - results are stored per record (`result` lines) before the job is marked finished.
/// Nothing here touches a file, a socket or a clock.

#include "bgw/config/config.hpp"

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <rapidjson/fwd.h>

namespace bgw::batch {

enum class record_state { queued, in_job, done, failed, cancelled };
std::string_view record_state_name(record_state s);

struct record {
    std::string id;
    std::string region;
    std::string model;
    std::string operation;  ///< "InvokeModel" or "Converse"
    std::string input;      ///< the request body (JSON), the job line's modelInput
    std::int64_t accepted_ms = 0;
    record_state state = record_state::queued;
    std::string job;     ///< set once in a job
    std::string output;  ///< modelOutput (JSON) when done
    std::string error;   ///< the error object (JSON) when failed
    /// The name of the caller key that spooled it (never the key), or empty when the gateway
    /// had no caller keys (or the line predates owners).
    std::string owner;
};

/// Whether the caller named `caller` may read, cancel or count record `r`. `caller` is the
/// caller key's name, or empty when the gateway has no caller keys: then every record is
/// visible, as before keys existed. With keys, only the key that spooled a record sees it; a
/// record with no owner (spooled while keys were off) is visible to no key, since nothing
/// says whose it is.
bool visible_to(const record& r, std::string_view caller);

enum class job_state {
    submitting,  ///< planned; not yet known to have been created upstream
    running,     ///< created upstream (has an ARN): polled until it ends
    finished,    ///< every record has its result
};
std::string_view job_state_name(job_state s);

struct job {
    std::string id;  ///< jobName and clientRequestToken
    std::string region;
    std::string model;
    std::string operation;
    std::vector<std::string> records;
    bool on_demand = false;  ///< an underfull group run record by record on demand
    std::int64_t created_ms = 0;
    job_state state = job_state::submitting;
    std::string arn;
    std::string status;  ///< Bedrock's last reported status
};

/// A group of queued records that should become a job now.
struct job_plan {
    std::string region;
    std::string model;
    std::string operation;
    std::vector<std::string> records;
    bool on_demand = false;
};

/// Most records per job (Bedrock's own per-job maximum is a larger quota).
inline constexpr std::size_t max_records_per_job = 10'000;

// Journal lines. Raw JSON arguments (`input`, `output`, `error`) must be valid JSON.
/// The record's `owner` is written only when set, so a gateway without caller keys writes the
/// same lines as before owners existed, and such lines replay as owned by nobody.
std::string accept_event(const record& r);
std::string cancel_event(std::string_view record_id);
std::string job_event(const job& j);
std::string submitted_event(std::string_view job_id, std::string_view arn);
std::string status_event(std::string_view job_id, std::string_view status);
std::string result_event(std::string_view record_id,
                         std::string_view output_json,
                         std::string_view error_json);
std::string finished_event(std::string_view job_id, std::string_view status);

class book {
public:
    /// Applies one journal line. False (and no change) for a line that is not a known event,
    /// e.g. a torn last line after a crash.
    bool apply(std::string_view line);

    const record* find_record(std::string_view id) const;
    const job* find_job(std::string_view id) const;
    const std::map<std::string, job, std::less<>>& jobs() const { return jobs_; }
    std::size_t queued() const { return queue_.size(); }
    /// How many records are in each state (for the metrics).
    std::map<record_state, std::uint64_t> count_by_state() const;

    /// The jobs to make at `now_ms`: per (region, model, operation), in acceptance order, every
    /// full `min_records` (up to max_records_per_job each); and a group whose oldest record has
    /// waited `max_wait` with fewer than `min_records`: nothing ("wait"), or one on-demand job.
    std::vector<job_plan> due(const config::batch_config& cfg, std::int64_t now_ms) const;
    /// When the next due() may return something new (the oldest queued record's deadline), or
    /// nullopt when nothing is queued.
    std::optional<std::int64_t> next_deadline(const config::batch_config& cfg) const;

private:
    // One per journal event; each checks the whole line before changing anything.
    bool apply_accept(const rapidjson::Value& line);
    bool apply_cancel(const rapidjson::Value& line);
    bool apply_job(const rapidjson::Value& line);
    bool apply_job_update(const rapidjson::Value& line, std::string_view event);
    bool apply_result(const rapidjson::Value& line);

    std::map<std::string, record, std::less<>> records_;
    std::map<std::string, job, std::less<>> jobs_;
    std::vector<std::string> queue_;  ///< queued record ids, in acceptance order
};

// What goes to and comes from Bedrock for a job.

/// The S3 keys of a job: `{prefix}/input/{job}.jsonl` and the output folder
/// `{prefix}/output/`, under which Bedrock writes `{jobId}/{job}.jsonl.out`.
std::string input_key(const config::batch_config& cfg, std::string_view job_id);
std::string output_folder(const config::batch_config& cfg);
std::string output_key(const config::batch_config& cfg,
                       std::string_view job_id,
                       std::string_view job_arn);

/// One line per record: `{"recordId": ..., "modelInput": ...}`.
std::string input_jsonl(const book& b, const job& j);
/// The CreateModelInvocationJob body; clientRequestToken = jobName = the job id.
std::string create_job_body(const config::batch_config& cfg, const job& j);

/// One record's line of a `.jsonl.out` file.
struct output_line {
    std::string record_id;
    std::string output;  ///< modelOutput JSON, or empty
    std::string error;   ///< error JSON, or empty
};
/// Parses a `.jsonl.out` file; lines that are not JSON objects with a recordId are skipped.
std::vector<output_line> parse_output(std::string_view jsonl);

/// True for the job statuses after which Bedrock does no more work.
bool is_terminal_status(std::string_view status);
/// True for the terminal statuses that come with an output file.
bool has_output(std::string_view status);

}  // namespace bgw::batch
