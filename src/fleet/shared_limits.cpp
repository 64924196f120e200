#include "bgw/fleet/shared_limits.hpp"

#include <algorithm>

namespace bgw::fleet {
namespace {

/// Shared by the scripts that touch buckets: the clock, and policy::rate_limiter's refill and
/// wait, operation for operation (throttle.cpp: refill() and time_to()). Numbers go back to
/// Redis through string.format('%.17g'): Redis would otherwise turn a Lua number into a string
/// with 14 digits and lose what the local limiter keeps.
constexpr std::string_view bucket_lib = R"lua(
local function num(x) return string.format('%.17g', x) end
local now
if ARGV[1] ~= '' then
  now = tonumber(ARGV[1])
else
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
end
local function level(key, lf, af, cap)
  local v = redis.call('HMGET', key, lf, af)
  local l, at = tonumber(v[1]), tonumber(v[2])
  if l == nil or at == nil then return cap, now end
  if now > at then
    l = math.min(cap, l + (now - at) * cap / 60000000)
    at = now
  end
  return l, at
end
local function wait_for(l, need, cap)
  if l >= need then return 0 end
  return math.ceil((need - l) * 60000 / cap)
end
local function full_in(l, cap)
  if l >= cap then return 0 end
  return math.ceil((cap - l) * 60000 / cap)
end
)lua";

constexpr std::string_view admission_body = R"lua(
-- KEYS: caller pair, cool-down, target pair. ARGV: now_us or '', then caller rpm tpm tokens,
-- check cool-down (0/1), target rpm tpm tokens. Returns {code, wait_ms, caller_charged}.
local function check(key, rpm, tpm, tokens)
  local b = {w = 0}
  if rpm > 0 then
    b.r, b.ra = level(key, 'r', 'ra', rpm)
    b.w = math.max(b.w, wait_for(b.r, 1, rpm))
  end
  if tpm > 0 then
    b.t, b.ta = level(key, 't', 'ta', tpm)
    b.w = math.max(b.w, wait_for(b.t, math.min(tokens, tpm), tpm))
  end
  return b
end
-- Writes the pair back, refilled (and charged, when admitted): a refused request's refill is
-- kept too, as the local limiter keeps it, so both round the same way next time.
local function store(key, rpm, tpm, b)
  local ttl = 0
  if rpm > 0 then
    redis.call('HSET', key, 'r', num(b.r), 'ra', num(b.ra))
    ttl = math.max(ttl, full_in(b.r, rpm))
  end
  if tpm > 0 then
    redis.call('HSET', key, 't', num(b.t), 'ta', num(b.ta))
    ttl = math.max(ttl, full_in(b.t, tpm))
  end
  redis.call('PEXPIRE', key, ttl + 1000)
end
local function charge(rpm, tpm, tokens, b)
  if rpm > 0 then b.r = b.r - 1 end
  if tpm > 0 then b.t = b.t - tokens end
end
local crpm, ctpm, ctok = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local trpm, ttpm, ttok = tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8])
local charged = 0
if crpm > 0 or ctpm > 0 then
  local b = check(KEYS[1], crpm, ctpm, ctok)
  if b.w == 0 then charge(crpm, ctpm, ctok, b) end
  store(KEYS[1], crpm, ctpm, b)
  if b.w > 0 then return {1, b.w, 0} end
  charged = 1
end
if ARGV[5] == '1' then
  local rest = redis.call('PTTL', KEYS[2])
  if rest > 0 then return {2, rest, charged} end
end
if trpm > 0 or ttpm > 0 then
  local b = check(KEYS[3], trpm, ttpm, ttok)
  if b.w == 0 then charge(trpm, ttpm, ttok, b) end
  store(KEYS[3], trpm, ttpm, b)
  if b.w > 0 then return {3, b.w, charged} end
end
return {0, 0, charged}
)lua";

constexpr std::string_view correction_body = R"lua(
-- KEYS: the pair. ARGV: now_us or '', tpm, estimated, actual.
local cap, est, actual = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local l, at = level(KEYS[1], 't', 'ta', cap)
l = math.min(cap, l + est - actual)
redis.call('HSET', KEYS[1], 't', num(l), 'ta', num(at))
local ttl = full_in(l, cap) + 1000
if redis.call('PTTL', KEYS[1]) < ttl then redis.call('PEXPIRE', KEYS[1], ttl) end
return 1
)lua";

constexpr std::string_view cooldown_body = R"lua(
-- KEYS: the rest. ARGV: its length in ms. Returns the rest in force.
local len = tonumber(ARGV[1])
local rest = redis.call('PTTL', KEYS[1])
if rest < len then
  redis.call('SET', KEYS[1], '1', 'PX', len)
  return len
end
return rest
)lua";

