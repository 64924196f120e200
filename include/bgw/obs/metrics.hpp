#pragma once
/// The gateway's Prometheus metrics (issue 8): counters and histograms kept in memory, rendered
/// in the text exposition format 0.0.4 for `GET /metrics`. A plain class: no sockets, no clock
/// (gauges that depend on time are passed in at render time). Thread-safe.
///
/// Label sets stay bounded: operations, regions, tiers, statuses and sources are small closed
/// sets; model ids are those the config names plus the first `max_models` others seen, after
/// which an unknown model is counted as "other". No request ids, ever.

#include <array>
#include <cstddef>
#include <cstdint>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

namespace bgw::obs {

/// Fleet mode's shared state (issue 20), as its connections count it.
struct shared_state_gauges {
    bool up = false;          ///< every connection to Redis answers
    unsigned fleet_size = 1;  ///< gateways sharing it (configured, or seen through Redis)
    std::uint64_t timeouts = 0;
    std::uint64_t connection_errors = 0;
    std::uint64_t reply_errors = 0;
    std::uint64_t fallbacks = 0;  ///< admissions decided locally because Redis did not answer
};

/// Values read at scrape time, from state the registry does not own.
struct gauges {
    int inflight_requests = 0;
    std::uint64_t open_connections = 0;
    std::uint64_t open_streams = 0;
    std::uint64_t inflight_body_bytes = 0;  ///< request body bytes held (max_inflight_body_bytes)
    /// Seconds until the signing credentials expire; none for keys that never do.
    std::optional<double> credentials_expiry_seconds;
    /// Batch records by state ("queued", "submitted", "done", "failed", "cancelled").
    std::map<std::string, std::uint64_t> batch_records;
    /// Provisioned throughput paid by the hour, by (region, model): USD since the gateway started.
    std::map<std::pair<std::string, std::string>, double> provisioned_cost_usd;
    /// Set in fleet mode only.
    std::optional<shared_state_gauges> shared_state;
};

class metrics {
public:
    /// `known_models`: the model ids and route names from the config, always labelled as they are.
    explicit metrics(std::set<std::string, std::less<>> known_models = {},
                     std::size_t max_models = 500);

    /// Adds models named by a reloaded config.
    void know_models(const std::set<std::string, std::less<>>& models);

    /// One answered request (any status, including the gateway's own answers).
    void request(std::string_view operation,
                 std::string_view region,
                 std::string_view tier,
                 std::string_view model,
                 unsigned status);
    /// Time from sending an attempt upstream to its response head.
    void upstream_latency(std::string_view region, std::string_view operation, double seconds);
    /// Time from the request's arrival to its first event relayed to the client (streams).
    void first_event(std::string_view region, std::string_view operation, double seconds);
    /// `source`: "upstream" (Bedrock said so) or "local" (a cool-down or a local limit).
    void throttle(std::string_view region, std::string_view model, std::string_view source);
    void retry();
    void failover();
    /// A request ended by an unexpected exception (its connection closed).
    void session_failed();
    /// A failed accept of a client connection.
    void accept_failed();
    void tokens(std::string_view region,
                std::string_view tier,
                std::string_view model,
                std::uint64_t input,
                std::uint64_t output);
    void cost(std::string_view region, std::string_view tier, std::string_view model, double usd);
    /// What a batch-tier record saved against the same tokens on demand.
    void batch_savings(std::string_view region, std::string_view model, double usd);
    /// A SIGHUP reload: "ok" or "error".
    void reload(std::string_view result);

    /// The whole exposition, in the text format 0.0.4.
    std::string render(const gauges& g) const;

    /// The label a model id gets (itself, or "other" once the bound is reached).
    std::string model_label(std::string_view model);

    /// Histogram bucket bounds, in seconds.
    static constexpr std::array<double, 15> latency_buckets = {
        0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60};

private:
    struct histogram {
        std::array<std::uint64_t, latency_buckets.size()> buckets{};  // non-cumulative
        std::uint64_t count = 0;
        double sum = 0;
        void observe(double v);
    };
    using label_values = std::vector<std::string>;
    std::string model_label_locked(std::string_view model);

    mutable std::mutex mutex_;
    std::set<std::string, std::less<>> models_;
    std::size_t max_models_;
    std::map<label_values, std::uint64_t> requests_;      // operation, region, tier, model, status
    std::map<label_values, histogram> upstream_latency_;  // region, operation
    std::map<label_values, histogram> first_event_;       // region, operation
    std::map<label_values, std::uint64_t> throttles_;     // region, model, source
    std::uint64_t retries_ = 0;
    std::uint64_t failovers_ = 0;
    std::uint64_t session_failures_ = 0;
    std::uint64_t accept_errors_ = 0;
    std::map<label_values, std::uint64_t> tokens_;   // direction, region, tier, model
    std::map<label_values, double> cost_;            // region, tier, model
    std::map<label_values, double> savings_;         // region, model
    std::map<label_values, std::uint64_t> reloads_;  // result
};

}  // namespace bgw::obs
