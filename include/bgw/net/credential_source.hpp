#pragma once
/// The gateway's current AWS credentials (issue 7), refreshed in the background well before they
/// expire. Requests take a snapshot (a shared pointer) and sign with it, so a refresh never
/// blocks or breaks traffic; only credentials that have really expired make requests fail (503).
///
/// The refresh schedule is a pure function of the credentials, the clock and a random jitter;
/// tick() does one step of it, so tests drive time by hand. run() calls tick() on a thread.

#include "bgw/aws/credential_chain.hpp"
#include "bgw/config/config.hpp"

#include <chrono>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <thread>

namespace bgw::net {

using sys_seconds = std::chrono::sys_seconds;

/// When to refresh credentials obtained at `obtained` that expire at `expiration`: 5 minutes
/// (plus up to a minute of jitter) before, or a quarter of their lifetime before when that
/// lifetime is short. `jitter` is in [0, 1).
sys_seconds refresh_time(sys_seconds obtained, sys_seconds expiration, double jitter);

class credential_source {
public:
    using resolver = std::function<result<aws::timed_credentials>()>;
    using clock_fn = std::function<sys_seconds()>;

    credential_source(resolver resolve, clock_fn now);
    ~credential_source();
    credential_source(const credential_source&) = delete;
    credential_source& operator=(const credential_source&) = delete;

    /// The first resolution, at start-up; the error says which source failed and why.
    result<void> load();

    /// The credentials to sign with now, or a 503 error that says why there are none (never
    /// expired ones).
    result<std::shared_ptr<const aws::timed_credentials>> usable() const;
    /// The credentials held now, expired or not (for the expiry gauge); null before any.
    std::shared_ptr<const aws::timed_credentials> current() const;

    /// One step of the schedule: refreshes when due (or retrying after a failure).
    void tick();
    /// When tick() next has something to do; nullopt for long-term credentials.
    std::optional<sys_seconds> next_attempt() const;
    /// The last refresh error, empty after a success.
    std::string last_error() const;

    /// Calls tick() on a background thread until destruction.
    void run_in_background();

private:
    resolver resolve_;
    clock_fn now_;
    mutable std::mutex mutex_;
    std::shared_ptr<const aws::timed_credentials> current_;
    std::optional<sys_seconds> next_;
    int failures_ = 0;
    std::string last_error_;
    std::mt19937_64 rng_{std::random_device{}()};
    std::condition_variable wake_;
    bool stopping_ = false;
    std::thread thread_;
};

/// The real provider_io: the process environment, files, HTTP(S) with verified TLS and
/// timeouts (10 s; 1 s to connect to metadata endpoints), and credential_process through
/// /bin/sh with a 60 s limit and 64 KiB of output at most.
aws::provider_io system_provider_io(const std::string& ca_file);

/// The source the config asks for, resolving with `io` in `region` (STS).
credential_source::resolver make_resolver(aws::provider_io io,
                                          std::string region,
                                          const config::credentials_config& cfg);

}  // namespace bgw::net