constexpr std::string_view heartbeat_body = R"lua(
-- KEYS: the fleet's sorted set. ARGV: this gateway, horizon ms. Returns how many are alive.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local horizon = tonumber(ARGV[2])
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - horizon)
redis.call('PEXPIRE', KEYS[1], horizon * 2)
return redis.call('ZCARD', KEYS[1])
)lua";

std::string str(std::uint64_t v) { return std::to_string(v); }

std::string clock_arg(std::optional<std::int64_t> now_us) {
    return now_us ? std::to_string(*now_us) : std::string();
}

std::optional<long long> integer_at(const reply& r, std::size_t i) {
    if (r.type != reply::kind::array || r.elements.size() <= i) return std::nullopt;
    const auto& e = r.elements[i];
    if (e.type != reply::kind::integer) return std::nullopt;
    return e.integer;
}

}  // namespace

const lua_script& admission_script() {
    static const lua_script s(std::string(bucket_lib) + std::string(admission_body));
    return s;
}

const lua_script& correction_script() {
    static const lua_script s(std::string(bucket_lib) + std::string(correction_body));
    return s;
}

const lua_script& cooldown_script() {
    static const lua_script s{std::string(cooldown_body)};
    return s;
}

const lua_script& heartbeat_script() {
    static const lua_script s{std::string(heartbeat_body)};
    return s;
}

script_args admission_call(const admission_ask& a) {
    const bucket_ask none{};
    const auto& c = a.caller ? *a.caller : none;
    const auto& t = a.target ? *a.target : none;
    // Redis wants a key name for every slot; an unused one is never touched.
    return {{c.key.empty() ? "-" : c.key, a.cooldown_key.empty() ? "-" : a.cooldown_key,
             t.key.empty() ? "-" : t.key},
            {clock_arg(a.now_us), str(c.rpm), str(c.tpm), str(c.tokens),
             a.cooldown_key.empty() ? "0" : "1", str(t.rpm), str(t.tpm), str(t.tokens)}};
}

std::optional<admission_verdict> read_admission(const reply& r) {
    auto code = integer_at(r, 0);
    auto wait = integer_at(r, 1);
    auto charged = integer_at(r, 2);
    if (!code || !wait || !charged || *code < 0 || *code > 3 || *wait < 0) return std::nullopt;
    return admission_verdict{static_cast<admission_code>(*code), milliseconds{*wait},
                             *charged == 1};
}

script_args correction_call(const std::string& key,
                            std::uint64_t tpm,
                            std::uint64_t estimated,
                            std::uint64_t actual,
                            std::optional<std::int64_t> now_us) {
    return {{key}, {clock_arg(now_us), str(tpm), str(estimated), str(actual)}};
}

script_args cooldown_call(const std::string& key, milliseconds length) {
    return {{key}, {std::to_string(std::max<std::int64_t>(1, length.count()))}};
}

std::optional<milliseconds> read_cooldown(const reply& r) {
    if (r.type != reply::kind::integer || r.integer < 0) return std::nullopt;
    return milliseconds{r.integer};
}

script_args heartbeat_call(const std::string& key,
                           const std::string& member,
                           milliseconds horizon) {
    return {{key}, {member, std::to_string(horizon.count())}};
}

std::optional<unsigned> read_heartbeat(const reply& r) {
    if (r.type != reply::kind::integer || r.integer < 1 || r.integer > 1'000'000)
        return std::nullopt;
    return static_cast<unsigned>(r.integer);
}

config::rate_limit local_share(const config::rate_limit& fleet, unsigned fleet_size) {
    const std::uint64_t n = std::max(1u, fleet_size);
    auto part = [n](std::uint64_t v) { return v ? std::max<std::uint64_t>(1, v / n) : 0; };
    return {part(fleet.rpm), part(fleet.tpm)};
}

std::map<std::string, config::rate_limit, std::less<>> local_share(
    const std::map<std::string, config::rate_limit, std::less<>>& fleet, unsigned fleet_size) {
    std::map<std::string, config::rate_limit, std::less<>> out;
    for (const auto& [name, l] : fleet) out.emplace(name, local_share(l, fleet_size));
    return out;
}

std::string target_key(std::string_view prefix, std::string_view model) {
    return std::string(prefix) + "rl:" + std::string(model);
}

std::string caller_key(std::string_view prefix, std::string_view name) {
    return std::string(prefix) + "ck:" + std::string(name);
}

std::string cooldown_key(std::string_view prefix, std::string_view region, std::string_view model) {
    return std::string(prefix) + "cd:" + std::string(region) + ":" + std::string(model);
}

std::string fleet_key(std::string_view prefix) { return std::string(prefix) + "fleet"; }

}  // namespace bgw::fleet
