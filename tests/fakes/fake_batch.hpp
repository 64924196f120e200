#pragma once
/// Internal to the fake (see fake_bedrock.hpp for the routes): the in-memory S3 store and the
/// batch inference jobs of one fake instance. Thread-safe: the server thread serves requests
/// while a test thread reads through fake_bedrock's accessors.

#include <cstddef>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "fakes/fake_bedrock.hpp"

namespace bgw::test::detail {

/// A path-style S3 request target: `/{bucket}/{key...}`, each part percent-decoded once.
struct s3_location {
    std::string bucket;
    std::string key;  ///< empty for `/{bucket}` and `/{bucket}/`
};

/// Splits a wire path (without the query); nullopt when it does not start with '/'.
std::optional<s3_location> parse_s3_path(std::string_view wire_path);

class fake_store {
public:
    fake_store();
    ~fake_store();  // in the .cpp, where `job` is complete
    fake_store(const fake_store&) = delete;
    fake_store& operator=(const fake_store&) = delete;

    // --- S3 ---
    void put(std::string_view bucket,
             std::string_view key,
             std::string body,
             std::string content_type);
    std::optional<stored_s3_object> get(std::string_view bucket, std::string_view key) const;
    std::vector<stored_s3_object> list(std::string_view bucket, std::string_view prefix) const;

    // --- batch jobs ---
    std::size_t jobs_created() const;
    std::vector<fake_batch_job> jobs() const;

    // --- routes (called on the server thread for verified requests) ---
    /// PUT/GET object; the bucket and key come from the wire path.
    fake_response s3_route(const recorded_request& req);
    /// CreateModelInvocationJob; `created` tells whether a job was really created.
    fake_response create_job(const recorded_request& req, bool& created);
    /// GetModelInvocationJob; `identifier` is already percent-decoded. Advances the job.
    fake_response get_job(std::string_view identifier, unsigned in_progress_polls);

    struct job;  ///< defined in the .cpp

private:
    using object_key = std::pair<std::string, std::string>;  // bucket, key
    std::optional<stored_s3_object> get_locked(std::string_view bucket, std::string_view key) const;
    void put_locked(std::string bucket, std::string key, std::string body, std::string type);
    void finish_locked(job& j);

    mutable std::mutex mutex_;
    std::map<object_key, stored_s3_object> objects_;
    std::vector<std::unique_ptr<job>> jobs_;             // creation order
    std::map<std::string, job*, std::less<>> by_id_;     // job id -> job
    std::map<std::string, job*, std::less<>> by_token_;  // clientRequestToken -> job
    std::size_t created_ = 0;
};

}  // namespace bgw::test::detail
