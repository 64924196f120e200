#pragma once
/// Fleet mode's shared limits (issue 20) as pure data and one Lua script: what a gateway asks
/// Redis before sending a request upstream, and how the answer reads. No sockets.
///
/// One script run (EVALSHA, atomic on the server) per request decides everything the request's
/// admission needs, in the order a lone gateway decides it:
///   1. the caller key's own rpm/tpm (when the request names a limited key): over → refused,
///      nothing charged; else charged;
///   2. the (region, model) cool-down a throttle seen by any gateway started: resting → refused
///      with what remains of it;
///   3. the model's `rate_limits` rpm/tpm: over → refused with the exact wait; else charged.
/// The buckets are the local limiter's (policy::rate_limiter), with the same arithmetic in the
/// same order on IEEE doubles, stored with 17 significant digits, so the same inputs give the
/// same decisions; time is the Redis server's clock (microseconds), one clock for the fleet.
/// A bucket's key expires once it would be full again: a missing key is a full bucket.

#include "bgw/config/config.hpp"
#include "bgw/fleet/resp.hpp"

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace bgw::fleet {

using std::chrono::milliseconds;

/// One pair of buckets to check and charge: requests and tokens per minute (0: none).
struct bucket_ask {
    std::string key;  ///< the Redis key of the pair (see keys below)
    std::uint64_t rpm = 0;
    std::uint64_t tpm = 0;
    std::uint64_t tokens = 0;  ///< this request's estimate (charged against tpm)
};

/// What one request's admission asks.
struct admission_ask {
    std::optional<bucket_ask> caller;  ///< the caller key's limits, when it has some
    std::string cooldown_key;          ///< the (region, model) rest; empty: none to check
    std::optional<bucket_ask> target;  ///< the model's rate_limits, when it has some
    /// The clock for tests (microseconds); absent: the Redis server's TIME.
    std::optional<std::int64_t> now_us;
};

enum class admission_code { admitted, caller_over, cooling, target_over };

struct admission_verdict {
    admission_code code = admission_code::admitted;
    milliseconds wait{0};         ///< refused: exactly how long until it would pass
    bool caller_charged = false;  ///< the caller's buckets were charged
};

/// A script call's keys and arguments.
struct script_args {
    std::vector<std::string> keys;
    std::vector<std::string> args;
};

/// The admission script, and the call that asks `a`.
const lua_script& admission_script();
script_args admission_call(const admission_ask& a);
/// The script's answer; nullopt for a reply of another shape (a Redis error, say).
std::optional<admission_verdict> read_admission(const reply& r);

/// Replaces a charged estimate with what the request used (tokens bucket only): the same as
/// policy::rate_limiter::correct().
const lua_script& correction_script();
script_args correction_call(const std::string& key,
                            std::uint64_t tpm,
                            std::uint64_t estimated,
                            std::uint64_t actual,
                            std::optional<std::int64_t> now_us = std::nullopt);

/// Starts (or extends) a (region, model) rest to at least `length`; the answer is the rest now
/// in force, in milliseconds (another gateway's may be longer).
const lua_script& cooldown_script();
script_args cooldown_call(const std::string& key, milliseconds length);
std::optional<milliseconds> read_cooldown(const reply& r);

/// A gateway says it is alive and learns how many are: members seen within `horizon`.
const lua_script& heartbeat_script();
script_args heartbeat_call(const std::string& key, const std::string& member, milliseconds horizon);
std::optional<unsigned> read_heartbeat(const reply& r);

/// This gateway's part of a fleet budget shared by `fleet_size` gateways, for when the shared
/// state does not answer: each limit divided (rounded down, at least 1 a minute).
config::rate_limit local_share(const config::rate_limit& fleet, unsigned fleet_size);
std::map<std::string, config::rate_limit, std::less<>> local_share(
    const std::map<std::string, config::rate_limit, std::less<>>& fleet, unsigned fleet_size);

/// Key names, all under the configured prefix.
std::string target_key(std::string_view prefix, std::string_view model);
std::string caller_key(std::string_view prefix, std::string_view name);
std::string cooldown_key(std::string_view prefix, std::string_view region, std::string_view model);
std::string fleet_key(std::string_view prefix);

}  // namespace bgw::fleet
